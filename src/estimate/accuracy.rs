//! How right the estimator was (`gemma-fit fit --results`, and the report's checks): measured
//! cases set beside their predictions, with the error of the total and of the part that is not
//! weights.

use serde::Serialize;

use crate::error::Result;
use crate::estimate::{Breakdown, Query, Target};
use crate::output::table::Table;
use crate::output::Format;
use crate::result::case::{CaseEngine, FillKv};
use crate::result::CaseResult;
use crate::units::{ctx_label, mib};

/// A measured case beside its prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub case: String,
    pub target: Target,
    pub measured_peak_bytes: u64,
    pub predicted_bytes: u64,
    /// (predicted - measured) / measured.
    pub error: f64,
    pub measured_non_weight_bytes: u64,
    pub predicted_non_weight_bytes: u64,
    pub non_weight_error: f64,
    pub breakdown: Breakdown,
    /// Mean KL divergence (nats) and top-1 agreement (%) of a quality record of the same model,
    /// quantization and KV type, where one was given (`gemma-fit quality --out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_pct: Option<f64>,
}

/// Cases of `records` set beside their predictions; cases that cannot be predicted (not a
/// preset shape, failed, no memory reading) are returned as (case, reason).
pub fn against(records: &[CaseResult]) -> (Vec<Compared>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    // Quality records measure no memory: they lend their KL to the cases that match them.
    for r in records.iter().filter(|r| r.quality.is_none()) {
        match one(r) {
            Ok(mut c) => {
                if let Some(q) = crate::result::quality::matching(records, &r.key) {
                    c.kl_mean = Some(q.kl_mean.value);
                    c.top1_pct = Some(q.top1_pct.value);
                }
                out.push(c)
            }
            Err(why) => skipped.push((r.key.id(), why)),
        }
    }
    (out, skipped)
}

fn one(r: &CaseResult) -> std::result::Result<Compared, String> {
    let k = &r.key;
    let m = r
        .metrics
        .as_ref()
        .ok_or("no metrics (the case did not finish)")?;
    let q = Query::for_record(r)?;
    let measured = r.peak_bytes().ok_or(match q.target {
        Target::Cpu => "no peak RSS recorded",
        Target::Cuda => "no NVML process memory recorded",
    })?;
    let b = crate::estimate::predict_record(r, k.ctx)?;
    let weights =
        m.weights.resident_weight_bytes + m.vision_weights.map_or(0, |v| v.resident_weight_bytes);
    let measured_non_weight = measured.saturating_sub(weights);
    let rel = |p: u64, m: u64| {
        if m == 0 {
            0.0
        } else {
            (p as f64 - m as f64) / m as f64
        }
    };
    Ok(Compared {
        case: format!(
            "{} {} kv {} ctx {} p{}+g{}{}{}{}{}",
            q.size,
            q.quant,
            k.kv(),
            ctx_label(k.ctx),
            k.prompt_tokens,
            k.gen_tokens,
            match k.batch {
                1 => String::new(),
                b => format!(" × {b} seqs"),
            },
            if k.image.is_some() { " +image" } else { "" },
            if k.fill_kv == FillKv::None {
                ""
            } else {
                " (filled)"
            },
            match k.engine {
                CaseEngine::GemmaFit => String::new(),
                e => format!(" [{e}]"),
            }
        ),
        target: q.target,
        measured_peak_bytes: measured,
        predicted_bytes: b.total(),
        error: rel(b.total(), measured),
        measured_non_weight_bytes: measured_non_weight,
        predicted_non_weight_bytes: b.non_weight(),
        non_weight_error: rel(b.non_weight(), measured_non_weight),
        breakdown: b,
        kl_mean: None,
        top1_pct: None,
    })
}

fn pct(e: f64) -> String {
    format!("{:+.1}%", 100.0 * e)
}

fn mib1(b: u64) -> String {
    format!("{:.1}", mib(b))
}

/// The comparison in MiB and errors: as the report's checks show it, or (`with_device`) as
/// `fit --results` prints it, with the device each case ran on.
fn readable(c: &[Compared], with_device: bool) -> Table {
    let header: &[&str] = if with_device {
        &[
            "case (measured)",
            "on",
            "measured MiB",
            "predicted MiB",
            "error",
            "non-weight measured",
            "predicted",
            "error",
        ]
    } else {
        &[
            "case",
            "measured MiB",
            "predicted MiB",
            "error",
            "non-weight measured MiB",
            "non-weight predicted MiB",
            "non-weight error",
        ]
    };
    let with_kl = c.iter().any(|x| x.kl_mean.is_some());
    let mut header = header.to_vec();
    if with_kl {
        header.extend(["KL (nats)", "top-1"]);
    }
    let mut t = Table::new(header.iter().copied());
    for x in c {
        let mut row = vec![x.case.clone()];
        if with_device {
            row.push(x.target.to_string());
        }
        row.extend([
            mib1(x.measured_peak_bytes),
            mib1(x.predicted_bytes),
            pct(x.error),
            mib1(x.measured_non_weight_bytes),
            mib1(x.predicted_non_weight_bytes),
            pct(x.non_weight_error),
        ]);
        if with_kl {
            row.push(x.kl_mean.map_or("-".into(), |k| format!("{k:.4}")));
            row.push(x.top1_pct.map_or("-".into(), |p| format!("{p:.1}%")));
        }
        t.row(row);
    }
    t
}

/// The comparison as the report's checks show it.
pub fn table(c: &[Compared]) -> Table {
    readable(c, false)
}

/// Renders a comparison in `format` (CSV and JSON: one object per case).
pub fn render(c: &[Compared], skipped: &[(String, String)], format: Format) -> Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(c)? + "\n"),
        Format::Csv => {
            let mut t = Table::new([
                "case",
                "target",
                "measured_peak_bytes",
                "predicted_bytes",
                "error",
                "measured_non_weight_bytes",
                "predicted_non_weight_bytes",
                "non_weight_error",
            ]);
            for x in c {
                t.row([
                    x.case.clone(),
                    x.target.to_string(),
                    x.measured_peak_bytes.to_string(),
                    x.predicted_bytes.to_string(),
                    format!("{:.4}", x.error),
                    x.measured_non_weight_bytes.to_string(),
                    x.predicted_non_weight_bytes.to_string(),
                    format!("{:.4}", x.non_weight_error),
                ]);
            }
            t.csv()
        }
        Format::Table | Format::Md => {
            let t = readable(c, true);
            let mut out =
                "Measured peaks (CPU: peak RSS; CUDA: NVML process memory) beside predictions\n"
                    .to_string();
            out.push_str(&t.render(format)?);
            out.push('\n');
            for (case, why) in skipped {
                out.push_str(&format!("  not compared: {case}: {why}\n"));
            }
            Ok(out)
        }
    }
}
