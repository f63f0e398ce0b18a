//! The fuzz run the project owns, at test size: structure-aware mutations of a tiny GGUF model
//! and of a tiny Hugging Face folder, each through `gemma-fit check` or `gemma-fit run` in a
//! child process under a memory limit and a timeout. Any panic, signal, hang, case over twice
//! the clean run's memory, or bad error message fails the test, with the mutation that
//! reproduces it. (`scripts/fuzz.sh` runs the same on any model, at any length.)

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use gemma_fit::fuzz::{self, Config, Outcome, Report};

fn fuzz(target: PathBuf, cases: u64, seed: u64) -> Report {
    let work = tempfile::tempdir().unwrap();
    let cfg = Config {
        bin: env!("CARGO_BIN_EXE_gemma-fit").into(),
        target,
        cases,
        seed,
        workers: 2,
        run_share: 0.3,
        work_dir: work.path().into(),
        memory_factor: 2.0,
        only: None,
    };
    let report = fuzz::run(
        &cfg,
        &indicatif::ProgressBar::hidden(),
        &AtomicBool::new(false),
    )
    .expect("the fuzz run itself works");
    println!(
        "{} cases in {:.1} s, largest peak RSS {:.2}x the clean run's\n{}",
        report.cases,
        report.wall.as_secs_f64(),
        report.worst_memory_ratio,
        report.table().terminal()
    );
    let failures: Vec<String> = report
        .failures
        .iter()
        .map(|f| {
            format!(
                "case {} [{}] {}: {} -- {}",
                f.case,
                f.path,
                f.outcome.name(),
                f.mutation,
                f.detail
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report.cases, cases);
    report
}

/// Both kinds of outcome happen: a run where every mutation passed (or every one was refused)
/// would test nothing.
fn assert_varied(r: &Report) {
    let count = |o: Outcome| {
        r.counts
            .iter()
            .filter(|((_, x), _)| *x == o)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert!(
        count(Outcome::Accepted) > 0 && count(Outcome::CleanError) > r.cases / 4,
        "{}",
        r.table().terminal()
    );
}

#[test]
fn mutated_gguf_files_give_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    common::write_tiny_model_gguf(&model);
    assert_varied(&fuzz(model, 1200, 1));
}

#[test]
fn mutated_safetensors_folders_give_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_hf(dir.path());
    assert_varied(&fuzz(dir.path().into(), 1000, 2));
}

/// Writes the tiny models into $GEMMA_FIT_TINY_DIR (`tiny.gguf`, `tiny-hf/`) for
/// `scripts/fuzz.sh tiny-gguf|tiny-hf`; skipped without it.
#[test]
#[ignore = "a tool for scripts/fuzz.sh"]
fn write_tiny_models() {
    let Some(dir) = std::env::var_os("GEMMA_FIT_TINY_DIR").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(dir.join("tiny-hf")).unwrap();
    common::write_tiny_model_gguf(&dir.join("tiny.gguf"));
    common::tiny::write_hf(&dir.join("tiny-hf"));
}
