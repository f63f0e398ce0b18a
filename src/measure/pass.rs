//! One measured pass over a loaded model: image encode, prefill, decode, each timed; and the
//! prompts and images the passes are made of. `measure/mod.rs` drives passes through phases and
//! probes into a result record.

use std::time::Instant;

use candle_core::Tensor;

use crate::engine::kv_cache::KvPair;

use crate::engine::decoder::Segment;
use crate::engine::generate::argmax;
use crate::engine::load::{no_vision, LoadedModel};
use crate::engine::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::result::case::ImageSpec;

/// Gemma 3's begin- and end-of-image tokens (`docs/gemma3.md`), for models without a tokenizer.
const BOI: u32 = 255_999;
const EOI: u32 = 256_000;

/// Deterministic English text used to build prompts of a given length.
const FILLER: &str =
    "The river ran past the old mill, where the miller kept his ledgers of grain and \
flour. Every spring the water rose, and the village gathered to watch the wheel turn faster. \
Children counted the boats that drifted down from the hills, and the baker sold warm bread at \
the bridge. In the evening the lamps were lit along the towpath, and travellers told stories \
of the cities beyond the forest, of markets and bells and libraries full of maps. ";

/// A prompt of exactly `n` tokens (BOS first when the model adds it).
pub fn prompt_of(tokenizer: &Tokenizer, n: usize) -> Vec<u32> {
    let mut text = String::from(FILLER);
    loop {
        let ids = tokenizer.encode(&text, true);
        if ids.len() >= n {
            return ids[..n].to_vec();
        }
        text.push_str(FILLER);
    }
}

/// A prompt of exactly `n` tokens for `m`: the fixed text through its tokenizer, or for synthetic
/// weights a fixed sequence of ordinary ids after BOS.
pub fn prompt(m: &LoadedModel, n: usize) -> Vec<u32> {
    match &m.tokenizer {
        Some(t) => prompt_of(t, n),
        None => {
            // Ordinary ids past the control/special tokens at the start of the vocabulary
            // (a tiny test vocabulary has no room for 1000 of them).
            let vocab = m.model.cfg.vocab_size as u32;
            let first = 1000.min(vocab / 4);
            (0..n as u32)
                .map(|i| {
                    if i == 0 {
                        2
                    } else {
                        first + (i * 7919) % (vocab - first)
                    }
                })
                .collect()
        }
    }
}

/// `b` distinct prompts of `n` tokens for a batch: the first is [`prompt`]'s, each next one
/// starts a token later in the same text (BOS kept first).
pub fn prompts(m: &LoadedModel, n: usize, b: usize) -> Vec<Vec<u32>> {
    let n = n.max(1);
    shifted_prompts(&prompt(m, n + b.max(1) - 1), n, b)
}

/// `b` prompts of `n` tokens from `base` (at least `n + b - 1` tokens, BOS first): prompt `i`
/// is BOS and then `base` from token `1 + i` on.
pub fn shifted_prompts(base: &[u32], n: usize, b: usize) -> Vec<Vec<u32>> {
    let n = n.max(1);
    (0..b.max(1))
        .map(|i| {
            let mut p = Vec::with_capacity(n);
            p.push(base[0]);
            p.extend_from_slice(&base[1 + i..n + i]);
            p
        })
        .collect()
}

/// What one pass over a case measured: image encode (if any), prefill, decode.
#[derive(Debug, Clone)]
pub struct Pass {
    pub encode_s: Option<f64>,
    /// Prefill of every sequence.
    pub prefill_s: f64,
    /// Encode plus prefill, until the first token's logits: the median over the sequences, each
    /// measured from the pass's start (all sequences arrive at once).
    pub ttft_s: f64,
    /// The last sequence's first token.
    pub ttft_max_s: f64,
    /// Positions prefilled per sequence (text plus the image's).
    pub positions: usize,
    /// Sequences decoded together.
    pub batch: usize,
    /// Synthetic positions before them.
    pub depth: usize,
    /// Each decode step (one token for every sequence): a sequence's time per output token.
    pub decode_ms: Vec<f64>,
    /// The KV caches of all the sequences.
    pub kv_bytes: u64,
    pub rope_bytes: u64,
}

/// The phase a pass is entering, for probes that split their readings by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassPhase {
    Encode,
    Prefill,
    Decode,
}

/// The shape of a pass.
#[derive(Debug, Clone, Copy)]
pub struct PassShape {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Positions the KV cache is allocated for.
    pub ctx: usize,
    pub prefill_chunk: usize,
    pub kv_dtype: KvPair,
    /// Positions filled with synthetic keys and values before the prompt (`--fill-kv`): the
    /// prompt is then prefilled, and the tokens decoded, at this depth.
    pub fill_depth: usize,
    /// Sequences run together, each with its own prompt and KV cache.
    pub batch: usize,
}

/// One pass on fresh sessions of `shape.ctx` positions. Without `pixels`, the text pass of
/// [`run_batch`]. With them: one sequence, whose image is encoded, then its prompt prefilled (the
/// image's soft tokens between begin/end-of-image markers after BOS) and `gen_tokens` decoded
/// greedily, one at a time. `on_phase` is called as each phase begins (after the session's memory
/// is allocated).
pub fn run_pass(
    m: &LoadedModel,
    shape: PassShape,
    pixels: Option<&Tensor>,
    on_phase: &mut dyn FnMut(PassPhase),
) -> Result<Pass> {
    let Some(px) = pixels else {
        return run_batch(m, shape, on_phase);
    };
    if shape.batch > 1 {
        return Err(Error::Unsupported(
            "an image case runs one sequence (--batch 1)".into(),
        ));
    }
    let Some(v) = &m.vision else {
        return Err(Error::BadInput(format!(
            "{} was loaded without a vision tower; an image case needs one",
            m.source
        )));
    };
    let prompt = prompt(m, shape.prompt_tokens.max(1));
    let mut session = m.model.session(shape.ctx, shape.kv_dtype)?;
    if shape.fill_depth > 0 {
        session.cache.fill_synthetic(shape.fill_depth)?;
    }
    let start = Instant::now();
    on_phase(PassPhase::Encode);
    let soft = v.encode(px)?;
    let encode_s = start.elapsed().as_secs_f64();
    let (boi, eoi) = image_markers(m)?;
    let segments = [
        Segment::Text(&prompt[..1]),
        Segment::Text(std::slice::from_ref(&boi)),
        Segment::Image(&soft),
        Segment::Text(std::slice::from_ref(&eoi)),
        Segment::Text(&prompt[1..]),
    ];
    on_phase(PassPhase::Prefill);
    let prefill_start = Instant::now();
    let logits = m
        .model
        .prefill_segments(&segments, shape.prefill_chunk, &mut session)?;
    let mut next = argmax(&logits);
    let prefill_s = prefill_start.elapsed().as_secs_f64();
    let ttft_s = start.elapsed().as_secs_f64();
    on_phase(PassPhase::Decode);
    let mut decode_ms = Vec::with_capacity(shape.gen_tokens);
    for _ in 0..shape.gen_tokens {
        let t = Instant::now();
        let logits = m.model.forward(&[next], &mut session)?;
        next = argmax(&logits);
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Pass {
        encode_s: Some(encode_s),
        prefill_s,
        ttft_s,
        ttft_max_s: ttft_s,
        positions: prompt.len() + soft.dim(0)? + 2,
        batch: 1,
        depth: shape.fill_depth,
        decode_ms,
        kv_bytes: session.cache.allocated_bytes() as u64,
        rope_bytes: session.rope_bytes() as u64,
    })
}

/// A text pass of `shape.batch` sequences (one is a batch of one): distinct prompts
/// ([`prompts`]) prefilled packed into chunks ([`crate::engine::decoder::Gemma3::prefill_batch`]),
/// then every sequence decoded greedily, one token each per step, all in one forward pass.
fn run_batch(
    m: &LoadedModel,
    shape: PassShape,
    on_phase: &mut dyn FnMut(PassPhase),
) -> Result<Pass> {
    let b = shape.batch.max(1);
    let prompts = prompts(m, shape.prompt_tokens, b);
    let mut sessions = m.model.sessions(shape.ctx, shape.kv_dtype, b)?;
    if shape.fill_depth > 0 {
        for s in &mut sessions {
            s.cache.fill_synthetic(shape.fill_depth)?;
        }
    }
    on_phase(PassPhase::Prefill);
    let start = Instant::now();
    let mut first = vec![(0.0, 0u32); b];
    let views: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    m.model
        .prefill_batch(&views, shape.prefill_chunk, &mut sessions, |i, logits| {
            first[i] = (start.elapsed().as_secs_f64(), argmax(&logits));
        })?;
    let prefill_s = start.elapsed().as_secs_f64();
    let ttft: Vec<f64> = first.iter().map(|f| f.0).collect();
    let mut next: Vec<u32> = first.iter().map(|f| f.1).collect();
    on_phase(PassPhase::Decode);
    let mut decode_ms = Vec::with_capacity(shape.gen_tokens);
    let heap = m.model.decode_heap();
    for _ in 0..shape.gen_tokens {
        let t = Instant::now();
        let logits = m.model.decode_batch(&next, &mut sessions)?;
        next = logits.iter().map(|l| argmax(l)).collect();
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(heap);
    Ok(Pass {
        encode_s: None,
        prefill_s,
        ttft_s: crate::stats::median(&ttft),
        ttft_max_s: ttft.iter().copied().fold(0.0, f64::max),
        positions: prompts[0].len(),
        batch: b,
        depth: shape.fill_depth,
        decode_ms,
        kv_bytes: sessions
            .iter()
            .map(|s| s.cache.allocated_bytes() as u64)
            .sum(),
        rope_bytes: sessions[0].rope_bytes() as u64,
    })
}

/// The encoder input for an image case, sized for the model's tower.
pub fn image_input(image: &ImageSpec, m: &LoadedModel) -> Result<Tensor> {
    let Some(v) = &m.vision else {
        return Err(no_vision(&m.source));
    };
    let device = m.model.device();
    match image {
        ImageSpec::Synthetic => crate::engine::vision::synthetic_image(v.cfg.image_size, 0, device),
        ImageSpec::File(path) => crate::engine::vision::load_image(path, v.cfg.image_size, device),
    }
}

/// Begin/end-of-image ids: the tokenizer's, else Gemma 3's fixed ids.
fn image_markers(m: &LoadedModel) -> Result<(u32, u32)> {
    let id = |piece: &str, fixed: u32| {
        m.tokenizer
            .as_ref()
            .and_then(|t| t.id_of(piece))
            .unwrap_or(fixed)
    };
    let (boi, eoi) = (id("<start_of_image>", BOI), id("<end_of_image>", EOI));
    let vocab = m.model.cfg.vocab_size;
    if boi as usize >= vocab || eoi as usize >= vocab {
        return Err(Error::BadInput(format!(
            "{}: its vocabulary of {vocab} has no <start_of_image>/<end_of_image> tokens ({boi}/{eoi})",
            m.source
        )));
    }
    Ok((boi, eoi))
}
