//! Structure-aware mutations of a model: a GGUF file through the map of its header fields (the
//! bounded reader's, `gguf_header::read` with `record`), a Hugging Face folder through its
//! `config.json` and its safetensors header as JSON; and of a logits file (`quality
//! --save-logits`, `quality::logits_file`) through its sections: the JSON header's fields, the
//! version and header-length words, the token ids, the records' fields and the full rows. Each
//! mutation is a plain edit of one file (bytes at an offset, a truncation, new contents) with a
//! description that reproduces it.

use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::Value as Json;

use crate::engine::load::gguf_header::{self, Field, FieldKind};
use crate::error::{Error, Result};
use crate::quality::logits_file::{self, LogitsFile};

/// One edit of one of the target's files.
#[derive(Debug, Clone)]
pub enum Edit {
    Bytes {
        offset: u64,
        bytes: Vec<u8>,
    },
    Truncate(u64),
    /// New contents: `head`, then the original file from `rest_from` on (nothing of it when
    /// `rest_from` is past its end).
    Splice {
        head: Vec<u8>,
        rest_from: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Mutation {
    /// Index into [`Target::files`].
    pub file: usize,
    pub edit: Edit,
    /// What was done, in words (with offsets and values: enough to redo it by hand).
    pub what: String,
}

/// Files larger than this are edited in place only (no rewrite of the whole file per case).
const REWRITE_MAX: u64 = 64 << 20;

enum Layout {
    Gguf {
        header: Vec<u8>,
        fields: Vec<Field>,
        /// Field kinds present, with the indices of their fields.
        kinds: Vec<(FieldKind, Vec<usize>)>,
        tensor_offsets: Vec<u64>,
        data_start: u64,
        size: u64,
    },
    Folder {
        config: usize,
        config_json: Json,
        weights: usize,
        header_len: u64,
        header: serde_json::Map<String, Json>,
        size: u64,
    },
    Logits(Box<LogitsLayout>),
}

/// A logits file, whole (the reader reads it whole too): its bytes, its JSON header as an
/// object, and what the reader made of it (the values mutations start from).
struct LogitsLayout {
    bytes: Vec<u8>,
    header_len: u64,
    header: Json,
    file: LogitsFile,
}

/// What to mutate: a GGUF file, a folder with config.json and one *.safetensors file, or a
/// logits file (told by its magic, `GFLOGITS`).
pub struct Target {
    /// The file, or the folder.
    pub root: PathBuf,
    pub is_dir: bool,
    /// File names (relative to the folder; the file's own name for a GGUF).
    pub files: Vec<PathBuf>,
    layout: Layout,
}

impl Target {
    pub fn open(root: &Path) -> Result<Self> {
        if root.is_dir() {
            return Self::folder(root);
        }
        let size = std::fs::metadata(root)
            .map_err(|e| Error::io(root, e))?
            .len();
        let mut magic = [0u8; 8];
        if size >= 8 {
            read_at(root, 0, &mut magic)?;
        }
        if &magic == logits_file::MAGIC {
            return Self::logits(root);
        }
        let file = std::fs::File::open(root).map_err(|e| Error::io(root, e))?;
        let (content, fields) = gguf_header::read(std::io::BufReader::new(file), size, true)
            .map_err(|e| {
                Error::BadInput(format!(
                    "{}: the model to fuzz must be a valid GGUF file: {e}",
                    root.display()
                ))
            })?;
        let data_start = content.tensor_data_offset;
        let mut header = vec![0u8; data_start.min(size) as usize];
        read_at(root, 0, &mut header)?;
        let mut kinds: Vec<(FieldKind, Vec<usize>)> = Vec::new();
        let mut tensor_offsets = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if f.kind == FieldKind::TensorOffset {
                tensor_offsets.push(read_le(&header, f));
            }
            match kinds.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, v)) => v.push(i),
                None => kinds.push((f.kind, vec![i])),
            }
        }
        let name = PathBuf::from(root.file_name().unwrap_or_default());
        Ok(Target {
            root: root.into(),
            is_dir: false,
            files: vec![name],
            layout: Layout::Gguf {
                header,
                fields,
                kinds,
                tensor_offsets,
                data_start,
                size,
            },
        })
    }

    fn folder(root: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| PathBuf::from(e.file_name()))
            .collect();
        files.sort();
        let find = |pred: &dyn Fn(&Path) -> bool| files.iter().position(|f| pred(f));
        let bad = |why: &str| Error::BadInput(format!("{}: {why}", root.display()));
        let config = find(&|f| f == Path::new("config.json"))
            .ok_or_else(|| bad("a folder to fuzz needs a config.json"))?;
        let weights = find(&|f| f.extension().is_some_and(|x| x == "safetensors"))
            .ok_or_else(|| bad("a folder to fuzz needs a *.safetensors file"))?;
        let text = std::fs::read(root.join(&files[config])).map_err(|e| Error::io(root, e))?;
        let config_json: Json =
            serde_json::from_slice(&text).map_err(|_| bad("config.json is not JSON"))?;
        let st_path = root.join(&files[weights]);
        let size = std::fs::metadata(&st_path)
            .map_err(|e| Error::io(&st_path, e))?
            .len();
        let mut len = [0u8; 8];
        read_at(&st_path, 0, &mut len)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > 100_000_000 || 8 + header_len > size {
            return Err(bad("the safetensors file's header length is invalid"));
        }
        let mut raw = vec![0u8; header_len as usize];
        read_at(&st_path, 8, &mut raw)?;
        let header = match serde_json::from_slice(&raw) {
            Ok(Json::Object(m)) => m,
            _ => return Err(bad("the safetensors header is not a JSON object")),
        };
        Ok(Target {
            root: root.into(),
            is_dir: true,
            files,
            layout: Layout::Folder {
                config,
                config_json,
                weights,
                header_len,
                header,
                size,
            },
        })
    }

    fn logits(root: &Path) -> Result<Self> {
        let bytes = std::fs::read(root).map_err(|e| Error::io(root, e))?;
        let file = LogitsFile::from_reader(&bytes[..], bytes.len() as u64, root).map_err(|e| {
            Error::BadInput(format!("the logits file to fuzz must be a valid one: {e}"))
        })?;
        // The reader has checked the length word and the JSON; read them again as they are.
        let header_len = u64::from(u32::from_le_bytes([
            bytes[12], bytes[13], bytes[14], bytes[15],
        ]));
        let header = serde_json::from_slice(&bytes[16..16 + header_len as usize])
            .map_err(|e| Error::BadInput(format!("{}: header: {e}", root.display())))?;
        let name = PathBuf::from(root.file_name().unwrap_or_default());
        Ok(Target {
            root: root.into(),
            is_dir: false,
            files: vec![name],
            layout: Layout::Logits(Box::new(LogitsLayout {
                bytes,
                header_len,
                header,
                file,
            })),
        })
    }

    /// Whether the target is a logits file (its cases run `gemma-fit quality --against`).
    pub fn is_logits(&self) -> bool {
        matches!(self.layout, Layout::Logits(_))
    }

    /// A random mutation.
    pub fn mutate(&self, rng: &mut SmallRng) -> Mutation {
        match &self.layout {
            Layout::Gguf {
                header,
                fields,
                kinds,
                tensor_offsets,
                data_start,
                size,
            } => gguf(
                rng,
                header,
                fields,
                kinds,
                tensor_offsets,
                *data_start,
                *size,
            ),
            Layout::Folder {
                config,
                config_json,
                weights,
                header_len,
                header,
                size,
            } => {
                if rng.random_bool(0.35) {
                    config_mutation(rng, *config, config_json)
                } else {
                    safetensors_mutation(rng, *weights, *header_len, header, *size)
                }
            }
            Layout::Logits(l) => logits_mutation(rng, l),
        }
    }
}

/// Fills `buf` from `path` at `offset`.
fn read_at(path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(buf)
        })
        .map_err(|e| Error::io(path, e))
}

fn read_le(header: &[u8], f: &Field) -> u64 {
    let mut b = [0u8; 8];
    let at = f.offset as usize;
    b[..f.width as usize].copy_from_slice(&header[at..at + f.width as usize]);
    u64::from_le_bytes(b)
}

/// A replacement for an integer field of `width` bytes at `at` now holding `v`: a neighbour, 0,
/// the maximum, a power of two, the file size or what is left of it, a bit flipped.
fn odd_integer(rng: &mut SmallRng, v: u64, width: u8, size: u64, at: u64) -> u64 {
    let max = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width as u32)) - 1
    };
    let bit = rng.random_range(0..8 * width as u32);
    let choices = [
        v.wrapping_add(1),
        v.wrapping_sub(1),
        0,
        1,
        max,
        v.wrapping_mul(2),
        v.wrapping_add(rng.random_range(2..1000)),
        rng.random::<u64>(),
        size,
        size.saturating_sub(at),
        1 << 31,
        1 << 32,
        1 << 63,
        v ^ (1 << bit),
    ];
    choices[rng.random_range(0..choices.len())] & max
}

fn gguf(
    rng: &mut SmallRng,
    header: &[u8],
    fields: &[Field],
    kinds: &[(FieldKind, Vec<usize>)],
    tensor_offsets: &[u64],
    data_start: u64,
    size: u64,
) -> Mutation {
    let roll = rng.random_range(0..100);
    if roll < 60 && !kinds.is_empty() {
        let (kind, idx) = &kinds[rng.random_range(0..kinds.len())];
        let f = fields[idx[rng.random_range(0..idx.len())]];
        let v = read_le(header, &f);
        let new = match kind {
            FieldKind::TensorType | FieldKind::ValueType | FieldKind::ArrayType
                if rng.random_bool(0.6) =>
            {
                rng.random_range(0..40)
            }
            FieldKind::Dims if rng.random_bool(0.6) => rng.random_range(0..7),
            FieldKind::TensorOffset if rng.random_bool(0.6) => {
                let other = tensor_offsets[rng.random_range(0..tensor_offsets.len())];
                [other, v + 1, v + 32, other + 32][rng.random_range(0..4)]
            }
            _ => odd_integer(rng, v, f.width, size, f.offset),
        };
        let bytes = new.to_le_bytes()[..f.width as usize].to_vec();
        return Mutation {
            file: 0,
            edit: Edit::Bytes {
                offset: f.offset,
                bytes,
            },
            what: format!(
                "{kind:?} at byte {}: {v} -> {new} ({} bytes)",
                f.offset, f.width
            ),
        };
    }
    if roll < 75 {
        let n = rng.random_range(1..=4);
        let offset = rng.random_range(0..data_start.max(1));
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        return Mutation {
            file: 0,
            what: format!("header bytes at {offset} set to {bytes:02x?}"),
            edit: Edit::Bytes { offset, bytes },
        };
    }
    if roll < 87 {
        let len = match rng.random_range(0..3) {
            0 => rng.random_range(0..data_start.max(1)),
            1 => fields[rng.random_range(0..fields.len())].offset + rng.random_range(0..4),
            _ => rng.random_range(data_start.min(size)..size.max(1)),
        };
        return Mutation {
            file: 0,
            edit: Edit::Truncate(len),
            what: format!("truncated to {len} bytes (of {size})"),
        };
    }
    // Tensor data: random bytes, or non-finite floats.
    let offset = rng.random_range(data_start.min(size.saturating_sub(1))..size.max(1));
    let bytes = match rng.random_range(0..3) {
        0 => f32::NAN.to_le_bytes().to_vec(),
        1 => f32::INFINITY.to_le_bytes().to_vec(),
        _ => (0..rng.random_range(1..64)).map(|_| rng.random()).collect(),
    };
    Mutation {
        file: 0,
        what: format!(
            "tensor data at byte {offset} set to {} bytes {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ),
        edit: Edit::Bytes { offset, bytes },
    }
}

/// JSON pointers of every leaf (and every array) of `v`.
fn leaves(v: &Json, at: String, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{at}/{k}"), out);
            }
        }
        Json::Array(a) => {
            out.push(at.clone());
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

fn odd_json(rng: &mut SmallRng, old: &Json) -> Json {
    let n = old.as_i64().unwrap_or(1);
    let choices = [
        Json::from(0),
        Json::from(-1),
        Json::from(1),
        Json::from(n + 1),
        Json::from(n.saturating_mul(1000)),
        Json::from(1u64 << 31),
        Json::from(1u64 << 40),
        Json::from(u64::MAX),
        Json::from(1e308),
        Json::from(0.5),
        Json::from("x"),
        Json::Null,
        Json::from(true),
        Json::Array(vec![]),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Sets or deletes a random leaf of `v`; returns what was done.
fn mutate_json(rng: &mut SmallRng, v: &mut Json, skip: &dyn Fn(&str) -> bool) -> String {
    let mut all = Vec::new();
    leaves(v, String::new(), &mut all);
    all.retain(|p| !skip(p));
    if all.is_empty() {
        return "nothing to change".into();
    }
    let ptr = all[rng.random_range(0..all.len())].clone();
    if rng.random_bool(0.15) {
        if let Some((parent, key)) = ptr.rsplit_once('/') {
            match v.pointer_mut(parent) {
                Some(Json::Object(m)) => {
                    m.remove(key);
                }
                Some(Json::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
            return format!("removed {ptr}");
        }
    }
    let slot = v.pointer_mut(&ptr).expect("the pointer was just listed");
    let new = odd_json(rng, slot);
    let what = format!("{ptr}: {slot} -> {new}");
    *slot = new;
    what
}

fn config_mutation(rng: &mut SmallRng, file: usize, config: &Json) -> Mutation {
    let text = serde_json::to_vec(config).unwrap_or_default();
    if rng.random_bool(0.25) && !text.is_empty() {
        let mut t = text.clone();
        let at = rng.random_range(0..t.len());
        if rng.random_bool(0.5) {
            t.truncate(at);
            return Mutation {
                file,
                what: format!("config.json cut to {at} bytes"),
                edit: Edit::Splice {
                    head: t,
                    rest_from: u64::MAX,
                },
            };
        }
        let b: u8 = rng.random();
        t[at] = b;
        return Mutation {
            file,
            what: format!("config.json byte {at} set to {b:#04x}"),
            edit: Edit::Splice {
                head: t,
                rest_from: u64::MAX,
            },
        };
    }
    let mut v = config.clone();
    let what = mutate_json(rng, &mut v, &|_| false);
    Mutation {
        file,
        what: format!("config.json {what}"),
        edit: Edit::Splice {
            head: serde_json::to_vec_pretty(&v).unwrap_or_default(),
            rest_from: u64::MAX,
        },
    }
}

fn safetensors_mutation(
    rng: &mut SmallRng,
    file: usize,
    header_len: u64,
    header: &serde_json::Map<String, Json>,
    size: u64,
) -> Mutation {
    let data_start = 8 + header_len;
    let roll = rng.random_range(0..100);
    if roll < 15 {
        let new = odd_integer(rng, header_len, 8, size, 0);
        return Mutation {
            file,
            what: format!("header length: {header_len} -> {new}"),
            edit: Edit::Bytes {
                offset: 0,
                bytes: new.to_le_bytes().to_vec(),
            },
        };
    }
    if roll < 70 {
        let mut h = Json::Object(header.clone());
        let names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
        let what = if names.is_empty() || rng.random_bool(0.6) {
            mutate_json(rng, &mut h, &|p| p.starts_with("/__metadata__"))
        } else {
            let name = names[rng.random_range(0..names.len())].clone();
            let m = h.as_object_mut().expect("an object");
            match rng.random_range(0..3) {
                0 => {
                    m.remove(&name);
                    format!("removed tensor {name}")
                }
                1 => {
                    let entry = m.remove(&name).unwrap_or(Json::Null);
                    m.insert(format!("{name}x"), entry);
                    format!("renamed tensor {name}")
                }
                _ => {
                    let dtypes = [
                        "F32", "F16", "BF16", "F64", "I8", "U8", "I64", "BOOL", "F8_E4M3", "Q4",
                    ];
                    let d = dtypes[rng.random_range(0..dtypes.len())];
                    m[&name]["dtype"] = Json::from(d);
                    format!("tensor {name} dtype -> {d}")
                }
            }
        };
        let mut bytes = serde_json::to_vec(&h).unwrap_or_default();
        while !bytes.len().is_multiple_of(8) {
            bytes.push(b' ');
        }
        let what = format!("safetensors header {what}");
        if size <= REWRITE_MAX {
            // The new header, then the data as it was.
            let mut head = (bytes.len() as u64).to_le_bytes().to_vec();
            head.extend(bytes);
            return Mutation {
                file,
                what,
                edit: Edit::Splice {
                    head,
                    rest_from: data_start,
                },
            };
        }
        if bytes.len() as u64 <= header_len {
            bytes.resize(header_len as usize, b' ');
            return Mutation {
                file,
                what,
                edit: Edit::Bytes { offset: 8, bytes },
            };
        }
    }
    if roll < 80 {
        let offset = rng.random_range(0..data_start);
        let b: u8 = rng.random();
        return Mutation {
            file,
            what: format!("safetensors byte {offset} set to {b:#04x}"),
            edit: Edit::Bytes {
                offset,
                bytes: vec![b],
            },
        };
    }
    if roll < 92 {
        let len = rng.random_range(0..size);
        return Mutation {
            file,
            what: format!("safetensors truncated to {len} bytes (of {size})"),
            edit: Edit::Truncate(len),
        };
    }
    let offset = rng.random_range(data_start.min(size - 1)..size);
    let bytes = [0xffu8, 0xff, 0x80, 0x7f].to_vec();
    Mutation {
        file,
        what: format!("safetensors data at byte {offset} set to NaN-ish bytes"),
        edit: Edit::Bytes { offset, bytes },
    }
}

impl LogitsLayout {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn tokens_at(&self) -> u64 {
        16 + self.header_len
    }

    fn records_at(&self) -> u64 {
        self.tokens_at() + 4 * self.file.tokens.len() as u64
    }

    fn record_bytes(&self) -> u64 {
        12 + 8 * self.file.header.top_k as u64
    }

    fn record_at(&self, i: usize) -> u64 {
        self.records_at() + i as u64 * self.record_bytes()
    }

    fn full_at(&self) -> u64 {
        self.record_at(self.file.records.len())
    }

    fn vocab(&self) -> u32 {
        self.file.header.shape.vocab as u32
    }

    /// The section byte `at` is in, in words (for the mutations' descriptions).
    fn section(&self, at: u64) -> String {
        let row = 4 * self.file.header.shape.vocab as u64;
        match at {
            0..8 => "in the magic".into(),
            8..12 => "in the version".into(),
            12..16 => "in the header length".into(),
            _ if at < self.tokens_at() => "in the JSON header".into(),
            _ if at < self.records_at() => format!("in token {}", (at - self.tokens_at()) / 4),
            _ if at < self.full_at() => {
                format!(
                    "in record {}",
                    (at - self.records_at()) / self.record_bytes()
                )
            }
            _ if at < self.size() => format!("in full row {}", (at - self.full_at()) / row.max(1)),
            _ => "at the end".into(),
        }
    }

    /// Offsets where one section (or one entry of one) ends and the next begins, and a few just
    /// inside.
    fn boundary(&self, rng: &mut SmallRng) -> u64 {
        let positions = self.file.records.len();
        let record = self.record_at(rng.random_range(0..positions.max(1)));
        let row = 4 * self.file.header.shape.vocab as u64;
        let full = self.full_at() + row * rng.random_range(0..self.file.full.len().max(1)) as u64;
        let choices = [
            0,
            4,
            8,
            12,
            16,
            16 + self.header_len / 2,
            self.tokens_at(),
            self.tokens_at() + 2,
            self.records_at(),
            record,
            record + 4,
            record + 12,
            self.full_at(),
            full,
            full + 4,
            self.size().saturating_sub(4),
            self.size().saturating_sub(1),
        ];
        choices[rng.random_range(0..choices.len())].min(self.size())
    }
}

/// A replacement for a float: non-finite, positive (not a log-probability), zero, tiny, huge,
/// or near the old value.
fn odd_float(rng: &mut SmallRng, v: f32) -> f32 {
    let choices = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        0.5,
        1.0,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -1e-45,
        v * 2.0,
        v - 1.0,
        v + 1.0,
        -v,
    ];
    choices[rng.random_range(0..choices.len())]
}

/// A replacement for a token id: out of the vocabulary, at its edge, or another valid id.
fn odd_id(rng: &mut SmallRng, v: u32, vocab: u32, other: u32) -> u32 {
    let choices = [
        vocab,
        vocab.wrapping_add(1),
        vocab.wrapping_sub(1),
        u32::MAX,
        1 << 31,
        v ^ 1,
        v.wrapping_add(1),
        0,
        other,
    ];
    choices[rng.random_range(0..choices.len())]
}

/// A replacement for a string: empty, longer, another script, control characters, very long.
fn odd_string(rng: &mut SmallRng, s: &str) -> String {
    let choices = [
        String::new(),
        "x".to_string(),
        format!("{s}x"),
        s.chars().skip(1).collect(),
        s.to_uppercase(),
        "é…ü 日本".to_string(),
        "line\nbreak\ttab\u{1}bell\u{7f}".to_string(),
        "a".repeat(1000),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// One edit of the JSON header `h`: a value set to an odd one (numbers through
/// [`odd_integer`], strings through [`odd_string`], any through [`odd_json`]: a wrong type), a
/// field removed or added, or the whole header made another type; returns what was done.
fn logits_header_edit(rng: &mut SmallRng, h: &mut Json, size: u64) -> String {
    let mut all = Vec::new();
    leaves(h, String::new(), &mut all);
    let roll = rng.random_range(0..100);
    if roll < 3 || all.is_empty() {
        let new = [
            Json::Array(vec![]),
            Json::Null,
            Json::from("x"),
            Json::from(1),
        ][rng.random_range(0..4)]
        .clone();
        let what = format!("the header replaced by {new}");
        *h = new;
        return what;
    }
    if roll < 8 {
        let (ptr, new) = [("/extra", Json::from(1)), ("/shape/extra", Json::from("x"))]
            [rng.random_range(0..2)]
        .clone();
        let (parent, key) = ptr.rsplit_once('/').unwrap_or(("", ptr));
        if let Some(Json::Object(m)) = h.pointer_mut(parent) {
            m.insert(key.into(), new.clone());
        }
        return format!("added {ptr}: {new}");
    }
    let ptr = all[rng.random_range(0..all.len())].clone();
    if roll < 22 {
        if let Some((parent, key)) = ptr.rsplit_once('/') {
            if let Some(Json::Object(m)) = h.pointer_mut(parent) {
                m.remove(key);
            }
            return format!("removed {ptr}");
        }
    }
    let Some(slot) = h.pointer_mut(&ptr) else {
        return "nothing to change".into();
    };
    let new = match slot {
        Json::Number(n) if rng.random_bool(0.6) => {
            Json::from(odd_integer(rng, n.as_u64().unwrap_or(0), 8, size, 0))
        }
        Json::String(s) if rng.random_bool(0.6) => Json::from(odd_string(rng, s)),
        _ => odd_json(rng, slot),
    };
    let what = format!("{ptr}: {slot} -> {new}");
    *slot = new;
    what
}

/// The JSON header rewritten with one to three edits; the length word set to the new length,
/// or (a quarter of the time) left as it was, the new header padded to it when shorter.
fn logits_header(rng: &mut SmallRng, l: &LogitsLayout) -> Mutation {
    let mut h = l.header.clone();
    let edits = if rng.random_bool(0.2) {
        rng.random_range(2..=3)
    } else {
        1
    };
    let whats: Vec<String> = (0..edits)
        .map(|_| logits_header_edit(rng, &mut h, l.size()))
        .collect();
    let mut json = serde_json::to_vec(&h).unwrap_or_default();
    let (len, how) = if rng.random_bool(0.25) {
        if (json.len() as u64) < l.header_len {
            json.resize(l.header_len as usize, b' ');
        }
        (
            l.header_len,
            format!("length word left at {}", l.header_len),
        )
    } else {
        (
            json.len() as u64,
            format!("length {} -> {}", l.header_len, json.len()),
        )
    };
    let mut head = l.bytes[..12].to_vec();
    head.extend((len as u32).to_le_bytes());
    head.extend(json);
    Mutation {
        file: 0,
        what: format!(
            "header {} (header rewritten compactly, {how})",
            whats.join("; ")
        ),
        edit: Edit::Splice {
            head,
            rest_from: 16 + l.header_len,
        },
    }
}

/// A `u32` word at `offset` set to `new`.
fn word(offset: u64, new: u32, what: String) -> Mutation {
    Mutation {
        file: 0,
        what,
        edit: Edit::Bytes {
            offset,
            bytes: new.to_le_bytes().to_vec(),
        },
    }
}

/// One field of one record: the target id, its log-probability, the log-sum-exp, a top id, a
/// top log-probability; or the top list made unsorted or given too much mass.
fn logits_record(rng: &mut SmallRng, l: &LogitsLayout) -> Mutation {
    let f = &l.file;
    let i = rng.random_range(0..f.records.len());
    let r = &f.records[i];
    let at = l.record_at(i);
    let k = rng.random_range(0..r.top.len());
    let top_k = r.top.len() as u64;
    let other = f.tokens[rng.random_range(0..f.tokens.len())];
    let float = |offset: u64, new: f32, what: String| Mutation {
        file: 0,
        what,
        edit: Edit::Bytes {
            offset,
            bytes: new.to_le_bytes().to_vec(),
        },
    };
    match rng.random_range(0..7) {
        0 => {
            let new = odd_id(rng, r.target, l.vocab(), other);
            word(
                at,
                new,
                format!("record {i} (byte {at}) target: {} -> {new}", r.target),
            )
        }
        1 => {
            let new = odd_float(rng, r.target_logprob);
            float(
                at + 4,
                new,
                format!(
                    "record {i} (byte {}) target log-probability: {:?} -> {new:?}",
                    at + 4,
                    r.target_logprob
                ),
            )
        }
        2 => {
            let new = odd_float(rng, r.lse);
            float(
                at + 8,
                new,
                format!(
                    "record {i} (byte {}) log-sum-exp: {:?} -> {new:?}",
                    at + 8,
                    r.lse
                ),
            )
        }
        3 => {
            let (old, _) = r.top[k];
            let other = [r.top[0].0, r.target][rng.random_range(0..2)];
            let new = odd_id(rng, old, l.vocab(), other);
            let offset = at + 12 + 4 * k as u64;
            word(
                offset,
                new,
                format!("record {i} top id {k} (byte {offset}): {old} -> {new}"),
            )
        }
        4 => {
            let (_, old) = r.top[k];
            let new = if rng.random_bool(0.3) {
                // Unsorted: above the one before it, or (the first) below the next.
                match (k.checked_sub(1), r.top.get(1)) {
                    (Some(prev), _) => r.top[prev].1 + 0.5,
                    (None, Some(next)) => next.1 - 0.5,
                    (None, None) => 0.5,
                }
            } else {
                odd_float(rng, old)
            };
            let offset = at + 12 + 4 * top_k + 4 * k as u64;
            float(
                offset,
                new,
                format!("record {i} top log-probability {k} (byte {offset}): {old:?} -> {new:?}"),
            )
        }
        5 => {
            // Two entries swapped (ids and log-probabilities together): unsorted.
            let j = rng.random_range(0..r.top.len());
            let mut top = r.top.clone();
            top.swap(k, j);
            let mut bytes: Vec<u8> = top.iter().flat_map(|(id, _)| id.to_le_bytes()).collect();
            bytes.extend(top.iter().flat_map(|(_, lp)| lp.to_le_bytes()));
            Mutation {
                file: 0,
                what: format!("record {i} (byte {at}) top entries {k} and {j} swapped"),
                edit: Edit::Bytes {
                    offset: at + 12,
                    bytes,
                },
            }
        }
        _ => {
            // Every top log-probability the same: sorted, but too much mass when it is near 0.
            let v = [0.0f32, -0.01, -0.5, -f32::MIN_POSITIVE][rng.random_range(0..4)];
            let bytes = (0..top_k).flat_map(|_| v.to_le_bytes()).collect();
            Mutation {
                file: 0,
                what: format!("record {i} (byte {at}) every top log-probability set to {v:?}"),
                edit: Edit::Bytes {
                    offset: at + 12 + 4 * top_k,
                    bytes,
                },
            }
        }
    }
}

fn logits_mutation(rng: &mut SmallRng, l: &LogitsLayout) -> Mutation {
    let f = &l.file;
    let size = l.size();
    let mut roll = rng.random_range(0..100);
    // Sections the file lacks give their share to random bytes.
    if (30..40).contains(&roll) && f.tokens.is_empty()
        || (40..65).contains(&roll) && f.records.is_empty()
        || (65..70).contains(&roll) && f.full.is_empty()
    {
        roll = 99;
    }
    if roll < 22 {
        return logits_header(rng, l);
    }
    if roll < 26 {
        let new = odd_integer(rng, u64::from(logits_file::VERSION), 4, size, 8) as u32;
        return word(
            8,
            new,
            format!("version (byte 8): {} -> {new}", logits_file::VERSION),
        );
    }
    if roll < 30 {
        let old = l.header_len;
        let new = if rng.random_bool(0.7) {
            odd_integer(rng, old, 4, size, 12)
        } else {
            [
                old + 4,
                old.saturating_sub(4),
                old + 4 * f.tokens.len() as u64,
            ][rng.random_range(0..3)]
        } as u32;
        return word(12, new, format!("header length (byte 12): {old} -> {new}"));
    }
    if roll < 40 {
        let i = rng.random_range(0..f.tokens.len());
        let old = f.tokens[i];
        let other = f.tokens[rng.random_range(0..f.tokens.len())];
        let new = odd_id(rng, old, l.vocab(), other);
        let offset = l.tokens_at() + 4 * i as u64;
        return word(
            offset,
            new,
            format!("token {i} (byte {offset}): {old} -> {new}"),
        );
    }
    if roll < 65 {
        return logits_record(rng, l);
    }
    if roll < 70 {
        let r = rng.random_range(0..f.full.len());
        let j = rng.random_range(0..f.full[r].len());
        let old = f.full[r][j];
        let new = odd_float(rng, old);
        let offset = l.full_at() + 4 * (r * f.full[r].len() + j) as u64;
        return Mutation {
            file: 0,
            what: format!("full row {r} value {j} (byte {offset}): {old:?} -> {new:?}"),
            edit: Edit::Bytes {
                offset,
                bytes: new.to_le_bytes().to_vec(),
            },
        };
    }
    if roll < 84 {
        let len = if rng.random_bool(0.6) {
            l.boundary(rng)
        } else {
            rng.random_range(0..size.max(1))
        };
        return Mutation {
            file: 0,
            edit: Edit::Truncate(len),
            what: format!(
                "truncated to {len} bytes (of {size}; cut {})",
                l.section(len)
            ),
        };
    }
    if roll < 92 {
        // Bytes inserted or deleted at a boundary: every later section shifts.
        let at = l.boundary(rng);
        let n = [1u64, 3, 4, 8][rng.random_range(0..4)];
        let mut head = l.bytes[..at as usize].to_vec();
        let (rest_from, what) = if rng.random_bool(0.5) {
            let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let what = format!(
                "{n} bytes {ins:02x?} inserted at byte {at} ({})",
                l.section(at)
            );
            head.extend(ins);
            (at, what)
        } else {
            (
                at + n,
                format!("{n} bytes deleted at byte {at} ({})", l.section(at)),
            )
        };
        return Mutation {
            file: 0,
            what,
            edit: Edit::Splice { head, rest_from },
        };
    }
    let offset = rng.random_range(0..size.max(1));
    let bytes: Vec<u8> = (0..rng.random_range(1..=4)).map(|_| rng.random()).collect();
    Mutation {
        file: 0,
        what: format!(
            "bytes at {offset} ({}) set to {bytes:02x?}",
            l.section(offset)
        ),
        edit: Edit::Bytes { offset, bytes },
    }
}
