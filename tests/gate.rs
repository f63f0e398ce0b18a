//! The regression gate as CI runs it: `gemma-fit compare BASE NEW`, its verdicts and exit codes,
//! and the memory gate against the baseline committed in `tests/data/`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn gemma_fit() -> Command {
    Command::cargo_bin("gemma-fit").unwrap()
}

/// A real record (synthetic 270M, 3 repeats) to derive the test cases from.
fn record(dir: &Path) -> Value {
    let path = dir.join("real.json");
    gemma_fit()
        .args([
            "run",
            "-m",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--ctx",
            "64",
            "--prompt-tokens",
            "8",
            "--gen",
            "2",
            "--repeats",
            "3",
            "--out",
        ])
        .arg(&path)
        .assert()
        .success();
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn set_samples(r: &mut Value, stat: &str, samples: &[f64]) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let s = &mut r["metrics"][stat];
    s["samples"] = samples.iter().copied().collect();
    s["n"] = samples.len().into();
    s["median"] = sorted[samples.len() / 2].into();
}

fn write(dir: &Path, name: &str, records: &[&Value]) -> PathBuf {
    let p = dir.join(name);
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn compare(base: &Path, new: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    gemma_fit()
        .arg("compare")
        .arg(base)
        .arg(new)
        .args(extra)
        .assert()
}

const QUIET: [f64; 5] = [100.0, 101.0, 99.0, 100.5, 99.5];

#[test]
fn verdicts_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = record(dir.path());
    for s in ["decode_tok_per_s", "prefill_tok_per_s"] {
        set_samples(&mut base, s, &QUIET);
    }
    set_samples(&mut base, "ttft_ms", &[10.0, 10.1, 9.9, 10.05, 9.95]);
    let b = write(dir.path(), "base.jsonl", &[&base]);

    // Identical inputs: nothing regressed.
    compare(&b, &b, &[])
        .code(0)
        .stdout(predicate::str::contains("No regression: 0 regressed"));

    // A 20% slower decode with low noise: regressed, exit 1.
    let mut slow = base.clone();
    set_samples(&mut slow, "decode_tok_per_s", &QUIET.map(|x| x * 0.8));
    let n = write(dir.path(), "slow.jsonl", &[&slow]);
    compare(&b, &n, &[])
        .code(1)
        .stdout(predicate::str::contains("REGRESSED").and(predicate::str::contains("-20.0%")));
    // ... and the markdown summary says so for a pull request.
    compare(&b, &n, &["--format", "md"]).code(1).stdout(
        predicate::str::starts_with("### gemma-fit compare — Regression")
            .and(predicate::str::contains(r"270m\|synthetic\|q8_0")),
    );

    // High noise around the same median: too noisy to tell, exit 0 with a warning.
    let mut noisy = base.clone();
    set_samples(
        &mut noisy,
        "decode_tok_per_s",
        &[50.0, 150.0, 100.0, 60.0, 140.0],
    );
    let n = write(dir.path(), "noisy.jsonl", &[&noisy]);
    compare(&b, &n, &[])
        .code(0)
        .stdout(predicate::str::contains("too noisy to tell"))
        .stderr(predicate::str::contains("warning: 1 figure(s) too noisy"));

    // 2% more peak memory: regressed (1% threshold); 0.5% more: unchanged.
    let peak = base["metrics"]["peak_rss_bytes"].as_u64().unwrap() as f64;
    let mut fat = base.clone();
    fat["metrics"]["peak_rss_bytes"] = ((peak * 1.02) as u64).into();
    let n = write(dir.path(), "fat.jsonl", &[&fat]);
    compare(&b, &n, &["--metric", "peak_memory"])
        .code(1)
        .stdout(predicate::str::contains("peak memory").and(predicate::str::contains("REGRESSED")));
    fat["metrics"]["peak_rss_bytes"] = ((peak * 1.005) as u64).into();
    let n = write(dir.path(), "fat.jsonl", &[&fat]);
    compare(&b, &n, &["--metric", "peak_memory"]).code(0);

    // Cases on one side only are listed, not ignored.
    let mut other = base.clone();
    other["key"]["ctx"] = 128.into();
    let n = write(dir.path(), "more.jsonl", &[&base, &other]);
    compare(&b, &n, &[]).code(0).stdout(
        predicate::str::contains("Only in the new results").and(predicate::str::contains("ctx128")),
    );
    // A case that stopped finishing is a regression.
    let mut failed = base.clone();
    failed["outcome"] = serde_json::json!({"status": "oom", "message": "killed"});
    failed["metrics"] = Value::Null;
    let n = write(dir.path(), "failed.jsonl", &[&failed]);
    compare(&b, &n, &[])
        .code(1)
        .stdout(predicate::str::contains("Outcome changed"));
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "garbage\n").unwrap();
    compare(&junk, &junk, &[])
        .code(2)
        .stderr(predicate::str::contains("no result records"));
    compare(Path::new("/no/such.jsonl"), &junk, &[])
        .code(2)
        .stderr(predicate::str::contains("/no/such.jsonl"));
    gemma_fit()
        .args(["compare", "a", "b", "--threshold-memory", "lots"])
        .assert()
        .code(2);
    let base = record(dir.path());
    let mut other = base.clone();
    other["key"]["ctx"] = 128.into();
    let b = write(dir.path(), "b.jsonl", &[&base]);
    let n = write(dir.path(), "n.jsonl", &[&other]);
    compare(&b, &n, &[])
        .code(2)
        .stderr(predicate::str::contains("no case in common"));
}

/// The memory part of the gate: the case of `scripts/memory-baseline.sh`, run now, against the
/// record committed in tests/data (made by the same test-profile binary on the 2-core dev VM,
/// 2 threads). Peak memory is deterministic to well under 1% there.
#[test]
fn peak_memory_holds_against_the_committed_baseline() {
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/memory-baseline.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let now = dir.path().join("now.json");
    gemma_fit()
        .args([
            "run",
            "-m",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--ctx",
            "4096",
            "--prompt-tokens",
            "256",
            "--gen",
            "4",
            "--fill-kv",
            "synthetic",
            "--threads",
            "2",
            "--out",
        ])
        .arg(&now)
        .assert()
        .success();
    let out = gemma_fit()
        .arg("compare")
        .arg(&baseline)
        .arg(&now)
        .args(["--metric", "peak_memory"])
        .assert();
    let o = out.get_output();
    assert_eq!(
        o.status.code(),
        Some(0),
        "peak memory grew past 1% of the committed baseline (re-baseline with scripts/memory-baseline.sh only for an intended change):\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
