//! Fit verdicts and tables: predictions against a card's memory (or any memory size), the
//! largest context that fits, the decode-speed bound from bandwidth, and measured results set
//! beside their predictions.

use candle_core::DType;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::estimate::{predict, Breakdown, Query, Target};
use crate::result::CaseResult;

/// A prediction of at most this share of the memory "fits"; up to all of it is "tight".
pub const FITS_SHARE: f64 = 0.9;

/// Where the model should fit.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// A catalog GPU's name, "24 GiB", or "this machine".
    pub name: String,
    pub total_bytes: u64,
    pub bandwidth_gbs: Option<f64>,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Fits,
    Tight,
    DoesNotFit,
}

impl Verdict {
    pub fn of(predicted: u64, total: u64) -> Self {
        let p = predicted as f64;
        if p <= FITS_SHARE * total as f64 {
            Verdict::Fits
        } else if predicted <= total {
            Verdict::Tight
        } else {
            Verdict::DoesNotFit
        }
    }
}

/// One model × format × KV dtype × context.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub target_name: String,
    pub model: String,
    pub quant: String,
    pub kv_dtype: String,
    pub ctx: usize,
    pub predicted_bytes: u64,
    pub verdict: Verdict,
    pub total_bytes: u64,
    /// Memory left over (negative when it does not fit).
    pub free_bytes: i64,
    /// Bandwidth ÷ bytes read per decoded token at this context: an upper bound, not a
    /// measurement.
    pub decode_tok_per_s_bound: Option<f64>,
    pub breakdown: Breakdown,
    /// The row's largest context that fits (≤ 90%), repeated on each of its cells.
    pub max_ctx_fits: Option<usize>,
}

/// One model × format × KV dtype across the requested contexts.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub quant: String,
    pub kv_dtype: String,
    /// The model's longest context: longer columns are not applicable (None).
    pub max_position: usize,
    pub cells: Vec<Option<Cell>>,
    pub max_ctx_fits: Option<usize>,
}

/// What to tabulate.
#[derive(Debug, Clone)]
pub struct Request {
    /// Sizes ("270m" … "27b", "synthetic:4b", "gemma-3-4b") or "default" (the 270M Q4_K_M
    /// GGUF, which brings its tokenizer and its own format).
    pub models: Vec<String>,
    pub quants: Vec<String>,
    pub kv_dtypes: Vec<String>,
    pub ctxs: Vec<usize>,
    /// Positions per forward pass (the prefill chunk).
    pub rows: usize,
    pub image: bool,
    /// Also print each cell's breakdown (table and md formats; json and csv always have it).
    pub breakdown: bool,
}

/// Parses a context: "4096", "4K", "128k" (K = 1024).
pub fn parse_ctx(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1024),
        None => (t, 1),
    };
    match num.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!(
            "'{s}' is not a context length (e.g. 4096, 4K, 128K)"
        )),
    }
}

/// "4K" for multiples of 1024, else the number.
pub fn ctx_label(ctx: usize) -> String {
    if ctx.is_multiple_of(1024) {
        format!("{}K", ctx / 1024)
    } else {
        ctx.to_string()
    }
}

fn parse_kv(s: &str) -> Result<DType> {
    crate::measure::pass::parse_kv_dtype(s).map_err(Error::Unsupported)
}

/// (size, quant, tokenizer) rows of a request.
fn model_rows(req: &Request) -> Result<Vec<(String, String, bool)>> {
    let mut out = Vec::new();
    for m in &req.models {
        let m = m.trim();
        if m.eq_ignore_ascii_case("default") {
            out.push(("270m".to_string(), "q4_k_m".to_string(), true));
            continue;
        }
        let size = m.strip_prefix("synthetic:").unwrap_or(m);
        let p = crate::estimate::preset(size)?;
        for q in &req.quants {
            crate::engine::load::synthetic::parse_format(q)?;
            out.push((p.name.to_string(), q.to_ascii_lowercase(), false));
        }
    }
    Ok(out)
}

fn query(
    size: &str,
    quant: &str,
    tokenizer: bool,
    kv: DType,
    ctx: usize,
    req: &Request,
    target: Target,
) -> Query {
    Query {
        size: size.into(),
        quant: quant.into(),
        kv_dtype: kv,
        ctx,
        rows: req.rows,
        image: req.image,
        target,
        tokenizer,
    }
}

/// The largest context whose prediction fits (≤ 90%).
fn max_ctx_fits(base: &Query, max_position: usize, cap: &Capacity) -> Result<Option<usize>> {
    largest_ctx(base, max_position, |total| {
        Verdict::of(total, cap.total_bytes) == Verdict::Fits
    })
}

/// The largest context in 1..=`max_position` whose predicted total satisfies `fits`, by bisection
/// (memory grows with context); None when not even one position does.
pub fn largest_ctx(
    base: &Query,
    max_position: usize,
    fits: impl Fn(u64) -> bool,
) -> Result<Option<usize>> {
    let fits = |ctx: usize| -> Result<bool> {
        let p = predict(&Query {
            ctx,
            ..base.clone()
        })?;
        Ok(fits(p.breakdown.total()))
    };
    if !fits(1)? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (1, max_position);
    if fits(hi)? {
        return Ok(Some(hi));
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

/// The fit table of `req` on `cap`.
pub fn table(req: &Request, cap: &Capacity) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (size, quant, tokenizer) in model_rows(req)? {
        for kv_name in &req.kv_dtypes {
            let kv = parse_kv(kv_name)?;
            let base = query(&size, &quant, tokenizer, kv, 1, req, cap.target);
            let max_position = predict(&base)?.max_ctx;
            let max_ctx = max_ctx_fits(&base, max_position, cap)?;
            let mut cells = Vec::new();
            for &ctx in &req.ctxs {
                if ctx > max_position {
                    cells.push(None);
                    continue;
                }
                let p = predict(&Query {
                    ctx,
                    ..base.clone()
                })?;
                let total = p.breakdown.total();
                cells.push(Some(Cell {
                    target_name: cap.name.clone(),
                    model: size.clone(),
                    quant: quant.clone(),
                    kv_dtype: kv_name.to_ascii_lowercase(),
                    ctx,
                    predicted_bytes: total,
                    verdict: Verdict::of(total, cap.total_bytes),
                    total_bytes: cap.total_bytes,
                    free_bytes: cap.total_bytes as i64 - total as i64,
                    decode_tok_per_s_bound: cap
                        .bandwidth_gbs
                        .map(|bw| bw * 1e9 / p.bytes_per_token as f64),
                    breakdown: p.breakdown,
                    max_ctx_fits: max_ctx,
                }));
            }
            rows.push(Row {
                model: size.clone(),
                quant: quant.clone(),
                kv_dtype: kv_name.to_ascii_lowercase(),
                max_position,
                cells,
                max_ctx_fits: max_ctx,
            });
        }
    }
    Ok(rows)
}

fn gib(b: f64) -> f64 {
    b / (1u64 << 30) as f64
}

fn cell_text(c: &Option<Cell>, max_position: usize) -> String {
    match c {
        None => format!("n/a (max {})", ctx_label(max_position)),
        Some(c) => {
            let p = gib(c.predicted_bytes as f64);
            match c.verdict {
                Verdict::Fits => format!("fits {p:.2} GiB ({:.1} free)", gib(c.free_bytes as f64)),
                Verdict::Tight => format!("tight {p:.2} GiB"),
                Verdict::DoesNotFit => format!("no: {p:.2} GiB"),
            }
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Md,
    Csv,
    Json,
}

fn header_line(cap: &Capacity) -> String {
    let what = match cap.target {
        Target::Cuda => "device memory of one process (CUDA)",
        Target::Cpu => "peak resident memory of the process (CPU)",
    };
    format!(
        "{}: {:.2} GiB{}; predicted {what}; fits = at most {:.0}% of it, tight = up to 100%",
        cap.name,
        gib(cap.total_bytes as f64),
        cap.bandwidth_gbs
            .map(|b| format!(", {b} GB/s"))
            .unwrap_or_default(),
        FITS_SHARE * 100.0
    )
}

fn notes(cap: &Capacity) -> Vec<String> {
    let mut n = Vec::new();
    if cap.bandwidth_gbs.is_some() {
        n.push("decode ≤: bandwidth ÷ bytes read per token (weights + KV in span at the first context column): an upper bound, not a measurement".into());
    }
    if cap.target == Target::Cuda {
        n.push(format!(
            "CUDA: the {} MiB context overhead is PyTorch's measured figure, not yet measured for this engine, and no GPU figure of this estimator has been checked on a GPU yet",
            crate::estimate::CUDA_CONTEXT_BYTES >> 20
        ));
    }
    n
}

/// Renders a table in `format`.
pub fn render(rows: &[Row], req: &Request, cap: &Capacity, format: Format) -> Result<String> {
    match format {
        Format::Json => {
            let cells: Vec<&Cell> = rows.iter().flat_map(|r| r.cells.iter().flatten()).collect();
            Ok(serde_json::to_string_pretty(&cells)? + "\n")
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record([
                "target",
                "model",
                "quant",
                "kv_dtype",
                "ctx",
                "predicted_bytes",
                "verdict",
                "total_bytes",
                "free_bytes",
                "decode_tok_per_s_bound",
                "weights",
                "vision_weights",
                "kv_cache",
                "rope_tables",
                "workspace",
                "runtime",
                "load_peak",
                "max_ctx_fits",
            ])
            .map_err(csv_err)?;
            for c in rows.iter().flat_map(|r| r.cells.iter().flatten()) {
                let b = c.breakdown;
                let opt = |v: Option<String>| v.unwrap_or_default();
                w.write_record([
                    c.target_name.clone(),
                    c.model.clone(),
                    c.quant.clone(),
                    c.kv_dtype.clone(),
                    c.ctx.to_string(),
                    c.predicted_bytes.to_string(),
                    serde_json::to_value(c.verdict)?
                        .as_str()
                        .unwrap_or("")
                        .into(),
                    c.total_bytes.to_string(),
                    c.free_bytes.to_string(),
                    opt(c.decode_tok_per_s_bound.map(|v| format!("{v:.1}"))),
                    b.weights.to_string(),
                    b.vision_weights.to_string(),
                    b.kv_cache.to_string(),
                    b.rope_tables.to_string(),
                    b.workspace.to_string(),
                    b.runtime.to_string(),
                    b.load_peak.to_string(),
                    opt(c.max_ctx_fits.map(|v| v.to_string())),
                ])
                .map_err(csv_err)?;
            }
            csv_string(w)
        }
        Format::Table | Format::Md => {
            let mut t = new_table(format);
            let mut header: Vec<String> = vec!["model".into(), "format".into(), "KV".into()];
            header.extend(req.ctxs.iter().map(|&c| ctx_label(c)));
            header.push("max ctx (fits)".into());
            if cap.bandwidth_gbs.is_some() {
                header.push("decode ≤ tok/s".into());
            }
            t.set_header(header);
            for r in rows {
                let mut line = vec![r.model.clone(), r.quant.clone(), r.kv_dtype.clone()];
                line.extend(r.cells.iter().map(|c| cell_text(c, r.max_position)));
                line.push(r.max_ctx_fits.map_or("none".into(), |c| {
                    if c == r.max_position {
                        format!("{} (all)", ctx_label(c))
                    } else {
                        c.to_string()
                    }
                }));
                if cap.bandwidth_gbs.is_some() {
                    let bound = r
                        .cells
                        .iter()
                        .flatten()
                        .next()
                        .and_then(|c| c.decode_tok_per_s_bound);
                    line.push(bound.map_or("-".into(), |b| format!("{b:.0}")));
                }
                t.add_row(line);
            }
            let mut out = header_line(cap);
            out.push_str(if format == Format::Md { "\n\n" } else { "\n" });
            out.push_str(&t.to_string());
            out.push('\n');
            if req.breakdown {
                out.push('\n');
                out.push_str(&breakdown_table(rows, format));
                out.push('\n');
            }
            for n in notes(cap) {
                out.push_str(if format == Format::Md { "\n- " } else { "\n  " });
                out.push_str(&n);
            }
            out.push('\n');
            Ok(out)
        }
    }
}

/// One line per cell: what the prediction is made of, in MiB.
fn breakdown_table(rows: &[Row], format: Format) -> String {
    let mut t = new_table(format);
    t.set_header([
        "MiB",
        "weights",
        "vision",
        "KV cache",
        "RoPE",
        "workspace",
        "runtime",
        "load peak",
        "total",
    ]);
    let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
    for c in rows.iter().flat_map(|r| r.cells.iter().flatten()) {
        let b = c.breakdown;
        t.add_row([
            format!(
                "{} {} kv {} {}",
                c.model,
                c.quant,
                c.kv_dtype,
                ctx_label(c.ctx)
            ),
            mib(b.weights),
            mib(b.vision_weights),
            mib(b.kv_cache),
            mib(b.rope_tables),
            mib(b.workspace),
            mib(b.runtime),
            mib(b.load_peak),
            mib(b.total()),
        ]);
    }
    t.to_string()
}

/// A table in the style of `format`: markdown for md, box drawing for the terminal.
pub fn new_table(format: Format) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(if format == Format::Md {
        comfy_table::presets::ASCII_MARKDOWN
    } else {
        comfy_table::presets::UTF8_FULL_CONDENSED
    });
    t
}

/// The text a CSV writer holds.
pub(crate) fn csv_string(w: csv::Writer<Vec<u8>>) -> Result<String> {
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Unsupported(format!("writing CSV: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn csv_err(e: csv::Error) -> Error {
    Error::Unsupported(format!("writing CSV: {e}"))
}

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
}

/// Cases of `records` set beside their predictions; cases that cannot be predicted (not a
/// preset shape, failed, no memory reading) are returned as (case, reason).
pub fn compare(records: &[CaseResult]) -> (Vec<Compared>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for r in records {
        match compare_one(r) {
            Ok(c) => out.push(c),
            Err(why) => skipped.push((r.key.id(), why)),
        }
    }
    (out, skipped)
}

fn compare_one(r: &CaseResult) -> std::result::Result<Compared, String> {
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
    let p = predict(&q).map_err(|e| e.to_string())?;
    let b = p.breakdown;
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
            "{} {} kv {} ctx {} p{}+g{}{}{}",
            q.size,
            q.quant,
            k.kv_dtype,
            ctx_label(k.ctx),
            k.prompt_tokens,
            k.gen_tokens,
            if k.image.is_some() { " +image" } else { "" },
            if k.fill_kv.is_some() { " (filled)" } else { "" }
        ),
        target: q.target,
        measured_peak_bytes: measured,
        predicted_bytes: b.total(),
        error: rel(b.total(), measured),
        measured_non_weight_bytes: measured_non_weight,
        predicted_non_weight_bytes: b.non_weight(),
        non_weight_error: rel(b.non_weight(), measured_non_weight),
        breakdown: b,
    })
}

/// Renders a comparison in `format` (CSV and JSON: one object per case).
pub fn render_compared(
    c: &[Compared],
    skipped: &[(String, String)],
    format: Format,
) -> Result<String> {
    let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
    let pct = |e: f64| format!("{:+.1}%", 100.0 * e);
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(c)? + "\n"),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record([
                "case",
                "target",
                "measured_peak_bytes",
                "predicted_bytes",
                "error",
                "measured_non_weight_bytes",
                "predicted_non_weight_bytes",
                "non_weight_error",
            ])
            .map_err(csv_err)?;
            for x in c {
                w.write_record([
                    x.case.clone(),
                    format!("{:?}", x.target).to_ascii_lowercase(),
                    x.measured_peak_bytes.to_string(),
                    x.predicted_bytes.to_string(),
                    format!("{:.4}", x.error),
                    x.measured_non_weight_bytes.to_string(),
                    x.predicted_non_weight_bytes.to_string(),
                    format!("{:.4}", x.non_weight_error),
                ])
                .map_err(csv_err)?;
            }
            csv_string(w)
        }
        Format::Table | Format::Md => {
            let mut t = new_table(format);
            t.set_header([
                "case (measured)",
                "on",
                "measured MiB",
                "predicted MiB",
                "error",
                "non-weight measured",
                "predicted",
                "error",
            ]);
            for x in c {
                t.add_row([
                    x.case.clone(),
                    format!("{:?}", x.target).to_ascii_lowercase(),
                    mib(x.measured_peak_bytes),
                    mib(x.predicted_bytes),
                    pct(x.error),
                    mib(x.measured_non_weight_bytes),
                    mib(x.predicted_non_weight_bytes),
                    pct(x.non_weight_error),
                ]);
            }
            let mut out =
                "Measured peaks (CPU: peak RSS; CUDA: NVML process memory) beside predictions\n"
                    .to_string();
            out.push_str(&t.to_string());
            out.push('\n');
            for (case, why) in skipped {
                out.push_str(&format!("  not compared: {case}: {why}\n"));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_90_percent_line() {
        assert_eq!(Verdict::of(90, 100), Verdict::Fits);
        assert_eq!(Verdict::of(91, 100), Verdict::Tight);
        assert_eq!(Verdict::of(100, 100), Verdict::Tight);
        assert_eq!(Verdict::of(101, 100), Verdict::DoesNotFit);
        assert_eq!(parse_ctx("128K"), Ok(131_072));
        assert_eq!(parse_ctx("4096"), Ok(4096));
        assert!(parse_ctx("0").is_err() && parse_ctx("4M").is_err());
        assert_eq!(ctx_label(131_072), "128K");
        assert_eq!(ctx_label(68_015), "68015");
    }

    /// The largest context that fits is the last one whose prediction is within 90%.
    #[test]
    fn max_ctx_is_the_frontier_of_the_prediction() {
        let req = Request {
            models: vec!["27b".into()],
            quants: vec!["q4_k_m".into()],
            kv_dtypes: vec!["bf16".into()],
            ctxs: vec![4096],
            rows: 512,
            image: false,
            breakdown: false,
        };
        let cap = Capacity {
            name: "24 GiB".into(),
            total_bytes: 24 << 30,
            bandwidth_gbs: Some(1000.0),
            target: Target::Cuda,
        };
        let rows = table(&req, &cap).unwrap();
        let max = rows[0].max_ctx_fits.unwrap();
        assert!(max > 4096 && max < 131_072, "{max}");
        let at = |ctx| {
            let q = query("27b", "q4_k_m", false, DType::BF16, ctx, &req, Target::Cuda);
            Verdict::of(predict(&q).unwrap().breakdown.total(), cap.total_bytes)
        };
        assert_eq!(at(max), Verdict::Fits);
        assert_ne!(at(max + 1), Verdict::Fits);
        let cell = rows[0].cells[0].as_ref().unwrap();
        assert!(cell.decode_tok_per_s_bound.unwrap() < 1000e9 / cell.breakdown.weights as f64);
        // Nothing fits in a few MiB.
        let tiny = Capacity {
            total_bytes: 64 << 20,
            ..cap
        };
        assert_eq!(table(&req, &tiny).unwrap()[0].max_ctx_fits, None);
    }
}
