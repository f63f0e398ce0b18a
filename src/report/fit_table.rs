//! The fit table of one machine: rows model × format × KV dtype, columns context lengths; each
//! cell measured (peak memory, decode tok/s), failed (the recorded reason), or predicted by the
//! estimator (marked), with the measured frontier per row.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::estimate::fit::Verdict;
use crate::estimate::{predict, Query};
use crate::output::table::{Cell as TableCell, Table};
use crate::report::{Machine, Variant};
use crate::result::CaseResult;
use crate::units::{ctx_label, gib};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cell {
    Measured {
        peak_bytes: Option<u64>,
        decode_tok_per_s: f64,
        prefill_tok_per_s: f64,
    },
    /// The case ran and did not finish: oom, timeout, error.
    Failed {
        reason: String,
    },
    Predicted {
        bytes: u64,
        verdict: Verdict,
    },
    Empty,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub variant: String,
    pub cells: Vec<Cell>,
    /// The largest context measured to run, and the smallest measured to fail above it.
    pub frontier_ok: Option<usize>,
    pub frontier_fail: Option<usize>,
    /// Mean KL divergence (nats) of a quality record of this model, format and KV type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f64>,
    /// Per context: the most sequences that ran together there (measured, where cases with
    /// several sequences were run), else the estimator's most that fit the machine's memory.
    pub max_seqs: Vec<Option<MaxSeqs>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "sequences", rename_all = "snake_case")]
pub enum MaxSeqs {
    Measured(usize),
    Predicted(usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct FitTable {
    pub contexts: Vec<usize>,
    pub rows: Vec<Row>,
}

/// The prediction at `ctx` for the case `sample` ran, where the estimator covers it.
fn predicted(sample: &CaseResult, ctx: usize, m: &Machine) -> Option<Cell> {
    let q = Query::for_record(sample).ok()?;
    // The cells are of one sequence, whatever batch `sample` ran.
    let rows = match sample.key.batch {
        1 => q.rows,
        _ => sample
            .key
            .prefill_chunk
            .min(sample.key.prompt_tokens)
            .max(1),
    };
    let p = predict(&Query {
        ctx,
        batch: 1,
        rows,
        ..q
    })
    .ok()?;
    if ctx > p.max_ctx {
        return None;
    }
    let bytes = p.breakdown.total();
    Some(Cell::Predicted {
        bytes,
        verdict: m
            .capacity_bytes
            .map_or(Verdict::Fits, |cap| Verdict::of(bytes, cap)),
    })
}

pub fn build(m: &Machine) -> FitTable {
    // Quality records (no memory measured) lend their KL to the rows of their variant.
    let cases = || m.records.iter().filter(|r| r.quality.is_none());
    let mut by_variant: BTreeMap<Variant, Vec<&CaseResult>> = BTreeMap::new();
    for r in cases() {
        by_variant.entry(Variant::of(r)).or_default().push(r);
    }
    let contexts: Vec<usize> = cases()
        .map(|r| r.key.ctx)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = by_variant
        .iter()
        .map(|(v, recs)| {
            let cells = contexts
                .iter()
                .map(|&ctx| {
                    // One sequence per cell (batches have their own column).
                    let here: Vec<&&CaseResult> = recs
                        .iter()
                        .filter(|r| r.key.ctx == ctx && r.key.batch == 1)
                        .collect();
                    // Prefer a finished case, the one with the longest prompt.
                    let ok = here
                        .iter()
                        .filter(|r| r.outcome.is_ok() && r.metrics.is_some())
                        .max_by_key(|r| r.key.prompt_tokens);
                    if let Some(r) = ok {
                        let mt = r.metrics.as_ref().expect("filtered on metrics");
                        return Cell::Measured {
                            peak_bytes: r.peak_bytes(),
                            decode_tok_per_s: mt.decode_tok_per_s.median,
                            prefill_tok_per_s: mt.prefill_tok_per_s.median,
                        };
                    }
                    if let Some(r) = here.first() {
                        return Cell::Failed {
                            reason: crate::output::outcome::cell(&r.outcome),
                        };
                    }
                    predicted(recs[0], ctx, m).unwrap_or(Cell::Empty)
                })
                .collect();
            let max_seqs = contexts
                .iter()
                .map(|&ctx| {
                    let here = recs.iter().filter(|r| r.key.ctx == ctx);
                    if here.clone().any(|r| r.key.batch > 1) {
                        return here
                            .filter(|r| r.outcome.is_ok())
                            .map(|r| r.key.batch)
                            .max()
                            .map(MaxSeqs::Measured);
                    }
                    let cap = m.capacity_bytes?;
                    let q = Query::for_record(recs[0]).ok()?;
                    crate::estimate::fit::largest_batch(&Query { ctx, ..q }, |t| {
                        Verdict::of(t, cap) == Verdict::Fits
                    })
                    .ok()
                    .flatten()
                    .map(MaxSeqs::Predicted)
                })
                .collect();
            let frontier_ok = recs
                .iter()
                .filter(|r| r.outcome.is_ok() && r.key.batch == 1)
                .map(|r| r.key.ctx)
                .max();
            let frontier_fail = recs
                .iter()
                .filter(|r| !r.outcome.is_ok() && r.key.batch == 1 && Some(r.key.ctx) > frontier_ok)
                .map(|r| r.key.ctx)
                .min();
            Row {
                variant: v.label(),
                cells,
                frontier_ok,
                frontier_fail,
                kl_mean: crate::result::quality::matching(&m.records, &recs[0].key)
                    .map(|c| c.kl_mean.value),
                max_seqs,
            }
        })
        .collect();
    FitTable { contexts, rows }
}

impl Cell {
    pub fn text(&self) -> String {
        match self {
            Cell::Measured {
                peak_bytes,
                decode_tok_per_s,
                ..
            } => match peak_bytes {
                Some(b) => format!("{:.2} GiB · {decode_tok_per_s:.1} tok/s", gib(*b)),
                None => format!("{decode_tok_per_s:.1} tok/s"),
            },
            Cell::Failed { reason } => reason.clone(),
            Cell::Predicted { bytes, verdict } => format!(
                "predicted {:.2} GiB{}",
                gib(*bytes),
                match verdict {
                    Verdict::Fits => "",
                    Verdict::Tight => " (tight)",
                    Verdict::DoesNotFit => " (does not fit)",
                }
            ),
            Cell::Empty => "—".into(),
        }
    }
}

impl Row {
    /// "4K: 16 · 8K: ~37": measured counts plain, predicted ones with a tilde.
    pub fn max_seqs_text(&self, contexts: &[usize]) -> String {
        let parts: Vec<String> = contexts
            .iter()
            .zip(&self.max_seqs)
            .filter_map(|(&c, m)| {
                let n = match (*m)? {
                    MaxSeqs::Measured(n) => n.to_string(),
                    MaxSeqs::Predicted(n) => format!("~{n}"),
                };
                Some(format!("{}: {n}", ctx_label(c)))
            })
            .collect();
        if parts.is_empty() {
            "—".into()
        } else {
            parts.join(" · ")
        }
    }

    pub fn frontier_text(&self) -> String {
        match (self.frontier_ok, self.frontier_fail) {
            (Some(ok), Some(fail)) => format!("{} (fails at {})", ctx_label(ok), ctx_label(fail)),
            (Some(ok), None) => format!("≥ {}", ctx_label(ok)),
            (None, Some(fail)) => format!("< {}", ctx_label(fail)),
            (None, None) => "—".into(),
        }
    }
}

impl FitTable {
    /// The table as people read it: a row per variant, a cell per context, the frontier last;
    /// cells classed by kind for the page's colours.
    pub fn table(&self) -> Table {
        let mut h = vec!["model × format × KV".to_string()];
        h.extend(self.contexts.iter().map(|&c| ctx_label(c)));
        h.push("measured frontier".into());
        h.push("max sequences at ctx".into());
        let with_kl = self.rows.iter().any(|r| r.kl_mean.is_some());
        if with_kl {
            h.push("KL (nats)".into());
        }
        let mut t = Table::new(h).class("fit").row_headers();
        for r in &self.rows {
            let mut line = vec![TableCell::from(r.variant.clone())];
            line.extend(r.cells.iter().map(|c| {
                let class = match c {
                    Cell::Measured { .. } => "measured",
                    Cell::Failed { .. } => "failed",
                    Cell::Predicted { .. } => "predicted",
                    Cell::Empty => "empty",
                };
                TableCell::with_class(c.text(), class)
            }));
            line.push(r.frontier_text().into());
            line.push(r.max_seqs_text(&self.contexts).into());
            if with_kl {
                line.push(r.kl_mean.map_or("—".into(), |k| format!("{k:.4}")).into());
            }
            t.row(line);
        }
        t
    }

    pub fn markdown(&self) -> String {
        format!(
            "{}\n\nCells: measured peak memory · decode tok/s (median) of one sequence, a failure's recorded reason, or \"predicted\" (the estimator, where nothing was measured). Max sequences: the most that ran together at that context, or ~ the estimator's most that fit this machine's memory (≤ 90%).{}\n",
            self.table().markdown(),
            if self.rows.iter().any(|r| r.kl_mean.is_some()) {
                " KL: the mean KL divergence of a quality record of the same model, format and KV type against its reference (`gemma-fit quality`)."
            } else {
                ""
            }
        )
    }

    /// One record per (variant, context) cell that holds something.
    pub fn csv(&self) -> crate::Result<String> {
        let mut t = Table::new([
            "variant",
            "ctx",
            "kind",
            "peak_bytes",
            "decode_tok_per_s",
            "prefill_tok_per_s",
            "predicted_bytes",
            "verdict",
            "reason",
        ]);
        for r in &self.rows {
            for (ctx, c) in self.contexts.iter().zip(&r.cells) {
                let none = String::new;
                let (kind, rest): (&str, [String; 6]) = match c {
                    Cell::Measured {
                        peak_bytes,
                        decode_tok_per_s,
                        prefill_tok_per_s,
                    } => (
                        "measured",
                        [
                            peak_bytes.map(|b| b.to_string()).unwrap_or_default(),
                            format!("{decode_tok_per_s:.3}"),
                            format!("{prefill_tok_per_s:.3}"),
                            none(),
                            none(),
                            none(),
                        ],
                    ),
                    Cell::Failed { reason } => (
                        "failed",
                        [none(), none(), none(), none(), none(), reason.clone()],
                    ),
                    Cell::Predicted { bytes, verdict } => (
                        "predicted",
                        [
                            none(),
                            none(),
                            none(),
                            bytes.to_string(),
                            verdict.name().into(),
                            none(),
                        ],
                    ),
                    Cell::Empty => continue,
                };
                let mut rec = vec![r.variant.clone(), ctx.to_string(), kind.into()];
                rec.extend(rest);
                t.row(rec);
            }
        }
        t.csv()
    }

    /// An HTML table (escaped).
    pub fn html(&self) -> String {
        self.table().html()
    }
}
