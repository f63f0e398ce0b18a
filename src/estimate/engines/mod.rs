//! How the engines people deploy would allocate a Gemma 3 model, beside gemma-fit's own plan:
//! one profile per engine (`llamacpp.rs`, `ollama.rs`, `vllm.rs`, `transformers.rs`), each
//! pinned to the version whose source it follows (`docs/engines.md`) and tested against what
//! that engine printed. Here: `fit --engine`'s tables, llama.cpp's in its own buffers, every
//! engine's as a [`Figure`] (weights, KV, compute, the rest) for `--engine all`.

pub mod llamacpp;
pub mod ollama;
pub mod transformers;
pub mod vllm;

use serde::Serialize;

use crate::engine::kv_cache::KvPair;
use crate::engine::load::format::Format;
use crate::error::{Error, Result};
use crate::estimate::fit::{model_rows, Capacity, ModelRow, Request, Verdict};
use crate::estimate::{Target, CUDA_CONTEXT_BYTES};
use crate::output::table::Table;
use crate::output::Format as Output;
use crate::units::{ctx_label, mib};

/// An engine whose allocation `fit` predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// gemma-fit's own plan.
    #[value(name = "gemma-fit")]
    GemmaFit,
    /// llama.cpp 0c1e57098 (as llama-cpp-python 0.3.36 vendors it).
    #[value(name = "llama.cpp")]
    LlamaCpp,
    /// Ollama v0.33: llama-server with Ollama's defaults.
    Ollama,
    /// vLLM v0.13.0 (V1 engine, CUDA).
    Vllm,
    /// transformers 4.51.3 generate().
    Transformers,
    /// Every engine side by side.
    All,
}

impl Engine {
    /// The engines `all` sets side by side, in its order.
    pub const EACH: [Engine; 5] = [
        Engine::GemmaFit,
        Engine::LlamaCpp,
        Engine::Ollama,
        Engine::Vllm,
        Engine::Transformers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Engine::GemmaFit => "gemma-fit",
            Engine::LlamaCpp => "llama.cpp",
            Engine::Ollama => "ollama",
            Engine::Vllm => "vllm",
            Engine::Transformers => "transformers",
            Engine::All => "all",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Engine::GemmaFit => concat!("gemma-fit ", env!("CARGO_PKG_VERSION")),
            Engine::LlamaCpp => llamacpp::VERSION,
            Engine::Ollama => ollama::VERSION,
            Engine::Vllm => vllm::VERSION,
            Engine::Transformers => transformers::VERSION,
            Engine::All => "",
        }
    }
}

/// The engine options of `fit` that change what an engine allocates.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// llama.cpp's settings (its context and K/V types replaced per cell).
    pub llamacpp: llamacpp::Settings,
    /// vLLM's gpu_memory_utilization.
    pub gpu_util: f64,
    pub tf_cache: transformers::CacheKind,
}

/// One model × format × KV types × context under llama.cpp.
#[derive(Debug, Clone, Serialize)]
pub struct LlamaCppCell {
    pub engine: &'static str,
    pub version: &'static str,
    pub model: String,
    pub quant: String,
    pub ctx: usize,
    pub settings: llamacpp::Settings,
    pub allocation: llamacpp::Allocation,
    /// The weights as the GGUF file holds them (llama.cpp maps or uploads them as stored).
    pub weights_bytes: u64,
    /// With `--image`: the vision projector file (mmproj) in f16, inside `weights_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmproj_bytes: Option<u64>,
    /// The CUDA context on a GPU (gemma-fit's figure, not llama.cpp's: see `fit`'s notes), 0 on
    /// the CPU.
    pub runtime_bytes: u64,
    pub predicted_bytes: u64,
    pub verdict: &'static str,
    /// On the CPU: what becomes resident for a prompt of `--prefill-chunk` tokens (the process's
    /// own baseline left out), to set beside peak RSS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident: Option<llamacpp::Resident>,
}

/// llama.cpp's figures for every cell of `req` with `base`'s settings (its context and K/V
/// types replaced by each cell's). A setting llama.cpp refuses (a quantized V cache without
/// flash attention, a model that is not a GGUF) is an error naming it.
pub fn llamacpp_table(
    req: &Request,
    cap: &Capacity,
    base: llamacpp::Settings,
) -> Result<Vec<LlamaCppCell>> {
    let mut cells = Vec::new();
    for c in self::cells(req)? {
        let s = llamacpp::Settings {
            ctx: c.ctx,
            kv: c.kv,
            ..base
        };
        cells.push(llamacpp_cell(&c.model, s, req, cap)?.map_err(Error::BadInput)?);
    }
    Ok(cells)
}

/// llama.cpp's figures for `m` under `s`, or (inner Err) why llama.cpp would not run it.
fn llamacpp_cell(
    m: &ModelRow,
    s: llamacpp::Settings,
    req: &Request,
    cap: &Capacity,
) -> Result<std::result::Result<LlamaCppCell, String>> {
    if m.file.as_ref().is_some_and(|f| !f.is_gguf()) {
        return Ok(Err(format!(
            "{}: llama.cpp loads GGUF files, not a Hugging Face folder (its convert_hf_to_gguf.py converts one)",
            m.model
        )));
    }
    let cfg = m.config()?;
    let a = match llamacpp::allocate(&cfg, &s) {
        Ok(a) => a,
        Err(why) => return Ok(Err(why)),
    };
    let mmproj = match mmproj_bytes(m, req) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let tensors = m.tensors(false)?;
    let weights = tensors.iter().map(|t| t.file_bytes).sum::<u64>() + mmproj.unwrap_or(0);
    let header = m
        .file
        .as_ref()
        .map_or(llamacpp::GGUF_HEADER_BYTES, |f| f.header_bytes());
    let runtime = match cap.target {
        Target::Cuda => CUDA_CONTEXT_BYTES,
        Target::Cpu => 0,
    };
    let total = weights + a.non_weight() + runtime;
    Ok(Ok(LlamaCppCell {
        engine: "llama.cpp",
        version: llamacpp::VERSION,
        model: m.model.clone(),
        quant: m.quant_label.clone(),
        ctx: s.ctx,
        settings: s,
        allocation: a,
        weights_bytes: weights,
        mmproj_bytes: mmproj,
        runtime_bytes: runtime,
        predicted_bytes: total,
        verdict: Verdict::of(total, cap.total_bytes).name(),
        resident: (cap.target == Target::Cpu)
            .then(|| llamacpp::resident(&cfg, &s, &a, &tensors, header, req.rows)),
    }))
}

/// The cells as a table (MiB, with the buffers llama.cpp prints) or JSON.
pub fn render_llamacpp(
    cells: &[LlamaCppCell],
    cap: &Capacity,
    base: &llamacpp::Settings,
    format: Output,
) -> Result<String> {
    if format == Output::Json {
        return Ok(serde_json::to_string_pretty(cells)? + "\n");
    }
    let mut t = Table::new([
        "model",
        "quant",
        "kv",
        "ctx",
        "seqs",
        "weights",
        "KV global",
        "KV SWA",
        "compute",
        "output",
        "total",
        "resident",
        "verdict",
    ]);
    for c in cells {
        let a = &c.allocation;
        let kv = |x: &llamacpp::Cache| format!("{:.2} ({} cells)", mib(x.bytes()), x.cells);
        t.row([
            c.model.clone(),
            c.quant.clone(),
            c.settings.kv.to_string(),
            ctx_label(c.ctx),
            c.settings.seqs.to_string(),
            format!("{:.1}", mib(c.weights_bytes)),
            kv(&a.global),
            kv(&a.swa),
            format!(
                "{:.2}{}",
                mib(a.compute),
                if a.compute_stage == "attention" {
                    "*"
                } else {
                    ""
                }
            ),
            format!("{:.2}", mib(a.output)),
            format!("{:.1}", mib(c.predicted_bytes)),
            c.resident
                .map_or("-".into(), |r| format!("{:.1}", mib(r.total()))),
            c.verdict.to_string(),
        ]);
    }
    if format == Output::Csv {
        return t.csv();
    }
    let mut out = format!(
        "{} on {} ({:.1} GiB): MiB as llama.cpp allocates them; swa_full {}, n_ubatch {}, n_batch {}, flash attention {}\n",
        llamacpp::VERSION,
        cap.name,
        crate::units::gib(cap.total_bytes),
        if base.swa_full { "on" } else { "off" },
        base.n_ubatch,
        base.n_batch,
        if base.flash_attn { "on" } else { "off" },
    );
    out.push_str(&t.render(format)?);
    out.push('\n');
    out.push_str(
        "  compute: n_ubatch rows of logits and the final norm's rows (checked against llama.cpp's log on the 270M); \
         * marks cells where attention scores and masks are larger (modelled from its source, not yet checked)\n",
    );
    if let Some(b) = cells.iter().find_map(|c| c.mmproj_bytes) {
        out.push_str(&format!(
            "  weights include the vision projector file (mmproj, f16: {:.1} MiB); the image encoder's compute buffer is not modelled\n",
            mib(b)
        ));
    }
    if cap.target == Target::Cpu {
        out.push_str(
            "  resident: what a prompt of --prefill-chunk tokens leaves in RSS: the mapped file, CPU_REPACK copies, the cleared caches, vocabulary state, the rows the run writes (the process's own baseline not included; docs/engines.md)\n",
        );
    }
    if cap.target == Target::Cuda {
        out.push_str(&format!(
            "  total includes a CUDA context of {:.0} MiB (gemma-fit's estimate, not measured for llama.cpp)\n",
            mib(CUDA_CONTEXT_BYTES)
        ));
    }
    Ok(out)
}

/// One engine's figure for one model × format × KV types × context (`fit --engine all`, and
/// the table of Ollama, vLLM and transformers): what it holds by part, or why it cannot run it.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub engine: &'static str,
    pub version: &'static str,
    pub model: String,
    pub quant: String,
    pub kv: String,
    pub ctx: usize,
    pub seqs: usize,
    /// The engine's settings behind the figure.
    pub settings: serde_json::Value,
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    /// Activations: gemma-fit's workspace, llama.cpp's compute buffer, vLLM's profiled peak,
    /// transformers' prompt pass.
    pub compute_bytes: u64,
    /// The rest: output buffers, RoPE tables, the process or CUDA context.
    pub other_bytes: u64,
    /// What the engine holds: for vLLM its whole budget (it takes gpu_util of the card).
    pub predicted_bytes: u64,
    /// fits, tight, does_not_fit, or n/a.
    pub verdict: &'static str,
    /// vLLM: requests of `ctx` positions its cache holds at once ("Maximum concurrency").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<f64>,
    /// Why the engine cannot run this cell, or what the figure leaves out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One model × format × KV types × context, for `seqs` sequences.
struct Cell {
    model: ModelRow,
    kv: KvPair,
    ctx: usize,
    seqs: usize,
}

/// The cells of `req` (contexts past a model's longest left out).
fn cells(req: &Request) -> Result<Vec<Cell>> {
    let mut out = Vec::new();
    for m in model_rows(req)? {
        let max = m.config()?.max_position_embeddings;
        for &kv in &req.kv_dtypes {
            for &ctx in req.ctxs.iter().filter(|&&c| c <= max) {
                out.push(Cell {
                    model: m.clone(),
                    kv,
                    ctx,
                    seqs: req.batch.max(1),
                });
            }
        }
    }
    Ok(out)
}

/// `e`'s figure for one model × KV types × context with `req`'s sequences, against `cap` (the
/// catalog-wide view asks it card by card).
pub(crate) fn cell_figure(
    e: Engine,
    model: &ModelRow,
    kv: KvPair,
    ctx: usize,
    req: &Request,
    cap: &Capacity,
    o: &Options,
) -> Result<Figure> {
    let cell = Cell {
        model: model.clone(),
        kv,
        ctx,
        seqs: req.batch.max(1),
    };
    figure(e, &cell, req, cap, o)
}

/// The figures of `engine` (or of each, for `all`) over `req`'s cells, cell by cell.
pub fn figures(engine: Engine, req: &Request, cap: &Capacity, o: &Options) -> Result<Vec<Figure>> {
    let engines: Vec<Engine> = match engine {
        Engine::All => Engine::EACH.to_vec(),
        e => vec![e],
    };
    let mut out = Vec::new();
    for cell in cells(req)? {
        for &e in &engines {
            out.push(figure(e, &cell, req, cap, o)?);
        }
    }
    Ok(out)
}

/// Bytes per value of a dense format, for the engines that run only those (vLLM, transformers);
/// None for block formats and GGUF files.
fn dense_bytes(m: &ModelRow) -> Option<usize> {
    use candle_core::quantized::GgmlDType;
    let format = match &m.file {
        Some(f) => f.dense?,
        None => m.quant,
    };
    match format {
        Format::Plain(GgmlDType::F32) => Some(4),
        Format::Plain(GgmlDType::F16 | GgmlDType::BF16) => Some(2),
        _ => None,
    }
}

fn figure(e: Engine, c: &Cell, req: &Request, cap: &Capacity, o: &Options) -> Result<Figure> {
    let m = &c.model;
    let mut f = Figure {
        engine: e.name(),
        version: e.version(),
        model: m.model.clone(),
        quant: m.quant_label.clone(),
        kv: c.kv.to_string(),
        ctx: c.ctx,
        seqs: c.seqs,
        settings: serde_json::Value::Null,
        weights_bytes: 0,
        kv_bytes: 0,
        compute_bytes: 0,
        other_bytes: 0,
        predicted_bytes: 0,
        verdict: "n/a",
        max_concurrency: None,
        note: None,
    };
    let cuda = cap.target == Target::Cuda;
    let context = if cuda { CUDA_CONTEXT_BYTES } else { 0 };
    let na = |mut f: Figure, why: String| {
        f.note = Some(why);
        Ok(f)
    };
    match e {
        Engine::GemmaFit => {
            let b = crate::estimate::predict(&m.query(req, c.kv, c.ctx, cap.target))?.breakdown;
            f.settings = serde_json::json!({"prefill_chunk": req.rows});
            f.weights_bytes = b.weights + b.vision_weights;
            f.kv_bytes = b.kv_cache;
            f.compute_bytes = b.workspace;
            f.other_bytes = b.rope_tables + b.runtime;
            f.predicted_bytes = b.total();
        }
        Engine::LlamaCpp | Engine::Ollama => {
            let s = if e == Engine::Ollama {
                ollama::settings(c.ctx, c.seqs, c.kv)
            } else {
                llamacpp::Settings {
                    ctx: c.ctx,
                    seqs: c.seqs,
                    kv: c.kv,
                    ..o.llamacpp
                }
            };
            let l = match llamacpp_cell(m, s, req, cap)? {
                Ok(l) => l,
                Err(why) => return na(f, why),
            };
            let a = l.allocation;
            f.settings = serde_json::to_value(s)?;
            f.weights_bytes = l.weights_bytes;
            f.kv_bytes = a.kv_bytes();
            f.compute_bytes = a.compute;
            f.other_bytes = a.output + l.runtime_bytes;
            f.predicted_bytes = l.predicted_bytes;
            let mut notes = Vec::new();
            if a.compute_stage == "attention" {
                notes.push("compute: attention stage, modelled from source (unchecked)");
            }
            if l.mmproj_bytes.is_some() {
                notes.push("with its f16 mmproj; the image encoder's compute buffer not modelled");
            }
            if !notes.is_empty() {
                f.note = Some(notes.join("; "));
            }
        }
        Engine::Vllm => {
            if !cuda {
                return na(
                    f,
                    "vLLM's profile models its CUDA engine: give --gpu".into(),
                );
            }
            let Some(bytes) = dense_bytes(m) else {
                return na(f, format!("vLLM serves safetensors (bf16/f16/f32, or AWQ/GPTQ/FP8 checkpoints), not {} GGUF blocks", m.quant_label));
            };
            let Some(kv_bytes) = dense_kv(c.kv) else {
                return na(
                    f,
                    format!("vLLM's cache is the model's dtype or fp8, not {}", c.kv),
                );
            };
            let Some(hf) = crate::engine::presets::find(&m.size) else {
                return na(f, format!("{} has no Gemma 3 preset's shape", m.model));
            };
            let weights = hf.params().total * bytes as u64;
            let batched = vllm::default_batched_tokens(cap.total_bytes);
            let max_num_seqs = 256.max(c.seqs);
            let act = vllm::activation_peak(&hf.config, batched, max_num_seqs);
            let budget = (o.gpu_util * cap.total_bytes as f64) as u64;
            f.settings = serde_json::json!({
                "gpu_memory_utilization": o.gpu_util, "max_model_len": c.ctx,
                "max_num_seqs": max_num_seqs, "max_num_batched_tokens": batched,
                "block_size": vllm::BLOCK, "hybrid_kv_cache_manager": true,
            });
            f.weights_bytes = weights;
            f.compute_bytes = act;
            f.other_bytes = CUDA_CONTEXT_BYTES;
            f.predicted_bytes = budget;
            let available = budget.saturating_sub(weights + act + CUDA_CONTEXT_BYTES);
            let k = vllm::kv_cache(&hf.config, available, c.ctx, batched, kv_bytes);
            f.kv_bytes = k.num_blocks * k.group_size as u64 * k.page_bytes;
            f.max_concurrency = Some(k.max_concurrency);
            f.verdict = if k.max_concurrency < 1.0 {
                "does_not_fit"
            } else if k.max_concurrency < c.seqs as f64 {
                "tight"
            } else {
                "fits"
            };
            f.note = Some(format!(
                "GPU KV cache size: {} tokens; activation peak modelled, CUDA graphs not counted",
                k.tokens
            ));
            return Ok(f);
        }
        Engine::Transformers => {
            let Some(bytes) = dense_bytes(m) else {
                return na(f, format!("transformers runs Gemma 3 in bf16/f16/f32 (or bitsandbytes), not {} GGUF blocks", m.quant_label));
            };
            if dense_kv(c.kv).is_none() {
                return na(
                    f,
                    format!(
                        "transformers' HybridCache holds the model's dtype, not {}",
                        c.kv
                    ),
                );
            }
            let Some(hf) = crate::engine::presets::find(&m.size) else {
                return na(f, format!("{} has no Gemma 3 preset's shape", m.model));
            };
            let max_cache_len = c.ctx.saturating_sub(1).max(1);
            f.settings = serde_json::json!({"cache_implementation": o.tf_cache, "max_cache_len": max_cache_len, "dtype_bytes": bytes, "prompt": req.rows});
            f.weights_bytes = hf.params().total * bytes as u64;
            f.kv_bytes =
                transformers::cache_bytes(&hf.config, o.tf_cache, c.seqs, max_cache_len, bytes);
            f.compute_bytes = transformers::prefill_peak(
                &hf.config,
                c.seqs,
                req.rows.min(c.ctx),
                max_cache_len,
                bytes,
            );
            f.other_bytes = context;
            f.predicted_bytes = f.weights_bytes + f.kv_bytes + f.compute_bytes + f.other_bytes;
            f.note = Some(format!(
                "the cache in the model's dtype; prompt pass of {} positions modelled{}",
                req.rows.min(c.ctx),
                if cuda {
                    ""
                } else {
                    "; PyTorch's own process memory not counted"
                }
            ));
        }
        Engine::All => unreachable!("`figures` expands all"),
    }
    f.verdict = Verdict::of(f.predicted_bytes, cap.total_bytes).name();
    Ok(f)
}

/// With `--image`, the vision projector file (mmproj) llama.cpp and Ollama load beside the model:
/// the SigLIP tower and projector in f16, as llama.cpp's converter writes them by default; None
/// without an image.
fn mmproj_bytes(m: &ModelRow, req: &Request) -> Result<Option<u64>> {
    if !req.image {
        return Ok(None);
    }
    if let Some(f) = &m.file {
        return Err(Error::Unsupported(format!(
            "--image with {}: its mmproj file is not read yet",
            f.name
        )));
    }
    let p = crate::estimate::preset(&m.size)?;
    let v = p.vision.ok_or_else(|| {
        Error::BadInput(format!(
            "Gemma 3 {} has no vision tower (4B, 12B and 27B do)",
            p.name
        ))
    })?;
    let f16 = Format::Plain(candle_core::quantized::GgmlDType::F16);
    Ok(Some(
        crate::engine::plan::vision_tensors(&v, p.config.hidden_size, f16, false)
            .iter()
            .map(|t| t.file_bytes)
            .sum(),
    ))
}

/// Bytes per value of a dense cache type (vLLM and transformers hold no block formats).
fn dense_kv(kv: KvPair) -> Option<usize> {
    use crate::engine::kv_cache::KvDtype;
    match (kv.k, kv.v) {
        (KvDtype::F32, KvDtype::F32) => Some(4),
        (KvDtype::F16 | KvDtype::Bf16, KvDtype::F16 | KvDtype::Bf16) => Some(2),
        _ => None,
    }
}

/// The figures as a table (GiB, one row per engine and cell), CSV or JSON, with each engine's
/// version above the table.
pub fn render_figures(figs: &[Figure], cap: &Capacity, format: Output) -> Result<String> {
    if format == Output::Json {
        return Ok(serde_json::to_string_pretty(figs)? + "\n");
    }
    let gib = |b: u64| format!("{:.2}", crate::units::gib(b));
    let mut t = Table::new([
        "model", "quant", "kv", "ctx", "seqs", "engine", "weights", "KV", "compute", "other",
        "total", "verdict", "note",
    ]);
    for f in figs {
        let na = f.verdict == "n/a";
        let part = |b: u64| if na { "-".to_string() } else { gib(b) };
        t.row([
            f.model.clone(),
            f.quant.clone(),
            f.kv.clone(),
            ctx_label(f.ctx),
            f.seqs.to_string(),
            f.engine.to_string(),
            part(f.weights_bytes),
            part(f.kv_bytes),
            part(f.compute_bytes),
            part(f.other_bytes),
            part(f.predicted_bytes),
            match f.max_concurrency {
                Some(c) if !na => format!("{} (max {c:.1} seqs)", f.verdict),
                _ => f.verdict.to_string(),
            },
            f.note.clone().unwrap_or_default(),
        ]);
    }
    if format == Output::Csv {
        return t.csv();
    }
    let mut out = format!(
        "GiB on {} ({:.1} GiB) as each engine would hold it:\n",
        cap.name,
        crate::units::gib(cap.total_bytes)
    );
    let mut seen = Vec::new();
    for f in figs.iter().filter(|f| {
        !seen.contains(&f.engine) && {
            seen.push(f.engine);
            true
        }
    }) {
        out.push_str(&format!("  {:<12} {}\n", f.engine, f.version));
    }
    out.push_str(&t.render(format)?);
    out.push('\n');
    Ok(out)
}
