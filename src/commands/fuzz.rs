//! `gemma-fit fuzz` (hidden; `scripts/fuzz.sh` wraps it): the fuzz run of `src/fuzz/`, on a model
//! or (with `--with-model`) on a logits file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::cli::FuzzArgs;
use crate::engine::load::spec::ModelSpec;
use crate::fuzz::{self, Config};
use crate::output::progress;

pub fn run(args: &FuzzArgs) -> Result<()> {
    let spec: ModelSpec = args.model.parse()?;
    let target = match &spec {
        ModelSpec::HfDir(dir) => dir.clone(),
        ModelSpec::Synthetic(_) => {
            bail!("synthetic weights are not read from a file: nothing to fuzz")
        }
        spec => spec.resolve(super::show_progress())?,
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            shm.into()
        } else {
            std::env::temp_dir()
        }
    });
    let cfg = Config {
        bin: std::env::current_exe()?,
        target: target.clone(),
        with_model: args.with_model.clone(),
        with_text: args.with_text.clone(),
        cases: args.cases,
        seed: args.seed,
        workers: args.workers,
        run_share: args.run_share,
        work_dir,
        memory_factor: args.memory_factor,
        only: args.only,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let bar = progress::cases(0, progress::enabled());
    let report = fuzz::run(&cfg, &bar, &stop)?;
    bar.finish_and_clear();

    if let Some(one) = &report.only {
        println!(
            "case {} [{}]: {}: {}",
            one.case,
            one.path,
            one.outcome.name(),
            one.mutation
        );
        if !one.detail.is_empty() {
            println!("  {}", one.detail);
        }
        if let Some(kept) = &report.kept {
            println!("  the mutated copy is kept at {}", kept.display());
        }
    } else {
        println!(
            "fuzz: {} cases on {} in {:.0} s ({} workers, seed {})",
            report.cases,
            target.display(),
            report.wall.as_secs_f64(),
            cfg.workers,
            cfg.seed
        );
        println!("{}", report.table().terminal());
        for c in &report.clean {
            println!(
                "clean {}: peak RSS {:.1} MiB, {:.2} s",
                c.path,
                crate::units::mib(c.max_rss_bytes),
                c.wall.as_secs_f64()
            );
        }
        println!(
            "largest peak RSS of a case: {:.2}x its path's clean run",
            report.worst_memory_ratio
        );
    }
    // What a replay needs besides the target, the seed and the case.
    let mut with = String::new();
    for (flag, file) in [
        ("--with-model", &cfg.with_model),
        ("--with-text", &cfg.with_text),
    ] {
        if let Some(f) = file {
            with.push_str(&format!(" {flag} {}", f.display()));
        }
    }
    for f in report.failures.iter().take(20) {
        println!(
            "FAILED case {} [{}]: {}: {}\n  {}\n  replay: gemma-fit fuzz {}{with} --seed {} --only {}",
            f.case,
            f.path,
            f.outcome.name(),
            f.mutation,
            f.detail,
            target.display(),
            cfg.seed,
            f.case
        );
    }
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted after {} cases", report.cases);
    }
    if report.failed() > 0 {
        bail!("{} of {} cases failed", report.failed(), report.cases);
    }
    Ok(())
}
