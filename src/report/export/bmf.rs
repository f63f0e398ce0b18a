//! Bencher Metric Format (BMF) JSON.

use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::report::export::{bench_name, Exporter};
use crate::result::CaseResult;
use crate::stats::Stat;

/// Bencher Metric Format: { benchmark: { measure: { value, lower_value, upper_value } } }.
pub fn bmf(records: &[CaseResult]) -> Value {
    let mut out = Map::new();
    for r in records {
        let Some(m) = r.metrics.as_ref() else {
            continue;
        };
        let stat =
            |s: &Stat| json!({"value": s.median, "lower_value": s.min, "upper_value": s.max});
        let mut measures = Map::new();
        measures.insert("decode-tok-per-s".into(), stat(&m.decode_tok_per_s));
        measures.insert("prefill-tok-per-s".into(), stat(&m.prefill_tok_per_s));
        if let Some(p) = r.peak_bytes() {
            measures.insert("peak-memory-bytes".into(), json!({"value": p}));
        }
        out.insert(bench_name(r), Value::Object(measures));
    }
    Value::Object(out)
}

/// `bmf.json`.
pub struct Bmf;

impl Exporter for Bmf {
    fn file_name(&self) -> &'static str {
        "bmf.json"
    }

    fn render(&self, records: &[CaseResult]) -> Result<String> {
        Ok(serde_json::to_string_pretty(&bmf(records))? + "\n")
    }
}
