//! `gemma-fit report`: per-machine reports and a comparison from result files.

use anyhow::Result;

use crate::cli::ReportArgs;

/// `gemma-fit report`: per-machine reports and a comparison from result files.
pub fn run(args: &ReportArgs) -> Result<()> {
    let (records, bad) = crate::result::store::read_all(&args.results)?;
    if bad > 0 {
        eprintln!("warning: {bad} line(s) are not result records; skipped");
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => args.results[0]
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| ".".into()),
    };
    let bandwidths = if args.bandwidth.is_empty() {
        let dirs: Vec<&std::path::Path> = args.results.iter().filter_map(|p| p.parent()).collect();
        super::beside_bandwidth(&dirs)?
    } else {
        crate::probe::bandwidth::read(&args.bandwidth)?
    };
    for p in crate::report::write(records, &bandwidths, &out)? {
        println!("{}", p.display());
    }
    Ok(())
}
