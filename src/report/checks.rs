//! Each measured case of a machine against two references: the estimator's prediction of its
//! peak memory (the error), and the memory-bandwidth limit on its decode speed (the bytes one
//! decoded token reads, weights plus the KV cache in span at the mean decode depth, ÷ the
//! machine's measured bandwidth from `gemma-fit bandwidth`).

use serde::Serialize;

use crate::engine::plan::kv_bytes_read_per_token;
use crate::estimate::accuracy;
use crate::output::table::{escape, Table};
use crate::report::{Machine, Variant};
use crate::result::case::FillKv;
use crate::result::CaseResult;
use crate::units::{ctx_label, mib};

/// A decode speed beside its bandwidth limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeLimit {
    pub case: String,
    /// Mean KV-cache depth over the decoded tokens.
    pub depth: usize,
    pub decode_tok_per_s: f64,
    /// Resident text weights plus the KV cache read at `depth`.
    pub bytes_per_token: u64,
    pub limit_tok_per_s: f64,
    /// decode ÷ limit.
    pub share_of_limit: f64,
}

fn label(r: &CaseResult) -> String {
    let k = &r.key;
    format!(
        "{} ctx {} p{}+g{}{}",
        Variant::of(r).label(),
        ctx_label(k.ctx),
        k.prompt_tokens,
        k.gen_tokens,
        if k.fill_kv == FillKv::None {
            ""
        } else {
            " (filled)"
        }
    )
}

/// The finished cases of `m` that decoded, against `m`'s bandwidth (none without one).
pub fn decode_limits(m: &Machine) -> Vec<DecodeLimit> {
    let Some(bw) = &m.bandwidth else {
        return Vec::new();
    };
    let mut out: Vec<(Variant, usize, DecodeLimit)> = m
        .records
        .iter()
        .filter_map(|r| {
            Some((
                Variant::of(r),
                r.key.ctx,
                decode_limit(r, bw.decode_bytes_per_s)?,
            ))
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out.into_iter().map(|(_, _, d)| d).collect()
}

fn decode_limit(r: &CaseResult, bytes_per_s: f64) -> Option<DecodeLimit> {
    let m = r.metrics.as_ref().filter(|_| r.outcome.is_ok())?;
    let decode = m.decode_tok_per_s.median;
    if r.key.gen_tokens == 0 || decode <= 0.0 || bytes_per_s <= 0.0 {
        return None;
    }
    let cfg = crate::estimate::preset(r.key.size.as_deref()?).ok()?.config;
    let depth = m.fill_depth + m.prompt_positions + r.key.gen_tokens / 2;
    // A decode step reads the weights once and every sequence's cache, for one token each.
    let batch = r.key.batch.max(1);
    let bytes = m.weights.resident_weight_bytes
        + batch as u64 * kv_bytes_read_per_token(&cfg, depth, r.key.kv());
    let limit = batch as f64 * bytes_per_s / bytes as f64;
    Some(DecodeLimit {
        case: label(r),
        depth,
        decode_tok_per_s: decode,
        bytes_per_token: bytes / batch as u64,
        limit_tok_per_s: limit,
        share_of_limit: decode / limit,
    })
}

fn limit_table(limits: &[DecodeLimit]) -> Table {
    let mut t = Table::new([
        "case",
        "mean depth",
        "decode tok/s",
        "MiB read per token",
        "limit tok/s",
        "% of limit",
    ]);
    for d in limits {
        t.row([
            d.case.clone(),
            d.depth.to_string(),
            format!("{:.1}", d.decode_tok_per_s),
            format!("{:.1}", mib(d.bytes_per_token)),
            format!("{:.1}", d.limit_tok_per_s),
            format!("{:.0}%", 100.0 * d.share_of_limit),
        ]);
    }
    t
}

fn estimator_table(m: &Machine) -> Table {
    accuracy::table(&accuracy::against(&m.records).0)
}

/// What the figures are measured against, in words.
fn bandwidth_sentence(m: &Machine) -> String {
    match &m.bandwidth {
        Some(b) => format!(
            "Measured bandwidth {:.1} GB/s ({}; `gemma-fit bandwidth`, {} MiB buffer, median of {}).",
            b.decode_bytes_per_s / 1e9,
            if b.device == "cpu" {
                format!("read with {} threads", b.threads)
            } else {
                "device-to-device copy, bytes read + written".to_string()
            },
            b.buffer_bytes >> 20,
            b.repeats
        ),
        None => "No bandwidth measurement was given (`gemma-fit bandwidth --json > bandwidth.json` beside the results, or `report --bandwidth FILE`).".into(),
    }
}

const ESTIMATOR_NOTE: &str = "Predicted by `gemma-fit fit`'s estimator for the same case; error = (predicted − measured) ÷ measured. Non-weight: the peak less the resident weights.";
const LIMIT_NOTE: &str = "Limit = bandwidth ÷ bytes a decoded token reads (resident text weights plus the KV cache in span at the mean decode depth).";

/// `checks.md` for the machine's folder.
pub fn markdown(m: &Machine) -> String {
    let limits = decode_limits(m);
    format!(
        "# Measured against the estimator and the bandwidth limit — {}\n\n## Estimator error\n\n{ESTIMATOR_NOTE}\n\n{}\n\n## Decode against the memory-bandwidth limit\n\n{} {LIMIT_NOTE}\n\n{}",
        m.name,
        estimator_table(m).markdown(),
        bandwidth_sentence(m),
        if limits.is_empty() {
            String::new()
        } else {
            limit_table(&limits).markdown() + "\n"
        }
    )
}

/// The same, as sections of the HTML page.
pub fn html(m: &Machine) -> String {
    let limits = decode_limits(m);
    format!(
        "<h2>Estimator error</h2>\n<p>{}</p>\n{}<h2>Decode against the memory-bandwidth limit</h2>\n<p>{} {}</p>\n{}",
        escape(ESTIMATOR_NOTE),
        estimator_table(m).html(),
        escape(&bandwidth_sentence(m)),
        escape(LIMIT_NOTE),
        if limits.is_empty() { String::new() } else { limit_table(&limits).html() }
    )
}
