//! The suite runner: every fate a case can meet is recorded and the run goes on; a runner
//! killed mid-run resumes without duplicates or losses; malformed suites are named; every field
//! of a case reaches the child that runs it; records written before keep their keys; a run
//! never touches the files git tracks.

mod common;

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

/// Every field of a case, each away from its default, reaches the child process and shows in
/// its record (a suite's fill_kv once did not).
#[test]
fn every_case_field_reaches_the_child_record() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-mm");
    std::fs::create_dir(&model).unwrap();
    common::tiny::write_hf_multimodal(&model);
    let suite = dir.path().join("all.toml");
    std::fs::write(
        &suite,
        format!(
            r#"
name = "all"
repeats = 2
warmup = 1
memory_limit = "4GiB"
[axes]
models = ["{}"]
quants = ["q8_0"]
kv_dtypes = ["bf16"]
contexts = [300]
prompt_tokens = [16]
gen_tokens = [3]
prefill_chunks = [8]
images = [true]
fill_kv = ["synthetic"]
"#,
            model.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("r.jsonl");
    gemma_fit()
        .args(["bench", suite.to_str().unwrap(), "--threads", "1", "--out"])
        .arg(&out)
        .assert()
        .success();
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.outcome);
    let v = serde_json::to_value(r).unwrap();
    let (k, p, m) = (&v["key"], &v["params"], &v["metrics"]);
    assert_eq!(p["model"], model.to_str().unwrap());
    assert_eq!(k["quant"], "q8_0");
    assert_eq!(k["kv_dtype"], "bf16");
    assert_eq!(
        (k["ctx"].as_u64(), k["prompt_tokens"].as_u64()),
        (Some(300), Some(16))
    );
    assert_eq!(
        (k["gen_tokens"].as_u64(), k["prefill_chunk"].as_u64()),
        (Some(3), Some(8))
    );
    assert_eq!(
        (k["threads"].as_u64(), p["threads"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (k["device_kind"].as_str(), p["device"].as_str()),
        (Some("cpu"), Some("cpu"))
    );
    assert_eq!(k["image"], "synthetic");
    assert!(
        m["image_encode_ms"]["n"] == 2,
        "the image was encoded in each repeat: {m}"
    );
    assert_eq!(k["memory_limit_bytes"], 4u64 << 30);
    assert_eq!(k["fill_kv"], "synthetic");
    // 16 text + 18 image positions (the tiny tower's 16 soft tokens and two markers), 3 decoded.
    assert_eq!(m["fill_depth"], 300 - 16 - 18 - 3, "{m}");
    assert_eq!(
        (p["repeats"].as_u64(), p["warmup"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(m["ttft_ms"]["n"], 2);
    assert_eq!(m["decode_steps"]["samples_ms"].as_array().unwrap().len(), 6);
}

/// Records written before this version keep their keys: `--resume` over the committed quick
/// suite's results finds every case recorded and runs none.
#[test]
fn resume_skips_the_committed_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.jsonl");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/amd-epyc/results.jsonl");
    std::fs::copy(&committed, &out).unwrap();
    let before = std::fs::read(&out).unwrap();
    gemma_fit()
        .args(["bench", "quick", "--resume", "--threads", "2", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "0 ok, 0 oom, 0 timeout, 0 error, 5 already recorded",
        ));
    assert_eq!(std::fs::read(&out).unwrap(), before, "nothing was appended");
}

/// A user's run from a checkout writes only what git ignores: `bench` with its default output
/// in a fresh clone leaves `git status` as it was.
#[test]
fn a_run_in_a_checkout_leaves_tracked_files_alone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |dir: &Path, args: &[&str]| -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("clone");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            repo.to_str().unwrap(),
            "clone",
        ],
    );
    // The working tree's .gitignore, so an uncommitted change to it is what is tested.
    std::fs::copy(repo.join(".gitignore"), clone.join(".gitignore")).unwrap();
    let status = || git(&clone, &["status", "--porcelain", "--untracked-files=all"]);
    let before = status();
    let suite = dir.path().join("one.toml");
    std::fs::write(
        &suite,
        "name = 'one'\n[axes]\nmodels = ['synthetic:270m']\nquants = ['q8_0']\ncontexts = [64]\nprompt_tokens = [8]\ngen_tokens = [1]\n",
    )
    .unwrap();
    gemma_fit()
        .current_dir(&clone)
        .args(["bench", suite.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("results in results/"));
    assert!(
        clone.join("results").is_dir(),
        "the default output is results/<machine>/"
    );
    assert_eq!(status(), before, "the run changed what git tracks or sees");
}

/// `bench --engine llama.cpp` runs the suite's GGUF cases with llama.cpp (skipping the synthetic
/// ones, saying so), each recorded ok with its peak memory and llama.cpp's buffers, the engine
/// in the key; gemma-fit's run of the same suite lands beside it, and the report shows both,
/// each with its prediction.
#[test]
fn bench_runs_llama_cpp_beside_gemma_fit() {
    let Some(python) = common::llamacpp_python("bench_runs_llama_cpp_beside_gemma_fit") else {
        return;
    };
    if common::default_model("bench_runs_llama_cpp_beside_gemma_fit").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("peers.toml");
    std::fs::write(
        &suite,
        r#"
name = "peers"
[axes]
models = ["default", "synthetic:270m"]
quants = ["q8_0"]
kv_dtypes = ["f16"]
contexts = [1024, 4096]
prompt_tokens = [64]
gen_tokens = [4]
"#,
    )
    .unwrap();
    let out = dir.path().join("results.jsonl");
    let bench = |engine: &str| {
        gemma_fit()
            .env("GEMMA_FIT_LLAMACPP_PYTHON", &python)
            .args(["bench", suite.to_str().unwrap(), "--threads", "2"])
            .args(["--out", out.to_str().unwrap(), "--engine", engine])
            .assert()
            .success()
    };
    bench("llama.cpp")
        .stderr(predicate::str::contains("2 of the suite's 4 cases skipped"))
        .stdout(predicate::str::contains("2 ok, 0 oom, 0 timeout, 0 error"));
    bench("gemma-fit").stdout(predicate::str::contains("4 ok"));
    let recs = records(&out);
    assert_eq!(recs.len(), 6);
    let llama: Vec<&CaseResult> = recs
        .iter()
        .filter(|r| r.key.engine.tag().is_some())
        .collect();
    assert_eq!(llama.len(), 2);
    for r in &llama {
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.key.weights, "default");
        let m = r.metrics.as_ref().unwrap();
        assert!(
            m.peak_rss_bytes.unwrap() > 200 << 20,
            "{:?}",
            m.peak_rss_bytes
        );
        assert!(m.decode_tok_per_s.median > 0.0);
        for b in [
            "model CPU_Mapped",
            "KV global",
            "KV SWA",
            "compute",
            "output",
        ] {
            assert!(
                m.engine_buffers.contains_key(b),
                "{b}: {:?}",
                m.engine_buffers
            );
        }
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("[llama.cpp:ub512:fa]"), "no llama.cpp series");
    assert!(
        html.contains("270m (default GGUF) q4_k_m kv f16<"),
        "no gemma-fit series"
    );
    // Each engine's cases beside its own prediction, in the report's checks.
    let checks = gemma_fit()
        .args([
            "fit",
            "--results",
            out.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let compared: serde_json::Value = serde_json::from_slice(&checks.stdout).unwrap();
    let llama_rows: Vec<&serde_json::Value> = compared
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["case"].as_str().unwrap().contains("[llama.cpp"))
        .collect();
    assert_eq!(llama_rows.len(), 2, "{compared}");
    for c in llama_rows {
        assert!(c["error"].as_f64().unwrap().abs() < 0.05, "{c}");
    }
}

/// A shard writes a file of its own (appends from several machines to one shared file are not
/// atomic over NFS) and no partial report; `report` and `compare` take the folder of shards.
#[test]
fn shards_write_files_of_their_own_and_merge_from_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("two.toml");
    std::fs::write(
        &suite,
        r#"
name = "two"
repeats = 1
warmup = 0
[axes]
models = ["synthetic:270m"]
quants = ["q8_0"]
contexts = [64, 128]
prompt_tokens = [8]
gen_tokens = [2]
"#,
    )
    .unwrap();
    for k in 1..=2 {
        gemma_fit()
            .current_dir(dir.path())
            .args(["bench", "two.toml", "--shard", &format!("{k}/2")])
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("shard {k}/2 done")))
            .stdout(predicate::str::contains("gemma-fit report results/"));
    }
    let machine = std::fs::read_dir(dir.path().join("results"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut files: Vec<String> = std::fs::read_dir(&machine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["shard-1-of-2.jsonl", "shard-2-of-2.jsonl"],
        "no report, no shared file"
    );
    for f in &files {
        assert_eq!(records(&machine.join(f)).len(), 1, "{f}");
    }
    let out = dir.path().join("merged");
    gemma_fit()
        .arg("report")
        .arg(&machine)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let table = std::fs::read_to_string(out.join("fit-table.md")).unwrap();
    assert!(table.contains("| 64") || table.contains("64 "), "{table}");
    assert!(table.contains("128"), "{table}");
    gemma_fit()
        .arg("compare")
        .arg(&machine)
        .arg(&machine)
        .assert()
        .success();
    gemma_fit()
        .arg("report")
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("no result records in this folder"));
}
