//! The compact logits file (`quality --save-logits`, `scripts/llamacpp_logits.py`): per scored
//! position the top-K token log-probabilities, the target token's id and log-probability, and
//! the log-sum-exp of the logits; the evaluated token ids; optionally full rows of
//! log-probabilities for the first positions (to check the top-K KL against the full one).
//! The format is documented in `docs/quality.md`; all numbers little-endian.
//!
//! ```text
//! "GFLOGITS" (8 bytes), version u32 = 1, header length u32 (≤ 1 MiB), header (JSON, UTF-8)
//! tokens:   n_tokens × u32                      (the whole evaluated stream, BOS first)
//! records:  positions × { target u32, target_logprob f32, lse f32,
//!                         top_k × id u32, top_k × logprob f32 (largest first) }
//! full:     full_rows × vocab × f32             (log-probabilities of the first positions)
//! ```
//!
//! The reader is bounded like the model readers: every count is checked against the bytes the
//! file has before anything is allocated, the file must end exactly where the header says, and
//! every value is checked (ids inside the vocabulary, targets equal to the token stream's,
//! log-probabilities finite, ≤ 0 and sorted, probability mass ≤ 1).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"GFLOGITS";
pub const VERSION: u32 = 1;
const MAX_HEADER: u32 = 1 << 20;
/// The largest vocabulary and top-K a file may declare.
const MAX_VOCAB: usize = 1 << 24;
const MAX_TOP_K: usize = 4096;
/// Slack for rounding when log-probabilities are checked (≤ 0, sorted, mass ≤ 1).
const SLACK: f32 = 1e-3;
/// The smallest log-probability a file may hold (f32 logits never spread further; anything
/// below would only make perplexities infinite).
const MIN_LOGPROB: f32 = -1000.0;

/// A log-probability as a file may hold it: finite, ≤ 0 (up to rounding), not absurdly small.
fn plausible(lp: f32) -> bool {
    lp.is_finite() && (MIN_LOGPROB..=SLACK).contains(&lp)
}

/// What a logits file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Who wrote it: "gemma-fit 0.1.0" or "llama.cpp (llama-cpp-python 0.3.36)".
    pub producer: String,
    /// The model as its producer named it (a file name, a folder).
    pub model: String,
    /// The model's shape, to refuse a reference from another model.
    pub shape: ModelShape,
    /// The KV-cache type the producer ran with.
    pub kv: String,
    /// The evaluated text: "default" (the shipped text) or a file name, with its sha256.
    pub text: String,
    pub text_sha256: String,
    /// Tokens per chunk.
    pub ctx: usize,
    pub top_k: usize,
    pub n_tokens: usize,
    pub positions: usize,
    #[serde(default)]
    pub full_rows: usize,
}

/// The figures that tell two Gemma 3 models apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub vocab: usize,
    pub layers: usize,
    pub hidden: usize,
}

impl std::fmt::Display for ModelShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} layers × {} wide, vocabulary {}",
            self.layers, self.hidden, self.vocab
        )
    }
}

/// One scored position.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub target: u32,
    pub target_logprob: f32,
    pub lse: f32,
    /// (id, log-probability), largest first.
    pub top: Vec<(u32, f32)>,
}

/// A whole logits file.
#[derive(Debug, Clone)]
pub struct LogitsFile {
    pub header: Header,
    pub tokens: Vec<u32>,
    pub records: Vec<Record>,
    /// Full log-probability rows of the first `header.full_rows` positions.
    pub full: Vec<Vec<f32>>,
}

/// Positions scored per chunk of `ctx` tokens: offsets ctx/2 … ctx−2 (each predicts the next).
pub fn scored_per_chunk(ctx: usize) -> usize {
    (ctx - 1).saturating_sub(ctx / 2)
}

/// The first scored offset in a chunk.
pub fn first_scored(ctx: usize) -> usize {
    ctx / 2
}

/// The position in the token stream whose token the `i`-th scored position predicts.
pub fn target_index(ctx: usize, i: usize) -> usize {
    let per = scored_per_chunk(ctx);
    (i / per) * ctx + first_scored(ctx) + i % per + 1
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptLogits {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl LogitsFile {
    /// Writes the file atomically (a temporary file beside it, renamed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        {
            let mut w = BufWriter::new(tmp.as_file());
            let io = |e| Error::io(path, e);
            let header = serde_json::to_vec(&self.header)?;
            w.write_all(MAGIC).map_err(io)?;
            w.write_all(&VERSION.to_le_bytes()).map_err(io)?;
            w.write_all(&(header.len() as u32).to_le_bytes())
                .map_err(io)?;
            w.write_all(&header).map_err(io)?;
            for t in &self.tokens {
                w.write_all(&t.to_le_bytes()).map_err(io)?;
            }
            for r in &self.records {
                w.write_all(&r.target.to_le_bytes()).map_err(io)?;
                w.write_all(&r.target_logprob.to_le_bytes()).map_err(io)?;
                w.write_all(&r.lse.to_le_bytes()).map_err(io)?;
                for (id, _) in &r.top {
                    w.write_all(&id.to_le_bytes()).map_err(io)?;
                }
                for (_, lp) in &r.top {
                    w.write_all(&lp.to_le_bytes()).map_err(io)?;
                }
            }
            for row in &self.full {
                for v in row {
                    w.write_all(&v.to_le_bytes()).map_err(io)?;
                }
            }
            w.flush().map_err(io)?;
        }
        crate::result::store::persist(tmp, path)
    }

    /// Reads and checks a logits file (see the module's documentation for every bound).
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::BadInput(format!("logits file not found: {}", path.display()))
            }
            _ => Error::io(path, e),
        })?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Self::from_reader(BufReader::new(file), size, path)
    }

    /// [`Self::read`] from any reader of `size` bytes (`path` names it in errors).
    pub fn from_reader(mut r: impl Read, size: u64, path: &Path) -> Result<Self> {
        let bad = |reason: String| corrupt(path, reason);
        let mut left = size;
        // Reads `n` more bytes, refused when the file has fewer left.
        let take = |left: &mut u64, n: u64, what: &str, r: &mut dyn Read| -> Result<Vec<u8>> {
            if n > *left {
                return Err(corrupt(
                    path,
                    format!("{what} needs {n} bytes, the file has {left} left (truncated?)"),
                ));
            }
            *left -= n;
            let mut buf = vec![0u8; n as usize];
            r.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
            Ok(buf)
        };
        let head = take(&mut left, 16, "the file's start", &mut r)?;
        if &head[..8] != MAGIC {
            return Err(bad(format!(
                "it starts with {}, a gemma-fit logits file starts with \"GFLOGITS\"",
                crate::error::quote_bytes(&head[..8])
            )));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}; this gemma-fit reads version {VERSION}"
            )));
        }
        let header_len = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        if header_len > MAX_HEADER {
            return Err(bad(format!(
                "header of {header_len} bytes (at most {MAX_HEADER})"
            )));
        }
        let raw = take(&mut left, header_len as u64, "the header", &mut r)?;
        let header: Header = serde_json::from_slice(&raw).map_err(|e| {
            bad(format!(
                "header is not valid: {}",
                crate::error::one_line(&e.to_string())
            ))
        })?;
        let h = &header;
        if h.text_sha256.len() != 64 || !h.text_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("text_sha256 is not 64 hexadecimal digits".into()));
        }
        if h.shape.vocab == 0 || h.shape.vocab > MAX_VOCAB {
            return Err(bad(format!(
                "vocabulary of {} (1 to {MAX_VOCAB})",
                h.shape.vocab
            )));
        }
        if h.top_k == 0 || h.top_k > MAX_TOP_K.min(h.shape.vocab) {
            return Err(bad(format!(
                "top_k {} (1 to {})",
                h.top_k,
                MAX_TOP_K.min(h.shape.vocab)
            )));
        }
        if h.ctx < 4 {
            return Err(bad(format!("ctx {} (at least 4)", h.ctx)));
        }
        let expected_positions = (h.n_tokens / h.ctx) * scored_per_chunk(h.ctx);
        if h.positions != expected_positions {
            return Err(bad(format!(
                "{} positions, but {} tokens in chunks of {} score {expected_positions}",
                h.positions, h.n_tokens, h.ctx
            )));
        }
        if h.full_rows > h.positions {
            return Err(bad(format!(
                "{} full rows for {} positions",
                h.full_rows, h.positions
            )));
        }
        // Every section's size, in u128 so that no count can overflow, against the bytes left.
        let record_bytes = 12 + 8 * h.top_k as u128;
        let body = 4 * h.n_tokens as u128
            + h.positions as u128 * record_bytes
            + h.full_rows as u128 * h.shape.vocab as u128 * 4;
        if body != left as u128 {
            return Err(bad(format!(
                "the header describes {body} bytes after it, the file has {left}{}",
                if body > left as u128 {
                    " (truncated?)"
                } else {
                    ""
                }
            )));
        }
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let tokens = u32s(&take(
            &mut left,
            4 * h.n_tokens as u64,
            "the tokens",
            &mut r,
        )?);
        let vocab = h.shape.vocab as u32;
        if let Some((i, t)) = tokens.iter().enumerate().find(|(_, &t)| t >= vocab) {
            return Err(bad(format!(
                "token {i} is id {t}, outside the vocabulary of {vocab}"
            )));
        }
        let mut records = Vec::with_capacity(h.positions);
        for i in 0..h.positions {
            let b = take(&mut left, record_bytes as u64, "a record", &mut r)?;
            let target = u32s(&b[0..4])[0];
            let nums = f32s(&b[4..12]);
            let ids = u32s(&b[12..12 + 4 * h.top_k]);
            let lps = f32s(&b[12 + 4 * h.top_k..]);
            let at = format!("position {i}");
            let expected = tokens[target_index(h.ctx, i)];
            if target != expected {
                return Err(bad(format!(
                    "{at}: target {target}, but the token stream has {expected} there"
                )));
            }
            if !plausible(nums[0]) || !nums[1].is_finite() || nums[1].abs() > 1e6 {
                return Err(bad(format!(
                    "{at}: target log-probability {} or log-sum-exp {} is not a finite log-probability",
                    nums[0], nums[1]
                )));
            }
            let mut mass = 0f64;
            for (k, (&id, &lp)) in ids.iter().zip(&lps).enumerate() {
                if id >= vocab {
                    return Err(bad(format!("{at}: top id {id} outside the vocabulary")));
                }
                if !plausible(lp) || (k > 0 && lp > lps[k - 1] + SLACK) {
                    return Err(bad(format!(
                        "{at}: top log-probability {lp} (must be finite, in -1000 … 0 and largest first)"
                    )));
                }
                mass += (lp as f64).exp();
            }
            if mass > 1.0 + SLACK as f64 {
                return Err(bad(format!(
                    "{at}: the top {} hold mass {mass:.4} > 1",
                    h.top_k
                )));
            }
            records.push(Record {
                target,
                target_logprob: nums[0],
                lse: nums[1],
                top: ids.into_iter().zip(lps).collect(),
            });
        }
        let mut full = Vec::with_capacity(h.full_rows);
        for i in 0..h.full_rows {
            let row = f32s(&take(
                &mut left,
                4 * h.shape.vocab as u64,
                "a full row",
                &mut r,
            )?);
            if row.iter().any(|&v| !plausible(v)) {
                return Err(bad(format!(
                    "full row {i} holds a value that is not a finite log-probability"
                )));
            }
            full.push(row);
        }
        Ok(LogitsFile {
            header,
            tokens,
            records,
            full,
        })
    }
}

/// The error for a reference that does not belong with this model or text.
pub fn mismatch(path: &Path, what: String) -> Error {
    Error::BadInput(format!("--against {}: {what}", path.display()))
}

/// A small valid logits file for tests: 17 tokens in chunks of 8, top 3, one full row.
#[cfg(test)]
pub(crate) fn sample() -> LogitsFile {
    let ctx = 8;
    let tokens: Vec<u32> = (0..17).map(|i| (i * 7 % 50) as u32).collect();
    let positions = 2 * scored_per_chunk(ctx);
    let records = (0..positions)
        .map(|i| Record {
            target: tokens[target_index(ctx, i)],
            target_logprob: -1.5,
            lse: 3.25,
            top: vec![(3, -1.0), (9, -1.5), (4, -2.5)],
        })
        .collect();
    LogitsFile {
        header: Header {
            producer: "test".into(),
            model: "m".into(),
            shape: ModelShape {
                vocab: 50,
                layers: 2,
                hidden: 8,
            },
            kv: "f32".into(),
            text: "default".into(),
            text_sha256: "0".repeat(64),
            ctx,
            top_k: 3,
            n_tokens: tokens.len(),
            positions,
            full_rows: 1,
        },
        tokens,
        records,
        full: vec![vec![-3.912; 50]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_positions_follow_llama_perplexity() {
        // ctx 512: offsets 256 … 510, each predicting the next token.
        assert_eq!(scored_per_chunk(512), 255);
        assert_eq!(target_index(512, 0), 257);
        assert_eq!(target_index(512, 254), 511);
        assert_eq!(target_index(512, 255), 512 + 257);
        assert_eq!(scored_per_chunk(2048), 1023);
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.logits");
        let f = sample();
        f.write(&path).unwrap();
        let back = LogitsFile::read(&path).unwrap();
        assert_eq!(back.header, f.header);
        assert_eq!(back.tokens, f.tokens);
        assert_eq!(back.records, f.records);
        assert_eq!(back.full, f.full);

        let bytes = std::fs::read(&path).unwrap();
        let read = |b: &[u8]| {
            LogitsFile::from_reader(b, b.len() as u64, &path)
                .unwrap_err()
                .to_string()
        };
        assert!(read(&bytes[..bytes.len() - 3]).contains("truncated"));
        assert!(read(b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0").contains("starts with 'GGUF"));
        let header_at = 16;
        let text = String::from_utf8_lossy(&bytes[header_at..header_at + 400]).to_string();
        let n = text.find("\"top_k\":3").unwrap();
        let mut wrong = bytes.clone();
        wrong[header_at + n + 8] = b'9';
        assert!(read(&wrong).contains("after it"), "{}", read(&wrong));
        // A target that is not the token stream's.
        let tokens_end = header_at
            + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize
            + 4 * f.tokens.len();
        let mut wrong = bytes.clone();
        wrong[tokens_end] ^= 1;
        assert!(read(&wrong).contains("token stream"), "{}", read(&wrong));
        // A positive log-probability.
        let mut wrong = bytes.clone();
        wrong[tokens_end + 12 + 12..tokens_end + 12 + 16].copy_from_slice(&5f32.to_le_bytes());
        assert!(read(&wrong).contains("largest first"), "{}", read(&wrong));
        // A header length past the file.
        let mut wrong = bytes.clone();
        wrong[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&wrong).contains("header of"), "{}", read(&wrong));
    }
}
