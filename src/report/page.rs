//! One machine's report folder: fit table (md, csv), charts (svg, png), exports, and a
//! self-contained `index.html` (charts inline, no network) with the environment fingerprint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::estimate::{predict, Query};
use crate::output::table::{escape, Table};
use crate::report::charts::{Chart, LineChart, Series, StackBar, StackGroup, StackedBars, Style};
use crate::report::{checks, export, figure, fit_table, frontier, heatmap, put, Machine, Variant};
use crate::result::case::CaseEngine;
use crate::result::CaseResult;
use crate::units::{ctx_label, gib};

/// Finished one-sequence cases by variant (what the charts against context draw).
fn ok_by_variant(m: &Machine) -> BTreeMap<Variant, Vec<&CaseResult>> {
    let mut out: BTreeMap<Variant, Vec<&CaseResult>> = BTreeMap::new();
    for r in ok(m).filter(|r| r.key.batch == 1) {
        out.entry(Variant::of(r)).or_default().push(r);
    }
    out
}

fn ok(m: &Machine) -> impl Iterator<Item = &CaseResult> {
    m.records
        .iter()
        .filter(|r| r.outcome.is_ok() && r.metrics.is_some())
}

/// Finished cases by variant and context, where they were measured at more than one batch
/// size (what the charts against the batch draw).
fn ok_by_variant_and_ctx(m: &Machine) -> BTreeMap<(Variant, usize), Vec<&CaseResult>> {
    let mut out: BTreeMap<(Variant, usize), Vec<&CaseResult>> = BTreeMap::new();
    for r in ok(m) {
        out.entry((Variant::of(r), r.key.ctx)).or_default().push(r);
    }
    out.retain(|_, recs| recs.iter().any(|r| r.key.batch != recs[0].key.batch));
    out
}

/// The estimator's curve over batch sizes `xs` for the case `sample` ran, where it covers it.
fn predicted_batch_curve(sample: &CaseResult, xs: &[f64]) -> Option<Vec<(f64, f64)>> {
    // (llama.cpp's profile is checked one sequence count at a time, not drawn over batches.)
    if sample.key.engine != crate::result::case::CaseEngine::GemmaFit {
        return None;
    }
    let q = Query::for_record(sample).ok()?;
    xs.iter()
        .map(|&b| {
            let batch = b as usize;
            let p = predict(&Query {
                batch,
                rows: sample
                    .key
                    .prefill_chunk
                    .min(batch * sample.key.prompt_tokens)
                    .max(1),
                ..q.clone()
            })
            .ok()?;
            Some((b, gib(p.breakdown.total())))
        })
        .collect()
}

/// Throughput, time per token and memory against the batch, one series per variant × context.
fn batch_charts(m: &Machine) -> Vec<(&'static str, Chart)> {
    let by = ok_by_variant_and_ctx(m);
    if by.is_empty() {
        return Vec::new();
    }
    let label = |v: &Variant, ctx: usize| format!("{}, ctx {}", v.label(), ctx_label(ctx));
    let batch = |r: &CaseResult| r.key.batch as f64;
    let series = |y: &dyn Fn(&CaseResult) -> Option<f64>| -> Vec<Series> {
        by.iter()
            .enumerate()
            .map(|(i, ((v, ctx), recs))| Series {
                name: label(v, *ctx),
                points: points(recs, batch, y),
                style: Style::Line,
                color: Some(i),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let line = |title: &str, y_label: &str, series, hlines| {
        Chart::Line(LineChart {
            title: format!("{title} — {}", m.name),
            x_label: "sequences at once (batch)".into(),
            y_label: y_label.into(),
            log_x: true,
            log_y: false,
            series,
            hlines,
        })
    };
    let mut mem = series(&|r| r.peak_bytes().map(gib));
    for (i, recs) in by.values().enumerate() {
        let mut xs: Vec<f64> = recs.iter().map(|r| r.key.batch as f64).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        if let Some(curve) = predicted_batch_curve(recs[0], &xs) {
            mem.push(Series {
                // Its measured series' colour names it; the axis says dashed is predicted.
                name: String::new(),
                points: curve,
                style: Style::Dashed,
                color: Some(i),
            });
        }
    }
    vec![
        (
            "throughput-vs-batch",
            line(
                "Aggregate decode speed vs batch",
                "decode tok/s, all sequences (median)",
                series(&|r| r.metrics.as_ref().map(|m| m.decode_tok_per_s.median)),
                vec![],
            ),
        ),
        (
            "latency-vs-batch",
            line(
                "Time per output token of each sequence vs batch",
                "ms per token per sequence (median step)",
                series(&|r| r.metrics.as_ref().map(|m| m.decode_steps.median_ms)),
                vec![],
            ),
        ),
        ("memory-vs-batch", {
            let (title, hlines) = capacity_mark("Peak memory vs batch", &mem, m.capacity_bytes);
            line(&title, mem_label(m), mem, hlines)
        }),
    ]
}

/// A memory chart's y axis, which also says what its dashed lines are.
fn mem_label(m: &Machine) -> &'static str {
    if m.on_gpu {
        "GPU process peak (GiB) · dashed: predicted"
    } else {
        "peak RSS (GiB) · dashed: predicted"
    }
}

/// One point per x: the case with the longest prompt there.
fn points(
    recs: &[&CaseResult],
    x: impl Fn(&CaseResult) -> f64,
    y: impl Fn(&CaseResult) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut best: BTreeMap<u64, (usize, f64)> = BTreeMap::new();
    for r in recs {
        if let Some(v) = y(r) {
            let e = best.entry(x(r).to_bits()).or_insert((0, v));
            if r.key.prompt_tokens >= e.0 {
                *e = (r.key.prompt_tokens, v);
            }
        }
    }
    best.into_iter()
        .map(|(x, (_, v))| (f64::from_bits(x), v))
        .collect()
}

fn decode_j_per_token(r: &CaseResult) -> Option<f64> {
    r.metrics
        .as_ref()?
        .energy
        .iter()
        .find(|e| e.phase == Some(crate::probe::sampler::Phase::Decode))?
        .j_per_token
}

/// The estimator's curve over `xs` for the case `sample` ran (by the profile of the engine
/// that ran it), where it covers that case.
fn predicted_curve(sample: &CaseResult, xs: &[f64]) -> Option<Vec<(f64, f64)>> {
    xs.iter()
        .map(|&ctx| {
            let b = crate::estimate::predict_record(sample, ctx as usize).ok()?;
            Some((ctx, gib(b.total())))
        })
        .collect()
}

/// A line chart whose series all sit at one x value (every case at one prompt length, say) as
/// bars, one per series, the x value in the title: a line axis around a single point would
/// spread the cases over a range nobody measured.
fn bars_if_one_x(c: LineChart) -> Chart {
    let xs: std::collections::BTreeSet<u64> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0.to_bits()))
        .collect();
    let [x] = xs.into_iter().collect::<Vec<_>>()[..] else {
        return Chart::Line(c);
    };
    let x = f64::from_bits(x);
    Chart::Bars(crate::report::charts::BarChart {
        title: format!("{} (all at {} {})", c.title, c.x_label, x),
        y_label: c.y_label,
        groups: c.series.iter().map(|s| s.name.clone()).collect(),
        members: vec![format!("{} {x}", c.x_label)],
        values: c
            .series
            .iter()
            .map(|s| vec![s.points.first().map(|p| p.1)])
            .collect(),
    })
}

/// A memory chart's title and capacity line: the capacity drawn as a line only where the data
/// come near it (a quarter of it or more); otherwise it would squash them into the bottom
/// pixels, so the title names it instead.
fn capacity_mark(
    title: &str,
    series: &[Series],
    capacity: Option<u64>,
) -> (String, Vec<(String, f64)>) {
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    match capacity.map(gib) {
        Some(c) if top >= c / 4.0 => (title.into(), vec![(format!("capacity {c:.1} GiB"), c)]),
        Some(c) => (format!("{title} (capacity {c:.1} GiB, far above)"), vec![]),
        None => (title.into(), vec![]),
    }
}

/// Most cases the breakdown chart draws (its height grows with them).
const BREAKDOWN_CASES: usize = 40;

/// Each finished case's peak memory by what holds it: the estimator's parts beside the
/// measured peak split into what the engine recorded allocating (weights resident, KV cache,
/// RoPE tables) and the rest of the peak. None without a gemma-fit case.
fn breakdown_chart(m: &Machine) -> Option<Chart> {
    const SEGMENTS: [&str; 8] = [
        "weights",
        "vision tower",
        "KV cache",
        "RoPE tables",
        "workspace",
        "runtime",
        "load peak above the run",
        "rest of the measured peak",
    ];
    let mut cases: Vec<&CaseResult> = ok(m)
        .filter(|r| r.key.engine == CaseEngine::GemmaFit && r.quality.is_none())
        .collect();
    cases.sort_by_key(|r| (Variant::of(r), r.key.ctx, r.key.batch, r.key.prompt_tokens));
    let shown = cases.len().min(BREAKDOWN_CASES);
    let mut groups: Vec<StackGroup> = cases[..shown]
        .iter()
        .map(|r| {
            let x = r.metrics.as_ref().expect("ok() keeps cases with metrics");
            let mut bars = Vec::new();
            if let Ok(p) = crate::estimate::predict_record(r, r.key.ctx) {
                let parts = [
                    p.weights,
                    p.vision_weights,
                    p.kv_cache,
                    p.rope_tables,
                    p.workspace,
                    p.runtime,
                ];
                let load = p.total().saturating_sub(parts.iter().sum());
                bars.push(StackBar {
                    label: "predicted".into(),
                    values: parts.iter().chain([&load, &0]).map(|&b| gib(b)).collect(),
                });
            }
            if let Some(peak) = r.peak_bytes() {
                let weights = x.weights.resident_weight_bytes;
                let vision = x
                    .vision_weights
                    .as_ref()
                    .map_or(0, |w| w.resident_weight_bytes);
                let known = [weights, vision, x.kv_bytes, x.rope_bytes];
                let rest = peak.saturating_sub(known.iter().sum());
                bars.push(StackBar {
                    label: "measured".into(),
                    values: known
                        .iter()
                        .chain([&0, &0, &0, &rest])
                        .map(|&b| gib(b))
                        .collect(),
                });
            }
            let batch = match r.key.batch {
                1 => String::new(),
                b => format!(", {b} seqs"),
            };
            StackGroup {
                label: format!(
                    "{}, ctx {}{batch}",
                    Variant::of(r).label(),
                    ctx_label(r.key.ctx)
                ),
                bars,
            }
        })
        .filter(|g| !g.bars.is_empty())
        .collect();
    if groups.is_empty() {
        return None;
    }
    // Only the segments some bar has, in the legend and the bars.
    let used: Vec<usize> = (0..SEGMENTS.len())
        .filter(|&i| {
            groups
                .iter()
                .flat_map(|g| &g.bars)
                .any(|b| b.values[i] > 0.0)
        })
        .collect();
    for b in groups.iter_mut().flat_map(|g| g.bars.iter_mut()) {
        b.values = used.iter().map(|&i| b.values[i]).collect();
    }
    let more = match cases.len() - shown {
        0 => String::new(),
        n => format!(" ({n} more cases not drawn)"),
    };
    Some(Chart::Stacked(StackedBars {
        title: format!("Peak memory by what holds it — {}", m.name),
        caption: format!(
            "measured: the {} with the weights, KV cache and RoPE tables the engine allocated; the rest is workspace and runtime{more}",
            if m.on_gpu { "GPU process peak" } else { "peak RSS" }
        ),
        segments: used.iter().map(|&i| SEGMENTS[i].to_string()).collect(),
        groups,
    }))
}

/// The charts of a machine, by file stem.
pub fn charts(m: &Machine) -> Vec<(&'static str, Chart)> {
    let by = ok_by_variant(m);
    let series =
        |x: &dyn Fn(&CaseResult) -> f64, y: &dyn Fn(&CaseResult) -> Option<f64>| -> Vec<Series> {
            by.iter()
                .enumerate()
                .map(|(i, (v, recs))| Series {
                    name: v.label(),
                    points: points(recs, x, y),
                    style: Style::Line,
                    color: Some(i),
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
    let ctx = |r: &CaseResult| r.key.ctx as f64;
    let mut out = vec![
        (
            "decode-vs-context",
            bars_if_one_x(LineChart {
                title: format!("Decode speed vs context — {}", m.name),
                x_label: "context (positions in the KV cache)".into(),
                y_label: "decode tok/s (median)".into(),
                log_x: true,
                log_y: false,
                series: series(&ctx, &|r| {
                    r.metrics.as_ref().map(|m| m.decode_tok_per_s.median)
                }),
                hlines: vec![],
            }),
        ),
        (
            "prefill-vs-prompt",
            bars_if_one_x(LineChart {
                title: format!("Prefill speed vs prompt length — {}", m.name),
                x_label: "prompt positions".into(),
                y_label: "prefill tok/s (median)".into(),
                log_x: true,
                log_y: false,
                series: series(
                    &|r| {
                        r.metrics
                            .as_ref()
                            .map_or(0.0, |m| m.prompt_positions as f64)
                    },
                    &|r| r.metrics.as_ref().map(|m| m.prefill_tok_per_s.median),
                ),
                hlines: vec![],
            }),
        ),
    ];
    // Peak memory: measured, the estimator's curve (dashed) and the capacity line.
    let mut mem = series(&ctx, &|r| r.peak_bytes().map(gib));
    for (i, recs) in by.values().enumerate() {
        let mut xs: Vec<f64> = recs.iter().map(|r| r.key.ctx as f64).collect();
        xs.sort_by(f64::total_cmp);
        let (lo, hi) = (
            xs.first().copied().unwrap_or(1.0),
            xs.last().copied().unwrap_or(1.0),
        );
        let grid: Vec<f64> = (0..=16)
            .map(|i| lo * (hi / lo).powf(i as f64 / 16.0))
            .collect();
        if let Some(curve) = predicted_curve(recs[0], &grid) {
            mem.push(Series {
                name: String::new(),
                points: curve,
                style: Style::Dashed,
                color: Some(i),
            });
        }
    }
    let (title, hlines) = capacity_mark("Peak memory vs context", &mem, m.capacity_bytes);
    out.push((
        "memory-vs-context",
        Chart::Line(LineChart {
            title: format!("{title} — {}", m.name),
            x_label: "context".into(),
            y_label: mem_label(m).into(),
            log_x: true,
            log_y: false,
            series: mem,
            hlines,
        }),
    ));
    out.extend(breakdown_chart(m).map(|c| ("memory-breakdown", c)));
    out.extend(
        frontier::chart(&[m], &format!("Largest context vs memory — {}", m.name))
            .map(|c| ("frontier", c)),
    );
    out.extend(batch_charts(m));
    let energy = series(&ctx, &|r| decode_j_per_token(r));
    if !energy.is_empty() {
        out.push((
            "energy-vs-context",
            Chart::Line(LineChart {
                title: format!("Decode energy per token — {}", m.name),
                x_label: "context".into(),
                y_label: "J/token (decode)".into(),
                log_x: true,
                log_y: false,
                series: energy,
                hlines: vec![],
            }),
        ));
    }
    out
}

pub(crate) const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}\
td.measured{background:#eef7ee}td.failed{background:#fbeaea}td.predicted{background:#f3f3f3;font-style:italic}\
figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}svg{max-width:100%;height:auto}";

fn environment_html(m: &Machine) -> String {
    let e = &m.environment;
    let mut rows = vec![
        ("machine", m.name.clone()),
        (
            "gemma-fit",
            format!("{} (commit {})", e.tool_version, e.git_commit),
        ),
        (
            "rustc / candle",
            format!("{} / {}", e.rustc_version, e.candle_version),
        ),
        (
            "features",
            if e.features.is_empty() {
                "none (CPU build)".into()
            } else {
                e.features.join(", ")
            },
        ),
        (
            "CPU",
            format!("{} ({} logical cores)", e.cpu_model, e.logical_cores),
        ),
        ("RAM", format!("{:.1} GiB", gib(e.ram_total_bytes))),
        ("OS", format!("{} {}", e.os, e.kernel)),
    ];
    if let Some(g) = &e.gpu {
        rows.push((
            "GPU",
            format!(
                "{} (driver {}, CUDA {}, {:.1} GiB, power limit {})",
                g.name,
                g.driver_version.as_deref().unwrap_or("?"),
                g.cuda_version.as_deref().unwrap_or("?"),
                gib(g.memory_total_bytes.unwrap_or(0)),
                g.power_limit_w.map_or("?".into(), |w| format!("{w:.0} W"))
            ),
        ));
    }
    let mut t = Table::new(Vec::<String>::new()).class("env").row_headers();
    for (k, v) in rows {
        t.row([k.to_string(), v]);
    }
    t.html()
}

/// Writes the machine's report into `dir`; returns the page's path.
pub fn machine_report(m: &Machine, dir: &Path) -> crate::Result<PathBuf> {
    let table = fit_table::build(m);
    put(
        dir,
        "fit-table.md",
        &format!("# Fit table — {}\n\n{}", m.name, table.markdown()),
    )?;
    put(dir, "fit-table.csv", &table.csv()?)?;
    put(dir, "checks.md", &checks::markdown(m))?;
    for e in export::all() {
        put(dir, e.file_name(), &e.render(&m.records)?)?;
    }
    let mut figures = String::new();
    for (stem, chart) in charts(m) {
        figures.push_str(&figure(dir, stem, &chart)?);
    }
    let fits = match heatmap::machine_heatmap(m)? {
        Some(h) => format!(
            "<h2>Which Gemma 3 fits this machine</h2>\n{}",
            figure(dir, "fit-heatmap", &h)?
        ),
        None => String::new(),
    };
    let failed = m.records.iter().filter(|r| !r.outcome.is_ok()).count();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gemma-fit — {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>gemma-fit report — {name}</h1>\n\
         <p>{n} cases ({failed} did not finish). Memory is the {what}; speeds are medians over repeats.</p>\n\
         <h2>Fit table</h2>\n{table}\
         <p>Cells: measured peak memory · decode tok/s; a failure's recorded reason; <i>predicted</i> by the estimator where nothing was measured. \
         <a href=\"fit-table.md\">fit-table.md</a> · <a href=\"fit-table.csv\">fit-table.csv</a></p>\n\
         {fits}{checks}<p><a href=\"checks.md\">checks.md</a></p>\n\
         <h2>Charts</h2>\n{figures}\
         <h2>Exports</h2>\n<p><a href=\"llama-bench.json\">llama-bench.json</a> · <a href=\"llama-bench.csv\">llama-bench.csv</a> (a prefill row and a decode row per case, llama-bench's field names) · \
         <a href=\"bmf.json\">bmf.json</a> (Bencher Metric Format) · <a href=\"benchmark-action.json\">benchmark-action.json</a> (github-action-benchmark, bigger is better)</p>\n\
         <h2>Environment</h2>\n{env}</body></html>\n",
        name = escape(&m.name),
        n = m.records.len(),
        what = if m.on_gpu { "GPU process peak (NVML)" } else { "process's peak RSS" },
        table = table.html(),
        checks = checks::html(m),
        env = environment_html(m),
    );
    put(dir, "index.html", &html)?;
    Ok(dir.join("index.html"))
}
