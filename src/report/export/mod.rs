//! Exports others already read, one file per format behind one trait (as hyperfine's
//! exporters are): llama-bench's JSON and CSV rows (`llama_bench.rs`), Bencher Metric Format
//! (`bmf.rs`) and github-action-benchmark's list (`benchmark_action.rs`).

pub mod benchmark_action;
pub mod bmf;
pub mod llama_bench;

use crate::error::Result;
use crate::report::Variant;
use crate::result::CaseResult;

/// A format written into a machine's report folder.
pub trait Exporter {
    /// The file's name in the folder.
    fn file_name(&self) -> &'static str;
    /// The file's text for a machine's records.
    fn render(&self, records: &[CaseResult]) -> Result<String>;
}

/// Every export, in the order the page lists them.
pub fn all() -> [&'static dyn Exporter; 4] {
    [
        &llama_bench::Json,
        &llama_bench::Csv,
        &bmf::Bmf,
        &benchmark_action::BenchmarkAction,
    ]
}

/// A case's benchmark name in BMF and github-action-benchmark.
pub(crate) fn bench_name(r: &CaseResult) -> String {
    format!(
        "gemma-fit/{}/ctx{}/p{}+g{}",
        Variant::of(r).label().replace(' ', "_"),
        r.key.ctx,
        r.key.prompt_tokens,
        r.key.gen_tokens
    )
}
