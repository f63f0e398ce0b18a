//! The binary as a user runs it: help, info, tokenize, and clear errors on bad input.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;

fn gemma_fit() -> Command {
    Command::cargo_bin("gemma-fit").unwrap()
}

#[test]
fn help_lists_the_working_commands() {
    gemma_fit()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("fetch").and(predicate::str::contains("tokenize")));
}

#[test]
fn info_describes_the_machine_without_panicking() {
    let out = gemma_fit().arg("info").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("CPU:") && text.contains("RAM:") && text.contains("GPU"),
        "{text}"
    );
    let out = gemma_fit().args(["info", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(v["host"]["logical_cores"].as_u64().unwrap() >= 1);
    // Either GPUs are listed or there is a reason why not.
    assert!(
        v["gpu"]["gpus"].as_array().is_some_and(|g| !g.is_empty())
            || v["gpu"]["unavailable"].is_string()
    );
}

fn assert_fails_with(args: &[&str], message: &str) {
    gemma_fit()
        .args(args)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(message).and(predicate::str::contains("panicked").not()));
}

#[test]
fn missing_model_file() {
    assert_fails_with(
        &["tokenize", "--model", "/nonexistent/m.gguf", "hi"],
        "model file not found",
    );
}

#[test]
fn file_that_is_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.gguf");
    std::fs::write(&p, "hello, I am text").unwrap();
    assert_fails_with(
        &["tokenize", "--model", p.to_str().unwrap(), "hi"],
        "is not a GGUF file",
    );
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, "").unwrap();
    assert_fails_with(
        &["tokenize", "--model", empty.to_str().unwrap(), "hi"],
        "is not a GGUF file",
    );
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_gguf(&p, "gemma3");
    let full = std::fs::read(&p).unwrap();
    // Cut in the tensor data, then in the header.
    for keep in [full.len() - 100, 200] {
        std::fs::write(&p, &full[..keep]).unwrap();
        assert_fails_with(
            &["tokenize", "--model", p.to_str().unwrap(), "hi"],
            "damaged or truncated",
        );
    }
}

#[test]
fn gguf_of_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("llama.gguf");
    common::write_tiny_gguf(&p, "llama");
    assert_fails_with(
        &["tokenize", "--model", p.to_str().unwrap(), "hi"],
        "architecture 'llama' is not supported",
    );
}

#[test]
fn tokenize_a_small_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_gguf(&p, "gemma3");
    let out = gemma_fit()
        .args([
            "tokenize",
            "--json",
            "--model",
            p.to_str().unwrap(),
            "hi hi",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        v["pieces"],
        serde_json::json!(["<bos>", "hi", "\u{2581}hi"])
    );
}

#[test]
fn tokenize_default_model_matches_reference() {
    if common::default_model("tokenize_default_model_matches_reference").is_none() {
        return;
    }
    let out = gemma_fit()
        .args([
            "tokenize",
            "--json",
            "--model",
            "default",
            "The capital of France is",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["ids"], serde_json::json!([2, 818, 5279, 529, 7001, 563]));
    assert_eq!(v["pieces"][1], "The");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("partial.gguf");
    // Metadata of a complete tiny Gemma 3, but only the embedding and the final norm.
    let md = common::tiny_gemma3_metadata();
    let run_args = [
        "run",
        "--model",
        p.to_str().unwrap(),
        "--prompt-tokens",
        "2",
        "--gen",
        "1",
    ];
    common::write_gguf(
        &p,
        "gemma3",
        &md,
        &[
            ("token_embd.weight", (265, 64)),
            ("output_norm.weight", (1, 64)),
        ],
    );
    assert_fails_with(&run_args, "output_norm.weight");
    common::write_gguf(&p, "gemma3", &md, &[("token_embd.weight", (265, 64))]);
    assert_fails_with(&run_args, "tensor 'output_norm.weight' is missing");
    common::write_gguf(&p, "gemma3", &md, &[("token_embd.weight", (265, 48))]);
    assert_fails_with(&run_args, "tensor 'token_embd.weight' has shape [265, 48]");
    // A token past the embedding's rows could never be looked up.
    common::write_gguf(&p, "gemma3", &md, &[("token_embd.weight", (264, 64))]);
    assert_fails_with(
        &run_args,
        "the tokenizer has 265 tokens, but token_embd.weight has 264 rows",
    );
}

#[test]
fn generate_on_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("llama.gguf");
    common::write_tiny_gguf(&p, "llama");
    assert_fails_with(
        &["generate", "--model", p.to_str().unwrap(), "--prompt", "hi"],
        "architecture 'llama'",
    );
}

#[test]
fn models_lists_sizes_with_exact_parameter_counts() {
    let out = gemma_fit().args(["models", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let totals: Vec<u64> = v["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["params"]["total"].as_u64().unwrap())
        .collect();
    assert_eq!(
        totals,
        [
            268_098_176,
            999_885_952,
            4_300_079_472,
            12_187_325_040,
            27_432_406_640
        ]
    );
    gemma_fit()
        .arg("models")
        .assert()
        .success()
        .stdout(predicate::str::contains("27b"));
}

#[test]
fn synthetic_run_needs_a_format_and_gguf_refuses_one() {
    assert_fails_with(&["run", "--model", "synthetic:1b"], "needs --quant");
    assert_fails_with(
        &["run", "--model", "synthetic:3b", "--quant", "q4_k"],
        "unknown model spec",
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_gguf(&p, "gemma3");
    assert_fails_with(
        &["run", "--model", p.to_str().unwrap(), "--quant", "q4_k"],
        "applies to synthetic models",
    );
    assert_fails_with(
        &[
            "generate",
            "--model",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--prompt",
            "hi",
        ],
        "has no tokenizer",
    );
}

/// K and V apart, as llama.cpp's -ctk/-ctv: `--kv-dtype` sets both, `--k-dtype`/`--v-dtype` one
/// side; the key records the keys' type and the values' where it differs, and the record's
/// cache bytes are the block formats' exact ones (34 bytes per 32 q8_0 values, 64 for f16).
#[test]
fn k_and_v_cache_types_apart() {
    use gemma_fit::result::{CaseResult, Outcome};
    let run = |extra: &[&str]| -> CaseResult {
        let out = gemma_fit()
            .args([
                "run",
                "-m",
                "synthetic:270m",
                "--quant",
                "q8_0",
                "--ctx",
                "64",
            ])
            .args(["--prompt-tokens", "8", "--gen", "2", "--json"])
            .args(extra)
            .assert()
            .success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    };
    let pair = run(&[
        "--kv-dtype",
        "q4_0",
        "--k-dtype",
        "q8_0",
        "--v-dtype",
        "f16",
    ]);
    assert_eq!(pair.outcome, Outcome::Ok);
    let v = serde_json::to_value(&pair).unwrap();
    assert_eq!(
        (&v["key"]["kv_dtype"], &v["key"]["v_dtype"]),
        (&"q8_0".into(), &"f16".into())
    );
    assert_eq!(v["params"]["kv_dtype"], "q8_0/f16");
    assert!(pair.key.id().contains("|q8_0/f16|"), "{}", pair.key.id());
    // 270M: 18 layers of 64 positions (the window is 512), one KV head of 256.
    let kv = |r: &CaseResult| r.metrics.as_ref().unwrap().kv_bytes;
    assert_eq!(kv(&pair), 18 * 64 * 256 / 32 * (34 + 64));
    let both = run(&["--kv-dtype", "q8_0"]);
    let v = serde_json::to_value(&both).unwrap();
    assert_eq!(
        (&v["key"]["kv_dtype"], &v["key"]["v_dtype"]),
        (&"q8_0".into(), &serde_json::Value::Null)
    );
    assert_eq!(kv(&both), 18 * 64 * 256 / 32 * 68);
}

/// A block-format cache needs head widths of whole 32-value blocks: the tiny model's 16 is
/// refused with one clear line, and an f16 cache runs.
#[test]
fn a_head_width_of_partial_blocks_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_hf(dir.path());
    let model = dir.path().to_str().unwrap();
    let run = |kv: &str| {
        gemma_fit()
            .args([
                "run",
                "-m",
                model,
                "--prompt-tokens",
                "4",
                "--gen",
                "1",
                "--kv-dtype",
                kv,
            ])
            .assert()
    };
    run("f16").success();
    run("f16/q4_0").failure().stderr(
        predicate::str::contains("head width 16 is not a multiple of 32")
            .and(predicate::str::contains("q4_0"))
            .and(predicate::str::contains("panicked").not()),
    );
}

/// `run --json` prints a complete v1 record: key, parameters, environment, outcome, metrics with
/// per-phase host memory, and notes for the probes that could not run. It round-trips through
/// the library's types, tolerates fields it does not know, and repeats report their spread.
#[test]
fn run_json_is_a_complete_v1_record() {
    use gemma_fit::result::{CaseResult, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("case.json");
    let out = gemma_fit()
        .args(["run", "--model", "synthetic:270m", "--quant", "q4_0"])
        .args([
            "--prompt-tokens",
            "8",
            "--gen",
            "3",
            "--repeats",
            "3",
            "--warmup",
            "1",
        ])
        .args(["--json", "--out", out_file.to_str().unwrap()])
        .assert()
        .success();
    let stdout = out.get_output().stdout.clone();
    let r: CaseResult = serde_json::from_slice(&stdout).unwrap();
    let from_file: CaseResult =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(r, from_file);
    assert_eq!(r.schema_version, 1);
    assert_eq!(r.outcome, Outcome::Ok);
    let threads = r.key.threads;
    assert_eq!(
        r.key.id(),
        format!("270m|synthetic|q4_0|f32|ctx11|p8|g3|c512|t{threads}|cpu|-|-")
    );
    assert_eq!(r.params.source, "synthetic:270m (q4_0)");
    assert!(!r.environment.git_commit.is_empty() && r.environment.candle_version == "0.11.1");
    assert!(r.environment.ram_total_bytes > 0);
    let m = r.metrics.as_ref().unwrap();
    assert_eq!(m.prefill_tok_per_s.n, 3);
    assert_eq!(m.decode_steps.samples_ms.len(), 9);
    assert!(m.decode_tok_per_s.min <= m.decode_tok_per_s.median);
    assert!(m.weights.file_weight_bytes > 0 && m.kv_bytes > 0);
    let load = m
        .memory
        .iter()
        .find(|p| p.phase.is_some_and(|p| format!("{p:?}") == "Load"));
    let baseline = m.memory.first().unwrap();
    assert!(
        load.unwrap().host_peak_rss_bytes.unwrap()
            > baseline.host_peak_rss_bytes.unwrap() + (100 << 20),
        "loading ~150 MiB of weights shows in the load phase's peak: {:?}",
        m.memory
    );
    // No NVIDIA driver here (or a CPU case): the record says why there are no GPU figures.
    assert!(
        r.probes
            .notes
            .iter()
            .any(|n| n.starts_with("nvml:") || n.starts_with("gpu:")),
        "{:?}",
        r.probes.notes
    );

    // Round trip, and fields from a future version are ignored.
    let again: CaseResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(again, r);
    let mut v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    v["future_top_level"] = serde_json::json!({"anything": [1, 2]});
    v["metrics"]["future_metric"] = serde_json::json!(3.5);
    v["environment"]["future_fact"] = serde_json::json!("x");
    let tolerant: CaseResult = serde_json::from_value(v).unwrap();
    assert_eq!(tolerant, r);
}

/// A case that cannot run still leaves a record, with its outcome, and fails the command.
#[test]
fn a_failed_case_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("case.json");
    gemma_fit()
        .args(["run", "--model", "synthetic:27b", "--quant", "f32"])
        .args(["--out", out_file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not fit"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(v["outcome"]["status"], "oom", "{v}");
    assert!(v["outcome"]["message"]
        .as_str()
        .unwrap()
        .contains("GiB available"));
    assert!(v["metrics"].is_null());
    assert_eq!(v["key"]["size"], "27b");
    let on = |device| {
        [
            "run",
            "--model",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--device",
            device,
        ]
    };
    #[cfg(not(feature = "cuda"))]
    assert_fails_with(&on("cuda:0"), "--features cuda");
    // A device that does not exist is a usage error: refused before anything runs.
    assert_usage_error(&on("tpu"), "cpu or cuda:N");
}

fn assert_usage_error(args: &[&str], message: &str) {
    gemma_fit()
        .args(args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(message).and(predicate::str::contains("panicked").not()));
}

/// Typed options: a value that cannot work names the option and the choices, before any work.
#[test]
fn bad_values_are_usage_errors_that_name_the_choices() {
    let run = ["run", "--model", "synthetic:270m", "--quant", "q8_0"];
    let with = |extra: &[&'static str]| [&run[..], extra].concat();
    assert_usage_error(
        &with(&["--kv-dtype", "q3_k"]),
        "unknown KV-cache dtype 'q3_k' (choose f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1)",
    );
    assert_usage_error(
        &with(&["--v-dtype", "q8_0/f16"]),
        "unknown KV-cache dtype 'q8_0/f16'",
    );
    assert_usage_error(
        &["run", "-m", "synthetic:270m", "--quant", "q3_x"],
        "unknown weight format 'q3_x'",
    );
    assert_usage_error(&with(&["--fill-kv", "half"]), "choose none or synthetic");
    assert_usage_error(&["fit", "--memory", "lots"], "'lots' is not a size");
    assert_usage_error(&["fit", "--ctx", "4M"], "not a context length");
    assert_usage_error(&["bandwidth", "--device", "tpu"], "unknown device 'tpu'");
    assert_usage_error(
        &with(&["--threads", "0"]),
        "'0' is not a count of at least 1",
    );
    assert_usage_error(
        &with(&["--sample-ms", "0"]),
        "not a positive number of milliseconds",
    );
}

/// Errors are one line: no Debug structs, no doubled words, no backtrace even when
/// RUST_BACKTRACE asks candle for one.
#[test]
fn errors_are_one_clean_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("partial.gguf");
    common::write_gguf(
        &p,
        "gemma3",
        &common::tiny_gemma3_metadata(),
        &[("token_embd.weight", (265, 48))],
    );
    let out = gemma_fit()
        .env("RUST_BACKTRACE", "1")
        .args([
            "run",
            "--model",
            p.to_str().unwrap(),
            "--prompt-tokens",
            "2",
            "--gen",
            "1",
        ])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("unsupported: unsupported"),
        "{stderr}"
    );
    // A failed run says its outcome in words, not as a Debug struct.
    let out = gemma_fit()
        .args([
            "run",
            "--model",
            p.to_str().unwrap(),
            "--prompt-tokens",
            "2",
            "--gen",
            "1",
        ])
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("outcome          error: ") && !stdout.contains("Error {"),
        "{stdout}"
    );
}

/// A reader that goes away (`gemma-fit fit --format json | head -1`) ends the program
/// quietly, never in a panic.
#[test]
fn a_closed_pipe_ends_quietly() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("gemma-fit"))
        .args(["fit", "--gpu", "4090", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code() != Some(101),
        "{stderr}"
    );
}

#[test]
fn a_synthetic_model_larger_than_memory_is_refused_before_allocating() {
    // 27B in f32 is 108 GB of weights.
    assert_fails_with(
        &["run", "--model", "synthetic:27b", "--quant", "f32"],
        "GiB available",
    );
}

#[test]
fn run_with_an_image() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_hf_multimodal(dir.path());
    // A real PNG (any size: it is resized to the tower's 32 × 32).
    let png = dir.path().join("photo.png");
    image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 128]))
        .save(&png)
        .unwrap();
    let model = dir.path().to_str().unwrap();
    for img in [png.to_str().unwrap(), "synthetic"] {
        let out = gemma_fit()
            .args(["run", "--model", model, "--image", img])
            .args(["--prompt-tokens", "4", "--gen", "2", "--json"])
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        // 4 text tokens, 16 soft tokens and the begin/end markers.
        let m = &v["metrics"];
        assert_eq!(m["prompt_positions"], 22, "{v}");
        assert_eq!(v["params"]["ctx"], 24, "{v}");
        assert_eq!(v["key"]["ctx"], 24, "{v}");
        assert!(m["image_encode_ms"]["median"].as_f64().unwrap() > 0.0);
        assert!(
            m["vision_weights"]["resident_weight_bytes"]
                .as_u64()
                .unwrap()
                > 0
        );
        let phases: Vec<&str> = m["memory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(phases, ["baseline", "load", "encode", "prefill", "decode"]);
    }
    // Bad images and models without a tower: clear errors, before or instead of a panic.
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image at all").unwrap();
    let junk = junk.to_str().unwrap();
    assert_fails_with(
        &["run", "--model", model, "--image", junk],
        "not a readable image",
    );
    assert_fails_with(
        &["run", "--model", model, "--image", "/no/such/photo.png"],
        "no such file",
    );
    assert_fails_with(
        &[
            "run",
            "--model",
            "synthetic:1b",
            "--quant",
            "q4_k",
            "--image",
            "synthetic",
        ],
        "no vision tower",
    );
    assert_fails_with(
        &[
            "run",
            "--model",
            model,
            "--image",
            "synthetic",
            "--ctx",
            "10",
        ],
        "18 for the image",
    );
}

/// `--fill-kv synthetic`: the cache is filled to ctx - prompt - gen, the record says so, and the
/// key tells the case apart from one that computed its prefill.
#[test]
fn fill_kv_reaches_the_depth_without_prefilling_it() {
    let out = gemma_fit()
        .args([
            "run",
            "--model",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--ctx",
            "4096",
        ])
        .args([
            "--prompt-tokens",
            "16",
            "--gen",
            "2",
            "--fill-kv",
            "synthetic",
            "--json",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["metrics"]["fill_depth"], 4096 - 16 - 2, "{v}");
    assert_eq!(v["key"]["fill_kv"], "synthetic");
    assert!(v["key"]["ctx"] == 4096);
}

#[test]
fn bandwidth_measures_the_cpu_and_says_why_not_a_gpu() {
    let out = gemma_fit()
        .args(["bandwidth", "--size", "8MiB", "--repeats", "2"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("read ") && text.contains("GB/s"), "{text}");
    #[cfg(not(feature = "cuda"))]
    gemma_fit()
        .args(["bandwidth", "--device", "cuda:0"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("without CUDA support"));
    gemma_fit()
        .args(["bandwidth", "--device", "tpu"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("unknown device"));
}

/// `check` reads a model without its weights: what it is, or one line on what is wrong.
#[test]
fn check_describes_a_model_or_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_model_gguf(&p);
    let out = gemma_fit()
        .args(["check", "--model", p.to_str().unwrap(), "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["layers"], 2);
    assert_eq!(v["tensors"], 2 + 2 * 13);
    assert_eq!(v["types"]["Q8_0"]["tensors"], 1 + 2 * 7);
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    common::tiny::write_hf(&hf);
    gemma_fit()
        .args(["check", "--model", hf.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("7 layers"));
    common::write_gguf(
        &p,
        "gemma3",
        &common::tiny_gemma3_metadata(),
        &[("token_embd.weight", (265, 64))],
    );
    assert_fails_with(
        &["check", "--model", p.to_str().unwrap()],
        "tensor 'output_norm.weight' is missing",
    );
}

/// The tensor-name length one byte too long (the next field's first byte read as part of the
/// name): one short line naming the field, its offset and the name escaped, for every command
/// that opens the file.
#[test]
fn a_name_length_one_byte_too_long_is_one_short_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_model_gguf(&p);
    let mut b = std::fs::read(&p).unwrap();
    let name = b"token_embd.weight";
    let at = b.windows(name.len()).position(|w| w == name).unwrap() - 8;
    b[at] += 1;
    std::fs::write(&p, &b).unwrap();
    for args in [
        vec!["check"],
        vec!["run", "--prompt-tokens", "4", "--gen", "1"],
        vec!["tokenize", "hi"],
    ] {
        let out = gemma_fit()
            .args(&args)
            .args(["--model", p.to_str().unwrap()])
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
        assert!(
            line.contains("tensor 'token_embd.weight\\u{2}'") && line.contains("dimensions"),
            "{line}"
        );
        assert!(
            line.len() < 300 && !line.chars().any(char::is_control),
            "{line}"
        );
    }
}
