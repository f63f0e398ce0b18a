//! The fuzz run the project owns, at test size: structure-aware mutations of a tiny GGUF model
//! and of a tiny Hugging Face folder, each through `gemma-fit check`, `gemma-fit run` or
//! `gemma-fit fit` (which reads the headers alone), and of
//! a logits file the tiny model made, each through `gemma-fit quality --against`, in a child
//! process under a memory limit and a timeout. Any panic, signal, hang, case over twice the
//! clean run's memory, or bad error message fails the test, with the mutation that reproduces
//! it. (`scripts/fuzz.sh` runs the same on any model or logits file, at any length.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gemma_fit::fuzz::{self, Config, Outcome, Report};

/// A config for `cases` cases on `target` (a logits file with the model that made it and its
/// text in `with`).
fn config(target: PathBuf, with: Option<(PathBuf, PathBuf)>, cases: u64, seed: u64) -> Config {
    let (with_model, with_text) = with.map_or((None, None), |(m, t)| (Some(m), Some(t)));
    Config {
        bin: env!("CARGO_BIN_EXE_gemma-fit").into(),
        target,
        with_model,
        with_text,
        cases,
        seed,
        workers: 2,
        run_share: 0.3,
        work_dir: std::env::temp_dir(),
        memory_factor: 2.0,
        only: None,
    }
}

fn fuzz(target: PathBuf, cases: u64, seed: u64) -> Report {
    fuzz_with(target, None, cases, seed)
}

fn fuzz_with(target: PathBuf, with: Option<(PathBuf, PathBuf)>, cases: u64, seed: u64) -> Report {
    let work = tempfile::tempdir().unwrap();
    let cfg = Config {
        work_dir: work.path().into(),
        ..config(target, with, cases, seed)
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

/// Writes, in `dir`, the tiny GGUF model (`tiny.gguf`), a short text (`tiny-text.txt`) and the
/// logits file the model makes of it (`tiny.logits`: chunks of 16, top 8, 2 full rows); returns
/// the three paths.
fn write_tiny_logits(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (model, text, logits) = (
        dir.join("tiny.gguf"),
        dir.join("tiny-text.txt"),
        dir.join("tiny.logits"),
    );
    common::write_tiny_model_gguf(&model);
    // The tiny vocabulary has "hi" pieces and byte fallback: any text tokenizes, about one
    // token a byte, so this is a few chunks of 16.
    std::fs::write(
        &text,
        "hi hi, said the fox; the dog said hi back.\nA second line: 1234 (!?) and \u{e9}\u{2026}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-fit"))
        .args(["quality", "--ctx", "16", "--top-k", "8", "--full-rows", "2"])
        .arg("--model")
        .arg(&model)
        .arg("--text")
        .arg(&text)
        .arg("--save-logits")
        .arg(&logits)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (model, text, logits)
}

#[test]
fn mutated_logits_files_give_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text, logits) = write_tiny_logits(dir.path());
    let r = fuzz_with(logits, Some((model, text)), 1000, 3);
    assert_varied(&r);
    assert!(
        r.counts.keys().all(|(path, _)| *path == fuzz::Via::Quality),
        "{}",
        r.table().terminal()
    );
}

/// A logits file runs through `quality`, which needs the model that made it; a model takes no
/// --with-model.
#[test]
fn with_model_goes_with_a_logits_file_and_only_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text, logits) = write_tiny_logits(dir.path());
    let refused = |cfg: Config| {
        fuzz::run(
            &cfg,
            &indicatif::ProgressBar::hidden(),
            &AtomicBool::new(false),
        )
        .err()
        .expect("refused")
        .to_string()
    };
    let e = refused(config(logits, None, 1, 1));
    assert!(e.contains("give --with-model"), "{e}");
    let e = refused(config(model.clone(), Some((model, text)), 1, 1));
    assert!(e.contains("not a logits file"), "{e}");
}

/// Writes the tiny models into $GEMMA_FIT_TINY_DIR (`tiny.gguf`, `tiny-hf/`, and
/// `tiny.logits` with its `tiny-text.txt`) for `scripts/fuzz.sh tiny-gguf|tiny-hf|tiny-logits`;
/// skipped without it.
#[test]
#[ignore = "a tool for scripts/fuzz.sh"]
fn write_tiny_models() {
    let Some(dir) = std::env::var_os("GEMMA_FIT_TINY_DIR").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(dir.join("tiny-hf")).unwrap();
    write_tiny_logits(&dir);
    common::tiny::write_hf(&dir.join("tiny-hf"));
}
