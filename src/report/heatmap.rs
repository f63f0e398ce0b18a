//! The fit heatmap (`fit --gpus … --plot FILE`): cards × model-and-format at one context, each
//! cell fits / tight / does not fit with the GiB left free or short.

use crate::estimate::cards::{short, Cards};
use crate::estimate::fit::Verdict;
use crate::report::charts::{Chart, Heatmap};
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
                    let level = match o.verdict {
                        Verdict::Fits => 0,
                        Verdict::Tight => 1,
                        Verdict::DoesNotFit => 2,
                    };
                    (
                        level,
                        format!("{:+.1}", o.free_bytes as f64 / (1u64 << 30) as f64),
                    )
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
    })
}
