//! llama-bench's rows (its field names where the meaning matches), as JSON and CSV.

use serde::Serialize;
use serde_json::Value;

use crate::engine::device::DeviceKind;
use crate::error::Result;
use crate::output::table::Table;
use crate::report::export::Exporter;
use crate::report::Variant;
use crate::result::CaseResult;
use crate::stats::Stat;

/// One llama-bench row: a prefill test (n_prompt > 0, n_gen = 0) or a decode test (n_prompt = 0,
/// n_gen > 0) at a depth (n_depth) of positions already in the KV cache, as llama-bench writes
/// them. Fields with no counterpart in gemma-fit (n_gpu_layers, split_mode, ...) are left out.
/// `n_parallel` (llama.cpp's name for concurrent sequences, which llama-bench itself lacks) is
/// the case's batch: n_prompt, n_gen and n_depth are per sequence, and the speeds count the
/// tokens of every sequence.
#[derive(Debug, Clone, Serialize)]
pub struct LlamaBenchRow {
    pub build_commit: String,
    pub cpu_info: String,
    pub gpu_info: String,
    pub backends: String,
    pub model_filename: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub n_batch: usize,
    pub n_ubatch: usize,
    pub n_threads: usize,
    pub n_parallel: usize,
    pub type_k: String,
    pub type_v: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    pub test_time: String,
    pub avg_ns: u64,
    pub stddev_ns: u64,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
}

fn params_of(r: &CaseResult) -> u64 {
    r.key
        .size
        .as_deref()
        .and_then(crate::engine::presets::find)
        .map_or(0, |p| p.params().text)
}

fn iso8601(unix_s: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The prefill and decode rows of a finished case.
pub fn llama_bench_rows(r: &CaseResult) -> Vec<LlamaBenchRow> {
    let Some(m) = r.metrics.as_ref() else {
        return Vec::new();
    };
    let k = &r.key;
    let v = Variant::of(r);
    let base = LlamaBenchRow {
        build_commit: r.environment.git_commit.chars().take(7).collect(),
        cpu_info: r.environment.cpu_model.clone(),
        gpu_info: r
            .environment
            .gpu
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        backends: if k.device_kind == DeviceKind::Cpu {
            "CPU"
        } else {
            "CUDA"
        }
        .into(),
        model_filename: r.params.model.clone(),
        model_type: format!("gemma3 {} {}", v.model, v.quant.to_uppercase()),
        model_size: m.weights.file_weight_bytes,
        model_n_params: params_of(r),
        n_batch: k.prefill_chunk,
        n_ubatch: k.prefill_chunk,
        n_threads: k.threads,
        n_parallel: k.batch,
        type_k: k.kv().k.to_string(),
        type_v: k.kv().v.to_string(),
        n_prompt: 0,
        n_gen: 0,
        n_depth: m.fill_depth,
        test_time: iso8601(r.started_unix_s),
        avg_ns: 0,
        stddev_ns: 0,
        avg_ts: 0.0,
        stddev_ts: 0.0,
        samples_ns: Vec::new(),
        samples_ts: Vec::new(),
    };
    // Per repeat: tokens / second, and the nanoseconds those tokens took.
    let with = |mut row: LlamaBenchRow, tokens: usize, ts: &Stat| {
        let samples = ts.values();
        row.samples_ts = samples.clone();
        row.samples_ns = samples
            .iter()
            .map(|t| {
                if *t > 0.0 {
                    (tokens as f64 / t * 1e9) as u64
                } else {
                    0
                }
            })
            .collect();
        let n = samples.len() as f64;
        row.avg_ts = samples.iter().sum::<f64>() / n;
        row.stddev_ts = ts.stddev;
        row.avg_ns = (row.samples_ns.iter().sum::<u64>() as f64 / n) as u64;
        let mean_ns = row.avg_ns as f64;
        row.stddev_ns = if samples.len() > 1 {
            (row.samples_ns
                .iter()
                .map(|x| (*x as f64 - mean_ns).powi(2))
                .sum::<f64>()
                / (n - 1.0))
                .sqrt() as u64
        } else {
            0
        };
        row
    };
    let prefill = with(
        LlamaBenchRow {
            n_prompt: m.prompt_positions,
            ..base.clone()
        },
        m.prompt_positions * k.batch,
        &m.prefill_tok_per_s,
    );
    let decode = with(
        LlamaBenchRow {
            n_gen: k.gen_tokens,
            n_depth: m.fill_depth + m.prompt_positions,
            ..base
        },
        k.gen_tokens * k.batch,
        &m.decode_tok_per_s,
    );
    vec![prefill, decode]
}

/// llama-bench's CSV: a header of its field names (in its order), one row per test; sample
/// lists as space-separated numbers, as llama-bench writes them.
pub fn llama_bench_csv(rows: &[LlamaBenchRow]) -> Result<String> {
    const FIELDS: [&str; 24] = [
        "build_commit",
        "cpu_info",
        "gpu_info",
        "backends",
        "model_filename",
        "model_type",
        "model_size",
        "model_n_params",
        "n_batch",
        "n_ubatch",
        "n_threads",
        "n_parallel",
        "type_k",
        "type_v",
        "n_prompt",
        "n_gen",
        "n_depth",
        "test_time",
        "avg_ns",
        "stddev_ns",
        "avg_ts",
        "stddev_ts",
        "samples_ns",
        "samples_ts",
    ];
    let mut t = Table::new(FIELDS);
    for r in rows {
        let v = serde_json::to_value(r)?;
        t.row(FIELDS.iter().map(|f| match &v[*f] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.iter().map(Value::to_string).collect::<Vec<_>>().join(" "),
            other => other.to_string(),
        }));
    }
    t.csv()
}

fn rows(records: &[CaseResult]) -> Vec<LlamaBenchRow> {
    records.iter().flat_map(llama_bench_rows).collect()
}

/// `llama-bench.json`.
pub struct Json;

impl Exporter for Json {
    fn file_name(&self) -> &'static str {
        "llama-bench.json"
    }

    fn render(&self, records: &[CaseResult]) -> Result<String> {
        Ok(serde_json::to_string_pretty(&rows(records))? + "\n")
    }
}

/// `llama-bench.csv`.
pub struct Csv;

impl Exporter for Csv {
    fn file_name(&self) -> &'static str {
        "llama-bench.csv"
    }

    fn render(&self, records: &[CaseResult]) -> Result<String> {
        llama_bench_csv(&rows(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_900_000), "2026-11-28T21:06:40Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
