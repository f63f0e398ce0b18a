//! Several machines side by side: per model × format × KV dtype, decode and prefill speed in the
//! same case shape, the largest context measured to run, and decode energy (J/token and its
//! inverse, tok/s per watt); a table (md, csv), grouped bar charts, the frontier over the
//! machines' memory sizes, and a page linking each machine's report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::output::table::{escape, Table};
use crate::report::charts::{BarChart, Chart};
use crate::report::{figure, frontier, put, Machine, Variant};
use crate::result::CaseResult;

/// One variant on one machine.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub decode_tok_per_s: Option<f64>,
    pub prefill_tok_per_s: Option<f64>,
    pub max_ctx: Option<usize>,
    pub j_per_token: Option<f64>,
}

pub struct Comparison {
    pub machines: Vec<String>,
    /// (variant, the case shape its speeds come from) → one entry per machine.
    pub rows: Vec<(Variant, String, Vec<Entry>)>,
}

impl Entry {
    /// Tokens per joule of decode: tok/s per watt.
    pub fn tok_per_s_per_w(&self) -> Option<f64> {
        self.j_per_token.filter(|j| *j > 0.0).map(|j| 1.0 / j)
    }
}

type Shape = (usize, usize, usize);

fn shape(r: &CaseResult) -> Shape {
    (r.key.ctx, r.key.prompt_tokens, r.key.gen_tokens)
}

pub fn build(machines: &[Machine]) -> Comparison {
    let mut variants: BTreeMap<Variant, Vec<Vec<&CaseResult>>> = BTreeMap::new();
    for (i, m) in machines.iter().enumerate() {
        for r in &m.records {
            let per = variants
                .entry(Variant::of(r))
                .or_insert_with(|| vec![Vec::new(); machines.len()]);
            per[i].push(r);
        }
    }
    let rows = variants
        .into_iter()
        .map(|(v, per)| {
            // The shape most machines ran (ties: the smallest), so speeds compare like for like.
            let mut count: BTreeMap<Shape, usize> = BTreeMap::new();
            for recs in &per {
                let shapes: BTreeSet<Shape> = recs
                    .iter()
                    .filter(|r| r.outcome.is_ok())
                    .map(|r| shape(r))
                    .collect();
                for s in shapes {
                    *count.entry(s).or_default() += 1;
                }
            }
            let best = count
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(s, _)| *s);
            let entries = per
                .iter()
                .map(|recs| {
                    let at = recs.iter().find(|r| {
                        r.outcome.is_ok() && Some(shape(r)) == best && r.metrics.is_some()
                    });
                    let m = at.and_then(|r| r.metrics.as_ref());
                    Entry {
                        decode_tok_per_s: m.map(|m| m.decode_tok_per_s.median),
                        prefill_tok_per_s: m.map(|m| m.prefill_tok_per_s.median),
                        max_ctx: recs
                            .iter()
                            .filter(|r| r.outcome.is_ok())
                            .map(|r| r.key.ctx)
                            .max(),
                        j_per_token: m.and_then(|m| {
                            m.energy
                                .iter()
                                .find(|e| e.phase == Some(crate::probe::sampler::Phase::Decode))
                                .and_then(|e| e.j_per_token)
                        }),
                    }
                })
                .collect();
            let label = best.map_or("-".into(), |(c, p, g)| format!("ctx {c}, {p}+{g}"));
            (v, label, entries)
        })
        .collect();
    Comparison {
        machines: machines.iter().map(|m| m.name.clone()).collect(),
        rows,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

impl Comparison {
    fn lines(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (v, shape, entries) in &self.rows {
            for (m, e) in self.machines.iter().zip(entries) {
                out.push(vec![
                    v.label(),
                    shape.clone(),
                    m.clone(),
                    opt(e.decode_tok_per_s, 1),
                    opt(e.prefill_tok_per_s, 1),
                    e.max_ctx.map_or("—".into(), |c| c.to_string()),
                    opt(e.j_per_token, 3),
                    opt(e.tok_per_s_per_w(), 2),
                ]);
            }
        }
        out
    }

    const HEADER: [&'static str; 8] = [
        "model × format × KV",
        "case",
        "machine",
        "decode tok/s",
        "prefill tok/s",
        "max ctx run",
        "decode J/token",
        "decode tok/s per W",
    ];

    fn table(&self) -> Table {
        let mut t = Table::new(Self::HEADER);
        for l in self.lines() {
            t.row(l);
        }
        t
    }

    pub fn markdown(&self) -> String {
        self.table().markdown() + "\n"
    }

    pub fn csv(&self) -> crate::Result<String> {
        self.table().csv()
    }

    fn bars(&self, title: &str, y: &str, f: impl Fn(&Entry) -> Option<f64>) -> Chart {
        Chart::Bars(BarChart {
            title: title.into(),
            y_label: y.into(),
            groups: self.rows.iter().map(|(v, _, _)| v.label()).collect(),
            members: self.machines.clone(),
            values: self
                .rows
                .iter()
                .map(|(_, _, e)| e.iter().map(&f).collect())
                .collect(),
        })
    }
}

/// Writes the comparison of `machines` into `dir` (their reports are in `dir/<slug>/`).
pub fn write(machines: &[Machine], dir: &Path) -> crate::Result<PathBuf> {
    let c = build(machines);
    put(
        dir,
        "compare.md",
        &format!("# Comparison\n\n{}", c.markdown()),
    )?;
    put(dir, "compare.csv", &c.csv()?)?;
    let mut figures = String::new();
    for (stem, chart) in [
        (
            "compare-decode",
            c.bars("Decode tok/s by machine", "decode tok/s", |e| {
                e.decode_tok_per_s
            }),
        ),
        (
            "compare-prefill",
            c.bars("Prefill tok/s by machine", "prefill tok/s", |e| {
                e.prefill_tok_per_s
            }),
        ),
    ] {
        figures.push_str(&figure(dir, stem, &chart)?);
    }
    // Energy, where some machine measured it (NVML on a GPU, RAPL on a CPU).
    if c.rows
        .iter()
        .any(|(_, _, e)| e.iter().any(|e| e.j_per_token.is_some()))
    {
        for (stem, chart) in [
            (
                "compare-tok-per-watt",
                c.bars(
                    "Decode tok/s per watt by machine",
                    "decode tok/s per W (tok/J)",
                    Entry::tok_per_s_per_w,
                ),
            ),
            (
                "compare-j-per-token",
                c.bars("Decode energy by machine", "decode J/token", |e| {
                    e.j_per_token
                }),
            ),
        ] {
            figures.push_str(&figure(dir, stem, &chart)?);
        }
    }
    let all: Vec<&Machine> = machines.iter().collect();
    if let Some(chart) = frontier::chart(&all, "Largest context vs memory, by machine") {
        figures.push_str(&figure(dir, "compare-frontier", &chart)?);
    }
    let links: String = machines
        .iter()
        .map(|m| {
            format!(
                "<li><a href=\"{}/index.html\">{}</a></li>\n",
                m.slug,
                escape(&m.name)
            )
        })
        .collect();
    let table = c.table().html();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gemma-fit — comparison</title>\
         <style>{style}</style></head><body>\n\
         <h1>gemma-fit — {} machines compared</h1>\n<ul>{links}</ul>\n\
         <p>Speeds come from the case shape most machines ran (column \"case\"); \"max ctx run\" is the largest context that finished; energy where the machine measured it (— where not). \
         <a href=\"compare.md\">compare.md</a> · <a href=\"compare.csv\">compare.csv</a></p>\n{table}<h2>Charts</h2>\n{figures}</body></html>\n",
        machines.len(),
        style = crate::report::page::STYLE,
    );
    put(dir, "index.html", &html)?;
    Ok(dir.join("index.html"))
}
