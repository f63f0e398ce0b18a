//! `gemma-fit report`: per-machine reports and a comparison from result files.

use anyhow::Result;

use crate::cli::ReportArgs;

/// `gemma-fit report`: per-machine reports and a comparison from result files.
pub fn run(args: &ReportArgs) -> Result<()> {
    let (records, bad) = crate::result::store::read_all(&args.results)?;
    if bad > 0 {
        eprintln!("warning: {bad} line(s) are not result records; skipped");
    }
    // A results file's folder, or the folder given.
    let folder = |p: &std::path::Path| -> std::path::PathBuf {
        if p.is_dir() {
            p.to_path_buf()
        } else {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
        }
    };
    let out = args.out.clone().unwrap_or_else(|| folder(&args.results[0]));
    let bandwidths = if args.bandwidth.is_empty() {
        let dirs: Vec<std::path::PathBuf> = args.results.iter().map(|p| folder(p)).collect();
        let dirs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
        super::beside_bandwidth(&dirs)?
    } else {
        crate::probe::bandwidth::read(&args.bandwidth)?
    };
    for p in crate::report::write(records, &bandwidths, &out)? {
        println!("{}", p.display());
    }
    Ok(())
}
