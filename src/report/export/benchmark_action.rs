//! github-action-benchmark's JSON ("customBiggerIsBetter").

use serde_json::{json, Value};

use crate::error::Result;
use crate::report::export::{bench_name, Exporter};
use crate::result::CaseResult;

/// github-action-benchmark's "customBiggerIsBetter" list: { name, unit, value, range, extra }.
pub fn benchmark_action(records: &[CaseResult]) -> Value {
    let mut out = Vec::new();
    for r in records {
        let Some(m) = r.metrics.as_ref() else {
            continue;
        };
        for (what, s) in [
            ("decode", &m.decode_tok_per_s),
            ("prefill", &m.prefill_tok_per_s),
        ] {
            out.push(json!({
                "name": format!("{} {what}", bench_name(r)),
                "unit": "tok/s",
                "value": s.median,
                "range": format!("± {:.3}", s.stddev),
                "extra": format!("{} repeats on {}", s.n, r.environment.gpu.as_ref().map_or(&r.environment.cpu_model, |g| &g.name)),
            }));
        }
    }
    Value::Array(out)
}

/// `benchmark-action.json`.
pub struct BenchmarkAction;

impl Exporter for BenchmarkAction {
    fn file_name(&self) -> &'static str {
        "benchmark-action.json"
    }

    fn render(&self, records: &[CaseResult]) -> Result<String> {
        Ok(serde_json::to_string_pretty(&benchmark_action(records))? + "\n")
    }
}
