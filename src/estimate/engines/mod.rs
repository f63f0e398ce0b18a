//! How the engines people deploy would allocate a Gemma 3 model, beside gemma-fit's own plan:
//! one profile per engine, each pinned to the version whose source it follows
//! (`docs/engines.md`). So far llama.cpp's; `fit --engine` names the others as not yet built.

pub mod llamacpp;

use serde::Serialize;

use crate::engine::plan;
use crate::error::{Error, Result};
use crate::estimate::fit::{model_rows, Capacity, Request, Verdict};
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
    /// Not built yet.
    Ollama,
    /// Not built yet.
    Vllm,
    /// Not built yet.
    Transformers,
}

impl Engine {
    /// The profile, or a clear error for the engines whose profile is not built yet.
    pub fn check_supported(self) -> Result<()> {
        match self {
            Engine::GemmaFit | Engine::LlamaCpp => Ok(()),
            other => Err(Error::BadInput(format!(
                "unsupported: the {} profile is not built yet (gemma-fit and llama.cpp are)",
                clap::ValueEnum::to_possible_value(&other)
                    .map_or_else(|| format!("{other:?}"), |v| v.get_name().to_string())
            ))),
        }
    }
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
    /// The CUDA context on a GPU (gemma-fit's figure, not llama.cpp's: see `fit`'s notes), 0 on
    /// the CPU.
    pub runtime_bytes: u64,
    pub predicted_bytes: u64,
    pub verdict: &'static str,
}

/// llama.cpp's figures for every cell of `req` with `base`'s settings (its context and K/V
/// types replaced by each cell's). A setting llama.cpp refuses (a
/// quantized V cache without flash attention) is an error naming it.
pub fn llamacpp_table(
    req: &Request,
    cap: &Capacity,
    base: llamacpp::Settings,
) -> Result<Vec<LlamaCppCell>> {
    let runtime = match cap.target {
        Target::Cuda => CUDA_CONTEXT_BYTES,
        Target::Cpu => 0,
    };
    let mut cells = Vec::new();
    for (size, quant, _) in model_rows(req)? {
        let p = crate::estimate::preset(&size)?;
        let weights = plan::text_tensors(&p.config, quant, false)
            .iter()
            .map(|t| t.file_bytes)
            .sum::<u64>();
        for &kv in &req.kv_dtypes {
            for &ctx in &req.ctxs {
                if ctx > p.config.max_position_embeddings {
                    continue;
                }
                let s = llamacpp::Settings { ctx, kv, ..base };
                let a = llamacpp::allocate(&p.config, &s).map_err(Error::BadInput)?;
                let total = weights + a.non_weight() + runtime;
                cells.push(LlamaCppCell {
                    engine: "llama.cpp",
                    version: llamacpp::VERSION,
                    model: p.name.to_string(),
                    quant: quant.to_string(),
                    ctx,
                    settings: s,
                    allocation: a,
                    weights_bytes: weights,
                    runtime_bytes: runtime,
                    predicted_bytes: total,
                    verdict: Verdict::of(total, cap.total_bytes).name(),
                });
            }
        }
    }
    Ok(cells)
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
    if cap.target == Target::Cuda {
        out.push_str(&format!(
            "  total includes a CUDA context of {:.0} MiB (gemma-fit's estimate, not measured for llama.cpp)\n",
            mib(CUDA_CONTEXT_BYTES)
        ));
    }
    Ok(out)
}
