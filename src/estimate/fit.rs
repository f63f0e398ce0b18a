//! Fit verdicts and tables (`gemma-fit fit`): predictions against a card's memory (or any memory
//! size), the largest context that fits, and the decode-speed bound from bandwidth.

use serde::Serialize;

use crate::engine::kv_cache::KvPair;
use crate::engine::load::format::Format;
use crate::error::Result;
use crate::estimate::{predict, Breakdown, Query, Target};
use crate::output::table::Table;
use crate::output::Format as Output;
use crate::units::{ctx_label, gib, mib};

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

    /// The verdict's name in JSON and CSV ("fits", "tight", "does_not_fit").
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Fits => "fits",
            Verdict::Tight => "tight",
            Verdict::DoesNotFit => "does_not_fit",
        }
    }
}

/// One model × format × KV dtype × context.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub target_name: String,
    pub model: String,
    pub quant: String,
    pub kv_dtype: KvPair,
    pub ctx: usize,
    pub predicted_bytes: u64,
    pub verdict: Verdict,
    pub total_bytes: u64,
    /// Memory left over (negative when it does not fit).
    pub free_bytes: i64,
    /// Sequences served at once (`--batch`), each with this context.
    pub batch: usize,
    /// Bandwidth ÷ bytes a decode step reads at this context (the weights once, every sequence's
    /// KV cache), times the sequences: an upper bound on the tokens of all sequences per second,
    /// not a measurement.
    pub decode_tok_per_s_bound: Option<f64>,
    pub breakdown: Breakdown,
    /// The row's largest context that fits (≤ 90%) at `batch` sequences, repeated on each of
    /// its cells.
    pub max_ctx_fits: Option<usize>,
    /// The most sequences of this context that fit (≤ 90%): the serving capacity, like vLLM's
    /// "maximum concurrency"; None when not even one does.
    pub max_seqs: Option<usize>,
}

/// One model × format × KV dtype across the requested contexts.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    /// The format, or "file" for a file's own types.
    pub quant: String,
    pub kv_dtype: KvPair,
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
    pub quants: Vec<Format>,
    pub kv_dtypes: Vec<KvPair>,
    pub ctxs: Vec<usize>,
    /// Positions per forward pass (the prefill chunk).
    pub rows: usize,
    /// Sequences served at once, each with the column's context.
    pub batch: usize,
    pub image: bool,
    /// Also print each cell's breakdown (table and md formats; json and csv always have it).
    pub breakdown: bool,
}

impl Request {
    /// The KV types asked for, as captions name them ("bf16/q8_0").
    pub fn kv_label(&self) -> String {
        self.kv_dtypes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// A row's model: a preset in a format, or a GGUF file read from its header (`-m FILE.gguf`).
#[derive(Debug, Clone)]
pub(crate) struct ModelRow {
    /// What tables call it: the size ("270m" …), or the file's name.
    pub model: String,
    /// The preset whose shape it has (a file's name where it has none).
    pub size: String,
    /// The format (a file's own types are in `file`; this is then not used).
    pub quant: Format,
    /// "q4_k_m" …, or "file" for a file's own mix.
    pub quant_label: String,
    pub tokenizer: bool,
    pub file: Option<std::sync::Arc<crate::estimate::file::FileModel>>,
}

impl ModelRow {
    /// The model's configuration: the file's, or the preset's.
    pub fn config(&self) -> Result<crate::engine::config::Gemma3Config> {
        match &self.file {
            Some(f) => Ok(f.cfg.clone()),
            None => Ok(crate::estimate::preset(&self.size)?.config),
        }
    }

    /// The query for this model in one cell of `req`.
    pub fn query(&self, req: &Request, kv_dtype: KvPair, ctx: usize, target: Target) -> Query {
        Query {
            size: self.size.clone(),
            quant: self.quant,
            kv_dtype,
            ctx,
            rows: req.rows,
            batch: req.batch.max(1),
            image: req.image,
            target,
            tokenizer: self.tokenizer,
            file: self.file.clone(),
        }
    }

    /// The text tensors as stored: the file's, or the format's.
    pub fn tensors(&self, on_cpu: bool) -> Result<Vec<crate::engine::plan::TensorPlan>> {
        Ok(match &self.file {
            Some(f) => crate::engine::plan::stored_tensors(&f.tensors, on_cpu),
            None => crate::engine::plan::text_tensors(&self.config()?, self.quant, on_cpu),
        })
    }
}

/// The model rows of a request: each size in each format, the default model, files.
pub(crate) fn model_rows(req: &Request) -> Result<Vec<ModelRow>> {
    let mut out = Vec::new();
    for m in &req.models {
        let m = m.trim();
        if m.eq_ignore_ascii_case("default") {
            out.push(ModelRow {
                model: "270m".into(),
                size: "270m".into(),
                quant: Format::Q4KM,
                quant_label: Format::Q4KM.to_string(),
                tokenizer: true,
                file: None,
            });
            continue;
        }
        if crate::estimate::file::FileModel::is_path(m) {
            let f = crate::estimate::file::FileModel::read_any(m)?;
            out.push(ModelRow {
                model: f.name.clone(),
                size: f.size.map_or_else(|| f.name.clone(), str::to_string),
                quant: f.dense.unwrap_or(Format::Q4KM),
                quant_label: f.dense.map_or_else(|| "file".into(), |d| d.to_string()),
                tokenizer: f.is_gguf(),
                file: Some(std::sync::Arc::new(f)),
            });
            continue;
        }
        let size = m.strip_prefix("synthetic:").unwrap_or(m);
        let p = crate::estimate::preset(size)?;
        for &q in &req.quants {
            out.push(ModelRow {
                model: p.name.to_string(),
                size: p.name.to_string(),
                quant: q,
                quant_label: q.to_string(),
                tokenizer: false,
                file: None,
            });
        }
    }
    Ok(out)
}

/// The largest context that fits (≤ 90%).
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
    if fits(max_position)? {
        return Ok(Some(max_position));
    }
    Ok(Some(bisect_last(1, max_position, fits)?))
}

/// The last value in `ok..fail` for which `fits` holds, given that it holds at `ok` and not at
/// `fail` (and holds up to some point, then not).
fn bisect_last(
    mut ok: usize,
    mut fail: usize,
    fits: impl Fn(usize) -> Result<bool>,
) -> Result<usize> {
    while fail - ok > 1 {
        let mid = ok + (fail - ok) / 2;
        if fits(mid)? {
            ok = mid;
        } else {
            fail = mid;
        }
    }
    Ok(ok)
}

/// The most sequences (1 ..= 65,536) whose predicted total satisfies `fits` with `base`'s
/// context, by doubling then bisection (memory grows with the batch); None when not even one
/// does.
pub fn largest_batch(base: &Query, fits: impl Fn(u64) -> bool) -> Result<Option<usize>> {
    const MOST: usize = 1 << 16;
    let fits = |batch: usize| -> Result<bool> {
        let p = predict(&Query {
            batch,
            ..base.clone()
        })?;
        Ok(fits(p.breakdown.total()))
    };
    if !fits(1)? {
        return Ok(None);
    }
    let mut ok = 1;
    loop {
        let next = (ok * 2).min(MOST);
        if !fits(next)? {
            return Ok(Some(bisect_last(ok, next, fits)?));
        }
        if next == MOST {
            return Ok(Some(MOST));
        }
        ok = next;
    }
}

/// The fit table of `req` on `cap`.
pub fn table(req: &Request, cap: &Capacity) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for m in model_rows(req)? {
        for &kv_dtype in &req.kv_dtypes {
            let base = m.query(req, kv_dtype, 1, cap.target);
            let max_position = predict(&base)?.max_ctx;
            let max_ctx = max_ctx_fits(&base, max_position, cap)?;
            let mut cells = Vec::new();
            for &ctx in &req.ctxs {
                if ctx > max_position {
                    cells.push(None);
                    continue;
                }
                let at_ctx = Query {
                    ctx,
                    ..base.clone()
                };
                let p = predict(&at_ctx)?;
                let total = p.breakdown.total();
                let max_seqs = largest_batch(&at_ctx, |t| {
                    Verdict::of(t, cap.total_bytes) == Verdict::Fits
                })?;
                cells.push(Some(Cell {
                    target_name: cap.name.clone(),
                    model: m.model.clone(),
                    quant: m.quant_label.clone(),
                    kv_dtype,
                    ctx,
                    predicted_bytes: total,
                    verdict: Verdict::of(total, cap.total_bytes),
                    total_bytes: cap.total_bytes,
                    free_bytes: cap.total_bytes as i64 - total as i64,
                    batch: base.batch,
                    decode_tok_per_s_bound: cap
                        .bandwidth_gbs
                        .map(|bw| base.batch as f64 * bw * 1e9 / p.bytes_per_token as f64),
                    breakdown: p.breakdown,
                    max_ctx_fits: max_ctx,
                    max_seqs,
                }));
            }
            rows.push(Row {
                model: m.model.clone(),
                quant: m.quant_label.clone(),
                kv_dtype,
                max_position,
                cells,
                max_ctx_fits: max_ctx,
            });
        }
    }
    Ok(rows)
}

fn cell_text(c: &Option<Cell>, max_position: usize) -> String {
    match c {
        None => format!("n/a (max {})", ctx_label(max_position)),
        Some(c) => {
            let p = gib(c.predicted_bytes);
            match c.verdict {
                Verdict::Fits => format!(
                    "fits {p:.2} GiB ({:.1} free)",
                    c.free_bytes as f64 / crate::units::GIB as f64
                ),
                Verdict::Tight => format!("tight {p:.2} GiB"),
                Verdict::DoesNotFit => format!("no: {p:.2} GiB"),
            }
        }
    }
}

fn header_line(cap: &Capacity, batch: usize) -> String {
    let what = match cap.target {
        Target::Cuda => "device memory of one process (CUDA)",
        Target::Cpu => "peak resident memory of the process (CPU)",
    };
    format!(
        "{}: {:.2} GiB{}; predicted {what}{}; fits = at most {:.0}% of it, tight = up to 100%; max seqs = the most sequences of each context that fit",
        cap.name,
        gib(cap.total_bytes),
        cap.bandwidth_gbs
            .map(|b| format!(", {b} GB/s"))
            .unwrap_or_default(),
        match batch {
            1 => String::new(),
            b => format!(" for {b} sequences of each context"),
        },
        FITS_SHARE * 100.0
    )
}

fn notes(cap: &Capacity) -> Vec<String> {
    let mut n = Vec::new();
    if cap.bandwidth_gbs.is_some() {
        n.push("decode ≤: bandwidth ÷ bytes a decode step reads (weights + every sequence's KV in span at the first context column) × sequences: an upper bound, not a measurement".into());
    }
    if cap.target == Target::Cuda {
        n.push(format!(
            "CUDA: the {} MiB context overhead is PyTorch's measured figure, not yet measured for this engine, and no GPU figure of this estimator has been checked on a GPU yet",
            crate::estimate::CUDA_CONTEXT_BYTES >> 20
        ));
    }
    n
}

/// Every cell as a flat record (CSV): raw bytes, the verdict's name, the breakdown.
fn cells_table(rows: &[Row]) -> Table {
    let mut t = Table::new([
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
        "batch",
        "max_seqs",
    ]);
    for c in rows.iter().flat_map(|r| r.cells.iter().flatten()) {
        let b = c.breakdown;
        t.row([
            c.target_name.clone(),
            c.model.clone(),
            c.quant.to_string(),
            c.kv_dtype.to_string(),
            c.ctx.to_string(),
            c.predicted_bytes.to_string(),
            c.verdict.name().into(),
            c.total_bytes.to_string(),
            c.free_bytes.to_string(),
            c.decode_tok_per_s_bound
                .map_or(String::new(), |v| format!("{v:.1}")),
            b.weights.to_string(),
            b.vision_weights.to_string(),
            b.kv_cache.to_string(),
            b.rope_tables.to_string(),
            b.workspace.to_string(),
            b.runtime.to_string(),
            b.load_peak.to_string(),
            c.max_ctx_fits.map_or(String::new(), |v| v.to_string()),
            c.batch.to_string(),
            c.max_seqs.map_or("0".into(), |v| v.to_string()),
        ]);
    }
    t
}

/// Renders a table in `format`.
pub fn render(rows: &[Row], req: &Request, cap: &Capacity, format: Output) -> Result<String> {
    match format {
        Output::Json => {
            let cells: Vec<&Cell> = rows.iter().flat_map(|r| r.cells.iter().flatten()).collect();
            Ok(serde_json::to_string_pretty(&cells)? + "\n")
        }
        Output::Csv => cells_table(rows).csv(),
        Output::Table | Output::Md => {
            let mut header: Vec<String> = vec!["model".into(), "format".into(), "KV".into()];
            header.extend(req.ctxs.iter().map(|&c| ctx_label(c)));
            header.push(match req.batch {
                1 => "max ctx (fits)".into(),
                b => format!("max ctx (fits) × {b} seqs"),
            });
            header.push(format!(
                "max seqs ({})",
                req.ctxs
                    .iter()
                    .map(|&c| ctx_label(c))
                    .collect::<Vec<_>>()
                    .join("/")
            ));
            if cap.bandwidth_gbs.is_some() {
                header.push("decode ≤ tok/s".into());
            }
            let mut t = Table::new(header);
            for r in rows {
                let mut line = vec![r.model.clone(), r.quant.to_string(), r.kv_dtype.to_string()];
                line.extend(r.cells.iter().map(|c| cell_text(c, r.max_position)));
                line.push(r.max_ctx_fits.map_or("none".into(), |c| {
                    if c == r.max_position {
                        format!("{} (all)", ctx_label(c))
                    } else {
                        c.to_string()
                    }
                }));
                line.push(
                    r.cells
                        .iter()
                        .map(|c| match c {
                            None => "-".to_string(),
                            Some(c) => c.max_seqs.unwrap_or(0).to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("/"),
                );
                if cap.bandwidth_gbs.is_some() {
                    let bound = r
                        .cells
                        .iter()
                        .flatten()
                        .next()
                        .and_then(|c| c.decode_tok_per_s_bound);
                    line.push(bound.map_or("-".into(), |b| format!("{b:.0}")));
                }
                t.row(line);
            }
            let md = format == Output::Md;
            let mut out = header_line(cap, req.batch);
            out.push_str(if md { "\n\n" } else { "\n" });
            out.push_str(&t.render(format)?);
            out.push('\n');
            if req.breakdown {
                out.push('\n');
                out.push_str(&breakdown_table(rows).render(format)?);
                out.push('\n');
            }
            for n in notes(cap) {
                out.push_str(if md { "\n- " } else { "\n  " });
                out.push_str(&n);
            }
            out.push('\n');
            Ok(out)
        }
    }
}

/// One line per cell: what the prediction is made of, in MiB.
fn breakdown_table(rows: &[Row]) -> Table {
    let mut t = Table::new([
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
    let mib = |b: u64| format!("{:.1}", mib(b));
    for c in rows.iter().flat_map(|r| r.cells.iter().flatten()) {
        let b = c.breakdown;
        t.row([
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
    t
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
        assert_eq!(
            serde_json::to_value(Verdict::DoesNotFit).unwrap(),
            Verdict::DoesNotFit.name()
        );
    }

    const BF16: KvPair = KvPair::both(crate::engine::kv_cache::KvDtype::Bf16);

    fn q4km() -> Format {
        "q4_k_m".parse().unwrap()
    }

    /// A table of `size` in q4_k_m with a bf16 cache at `ctxs`, one sequence.
    fn request(size: &str, ctxs: Vec<usize>) -> Request {
        Request {
            models: vec![size.into()],
            quants: vec![q4km()],
            kv_dtypes: vec![BF16],
            ctxs,
            rows: 512,
            batch: 1,
            image: false,
            breakdown: false,
        }
    }

    /// The query of one cell of [`request`]'s table.
    fn query(size: &str, ctx: usize, batch: usize) -> Query {
        Query {
            size: size.into(),
            quant: q4km(),
            kv_dtype: BF16,
            ctx,
            rows: 512,
            batch,
            image: false,
            target: Target::Cuda,
            tokenizer: false,
            file: None,
        }
    }

    fn gpu_24gib() -> Capacity {
        Capacity {
            name: "24 GiB".into(),
            total_bytes: 24 << 30,
            bandwidth_gbs: Some(1000.0),
            target: Target::Cuda,
        }
    }

    /// The largest context that fits is the last one whose prediction is within 90%.
    #[test]
    fn max_ctx_is_the_frontier_of_the_prediction() {
        let req = request("27b", vec![4096]);
        let cap = gpu_24gib();
        let rows = table(&req, &cap).unwrap();
        let max = rows[0].max_ctx_fits.unwrap();
        assert!(max > 4096 && max < 131_072, "{max}");
        let at = |ctx| {
            let q = query("27b", ctx, 1);
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
        assert_eq!(
            table(&req, &tiny).unwrap()[0].cells[0]
                .as_ref()
                .unwrap()
                .max_seqs,
            None
        );
    }

    /// `max seqs` is the frontier of the prediction over the batch: the count that fits and one
    /// more that does not, found by checking every count below it too (the search's answer
    /// against a plain scan); and `--batch B` counts B caches, their logits, and B tokens a step.
    #[test]
    fn max_seqs_is_the_frontier_over_the_batch() {
        let req = request("4b", vec![8192, 32_768]);
        let cap = gpu_24gib();
        let rows = table(&req, &cap).unwrap();
        for cell in rows[0].cells.iter().flatten() {
            let q = |batch| query("4b", cell.ctx, batch);
            let fits = |b| {
                Verdict::of(predict(&q(b)).unwrap().breakdown.total(), cap.total_bytes)
                    == Verdict::Fits
            };
            let max = cell.max_seqs.unwrap();
            assert!(max > 1, "{max}");
            assert!((1..=max).all(fits), "every count up to {max} fits");
            assert!(!fits(max + 1));
            // The batch's arithmetic.
            let (one, many) = (predict(&q(1)).unwrap(), predict(&q(max)).unwrap());
            assert_eq!(many.breakdown.kv_cache, max as u64 * one.breakdown.kv_cache);
            assert_eq!(many.breakdown.weights, one.breakdown.weights);
            assert_eq!(
                many.bytes_per_token - one.bytes_per_token,
                (max as u64 - 1) * one.breakdown.kv_cache
            );
        }
        let at_8k = rows[0].cells[0].as_ref().unwrap().max_seqs.unwrap();
        let at_32k = rows[0].cells[1].as_ref().unwrap().max_seqs.unwrap();
        assert!(at_8k > at_32k, "{at_8k} {at_32k}");
        // A table for a batch: the bound counts every sequence's token.
        let batched = table(
            &Request {
                batch: 4,
                ..req.clone()
            },
            &cap,
        )
        .unwrap();
        let c1 = rows[0].cells[0].as_ref().unwrap();
        let c4 = batched[0].cells[0].as_ref().unwrap();
        assert_eq!(c4.batch, 4);
        assert!(c4.decode_tok_per_s_bound.unwrap() > 3.0 * c1.decode_tok_per_s_bound.unwrap());
        assert!(c4.predicted_bytes > c1.predicted_bytes);
    }
}
