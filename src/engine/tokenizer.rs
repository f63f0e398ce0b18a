//! Gemma 3's SentencePiece tokenizer, built from GGUF metadata alone.
//!
//! The vocabulary is SentencePiece BPE with byte fallback (`tokenizer.ggml.model = "llama"`).
//! Encoding follows llama.cpp's SPM tokenizer so that ids match it exactly:
//! 1. user-defined tokens (whitespace runs, newlines, HTML tags, image markers) are cut out of
//!    the raw text first, longest first; control tokens are not parsed from text;
//! 2. in each remaining fragment spaces become `▁` and the text is split into UTF-8 characters;
//! 3. adjacent symbols are merged greedily, always the pair whose merged piece has the highest
//!    score (leftmost on ties), as long as the merged piece is in the vocabulary;
//! 4. a symbol that is not in the vocabulary is written as its bytes (`<0xNN>` tokens).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use candle_core::quantized::gguf_file::Value;

use crate::engine::load::gguf::{describe, GgufFile};
use crate::error::{Error, Result};

/// A token's kind, as stored in `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(v: i64) -> Self {
        match v {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// Every piece in one buffer: 262k small strings as separate allocations (and again as hash-map
/// keys) would cost tens of MiB, which would show up in every memory figure we publish.
#[derive(Debug, Clone, Default)]
struct PieceTable {
    text: String,
    /// Piece i is text[ends[i - 1]..ends[i]].
    ends: Vec<u32>,
    /// Ids sorted by piece (first occurrence of a duplicate first), for lookups.
    sorted: Vec<u32>,
}

impl PieceTable {
    fn new(pieces: &[String]) -> Self {
        let mut text = String::with_capacity(pieces.iter().map(String::len).sum());
        let mut ends = Vec::with_capacity(pieces.len());
        for p in pieces {
            text.push_str(p);
            ends.push(text.len() as u32);
        }
        let mut table = PieceTable {
            text,
            ends,
            sorted: (0..pieces.len() as u32).collect(),
        };
        let mut sorted = std::mem::take(&mut table.sorted);
        sorted.sort_by(|&a, &b| table.get(a).cmp(table.get(b)).then(a.cmp(&b)));
        table.sorted = sorted;
        table
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The lowest id whose piece is `piece`.
    fn find(&self, piece: &str) -> Option<u32> {
        let i = self.sorted.partition_point(|&id| self.get(id) < piece);
        let id = *self.sorted.get(i)?;
        (self.get(id) == piece).then_some(id)
    }
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    pieces: PieceTable,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    byte_to_id: [Option<u32>; 256],
    /// User-defined tokens, longest first: cut out of the raw text before SentencePiece runs.
    user_defined: Vec<(String, u32)>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
}

const SPACE_MARK: &str = "\u{2581}";

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "llama" {
            return Err(Error::BadMetadata {
                path: file.path.clone(),
                key: "tokenizer.ggml.model".into(),
                reason: format!(
                    "{} is not a SentencePiece ('llama') vocabulary",
                    crate::error::quote(&model)
                ),
            });
        }
        let bad = |key: &str, reason: String| Error::BadMetadata {
            path: file.path.clone(),
            key: key.into(),
            reason,
        };
        let pieces = file
            .get_array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| describe(v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|found| {
                bad(
                    "tokenizer.ggml.tokens",
                    format!("holds {found}, not only strings"),
                )
            })?;
        let n = pieces.len();
        let scores = match file.metadata().get("tokenizer.ggml.scores") {
            Some(_) => file
                .get_array("tokenizer.ggml.scores")?
                .iter()
                .map(|v| v.to_f32().map_err(|_| describe(v)))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|found| {
                    bad(
                        "tokenizer.ggml.scores",
                        format!("holds {found}, not only f32"),
                    )
                })?,
            None => vec![0.0; n],
        };
        let kinds = match file.metadata().get("tokenizer.ggml.token_type") {
            Some(_) => file
                .get_array("tokenizer.ggml.token_type")?
                .iter()
                .map(|v| int_value(v).map(TokenKind::from_gguf))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("tokenizer.ggml.token_type", "not an integer array".into()))?,
            None => vec![TokenKind::Normal; n],
        };
        if scores.len() != n || kinds.len() != n {
            return Err(bad(
                "tokenizer.ggml.scores",
                format!(
                    "{} tokens but {} scores and {} token types",
                    n,
                    scores.len(),
                    kinds.len()
                ),
            ));
        }
        let id = |key: &str| -> Result<Option<u32>> {
            Ok(file
                .get_opt_uint(key)?
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < n))
        };
        let bos_id = id("tokenizer.ggml.bos_token_id")?;
        let eos_id = id("tokenizer.ggml.eos_token_id")?;
        let add_bos = file
            .get_opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(true);
        let add_space_prefix = file
            .get_opt_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(false);
        Ok(Self::new(
            pieces,
            scores,
            kinds,
            bos_id,
            eos_id,
            add_bos,
            add_space_prefix,
        ))
    }

    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<TokenKind>,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        add_bos: bool,
        add_space_prefix: bool,
    ) -> Self {
        let mut byte_to_id = [None; 256];
        let mut user_defined = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let id = i as u32;
            match kinds[i] {
                TokenKind::Byte => {
                    if let Some(b) = parse_byte_piece(piece) {
                        byte_to_id[b as usize] = Some(id);
                    }
                }
                TokenKind::UserDefined if !piece.is_empty() => {
                    user_defined.push((piece.clone(), id))
                }
                _ => {}
            }
        }
        user_defined.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Tokenizer {
            pieces: PieceTable::new(&pieces),
            scores,
            kinds,
            byte_to_id,
            user_defined,
            bos_id,
            eos_id,
            add_bos,
            add_space_prefix,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The vocabulary entry of a token, as stored (`▁` for spaces, `<0x0A>` for bytes).
    pub fn piece(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.pieces.len()).then(|| self.pieces.get(id))
    }

    /// The id of a vocabulary entry, if present.
    pub fn id_of(&self, piece: &str) -> Option<u32> {
        self.pieces.find(piece)
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Token ids for `text`, with BOS first when the model asks for it and `add_special` is set.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            if let Some(bos) = self.bos_id {
                out.push(bos);
            }
        }
        let mut prev_special = true;
        for fragment in self.split_user_defined(text) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(' ');
                    }
                    s.push_str(t);
                    self.encode_spm(&s.replace(' ', SPACE_MARK), &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Text for a sequence of ids. Control tokens (BOS, EOS, …) produce nothing; byte tokens are
    /// gathered so that multi-byte characters split over several tokens come out whole.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_token_bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn append_token_bytes(&self, id: u32, bytes: &mut Vec<u8>) {
        let Some(piece) = self.piece(id) else {
            return;
        };
        match self.kinds[id as usize] {
            TokenKind::Normal => bytes.extend_from_slice(piece.replace(SPACE_MARK, " ").as_bytes()),
            TokenKind::UserDefined => bytes.extend_from_slice(piece.as_bytes()),
            TokenKind::Byte => {
                if let Some(b) = parse_byte_piece(piece) {
                    bytes.push(b);
                }
            }
            TokenKind::Control | TokenKind::Unknown | TokenKind::Unused => {}
        }
    }

    /// Cuts user-defined tokens out of the text, longest first (llama.cpp's partition order).
    fn split_user_defined<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for (piece, id) in &self.user_defined {
            if !text.contains(piece.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                match fragment {
                    Fragment::Text(mut t) => {
                        while let Some(pos) = t.find(piece.as_str()) {
                            if pos > 0 {
                                next.push(Fragment::Text(&t[..pos]));
                            }
                            next.push(Fragment::Token(*id));
                            t = &t[pos + piece.len()..];
                        }
                        if !t.is_empty() {
                            next.push(Fragment::Text(t));
                        }
                    }
                    token => next.push(token),
                }
            }
            fragments = next;
        }
        fragments
    }

    /// SentencePiece BPE over one fragment whose spaces are already `▁`.
    fn encode_spm(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        // Symbols are byte ranges of `text`; merged-away symbols have len 0.
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, ch) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: ch.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.push_bigram(text, &symbols, i - 1, i, &mut queue);
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (bigram.left, bigram.right);
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != bigram.len
            {
                continue; // stale: one side has changed since this pair was queued
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(n) = symbols[r].next {
                symbols[n].prev = Some(l);
            }
            if let Some(p) = symbols[l].prev {
                self.push_bigram(text, &symbols, p, l, &mut queue);
            }
            if let Some(n) = symbols[l].next {
                self.push_bigram(text, &symbols, l, n, &mut queue);
            }
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let sym = &symbols[k];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.pieces.find(piece) {
                Some(id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.byte_to_id[b as usize] {
                            out.push(id);
                        }
                    }
                }
            }
            i = sym.next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (a, b) = (&symbols[left], &symbols[right]);
        let merged = &text[a.start..a.start + a.len + b.len];
        if let Some(id) = self.pieces.find(merged) {
            queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len: merged.len(),
            });
        }
    }
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge; the heap pops the highest score first, then the leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

fn int_value(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => *x as i64,
        Value::I64(x) => *x,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: bytes, a few merges, a user-defined whitespace token.
    fn tiny() -> Tokenizer {
        let mut pieces = vec!["<pad>".to_string(), "<eos>".into(), "<bos>".into()];
        let mut kinds = vec![TokenKind::Control; 3];
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            kinds.push(TokenKind::Byte);
        }
        for p in ["a", "b", "c", "ab", "abc", "▁", "▁a", "bc"] {
            pieces.push(p.into());
            kinds.push(TokenKind::Normal);
        }
        pieces.push("  ".into());
        kinds.push(TokenKind::UserDefined);
        let n = pieces.len();
        let mut scores = vec![0.0f32; n];
        let id = |p: &str| pieces.iter().position(|x| x == p).unwrap();
        scores[id("ab")] = -1.0;
        scores[id("bc")] = -0.5; // better than "ab": "abc" must go a + bc -> abc
        scores[id("abc")] = -2.0;
        scores[id("▁a")] = -3.0;
        Tokenizer::new(pieces, scores, kinds, Some(2), Some(1), true, false)
    }

    #[test]
    fn merges_by_score_then_byte_fallback() {
        let t = tiny();
        let ids = t.encode("abc", false);
        assert_eq!(ids.len(), 1);
        assert_eq!(t.piece(ids[0]), Some("abc"));
        // "z" is not in the vocabulary: one byte token; "é" is two bytes.
        let ids = t.encode("zé", true);
        assert_eq!(ids[0], 2);
        let pieces: Vec<_> = ids[1..].iter().map(|&i| t.piece(i).unwrap()).collect();
        assert_eq!(pieces, ["<0x7A>", "<0xC3>", "<0xA9>"]);
        assert_eq!(t.decode(&ids), "zé");
    }

    #[test]
    fn user_defined_tokens_are_cut_out_first() {
        let t = tiny();
        let ids = t.encode("a  a", false);
        let pieces: Vec<_> = ids.iter().map(|&i| t.piece(i).unwrap()).collect();
        assert_eq!(pieces, ["a", "  ", "a"]);
        let ids = t.encode("b a", false);
        let pieces: Vec<_> = ids.iter().map(|&i| t.piece(i).unwrap()).collect();
        assert_eq!(pieces, ["b", "▁a"]);
        assert_eq!(t.decode(&ids), "b a");
    }

    #[test]
    fn control_tokens_decode_to_nothing() {
        let t = tiny();
        assert_eq!(t.decode(&[2, 1]), "");
        assert!(t.encode("", true) == vec![2] && t.encode("", false).is_empty());
    }
}
