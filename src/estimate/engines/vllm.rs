//! What vLLM (V1 engine, CUDA) does with a card for a Gemma 3 model, as vLLM v0.13.0 does it:
//! it takes `gpu_memory_utilization` of the card, loads the weights, profiles one forward pass of
//! `max_num_batched_tokens` tokens, and carves the rest into KV blocks shared by its hybrid
//! allocator's groups, where a sliding-window layer needs only window + batch tokens per request.
//! It then reports the tokens the cache holds and how many requests of `max_model_len` fit at
//! once. Sources (tag v0.13.0): `vllm/v1/core/kv_cache_utils.py` (grouping
//! `_get_kv_cache_groups_uniform_page_size`, `get_num_blocks`, `_report_kv_cache_config`,
//! `get_max_concurrency_for_kv_cache_config`), `vllm/v1/kv_cache_interface.py`
//! (`page_size_bytes`, `max_memory_usage_bytes` of full and sliding specs),
//! `vllm/v1/worker/gpu_worker.py` (`determine_available_memory`). `docs/engines.md` explains
//! them; the tests reproduce two published vLLM logs of Gemma 3 models.

use serde::Serialize;

use crate::engine::config::Gemma3Config;

/// The vLLM these rules model.
pub const VERSION: &str = "vLLM v0.13.0 (V1 engine)";

/// `CacheConfig.block_size` on CUDA (`vllm/platforms/cuda.py`).
pub const BLOCK: usize = 16;

/// `gpu_memory_utilization`'s default.
pub const DEFAULT_GPU_UTIL: f64 = 0.9;

/// `max_num_batched_tokens` of `vllm serve` on a card under 70 GiB (or an A100); 8192 above
/// (`EngineArgs._set_default_args`, v0.13.0). The offline `LLM` class uses 8192 / 16384.
pub fn default_batched_tokens(total_bytes: u64) -> usize {
    if total_bytes >= 70 << 30 {
        8192
    } else {
        2048
    }
}

/// The KV cache vLLM makes of `available` bytes for `cfg` (one GPU, no tensor parallelism).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KvCache {
    /// Bytes of one block of one layer: 2 × block × kv heads × head dim × dtype bytes.
    pub page_bytes: u64,
    /// Layers per group (the fewest layers of any attention type) and the groups (per type,
    /// its layers over the group size, rounded up: the padding layers vLLM warns about).
    pub group_size: usize,
    pub groups: usize,
    pub padding_layers: usize,
    pub num_blocks: u64,
    /// "GPU KV cache size: N tokens".
    pub tokens: u64,
    /// Blocks one request of `max_model_len` tokens needs over all groups.
    pub blocks_per_request: u64,
    /// "Maximum concurrency for L tokens per request: C x".
    pub max_concurrency: f64,
}

/// vLLM's KV cache for `available` bytes: `max_model_len` per request, `batched` the
/// `max_num_batched_tokens`, `dtype_bytes` the cache type's width (bf16: 2).
pub fn kv_cache(
    cfg: &Gemma3Config,
    available: u64,
    max_model_len: usize,
    batched: usize,
    dtype_bytes: usize,
) -> KvCache {
    let page_bytes = (2 * BLOCK * cfg.num_kv_heads * cfg.head_dim * dtype_bytes) as u64;
    let full = cfg.num_global_layers();
    let sliding = cfg.num_layers - full;
    // `_get_kv_cache_groups_uniform_page_size`: the group size is the fewest layers of a type
    // (the most, if that is within 1.25× of the fewest); each type fills whole groups.
    let (lo, hi) = (full.min(sliding), full.max(sliding));
    let group_size = if lo == 0 || (hi as f64) < 1.25 * lo as f64 {
        hi
    } else {
        lo
    };
    let groups_of = |n: usize| n.div_ceil(group_size);
    let padding_layers = [full, sliding]
        .iter()
        .filter(|&&n| n > 0 && n % group_size != 0)
        .map(|&n| group_size - n % group_size)
        .sum();
    let (full_groups, sliding_groups) = (groups_of(full), groups_of(sliding));
    let groups = full_groups + sliding_groups;
    // `get_num_blocks`: group_size tensors of page × blocks share the memory.
    let num_blocks = available / page_bytes / group_size as u64;
    // `_report_kv_cache_config`.
    let tokens = num_blocks / groups as u64 * BLOCK as u64;
    // `max_memory_usage_bytes` per spec, in blocks: a full layer holds the whole request, a
    // sliding one window − 1 + a batch of tokens and one block more.
    let full_blocks = max_model_len.div_ceil(BLOCK) as u64;
    let window_tokens = (cfg.sliding_window - 1 + batched).min(max_model_len);
    let sliding_blocks = window_tokens.div_ceil(BLOCK) as u64 + 1;
    let blocks_per_request =
        full_groups as u64 * full_blocks + sliding_groups as u64 * sliding_blocks;
    KvCache {
        page_bytes,
        group_size,
        groups,
        padding_layers,
        num_blocks,
        tokens,
        blocks_per_request,
        max_concurrency: num_blocks as f64 / blocks_per_request as f64,
    }
}

/// The peak of vLLM's profiling forward pass (`profile_run`: a dummy batch of
/// `max_num_batched_tokens` tokens, then the sampler over `max_num_seqs` rows of logits) —
/// modelled, not measured: per token the residual stream, the query/key/value and MLP
/// activations in bf16 at one layer, and the sampler's f32 logits. vLLM measures this on the card
/// (`memory_profiling`); the figure here stands in for that measurement.
pub fn activation_peak(cfg: &Gemma3Config, batched: usize, max_num_seqs: usize) -> u64 {
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let per_token = 2 * (4 * cfg.hidden_size + q + 2 * kv + 3 * cfg.intermediate_size) as u64;
    let logits = (max_num_seqs.min(batched) * cfg.vocab_size * 4 * 2) as u64;
    batched as u64 * per_token + logits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(size: &str) -> Gemma3Config {
        crate::engine::presets::find(size).unwrap().config
    }

    /// Gemma 3 1B on vLLM v0.13.0 (https://github.com/eole-nlp/eole,
    /// benchmarks/genai/results.md; max_model_len 2048, bf16, max_num_batched_tokens 8192):
    ///
    ///   [gpu_worker.py:375] Available KV cache memory: 25.39 GiB
    ///   [kv_cache_utils.py:1033] Add 2 padding layers, may waste at most 9.09% KV cache memory
    ///   [kv_cache_utils.py:1291] GPU KV cache size: 950,864 tokens
    ///   [kv_cache_utils.py:1296] Maximum concurrency for 2,048 tokens per request: 461.21x
    ///
    /// The printed 25.39 GiB is rounded; 416,008 blocks' worth (27,263,500,288 bytes, which
    /// prints as 25.39) reproduces both lines (so do the two neighbours, not the whole interval).
    #[test]
    fn reproduces_a_published_gemma_3_1b_log() {
        let available = 416_008 * 4 * 16_384;
        assert_eq!(
            format!("{:.2}", available as f64 / (1u64 << 30) as f64),
            "25.39"
        );
        let k = kv_cache(&cfg("1b"), available, 2048, 8192, 2);
        assert_eq!(k.page_bytes, 16_384);
        assert_eq!((k.group_size, k.groups, k.padding_layers), (4, 7, 2));
        assert_eq!(
            format!("{:.2}", 100.0 * k.padding_layers as f64 / 22.0),
            "9.09"
        );
        assert_eq!(k.tokens, 950_864);
        assert_eq!(format!("{:.2}", k.max_concurrency), "461.21");
    }

    /// Gemma 3 27B on vLLM 0.11.0rc2 (ROCm; https://github.com/TaintsAndTokenizersInc/
    /// vllm_multimodal_rocm_examples, example_logs.md; max_model_len 4096, bf16, 8192 batched):
    ///
    ///   Available KV cache memory: 109.86 GiB
    ///   Add 8 padding layers, may waste at most 15.38% KV cache memory
    ///   GPU KV cache size: 205,696 tokens
    ///   Maximum concurrency for 4,096 tokens per request: 50.05x
    ///   ... num_gpu_blocks is: 89994
    ///
    /// The block count is printed, so every line follows from it exactly.
    #[test]
    fn reproduces_a_published_gemma_3_27b_log() {
        let c = cfg("27b");
        let page = (2 * BLOCK * c.num_kv_heads * c.head_dim * 2) as u64;
        let k = kv_cache(&c, 89_994 * 10 * page, 4096, 8192, 2);
        assert_eq!(k.num_blocks, 89_994);
        assert_eq!(
            format!(
                "{:.2}",
                (k.num_blocks * 10 * page) as f64 / (1u64 << 30) as f64
            ),
            "109.86"
        );
        assert_eq!(k.padding_layers, 8);
        assert_eq!(
            format!("{:.2}", 100.0 * k.padding_layers as f64 / 52.0),
            "15.38"
        );
        assert_eq!(k.tokens, 205_696);
        assert_eq!(format!("{:.2}", k.max_concurrency), "50.05");
    }
}
