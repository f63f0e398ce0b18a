//! What Ollama allocates for a Gemma 3 model. Since v0.30.0 Ollama serves GGUF models with
//! llama.cpp's own `llama-server`, started with `-c <num_ctx × num_parallel> -np <num_parallel>
//! -b <num_batch> -ub <num_batch> --flash-attn auto` and the cache type of
//! `OLLAMA_KV_CACHE_TYPE` (`llm/llama_server.go` at v0.33): so its memory is llama.cpp's
//! ([`super::llamacpp`]) with Ollama's defaults, which are what this module holds: num_ctx by
//! the card's memory (`server/routes.go`), one sequence (`OLLAMA_NUM_PARALLEL`), num_batch 512,
//! flash attention on where every device supports it (CPU and CUDA do). Ollama ships its own
//! llama.cpp build; the rules are those of the pinned llama.cpp (`docs/engines.md`).
//!
//! The published Gemma 3 logs of Ollama come from its earlier engines (v0.6–v0.12); their KV
//! figures are the same cells at one sequence, which the tests check against them.

use super::llamacpp::Settings;
use crate::engine::kv_cache::KvPair;

/// The Ollama these defaults are read from.
pub const VERSION: &str = "Ollama v0.33 (llama-server; llama.cpp rules of 0c1e57098)";

/// `num_batch`'s default (`api/types.go`), passed as both -b and -ub.
pub const NUM_BATCH: usize = 512;

/// The context Ollama gives a model when neither the request nor `OLLAMA_CONTEXT_LENGTH` sets
/// one: by the total memory of the GPUs (`server/routes.go`): 47 GiB and more → 262,144,
/// 23 GiB and more → 32,768, otherwise (and on the CPU) 4,096; at most the model's own.
pub fn default_num_ctx(gpu_total_bytes: Option<u64>, max_position: usize) -> usize {
    let ctx = match gpu_total_bytes {
        Some(t) if t >= 47 << 30 => 262_144,
        Some(t) if t >= 23 << 30 => 32_768,
        _ => 4_096,
    };
    ctx.min(max_position)
}

/// llama.cpp's settings for an Ollama model of `num_ctx` positions per sequence, `num_parallel`
/// sequences and `kv` (OLLAMA_KV_CACHE_TYPE).
pub fn settings(num_ctx: usize, num_parallel: usize, kv: KvPair) -> Settings {
    Settings {
        ctx: num_ctx,
        seqs: num_parallel,
        n_batch: NUM_BATCH,
        n_ubatch: NUM_BATCH,
        swa_full: false,
        flash_attn: true,
        kv,
        unified: false,
    }
}

/// Ollama's way of printing a size (`format/bytes.go: HumanBytes2`): binary units, one decimal.
pub fn human_bytes2(b: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match b {
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= KIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv_cache::KvDtype;
    use crate::estimate::engines::llamacpp::allocate;

    fn kv_line(size: &str, num_ctx: usize) -> String {
        let cfg = crate::estimate::preset(size).unwrap().config;
        let a = allocate(&cfg, &settings(num_ctx, 1, KvPair::both(KvDtype::F16))).unwrap();
        human_bytes2(a.kv_bytes())
    }

    /// Gemma 3 4B on the CPU, Ollama v0.12.x (https://github.com/ollama/ollama/issues/12303,
    /// 2025-09-25; its Go engine sizes the sliding layers' cache as window + num_batch cells, the
    /// cells llama.cpp gives one sequence):
    ///
    ///   level=INFO source=backend.go:326 msg="kv cache" device=CPU size="334.0 MiB"
    ///
    /// num_ctx 8192 (the only context that prints this: 4096, the default then, gives 254.0 MiB).
    #[test]
    fn reproduces_a_published_kv_cache_line() {
        assert_eq!(kv_line("4b", 8192), "334.0 MiB");
        assert_eq!(kv_line("4b", 4096), "254.0 MiB");
    }

    /// Gemma 3 12B, Ollama 0.6.6 (https://github.com/ollama/ollama/issues/10341, 2025-04-24;
    /// OLLAMA_CONTEXT_LENGTH 2048, f16), its load estimate's KV line:
    ///
    ///   msg=offload library=cuda ... memory.required.kv="608.0 MiB"
    ///
    /// 8 global layers × 2048 cells + 40 sliding × (1024 + 512), 8 KiB each.
    #[test]
    fn reproduces_a_published_kv_estimate() {
        assert_eq!(kv_line("12b", 2048), "608.0 MiB");
    }

    #[test]
    fn defaults_follow_the_card() {
        assert_eq!(default_num_ctx(None, 131_072), 4096);
        assert_eq!(default_num_ctx(Some(24 << 30), 131_072), 32_768);
        assert_eq!(default_num_ctx(Some(80 << 30), 131_072), 131_072);
        assert_eq!(default_num_ctx(Some(80 << 30), 32_768), 32_768);
        assert_eq!(human_bytes2(1_375_731_712), "1.3 GiB");
        assert_eq!(human_bytes2(512), "512 B");
    }
}
