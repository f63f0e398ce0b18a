//! Greedy generation.

use crate::engine::kv_cache::KvPair;

use crate::engine::load::LoadedModel;
use crate::error::Result;

/// The id of the largest logit (the first of equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy generation: returns the generated ids (stops at an end-of-sequence token).
pub fn generate(
    m: &LoadedModel,
    prompt: &[u32],
    max_tokens: usize,
    prefill_chunk: usize,
    kv: KvPair,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    let mut session = m.model.session(prompt.len() + max_tokens, kv)?;
    let stop: Vec<u32> = match &m.tokenizer {
        Some(t) => [t.eos_id, t.id_of("<end_of_turn>")]
            .into_iter()
            .flatten()
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(max_tokens);
    if max_tokens == 0 {
        return Ok(out);
    }
    let mut logits = m.model.prefill(prompt, prefill_chunk, &mut session)?;
    loop {
        let next = argmax(&logits);
        out.push(next);
        on_token(next);
        if stop.contains(&next) || out.len() >= max_tokens {
            return Ok(out);
        }
        logits = m.model.forward(&[next], &mut session)?;
    }
}
