//! The suite runner: every fate a case can meet is recorded and the run goes on; a runner
//! killed mid-run resumes without duplicates or losses; malformed suites are named.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use gemma_fit::result::{CaseResult, Outcome};
use predicates::prelude::*;

fn gemma_fit() -> Command {
    Command::cargo_bin("gemma-fit").unwrap()
}

fn records(path: &Path) -> Vec<CaseResult> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Four cases, four fates: a small model that runs, a missing file (error), a prompt far too long
/// for the timeout, and a model larger than the memory limit.
#[test]
fn every_outcome_is_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("fates.toml");
    std::fs::write(
        &suite,
        r#"
name = "fates"
timeout_s = 10
memory_limit = "700MiB"
[axes]
models = ["synthetic:270m", "/no/such/model.gguf", "synthetic:1b"]
quants = ["q8_0"]
contexts = [8200]
prompt_tokens = [8, 8192]
gen_tokens = [2]
[[exclude]]
model = "/no/such/model.gguf"
prompt_tokens = 8192
[[exclude]]
model = "synthetic:1b"
prompt_tokens = 8192
"#,
    )
    .unwrap();
    let out = dir.path().join("results.jsonl");
    gemma_fit()
        .args([
            "bench",
            suite.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 ok, 1 oom, 1 timeout, 1 error"));
    let recs = records(&out);
    assert_eq!(recs.len(), 4);
    let by: HashMap<(String, usize), &CaseResult> = recs
        .iter()
        .map(|r| ((r.params.model.clone(), r.key.prompt_tokens), r))
        .collect();
    let fate = |m: &str, p: usize| &by[&(m.to_string(), p)].outcome;
    assert_eq!(fate("synthetic:270m", 8), &Outcome::Ok);
    assert!(by[&("synthetic:270m".to_string(), 8)].metrics.is_some());
    assert_eq!(
        fate("synthetic:270m", 8192),
        &Outcome::Timeout { limit_s: 10.0 }
    );
    assert!(
        matches!(fate("/no/such/model.gguf", 8), Outcome::Error { message } if message.contains("not found"))
    );
    assert!(
        matches!(fate("synthetic:1b", 8), Outcome::Oom { message } if message.contains("over the limit")),
        "{:?}",
        fate("synthetic:1b", 8)
    );
    assert!(recs
        .iter()
        .all(|r| r.key.memory_limit_bytes == Some(700 << 20)));
}

#[test]
fn a_killed_runner_resumes_without_duplicates_or_losses() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("three.toml");
    std::fs::write(
        &suite,
        r#"
name = "three"
[axes]
models = ["synthetic:270m"]
quants = ["q8_0"]
contexts = [64]
prompt_tokens = [8]
gen_tokens = [1, 2, 3]
"#,
    )
    .unwrap();
    let out = dir.path().join("results.jsonl");
    let args = [
        "bench",
        suite.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let mut runner = std::process::Command::new(assert_cmd::cargo::cargo_bin("gemma-fit"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no chance to clean up) once the first case is recorded.
    let deadline = Instant::now() + Duration::from_secs(120);
    while records(&out).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    runner.kill().unwrap();
    runner.wait().unwrap();
    let before = records(&out).len();
    assert!(
        (1..3).contains(&before),
        "{before} cases recorded before the kill"
    );

    gemma_fit()
        .args(args)
        .arg("--resume")
        .assert()
        .success()
        .stdout(predicate::str::contains("already recorded"));
    let recs = records(&out);
    let mut gens: Vec<usize> = recs.iter().map(|r| r.key.gen_tokens).collect();
    gens.sort();
    assert_eq!(gens, [1, 2, 3], "each case exactly once");
    assert!(recs.iter().all(|r| r.outcome == Outcome::Ok));
}

#[test]
fn malformed_suites_and_shards_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("bad.toml");
    std::fs::write(
        &suite,
        "name = \"bad\"\n[axes]\nmodels = [\"default\"]\ncontexts = 4096\nprompt_tokens = [8]\ngen_tokens = [2]\n",
    )
    .unwrap();
    gemma_fit()
        .args(["bench", suite.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("bad.toml")
                .and(predicate::str::contains("line 4"))
                .and(predicate::str::contains("contexts")),
        );
    gemma_fit()
        .args(["bench", "quick", "--shard", "3/2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected i/n"));
    gemma_fit()
        .args(["bench", dir.path().join("none.toml").to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("none.toml"));
}
