//! Fit heatmaps: the catalog's (`fit --gpus … --plot FILE`: cards × model-and-format at one
//! context) and a machine's own (its report: contexts × model-and-format against its memory),
//! each cell fits / tight / does not fit with the GiB left free or short.

use crate::engine::kv_cache::{KvDtype, KvPair};
use crate::estimate::cards::{short, Cards};
use crate::estimate::fit::{self, Verdict};
use crate::report::charts::{Chart, Heatmap};
use crate::report::Machine;
use crate::units::{ctx_label, gib};

/// The heatmap of `c` at `ctx`; `caption` says what the figures assume.
pub fn fit_heatmap(c: &Cards, ctx: usize, caption: &str) -> Chart {
    let at: Vec<_> = c.models.iter().filter(|m| m.ctx == ctx).collect();
    let several_kv = at.iter().any(|m| m.kv_dtype != at[0].kv_dtype);
    let rows = at.first().map_or_else(Vec::new, |m| {
        m.cards
            .iter()
            .map(|o| format!("{} ({:.0} GiB)", short(&o.gpu), gib(o.total_bytes)))
            .collect()
    });
    let cols = at
        .iter()
        .map(|m| {
            (
                m.model.clone(),
                if several_kv {
                    format!("{} kv {}", m.quant, m.kv_dtype)
                } else {
                    m.quant.clone()
                },
            )
        })
        .collect();
    let cells = (0..rows.len())
        .map(|r| {
            at.iter()
                .map(|m| {
                    let o = &m.cards[r];
                    (level(o.verdict), o.room())
                })
                .collect()
        })
        .collect();
    Chart::Heatmap(Heatmap {
        title: format!(
            "Which card fits which Gemma 3 at {} context",
            ctx_label(ctx)
        ),
        caption: caption.to_string(),
        rows,
        cols,
        cells,
        unit: if c.in_concurrency() {
            "× concurrency".into()
        } else {
            "GiB free".into()
        },
    })
}

/// A verdict's level: 0 fits, 1 tight, 2 does not fit.
fn level(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Fits => 0,
        Verdict::Tight => 1,
        Verdict::DoesNotFit => 2,
    }
}

/// The models, formats, KV type and contexts of a machine's heatmap: `fit`'s defaults with the
/// catalog heatmap's bf16 cache.
pub fn machine_request() -> fit::Request {
    fit::Request {
        models: ["270m", "1b", "4b", "12b", "27b"]
            .map(String::from)
            .to_vec(),
        quants: ["bf16", "q8_0", "q4_k_m"]
            .iter()
            .filter_map(|q| q.parse().ok())
            .collect(),
        kv_dtypes: vec![KvPair::both(KvDtype::Bf16)],
        ctxs: vec![4096, 8192, 32768, 131072],
        rows: 512,
        batch: 1,
        image: false,
        breakdown: false,
    }
}

/// The heatmap of which Gemma 3 fits `m`'s own memory (its GPU's, its limit, or its RAM), by
/// context; None when the records do not say how much memory it has.
pub fn machine_heatmap(m: &Machine) -> crate::Result<Option<Chart>> {
    let Some(total) = m.capacity_bytes else {
        return Ok(None);
    };
    let req = machine_request();
    let cap = fit::Capacity {
        name: m.name.clone(),
        total_bytes: total,
        bandwidth_gbs: None,
        target: if m.on_gpu {
            crate::estimate::Target::Cuda
        } else {
            crate::estimate::Target::Cpu
        },
    };
    let rows = fit::table(&req, &cap)?;
    // A row per model and format, a column per context: it reads like the fit table.
    Ok(Some(Chart::Heatmap(Heatmap {
        title: format!("Which Gemma 3 fits this machine ({:.1} GiB)", gib(total)),
        caption: format!(
            "gemma-fit {}'s prediction for one {} process; KV bf16; 1 sequence; fits = at most 90%; n/a = past the model's context window",
            env!("CARGO_PKG_VERSION"),
            if m.on_gpu { "CUDA" } else { "CPU" },
        ),
        rows: rows
            .iter()
            .map(|r| format!("{} {}", r.model, r.quant))
            .collect(),
        cols: req
            .ctxs
            .iter()
            .map(|&c| (ctx_label(c), "context".into()))
            .collect(),
        cells: rows
            .iter()
            .map(|r| {
                r.cells
                    .iter()
                    .map(|c| match c {
                        Some(c) => (
                            level(c.verdict),
                            format!("{:+.1}", c.free_bytes as f64 / (1u64 << 30) as f64),
                        ),
                        None => (NOT_APPLICABLE, "n/a".into()),
                    })
                    .collect()
            })
            .collect(),
        unit: "GiB free".into(),
    })))
}

/// A cell's level where the model cannot take that context.
pub const NOT_APPLICABLE: u8 = 3;
