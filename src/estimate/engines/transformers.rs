//! What Hugging Face transformers allocates for a Gemma 3 model's cache in `generate()`, as
//! transformers 4.51.3 does it: Gemma 3's generation config asks for `cache_implementation =
//! "hybrid"`, so `generate()` builds a `HybridCache` (`generation/utils.py:
//! _prepare_cache_for_generation`, `cache_utils.py: HybridCache.__init__`) of `max_length − 1`
//! positions, allocated whole before the first token: a global layer holds all of them, a
//! sliding-window layer min(window, max_cache_len); `cache_implementation="static"` gives every
//! layer all of them (`StaticCache`). Shapes [batch, kv heads, positions, head dim] in the
//! model's dtype. (Later releases — 4.57 and 5.x — build a `DynamicCache` instead, which grows
//! with the tokens and keeps window − 1 positions on sliding layers: `docs/engines.md`.)

use serde::Serialize;

use crate::engine::config::{Gemma3Config, LayerKind};

/// The transformers these rules model.
pub const VERSION: &str = "transformers 4.51.3";

/// Which cache `generate()` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CacheKind {
    /// Gemma 3's default: sliding layers hold at most the window.
    Hybrid,
    /// `cache_implementation="static"`: every layer holds the whole length.
    Static,
}

/// Bytes of each layer's K (and as many of V) for a cache of `max_cache_len` positions.
pub fn layer_k_bytes(
    cfg: &Gemma3Config,
    kind: CacheKind,
    batch: usize,
    max_cache_len: usize,
    dtype_bytes: usize,
) -> Vec<u64> {
    (0..cfg.num_layers)
        .map(|i| {
            let len = match (kind, cfg.layer_kind(i)) {
                (CacheKind::Hybrid, LayerKind::Sliding) => cfg.sliding_window.min(max_cache_len),
                _ => max_cache_len,
            };
            (batch * cfg.num_kv_heads * len * cfg.head_dim * dtype_bytes) as u64
        })
        .collect()
}

/// The whole cache (K and V of every layer).
pub fn cache_bytes(
    cfg: &Gemma3Config,
    kind: CacheKind,
    batch: usize,
    max_cache_len: usize,
    dtype_bytes: usize,
) -> u64 {
    2 * layer_k_bytes(cfg, kind, batch, max_cache_len, dtype_bytes)
        .iter()
        .sum::<u64>()
}

/// The prompt's forward pass, modelled (not measured): transformers runs a prompt in one pass,
/// and Gemma 3's eager attention (its recommended implementation) writes a global layer's
/// scores [batch, heads, prompt, cache] beside the MLP's two intermediate rows per token; the
/// logits of the last position only, in f32.
pub fn prefill_peak(
    cfg: &Gemma3Config,
    batch: usize,
    prompt: usize,
    max_cache_len: usize,
    dtype_bytes: usize,
) -> u64 {
    let scores = (batch * cfg.num_heads * prompt * max_cache_len * dtype_bytes) as u64;
    let mlp = (batch * prompt * 2 * cfg.intermediate_size * dtype_bytes) as u64;
    let logits = (batch * cfg.vocab_size * 4) as u64;
    scores.max(mlp) + logits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3 1B through outlines 0.2 and transformers 4.50/4.51
    /// (https://github.com/dottxt-ai/outlines/issues/1554, 2025-04-23: "tries to allocate 1024.00
    /// GiB of memory"): outlines asks for 2^30 new tokens, the model loads in float32, and the
    /// HybridCache's first global layer (layer 5) asks for a K tensor of
    /// (prompt + 2^30 − 1) positions × 256 × 4 bytes, which PyTorch prints as "1024.00 GiB" —
    /// after five sliding layers of 512 KiB each.
    #[test]
    fn reproduces_a_published_allocation() {
        let cfg = crate::engine::presets::find("1b").unwrap().config;
        let prompt = 40;
        let k = layer_k_bytes(&cfg, CacheKind::Hybrid, 1, prompt + (1 << 30) - 1, 4);
        assert!(k[..5].iter().all(|&b| b == 512 << 10), "{:?}", &k[..5]);
        assert_eq!(
            format!("{:.2} GiB", k[5] as f64 / (1u64 << 30) as f64),
            "1024.00 GiB"
        );
    }

    #[test]
    fn a_static_cache_holds_every_layer_whole() {
        let cfg = crate::engine::presets::find("270m").unwrap().config;
        let hybrid = cache_bytes(&cfg, CacheKind::Hybrid, 1, 32_767, 2);
        let full = cache_bytes(&cfg, CacheKind::Static, 1, 32_767, 2);
        // 3 global layers of 32,767 positions + 15 sliding of 512, K and V, 256 × 2 bytes each.
        assert_eq!(hybrid, 2 * (3 * 32_767 + 15 * 512) * 512);
        assert_eq!(full, 2 * 18 * 32_767 * 512);
    }
}
