//! What llama.cpp allocates for a Gemma 3 model: the KV caches of its iSWA memory, the output
//! buffer and the compute buffer it prints at context creation. The rules follow llama.cpp as
//! llama-cpp-python 0.3.36 vendors it (ggml-org/llama.cpp@0c1e57098); each cites the file and
//! function it comes from, and `docs/engines.md` explains them. The tests below check them
//! against the figures llama.cpp itself printed on this machine
//! (`tests/data/llamacpp/memory-270m.json`, from `scripts/llamacpp_memory.py`).

use candle_core::quantized::GgmlDType;
use serde::Serialize;

use crate::engine::config::Gemma3Config;
use crate::engine::kv_cache::KvPair;
use crate::engine::plan::TensorPlan;

/// The llama.cpp these rules model.
pub const VERSION: &str = "llama.cpp 0c1e57098 (as vendored by llama-cpp-python 0.3.36)";

/// `GGML_PAD(n_ctx, 256)` and the sliding cache's padding (`llama-context.cpp`,
/// `llama-kv-cache-iswa.cpp`).
const PAD: usize = 256;

/// A context's settings, in llama.cpp's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Positions per sequence (gemma-fit's `--ctx`); llama.cpp is given `n_ctx` = ctx × seqs, as
    /// `llama-server -c N -np S` splits N among S sequences.
    pub ctx: usize,
    /// `n_seq_max` (`-np`): sequences served at once.
    pub seqs: usize,
    pub n_batch: usize,
    pub n_ubatch: usize,
    /// `swa_full`: a full-size cache on the sliding-window layers too.
    pub swa_full: bool,
    pub flash_attn: bool,
    pub kv: KvPair,
    /// `kv_unified`: one cache shared by all sequences instead of a stream each (llama-server's
    /// automatic -np). Modelled from the source; the recorded checks are all per-stream.
    pub unified: bool,
}

impl Settings {
    /// `llama_context_default_params()` (`src/llama-context.cpp`), which llama-bench and the
    /// Python binding start from: n_batch 2048, n_ubatch 512, full-size sliding cache, f16
    /// caches, one stream per sequence. (Flash attention is "auto" there, and the binding turns
    /// it off; off is taken here unless a quantized V cache needs it.)
    pub fn library(ctx: usize, seqs: usize, kv: KvPair) -> Self {
        Settings {
            ctx,
            seqs,
            n_batch: 2048,
            n_ubatch: 512,
            swa_full: true,
            flash_attn: kv.v.block().is_some(),
            kv,
            unified: false,
        }
    }
}

/// One of the two caches of llama.cpp's iSWA memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cache {
    pub layers: usize,
    /// Cells per stream.
    pub cells: usize,
    pub streams: usize,
    pub k_bytes: u64,
    pub v_bytes: u64,
}

impl Cache {
    pub fn bytes(&self) -> u64 {
        self.k_bytes + self.v_bytes
    }
}

/// What llama.cpp allocates at context creation (CPU or one device holding every layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub n_ctx: usize,
    pub n_ctx_seq: usize,
    pub n_ubatch: usize,
    /// The global layers' cache ("non-SWA KV cache").
    pub global: Cache,
    /// The sliding-window layers' cache.
    pub swa: Cache,
    /// "output buffer size": one row of logits per sequence.
    pub output: u64,
    /// "compute buffer size": the graph allocator's peak over the reserved prefill graph.
    pub compute: u64,
    /// Which stage sets the compute buffer: "logits" (checked against llama.cpp's log) or
    /// "attention" (modelled from the source, not yet checked against a log).
    pub compute_stage: &'static str,
}

impl Allocation {
    pub fn kv_bytes(&self) -> u64 {
        self.global.bytes() + self.swa.bytes()
    }

    /// Every buffer it prints, weights aside.
    pub fn non_weight(&self) -> u64 {
        self.kv_bytes() + self.output + self.compute
    }
}

fn pad(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// llama.cpp's allocation for `cfg` under `s`, or why it would refuse the settings.
pub fn allocate(cfg: &Gemma3Config, s: &Settings) -> Result<Allocation, String> {
    if s.ctx == 0 || s.seqs == 0 || s.n_ubatch == 0 || s.n_batch == 0 {
        return Err("llama.cpp needs a context, sequences and batch sizes above zero".into());
    }
    // `llama_context::llama_context`: "V cache quantization requires flash_attn".
    if s.kv.v.block().is_some() && !s.flash_attn {
        return Err(format!(
            "llama.cpp refuses a {} V cache without flash attention",
            s.kv.v
        ));
    }
    // `llama_context::llama_context` (src/llama-context.cpp): batch sizes from the unpadded
    // n_ctx, then n_ctx padded to 256 and split into per-sequence streams.
    let requested = s.ctx * s.seqs;
    let n_batch = requested.min(s.n_batch);
    let n_ubatch = n_batch.min(s.n_ubatch);
    let mut n_ctx = pad(requested, PAD);
    let n_ctx_seq = if s.unified {
        n_ctx
    } else {
        let per = pad(n_ctx / s.seqs, PAD);
        n_ctx = per * s.seqs;
        per
    };
    let streams = if s.unified { 1 } else { s.seqs };
    // `llama_kv_cache_iswa::llama_kv_cache_iswa` (src/llama-kv-cache-iswa.cpp).
    let swa_cells = if s.swa_full {
        n_ctx_seq
    } else {
        let seqs = if s.unified { s.seqs } else { 1 };
        pad(n_ctx_seq.min(cfg.sliding_window * seqs + n_ubatch), PAD)
    };
    let globals = cfg.num_global_layers();
    let width = cfg.num_kv_heads * cfg.head_dim;
    // `llama_kv_cache::llama_kv_cache` (src/llama-kv-cache.cpp): per layer a K and a V tensor
    // of [n_embd_k_gqa, cells, streams] (V the same bytes when transposed).
    let cache = |layers: usize, cells: usize| Cache {
        layers,
        cells,
        streams,
        k_bytes: (layers * cells * streams) as u64 * s.kv.k.row_bytes(width) as u64,
        v_bytes: (layers * cells * streams) as u64 * s.kv.v.row_bytes(width) as u64,
    };
    let global = cache(globals, n_ctx_seq);
    let swa = cache(cfg.num_layers - globals, swa_cells);
    // `llama_context::output_reserve(n_seq_max)`: a row of f32 logits per sequence.
    let output = (cfg.vocab_size * 4 * s.seqs) as u64;
    // The compute buffer: `llama_context::sched_reserve` reserves a prefill graph of n_ubatch
    // tokens that outputs every one of them (n_outputs_max defaults to n_batch), attending over
    // the whole cache; ggml-alloc.c keeps the peak. For Gemma 3 the peak is where the output
    // projection writes n_ubatch rows of logits beside the final norm's input and output and the
    // output row ids: n_ubatch × (vocab × 4 + 2 × hidden × 4 + 4) bytes, to the printed
    // 0.0001 MiB on every setting of the 270M measured. Without flash attention a global layer's scores
    // [n_kv, n_ubatch, heads] f32 and the f32 masks of both caches could exceed that on models
    // with more heads at long contexts; that stage is modelled from the source only.
    let outputs = n_ubatch as u64;
    let logits = outputs * (cfg.vocab_size as u64 * 4 + 2 * cfg.hidden_size as u64 * 4 + 4);
    let mask_bytes = if s.flash_attn { 2 } else { 4 };
    let tokens_per_stream = (n_ubatch / streams).max(1) as u64;
    let masks = (n_ctx_seq + swa_cells) as u64 * tokens_per_stream * streams as u64 * mask_bytes;
    let scores = if s.flash_attn {
        0
    } else {
        n_ctx_seq as u64 * tokens_per_stream * cfg.num_heads as u64 * 4 * streams as u64
    };
    let attention = masks + scores;
    let (compute, compute_stage) = if attention > logits {
        (attention, "attention")
    } else {
        (logits, "logits")
    };
    Ok(Allocation {
        n_ctx,
        n_ctx_seq,
        n_ubatch,
        global,
        swa,
        output,
        compute,
        compute_stage,
    })
}

/// The metadata before a Gemma 3 GGUF's tensor data (its 262,144-piece vocabulary with scores
/// and types, the tensor index): 6,525,120 bytes in the default 270M file. llama.cpp maps the
/// whole file.
pub const GGUF_HEADER_BYTES: u64 = 6_525_120;

/// What llama.cpp builds on the host per vocabulary token (token texts, the text-to-id map, the
/// piece cache of `llama_vocab`, the parsed metadata during the load): measured, not derived —
/// the load's peak RSS less the mapped file, the repacked copies and the KV caches was 39.8 to
/// 42.2 MiB over 36 settings of the 270M (262,144 tokens; the rest is the cells below).
pub const VOCAB_BYTES_PER_TOKEN: u64 = 158;

/// Host bytes per KV cell (`llama_kv_cells`: position, shift and a 256-bit set of sequences).
pub const CELL_BYTES: u64 = 40;

/// Whether llama.cpp's CPU backend copies a matrix of `t` with `rows` output rows into its
/// CPU_REPACK buffer on an x86-64 CPU with AVX2 (`ggml/src/ggml-cpu/repack.cpp`,
/// `ggml_repack_get_optimal_repack_type`: Q4_0 and Q4_K in 8-row groups; IQ4_NL and MXFP4 too,
/// which Gemma 3 files do not use). The token embedding is read by row lookups, which the
/// repacked layout does not serve, so it stays mapped (and with it a tied output projection).
pub fn repacked_on_x86(t: &TensorPlan) -> bool {
    matches!(t.file_type, GgmlDType::Q4_0 | GgmlDType::Q4K)
        && t.shape.len() == 2
        && t.shape[0].is_multiple_of(8)
        && !t.name.starts_with("token_embd")
}

/// What becomes resident when llama.cpp runs a prompt on the CPU (the allocations above are
/// reservations: pages count only once written), beside the process's own baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resident {
    /// The whole GGUF file: llama.cpp maps it and reads it in at load (weights and header).
    pub file: u64,
    /// CPU_REPACK copies of the matrices repacked at load ([`repacked_on_x86`]).
    pub repacked: u64,
    /// Both caches, which llama.cpp clears (writes) when it makes them, plus their cells.
    pub kv: u64,
    /// The vocabulary and model state on the host ([`VOCAB_BYTES_PER_TOKEN`]).
    pub vocab: u64,
    /// The output buffer's rows (one per sequence, written every step).
    pub output: u64,
    /// The part of the compute buffer a prompt's micro-batches write: per token the FFN's gate,
    /// up and activation rows, three hidden-width rows and the query and attention output, plus
    /// a logits row per sequence — not the n_ubatch rows of logits the buffer is sized for.
    pub compute: u64,
}

impl Resident {
    pub fn total(&self) -> u64 {
        self.file + self.repacked + self.kv + self.vocab + self.output + self.compute
    }
}

/// [`Resident`] for `cfg` under `s` (allocated as `a`) with the file's `tensors` (their stored
/// types) and `header` bytes of metadata before them ([`GGUF_HEADER_BYTES`] for a preset), for
/// prompts of `prompt_tokens` prefilled `n_batch` at a time.
pub fn resident(
    cfg: &Gemma3Config,
    s: &Settings,
    a: &Allocation,
    tensors: &[TensorPlan],
    header: u64,
    prompt_tokens: usize,
) -> Resident {
    let data: u64 = tensors.iter().map(|t| t.file_bytes).sum();
    let repacked = tensors
        .iter()
        .filter(|t| repacked_on_x86(t))
        .map(|t| t.file_bytes)
        .sum();
    let cells = (a.global.cells * a.global.streams + a.swa.cells * a.swa.streams) as u64;
    let tokens = prompt_tokens.min(a.n_ubatch).max(1) as u64;
    let per_token = 4
        * (3 * cfg.intermediate_size + 3 * cfg.hidden_size + 2 * cfg.num_heads * cfg.head_dim)
            as u64;
    Resident {
        file: header + data,
        repacked,
        kv: a.kv_bytes() + cells * CELL_BYTES,
        vocab: cfg.vocab_size as u64 * VOCAB_BYTES_PER_TOKEN,
        output: a.output,
        compute: tokens * per_token + (s.seqs * cfg.vocab_size * 4) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv_cache::KvDtype;

    const MIB: f64 = 1024.0 * 1024.0;

    /// Every setting llama.cpp itself was run with on the default 270M (n_ctx 5000, 8192 and
    /// 32768 over 1 and 4 sequences, sliding cache full and not, ubatch 256, 512 and 1024, f16
    /// with and without flash attention, q8_0 with): the cells of both caches, and every buffer
    /// to the digits llama.cpp prints.
    #[test]
    fn reproduces_what_llama_cpp_printed() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/llamacpp/memory-270m.json"
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cfg = crate::estimate::preset("270m").unwrap().config;
        let settings = file["settings"].as_array().unwrap();
        assert!(settings.len() >= 100, "{} settings", settings.len());
        for r in settings {
            let n = |k: &str| r[k].as_u64().unwrap() as usize;
            let t = |k: &str| r[k].as_str().unwrap().parse::<KvDtype>().unwrap();
            let s = Settings {
                ctx: n("n_ctx") / n("n_seq"),
                seqs: n("n_seq"),
                n_batch: 2048,
                n_ubatch: n("n_ubatch"),
                swa_full: r["swa_full"] == "1",
                flash_attn: r["flash_attn"] == "on",
                kv: KvPair {
                    k: t("type_k"),
                    v: t("type_v"),
                },
                unified: false,
            };
            let a = allocate(&cfg, &s).unwrap();
            let printed = |v: &serde_json::Value| v.as_f64().unwrap();
            let close = |bytes: u64, v: &serde_json::Value, digits: i32| {
                (bytes as f64 / MIB - printed(v)).abs() <= 0.5 * 10f64.powi(-digits) + 1e-9
            };
            let at = format!("{s:?}");
            assert_eq!(a.n_ctx_seq, n("n_ctx_seq"), "{at}");
            assert_eq!(
                a.global.cells,
                r["cells"]["global"].as_u64().unwrap() as usize,
                "{at}"
            );
            assert_eq!(
                a.swa.cells,
                r["cells"]["swa"].as_u64().unwrap() as usize,
                "{at}"
            );
            assert!(close(a.global.bytes(), &r["kv_mib"]["global"], 2), "{at}");
            assert!(close(a.swa.bytes(), &r["kv_mib"]["swa"], 2), "{at}");
            assert!(close(a.output, &r["output_mib"], 2), "{at}");
            assert!(
                close(a.compute, &r["compute_mib"], 4),
                "{at}: {}",
                a.compute
            );
        }
    }

    #[test]
    fn refuses_what_llama_cpp_refuses() {
        let cfg = crate::estimate::preset("270m").unwrap().config;
        let q8 = KvPair::both(KvDtype::Q8_0);
        let s = Settings {
            flash_attn: false,
            ..Settings::library(4096, 1, q8)
        };
        assert!(allocate(&cfg, &s)
            .unwrap_err()
            .contains("q8_0 V cache without flash attention"));
        assert!(allocate(&cfg, &Settings::library(4096, 1, q8)).is_ok());
        assert!(allocate(&cfg, &Settings::library(0, 1, q8)).is_err());
    }
}
