//! The regression gate (`gemma-fit compare BASE NEW`): cases matched by key, and for each
//! metric a verdict from the per-repeat samples rather than from one number.
//!
//! Throughput (and time to first token) gets a bootstrap 95% confidence interval of the ratio of
//! medians (resampling each side's repeats): regressed only when the whole interval is worse
//! than the threshold, improved when it is all better, unchanged when it all lies inside the
//! band, and "too noisy to tell" otherwise, so a noisy runner warns instead of failing the build.
//! Peak memory is nearly deterministic: one reading per case, compared against a tight
//! threshold.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::output::table::Table;
use crate::output::Format;
use crate::result::CaseResult;
use crate::stats::bootstrap_ratio_interval;
use crate::units::MIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Metric {
    DecodeTokPerS,
    PrefillTokPerS,
    TtftMs,
    PeakMemory,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::DecodeTokPerS,
        Metric::PrefillTokPerS,
        Metric::TtftMs,
        Metric::PeakMemory,
    ];

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::DecodeTokPerS | Metric::PrefillTokPerS)
    }

    fn name(self) -> &'static str {
        match self {
            Metric::DecodeTokPerS => "decode tok/s",
            Metric::PrefillTokPerS => "prefill tok/s",
            Metric::TtftMs => "time to first token (ms)",
            Metric::PeakMemory => "peak memory (MiB)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Unchanged,
    Regressed,
    TooNoisy,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub metrics: Vec<Metric>,
    /// Allowed relative change of throughput and time to first token (0.05 = 5%).
    pub threshold_throughput: f64,
    /// Allowed relative growth of peak memory.
    pub threshold_memory: f64,
    pub resamples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            metrics: Metric::ALL.to_vec(),
            threshold_throughput: 0.05,
            threshold_memory: 0.01,
            resamples: 4000,
        }
    }
}

/// Parses "5%" or "0.05".
pub fn parse_share(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("'{s}' is not a threshold (e.g. 5% or 0.05)"))?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("'{s}': a threshold is between 0% and 100%"));
    }
    Ok(v)
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub case: String,
    pub metric: Metric,
    /// Medians (memory: the reading).
    pub base: f64,
    pub new: f64,
    /// Relative change of the figure itself: new / base - 1.
    pub change: f64,
    /// 95% interval of that change, from the bootstrap (None for memory).
    pub ci: Option<(f64, f64)>,
    pub verdict: Verdict,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    /// Cases that finished in the base and not in the new run (or the other way round).
    pub outcome_changes: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn regressed(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.verdict == Verdict::Regressed)
            || self
                .outcome_changes
                .iter()
                .any(|(_, what)| what.starts_with("regressed"))
    }

    fn count(&self, v: Verdict) -> usize {
        self.findings.iter().filter(|f| f.verdict == v).count()
    }
}

/// The verdict on a change interval [lo, hi] of a figure where `higher_is_better` or not.
fn judge(lo: f64, hi: f64, threshold: f64, higher_is_better: bool) -> Verdict {
    // In "better" terms: positive is an improvement.
    let (lo, hi) = if higher_is_better {
        (lo, hi)
    } else {
        (-hi, -lo)
    };
    if hi < -threshold {
        Verdict::Regressed
    } else if lo > threshold {
        Verdict::Improved
    } else if lo >= -threshold && hi <= threshold {
        Verdict::Unchanged
    } else {
        Verdict::TooNoisy
    }
}

fn peak(r: &CaseResult) -> Option<f64> {
    r.peak_bytes().map(|b| b as f64)
}

/// Seed for a case's bootstrap: stable across runs, different across cases.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub fn compare(base: &[CaseResult], new: &[CaseResult], opt: &Options) -> Report {
    let index = |rs: &[CaseResult]| -> BTreeMap<String, CaseResult> {
        crate::result::store::newest_per_key(rs.to_vec())
            .into_iter()
            .map(|r| (r.key.id(), r))
            .collect()
    };
    let (b, n) = (index(base), index(new));
    let mut report = Report {
        only_in_base: b.keys().filter(|k| !n.contains_key(*k)).cloned().collect(),
        only_in_new: n.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
        ..Report::default()
    };
    for (id, rb) in &b {
        let Some(rn) = n.get(id) else { continue };
        let (mb, mn) = match (&rb.metrics, &rn.metrics) {
            (Some(x), Some(y)) if rb.outcome.is_ok() && rn.outcome.is_ok() => (x, y),
            _ => {
                let what = match (rb.outcome.is_ok(), rn.outcome.is_ok()) {
                    (true, false) => {
                        format!(
                            "regressed: finished in the base, {} now",
                            crate::output::outcome::line(&rn.outcome)
                        )
                    }
                    (false, true) => "improved: failed in the base, finishes now".to_string(),
                    _ => "failed on both sides".to_string(),
                };
                report.outcome_changes.push((id.clone(), what));
                continue;
            }
        };
        for &metric in &opt.metrics {
            let finding = match metric {
                Metric::PeakMemory => {
                    let (Some(x), Some(y)) = (peak(rb), peak(rn)) else {
                        continue;
                    };
                    let change = y / x - 1.0;
                    Finding {
                        case: id.clone(),
                        metric,
                        base: x / MIB as f64,
                        new: y / MIB as f64,
                        change,
                        ci: None,
                        verdict: judge(change, change, opt.threshold_memory, false),
                        note: None,
                    }
                }
                _ => {
                    let (sb, sn) = match metric {
                        Metric::DecodeTokPerS => (&mb.decode_tok_per_s, &mn.decode_tok_per_s),
                        Metric::PrefillTokPerS => (&mb.prefill_tok_per_s, &mn.prefill_tok_per_s),
                        _ => (&mb.ttft_ms, &mn.ttft_ms),
                    };
                    let (xs, ys) = (sb.values(), sn.values());
                    if xs.is_empty() || ys.is_empty() || sb.median <= 0.0 {
                        continue;
                    }
                    let (ci, verdict, note) = if xs.len() < 3 || ys.len() < 3 {
                        let why = format!(
                            "{} and {} repeats: at least 3 a side are needed to judge",
                            xs.len(),
                            ys.len()
                        );
                        (None, Verdict::TooNoisy, Some(why))
                    } else {
                        let (lo, hi) =
                            bootstrap_ratio_interval(&xs, &ys, opt.resamples, seed_of(id));
                        let better_up = metric.higher_is_better();
                        let v = judge(lo, hi, opt.threshold_throughput, better_up);
                        (Some((lo, hi)), v, None)
                    };
                    Finding {
                        case: id.clone(),
                        metric,
                        base: sb.median,
                        new: sn.median,
                        change: sn.median / sb.median - 1.0,
                        ci,
                        verdict,
                        note,
                    }
                }
            };
            report.findings.push(finding);
        }
    }
    let noisy = report.count(Verdict::TooNoisy);
    if noisy > 0 {
        report.warnings.push(format!(
            "{noisy} figure(s) too noisy to tell: their 95% interval straddles the ±threshold band; add repeats or a quieter runner"
        ));
    }
    if !report.only_in_base.is_empty() || !report.only_in_new.is_empty() {
        report.warnings.push(format!(
            "{} case(s) only in the base, {} only in the new results: not compared",
            report.only_in_base.len(),
            report.only_in_new.len()
        ));
    }
    report
}

/// Reads BASE and NEW result files and compares them; input problems are errors (exit 2).
pub fn compare_files(
    base: &std::path::Path,
    new: &std::path::Path,
    opt: &Options,
) -> Result<Report> {
    let (b, _) = crate::result::store::read_set(base)?;
    let (n, _) = crate::result::store::read_set(new)?;
    let report = compare(&b, &n, opt);
    if report.findings.is_empty() && report.outcome_changes.is_empty() {
        return Err(Error::BadInput(format!(
            "{} and {} have no case in common (keys differ: model, format, context, prompt, threads, device...)",
            base.display(),
            new.display()
        )));
    }
    Ok(report)
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Improved => "improved",
        Verdict::Unchanged => "unchanged",
        Verdict::Regressed => "REGRESSED",
        Verdict::TooNoisy => "too noisy to tell",
    }
}

pub fn render(r: &Report, format: Format) -> Result<String> {
    if format == Format::Json {
        return Ok(serde_json::to_string_pretty(r)? + "\n");
    }
    if format == Format::Csv {
        return Err(Error::BadInput("compare prints table, md or json".into()));
    }
    let md = format == Format::Md;
    let mut out = String::new();
    let summary = format!(
        "{}: {} regressed, {} improved, {} unchanged, {} too noisy to tell",
        if r.regressed() {
            "Regression"
        } else {
            "No regression"
        },
        r.count(Verdict::Regressed)
            + r.outcome_changes
                .iter()
                .filter(|(_, w)| w.starts_with("regressed"))
                .count(),
        r.count(Verdict::Improved),
        r.count(Verdict::Unchanged),
        r.count(Verdict::TooNoisy),
    );
    out.push_str(&if md {
        format!("### gemma-fit compare — {summary}\n\n")
    } else {
        format!("{summary}\n")
    });
    let mut t = Table::new([
        "case",
        "metric",
        "base",
        "new",
        "change",
        "95% interval",
        "verdict",
    ]);
    for f in &r.findings {
        t.row([
            f.case.clone(),
            f.metric.name().to_string(),
            format!("{:.2}", f.base),
            format!("{:.2}", f.new),
            format!("{:+.1}%", 100.0 * f.change),
            f.ci.map_or("—".into(), |(lo, hi)| {
                format!("{:+.1}% … {:+.1}%", 100.0 * lo, 100.0 * hi)
            }),
            match &f.note {
                Some(n) => format!("{} ({n})", verdict_text(f.verdict)),
                None => verdict_text(f.verdict).to_string(),
            },
        ]);
    }
    out.push_str(&t.render(format)?);
    out.push('\n');
    let list = |title: &str, items: &[String]| -> String {
        if items.is_empty() {
            return String::new();
        }
        let mut s = format!("\n{title}:\n");
        for i in items {
            s.push_str(&format!("- {i}\n"));
        }
        s
    };
    out.push_str(&list(
        "Outcome changed",
        &r.outcome_changes
            .iter()
            .map(|(c, w)| format!("{c}: {w}"))
            .collect::<Vec<_>>(),
    ));
    out.push_str(&list("Only in the base (not compared)", &r.only_in_base));
    out.push_str(&list(
        "Only in the new results (not compared)",
        &r.only_in_new,
    ));
    out.push_str(&list("Warnings", &r.warnings));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_interval() {
        assert_eq!(judge(-0.22, -0.18, 0.05, true), Verdict::Regressed);
        assert_eq!(judge(0.18, 0.22, 0.05, true), Verdict::Improved);
        assert_eq!(judge(-0.02, 0.03, 0.05, true), Verdict::Unchanged);
        assert_eq!(judge(-0.4, 0.3, 0.05, true), Verdict::TooNoisy);
        // Lower is better (memory, time): growth is a regression.
        assert_eq!(judge(0.02, 0.02, 0.01, false), Verdict::Regressed);
        assert_eq!(judge(-0.02, -0.02, 0.01, false), Verdict::Improved);
        assert_eq!(parse_share("5%"), Ok(0.05));
        assert_eq!(parse_share("0.01"), Ok(0.01));
        assert!(parse_share("150%").is_err() && parse_share("x").is_err());
    }
}
