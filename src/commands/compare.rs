//! `gemma-fit compare`: the regression gate over two result files.

use anyhow::Result;

use crate::cli::CompareArgs;
use crate::gate;

/// `gemma-fit compare`: the regression gate. Ok(true) when something regressed.
pub fn run(args: &CompareArgs) -> Result<bool> {
    let opt = gate::Options {
        metrics: if args.metric.is_empty() {
            gate::Metric::ALL.to_vec()
        } else {
            args.metric.clone()
        },
        threshold_throughput: args.threshold_throughput,
        threshold_memory: args.threshold_memory,
        ..gate::Options::default()
    };
    let report = gate::compare_files(&args.base, &args.new, &opt)?;
    print!("{}", gate::render(&report, args.format)?);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(report.regressed())
}
