//! The estimator as users meet it: `gemma-fit fit` and `gemma-fit gpus`, its plan against a real
//! GGUF file, and a prediction against a measured run.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;

fn gemma_fit() -> Command {
    Command::cargo_bin("gemma-fit").unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = gemma_fit().args(args).assert().success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// The error of a command that must fail with one line, which it returns.
fn one_line_error(args: &[&str]) -> String {
    let out = gemma_fit().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

/// `--format json` is an array of cells with the promised fields; the sliding window is right
/// at 128K, and contexts beyond a model's maximum are left out.
#[test]
fn fit_json_has_every_cell_and_the_windowed_kv_cache() {
    let v = json(&["fit", "--gpu", "h100 sxm", "--format", "json"]);
    let cells = v.as_array().unwrap();
    // 5 sizes × 3 formats × 2 KV types (bf16, q8_0) × 4 contexts, less 270M/1B at 128K (max 32K).
    assert_eq!(cells.len(), (5 * 3 * 4 - 2 * 3) * 2);
    for c in cells {
        for f in [
            "model",
            "quant",
            "kv_dtype",
            "ctx",
            "predicted_bytes",
            "verdict",
            "breakdown",
        ] {
            assert!(c.get(f).is_some(), "{f} missing in {c}");
        }
        assert!(["fits", "tight", "does_not_fit"].contains(&c["verdict"].as_str().unwrap()));
    }
    let cell_kv = |model: &str, quant: &str, kv: &str, ctx: u64| {
        cells
            .iter()
            .find(|c| {
                c["model"] == model && c["quant"] == quant && c["kv_dtype"] == kv && c["ctx"] == ctx
            })
            .unwrap_or_else(|| panic!("no cell {model} {quant} {kv} {ctx}"))
    };
    let cell = |model: &str, quant: &str, ctx: u64| cell_kv(model, quant, "bf16", ctx);
    let kv_bytes = |c: &serde_json::Value| c["breakdown"]["kv_cache"].as_u64().unwrap();
    assert_eq!(
        kv_bytes(cell("27b", "q4_k_m", 131_072)),
        11_173_625_856,
        "(10 × 131072 + 52 × 1024) × 8192 B = 10.41 GiB"
    );
    // q8_0: 34 bytes per 32 values instead of 64.
    assert_eq!(
        kv_bytes(cell_kv("27b", "q4_k_m", "q8_0", 131_072)),
        11_173_625_856 / 64 * 34
    );
    assert!(cells
        .iter()
        .all(|c| !(c["model"] == "1b" && c["ctx"] == 131_072)));
    // 27B bf16 needs more than the card's 80 GB only past the weights' 54 GB + KV; q4_k_m fits.
    assert_eq!(cell("27b", "q4_k_m", 131_072)["verdict"], "fits");
    assert_eq!(cell("27b", "bf16", 4096)["verdict"], "fits");
    let total = |c: &serde_json::Value| c["predicted_bytes"].as_u64().unwrap();
    assert!(total(cell("27b", "bf16", 131_072)) > total(cell("27b", "bf16", 4096)));
}

#[test]
fn fit_tables_render_and_names_match_loosely() {
    gemma_fit()
        .args(["fit", "--gpu", "rtx 4090", "-m", "4b", "--quant", "q4_k_m"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("NVIDIA GeForce RTX 4090")
                .and(predicate::str::contains("fits "))
                .and(predicate::str::contains("max ctx"))
                .and(predicate::str::contains("decode ≤")),
        );
    gemma_fit()
        .args([
            "fit",
            "--gpu",
            "l4",
            "-m",
            "27b",
            "--quant",
            "q4_k_m",
            "--ctx",
            "32K",
            "--breakdown",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("KV cache")
                .and(predicate::str::contains("27b q4_k_m kv bf16 32K")),
        );
    let out = gemma_fit()
        .args(["fit", "--memory", "1GiB", "-m", "270m,1b", "--format", "md"])
        .assert()
        .success();
    let md = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        md.contains("| model |") && md.contains("n/a (max 32K)"),
        "{md}"
    );
    assert!(md.contains("no: "), "1B bf16 does not fit 1 GiB: {md}");
    let out = gemma_fit()
        .args(["fit", "--gpu", "l4", "-m", "12b", "--format", "csv"])
        .assert()
        .success();
    let csv = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(csv.starts_with("target,model,quant,kv_dtype,ctx,predicted_bytes,verdict"));
    assert_eq!(csv.lines().count(), 1 + 3 * 2 * 4);
    // Quantized caches and K/V pairs, as llama.cpp's -ctk/-ctv name them.
    let v = json(&[
        "fit",
        "--gpu",
        "l4",
        "-m",
        "4b",
        "--quant",
        "q4_k_m",
        "--kv-dtype",
        "q8_0,q4_0,q8_0/f16",
        "--ctx",
        "32K",
        "--format",
        "json",
    ]);
    let kv: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kv_dtype"].as_str().unwrap().to_string(),
                c["breakdown"]["kv_cache"].as_u64().unwrap(),
            )
        })
        .collect();
    let [(a, q8), (b, q4), (c, mixed)] = &kv[..] else {
        panic!("{kv:?}")
    };
    assert_eq!(
        (a.as_str(), b.as_str(), c.as_str()),
        ("q8_0", "q4_0", "q8_0/f16")
    );
    assert_eq!(
        q8 / 34,
        q4 / 18,
        "the same positions, 34 vs 18 bytes per 32 values"
    );
    assert_eq!(mixed / (34 + 64), q8 / 68, "keys in q8_0, values in f16");
}

#[test]
fn bad_fit_input_is_a_clear_error() {
    gemma_fit()
        .args(["fit", "--gpu", "rtx 4999"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown GPU 'rtx 4999'; closest:"));
    gemma_fit()
        .args(["fit", "--gpu", "a100"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("matches several GPUs"));
    gemma_fit()
        .args(["fit", "--memory", "8GiB", "-m", "2b"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown Gemma 3 size '2b'"));
    gemma_fit()
        .args(["fit", "--memory", "8GiB", "--ctx", "lots"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a context length"));
    gemma_fit()
        .args(["fit", "--memory", "8GiB", "-m", "1b", "--image"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no vision tower"));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "not json\n").unwrap();
    gemma_fit()
        .args(["fit", "--results", junk.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no result records"));
}

#[test]
fn gpus_lists_the_catalog_and_takes_user_files() {
    let v = json(&["gpus", "--json"]);
    let gpus = v.as_array().unwrap();
    assert!(gpus.len() >= 20);
    assert!(
        gpus.iter()
            .all(|g| g["total_mib"].as_u64().unwrap() > 0
                && !g["source"].as_str().unwrap().is_empty())
    );
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine.toml");
    std::fs::write(
        &mine,
        "[[gpu]]\nname = \"Lab Card 7\"\nmemory_gb = 7\ntotal_mib = 7168\nbandwidth_gbs = 70\n",
    )
    .unwrap();
    gemma_fit()
        .args([
            "fit",
            "--gpu",
            "lab card",
            "--catalog",
            mine.to_str().unwrap(),
            "-m",
            "1b",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("Lab Card 7: 7.00 GiB"));
    std::fs::write(&mine, "[[gpu]]\nname = 3\n").unwrap();
    gemma_fit()
        .args(["gpus", "--catalog", mine.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("mine.toml"));
}

/// The plan's per-tensor types and bytes are the real file's, tensor by tensor.
#[test]
fn the_plan_matches_the_default_gguf_file() {
    let Some(path) = common::default_model("the_plan_matches_the_default_gguf_file") else {
        return;
    };
    let file = gemma_fit::engine::load::gguf::GgufFile::open_gemma3(&path).unwrap();
    let cfg = gemma_fit::estimate::preset("270m").unwrap().config;
    let format = "q4_k_m"
        .parse::<gemma_fit::engine::load::format::Format>()
        .unwrap();
    let plan = gemma_fit::engine::plan::text_tensors(&cfg, format, true);
    assert_eq!(plan.len(), file.content.tensor_infos.len());
    for t in &plan {
        let info = &file.content.tensor_infos[&t.name];
        assert_eq!(info.ggml_dtype, t.file_type, "{}", t.name);
        assert_eq!(info.shape.dims(), t.shape.as_slice(), "{}", t.name);
    }
}

/// A measured run beside its prediction: the prediction is within 5% of the measured peak RSS
/// (a synthetic 270M in the test profile; the closing note of issue 7 has the release-build
/// table for 270M/1B/4B at 512–32K).
#[test]
fn fit_results_sets_a_measured_run_beside_its_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    gemma_fit()
        .args([
            "run",
            "-m",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--ctx",
            "2048",
            "--prompt-tokens",
            "64",
            "--gen",
            "2",
            "--fill-kv",
            "synthetic",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let v = json(&[
        "fit",
        "--format",
        "json",
        "--results",
        out.to_str().unwrap(),
    ]);
    let c = &v.as_array().unwrap()[0];
    assert!(
        c["case"]
            .as_str()
            .unwrap()
            .starts_with("270m q8_0 kv f32 ctx 2K p64+g2"),
        "{c}"
    );
    let err = c["error"].as_f64().unwrap();
    assert!(
        err.abs() < 0.05,
        "predicted vs measured peak: {err:+.3} ({c})"
    );
    let table = gemma_fit()
        .args(["fit", "--results", out.to_str().unwrap()])
        .assert()
        .success();
    let text = String::from_utf8(table.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("case (measured)") && text.contains("270m q8_0"),
        "{text}"
    );
}

/// `fit --engine llama.cpp`: the default model at 32K as llama.cpp's log prints it (a full-size
/// sliding cache: 96 + 480 MiB of f16, a 514.50 MiB compute buffer at ubatch 512; without it
/// 1,024 sliding cells), its -np mapping, and the clear errors for what it refuses or what is
/// not built.
#[test]
fn fit_engine_llama_cpp_gives_its_buffers() {
    let mib = |v: &serde_json::Value| v.as_u64().unwrap() as f64 / (1 << 20) as f64;
    let cell = |extra: &[&str]| {
        let mut args = vec![
            "fit",
            "--engine",
            "llama.cpp",
            "-m",
            "default",
            "--ctx",
            "32K",
            "--kv-dtype",
            "f16",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        json(&args)[0].clone()
    };
    let full = cell(&["--swa-full", "--flash-attn", "off"]);
    let a = &full["allocation"];
    assert!(full["version"].as_str().unwrap().contains("0c1e57098"));
    assert_eq!(
        mib(&a["global"]["k_bytes"]) + mib(&a["global"]["v_bytes"]),
        96.0
    );
    assert_eq!(mib(&a["swa"]["k_bytes"]) + mib(&a["swa"]["v_bytes"]), 480.0);
    assert!(
        (mib(&a["compute"]) - 514.502).abs() < 5e-4,
        "{}",
        a["compute"]
    );
    assert_eq!(cell(&[])["allocation"]["swa"]["cells"], 1024);
    // With an image, the mmproj beside the model: the 4B's SigLIP tower and projector in f16,
    // about two bytes for each of its ~0.42 billion parameters.
    let image = json(&[
        "fit",
        "--engine",
        "llama.cpp",
        "-m",
        "4b",
        "--quant",
        "q4_k_m",
        "--ctx",
        "8K",
        "--image",
        "--format",
        "json",
    ]);
    let mmproj = mib(&image[0]["mmproj_bytes"]);
    assert!((790.0..830.0).contains(&mmproj), "{mmproj} MiB");
    gemma_fit()
        .args(["fit", "--engine", "llama.cpp", "-m", "1b", "--image"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("has no vision tower"));
    // On the CPU, what becomes resident: the whole file and the cleared caches, not the 514.5
    // MiB of compute buffer a run barely touches.
    let r = &cell(&[])["resident"];
    let total = |v: &serde_json::Value| {
        ["file", "repacked", "kv", "vocab", "output", "compute"]
            .iter()
            .map(|k| v[k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(mib(&r["kv"]).round(), 112.0, "{r}");
    assert!(mib(&r["compute"]) < 30.0, "{r}");
    assert!(total(r) < cell(&[])["predicted_bytes"].as_u64().unwrap() - (400 << 20));
    let four = cell(&["--batch", "4"]);
    assert_eq!(four["allocation"]["global"]["streams"], 4);
    assert_eq!(four["allocation"]["n_ctx"], 4 * 32768);
    gemma_fit()
        .args([
            "fit",
            "--engine",
            "llama.cpp",
            "-m",
            "1b",
            "--kv-dtype",
            "q8_0",
        ])
        .args(["--flash-attn", "off"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "q8_0 V cache without flash attention",
        ));
}

/// `fit --engine all`: every engine's figure for every cell, with its version, settings and
/// breakdown; a format or cache an engine cannot hold is n/a with the reason; vLLM takes its
/// share of the card and answers with its maximum concurrency; Ollama's defaults are llama.cpp's
/// rules with num_batch 512 and flash attention.
#[test]
fn fit_engine_all_sets_the_engines_side_by_side() {
    let figs = json(&[
        "fit",
        "--engine",
        "all",
        "--gpu",
        "4090",
        "-m",
        "27b",
        "--quant",
        "q4_k_m,bf16",
        "--kv-dtype",
        "bf16",
        "--ctx",
        "32K,128K",
        "--format",
        "json",
    ]);
    let figs = figs.as_array().unwrap();
    assert_eq!(figs.len(), 2 * 2 * 5);
    let find = |engine: &str, quant: &str, ctx: u64| {
        figs.iter()
            .find(|f| f["engine"] == engine && f["quant"] == quant && f["ctx"] == ctx)
            .unwrap_or_else(|| panic!("no {engine} {quant} {ctx}"))
    };
    for f in figs {
        assert!(!f["version"].as_str().unwrap().is_empty(), "{f}");
        if f["verdict"] != "n/a" {
            let parts: u64 = ["weights_bytes", "kv_bytes", "compute_bytes", "other_bytes"]
                .iter()
                .map(|k| f[k].as_u64().unwrap())
                .sum();
            if f["engine"] != "vllm" {
                assert_eq!(parts, f["predicted_bytes"].as_u64().unwrap(), "{f}");
            }
        }
    }
    // GGUF blocks are not what vLLM or transformers load.
    for engine in ["vllm", "transformers"] {
        let f = find(engine, "q4_k_m", 32768);
        assert_eq!(f["verdict"], "n/a");
        assert!(f["note"].as_str().unwrap().contains("q4_k_m"), "{f}");
    }
    // llama.cpp and Ollama: the same rules, Ollama's settings.
    let (l, o) = (
        find("llama.cpp", "q4_k_m", 131072),
        find("ollama", "q4_k_m", 131072),
    );
    assert_eq!(o["settings"]["n_ubatch"], 512);
    assert_eq!(o["settings"]["swa_full"], false);
    assert_eq!(l["kv_bytes"], o["kv_bytes"]);
    // vLLM: 27B bf16 weights (54 GB) do not fit a 24 GiB card at all.
    let v = find("vllm", "bf16", 32768);
    assert_eq!(v["verdict"], "does_not_fit", "{v}");
    assert!(
        v["predicted_bytes"].as_u64().unwrap() < v["weights_bytes"].as_u64().unwrap(),
        "its budget (0.9 of the card) is below the weights: {v}"
    );
    // On an 80 GB card it does, with the concurrency vLLM would report; --gpu-util moves it.
    let conc = |util: &str| {
        json(&[
            "fit",
            "--engine",
            "vllm",
            "--gpu",
            "H100 80GB HBM3",
            "-m",
            "27b",
            "--quant",
            "bf16",
            "--kv-dtype",
            "bf16",
            "--ctx",
            "32K",
            "--gpu-util",
            util,
            "--format",
            "json",
        ])[0]["max_concurrency"]
            .as_f64()
            .unwrap()
    };
    let (at90, at95) = (conc("0.9"), conc("0.95"));
    assert!(at90 > 1.0 && at95 > at90, "{at90} {at95}");
    // vLLM models its CUDA engine only.
    let cpu = json(&[
        "fit",
        "--engine",
        "vllm",
        "-m",
        "1b",
        "--quant",
        "bf16",
        "--kv-dtype",
        "bf16",
        "--ctx",
        "4K",
        "--format",
        "json",
    ]);
    assert!(cpu[0]["note"].as_str().unwrap().contains("CUDA"), "{cpu}");
    // transformers: a static cache holds every layer whole.
    let tf = |cache: &str| {
        json(&[
            "fit",
            "--engine",
            "transformers",
            "-m",
            "1b",
            "--quant",
            "bf16",
            "--kv-dtype",
            "bf16",
            "--ctx",
            "32K",
            "--tf-cache",
            cache,
            "--format",
            "json",
        ])[0]["kv_bytes"]
            .as_u64()
            .unwrap()
    };
    // 1B: 4 global and 22 sliding layers, one KV head of 256, bf16, 32,767 positions.
    assert_eq!(tf("hybrid"), 2 * (4 * 32_767 + 22 * 512) * 512);
    assert_eq!(tf("static"), 2 * 26 * 32_767 * 512);
    // The table says which version each engine's figures follow.
    gemma_fit()
        .args([
            "fit", "--engine", "all", "-m", "1b", "--quant", "bf16", "--ctx", "4K",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("vLLM v0.13.0"))
        .stdout(predicate::str::contains("transformers 4.51.3"))
        .stdout(predicate::str::contains("Ollama v0.33"));
}

/// llama.cpp itself, where its Python binding is installed (`scripts/install-llamacpp.sh`; under
/// CI=true its absence fails the test):
/// settings the recorded file does not hold (odd contexts, 2 sequences, ubatch 384) run now,
/// each against `fit --engine llama.cpp`: cells and KV exact, compute to the MiB.
#[test]
fn fit_engine_llama_cpp_matches_llama_cpp_run_now() {
    let Some(python) = common::llamacpp_python("fit_engine_llama_cpp_matches_llama_cpp_run_now")
    else {
        return;
    };
    let Some(model) = common::default_model("fit_engine_llama_cpp_matches_llama_cpp_run_now")
    else {
        return;
    };
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/llamacpp_memory.py"
        ))
        .arg("--python")
        .arg(&python)
        .args(["--ctx", "3000,16384", "--seqs", "1,2", "--ubatch", "384"])
        .args(["--kv", "f16:off,q8_0:on"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = run["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 16);
    let mib = |v: &serde_json::Value| v.as_u64().unwrap() as f64 / (1 << 20) as f64;
    for r in settings {
        assert!(r.get("error").is_none(), "llama.cpp failed: {r}");
        let seqs = r["n_seq"].as_u64().unwrap();
        let ctx = (r["n_ctx"].as_u64().unwrap() / seqs).to_string();
        let (seqs, kv) = (seqs.to_string(), r["type_k"].as_str().unwrap());
        let mut args = vec![
            "fit",
            "--engine",
            "llama.cpp",
            "-m",
            "default",
            "--memory",
            "64GiB",
            "--device",
            "cpu",
            "--ctx",
            &ctx,
            "--batch",
            &seqs,
            "--ubatch",
            "384",
            "--kv-dtype",
            kv,
            "--flash-attn",
            r["flash_attn"].as_str().unwrap(),
            "--format",
            "json",
        ];
        if r["swa_full"] == "1" {
            args.push("--swa-full");
        }
        let cell = json(&args)[0].clone();
        let a = &cell["allocation"];
        for side in ["global", "swa"] {
            assert_eq!(a[side]["cells"], r["cells"][side], "{side} cells: {r}");
            let ours = mib(&a[side]["k_bytes"]) + mib(&a[side]["v_bytes"]);
            let theirs = r["kv_mib"][side].as_f64().unwrap();
            assert!((ours - theirs).abs() <= 0.005, "{side}: {ours} vs {r}");
        }
        assert!((mib(&a["output"]) - r["output_mib"].as_f64().unwrap()).abs() <= 0.005);
        // To the MiB: off the recorded grid the graph allocator sometimes places the logits
        // above a hole (16K, swa_full, q8_0, ubatch 384: 386.81 MiB printed, 385.88 predicted).
        let compute = r["compute_mib"].as_f64().unwrap();
        assert!((mib(&a["compute"]) - compute).abs() < 1.0, "compute: {r}");
    }
}

/// The llama.cpp profile's resident rule against llama.cpp's measured peak RSS, on the grid
/// `scripts/llamacpp-resident.sh` recorded (default 270M at 8K and 32K, swa_full off and on, f16
/// with flash attention off and on and q8_0 with, n_ubatch 256, 512 and 1024): within 5% each.
#[test]
fn llama_cpp_resident_rule_holds_on_the_recorded_grid() {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/llamacpp/resident-270m.jsonl"
    );
    let rows = json(&["fit", "--results", data, "--format", "json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 36);
    for r in rows {
        assert!(r["case"].as_str().unwrap().contains("[llama.cpp"), "{r}");
        let e = r["error"].as_f64().unwrap();
        assert!(e.abs() <= 0.05, "{}: {:+.1}%", r["case"], 100.0 * e);
    }
}

/// llama.cpp run now (where it is installed; under CI=true it must be) on settings the grid
/// does not hold — two sequences, a 12,000-position context, a 200-token prompt, n_ubatch 384 —
/// recorded by `run --engine llama.cpp` and set beside the resident rule: within 5%.
#[test]
fn run_engine_llama_cpp_is_measured_and_predicted() {
    let Some(python) = common::llamacpp_python("run_engine_llama_cpp_is_measured_and_predicted")
    else {
        return;
    };
    if common::default_model("run_engine_llama_cpp_is_measured_and_predicted").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let run = Command::cargo_bin("gemma-fit")
        .unwrap()
        .env("GEMMA_FIT_LLAMACPP_PYTHON", &python)
        .args([
            "run",
            "--engine",
            "llama.cpp",
            "--ctx",
            "12000",
            "--batch",
            "2",
        ])
        .args(["--prompt-tokens", "200", "--gen", "4", "--ubatch", "384"])
        .args(["--kv-dtype", "q8_0", "--threads", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("engine           llama.cpp (n_ubatch 384"),
        "{text}"
    );
    let rows = json(&[
        "fit",
        "--results",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let r = &rows[0];
    assert!(r["case"].as_str().unwrap().contains("× 2 seqs"), "{r}");
    let e = r["error"].as_f64().unwrap();
    assert!(e.abs() <= 0.05, "{r}");
}

/// `fit -m FILE.gguf` reads the file's header alone (no weights): the default model's file gives
/// exactly the prediction of `-m default` (its stored types are the Q4_K_M mix the plan knows),
/// llama.cpp's figures use its tensors and its header, the format reads "file", and a damaged
/// file is one clear line.
#[test]
fn fit_reads_a_gguf_file_from_its_header() {
    let Some(model) = common::default_model("fit_reads_a_gguf_file_from_its_header") else {
        return;
    };
    let path = model.to_str().unwrap();
    let fit = |m: &str, engine: &str| {
        json(&[
            "fit",
            "-m",
            m,
            "--engine",
            engine,
            "--ctx",
            "4K,32K",
            "--kv-dtype",
            "f16",
            "--device",
            "cpu",
            "--memory",
            "8GiB",
            "--format",
            "json",
        ])
    };
    let (file, default) = (fit(path, "gemma-fit"), fit("default", "gemma-fit"));
    assert_eq!(file[0]["quant"], "file");
    assert_eq!(file[0]["model"], "gemma-3-270m-q4_k_m.gguf");
    let (file, default) = (file.as_array().unwrap(), default.as_array().unwrap());
    assert_eq!(file.len(), 2);
    for (a, b) in file.iter().zip(default) {
        assert_eq!(a["predicted_bytes"], b["predicted_bytes"], "{a}\n{b}");
    }
    let l = fit(path, "llama.cpp");
    assert_eq!(
        l[0]["weights_bytes"], 246_587_904u64,
        "the file's tensor data"
    );
    assert_eq!(
        l[0]["resident"]["file"],
        std::fs::metadata(&model).unwrap().len(),
        "the whole file is mapped"
    );
    // vLLM and transformers do not load GGUF files.
    let all = fit(path, "all");
    let tf = all
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["engine"] == "transformers")
        .unwrap();
    assert_eq!(tf["verdict"], "n/a");
    // A damaged header: one line naming the file.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    let mut bytes = std::fs::read(&model).unwrap()[..4096].to_vec();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad, bytes).unwrap();
    let err = one_line_error(&["fit", "-m", bad.to_str().unwrap()]);
    assert!(err.contains("bad.gguf"), "{err}");
}

/// `fit -m FOLDER` reads a Hugging Face folder's config.json and safetensors headers (not its
/// weights): gemma-fit predicts the tensors as stored (f32 here: 4 bytes a value), transformers
/// has no preset shape to go by, llama.cpp needs a GGUF (said plainly), and a damaged header is
/// one line naming the file.
#[test]
fn fit_reads_a_hugging_face_folder_from_its_headers() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_hf(dir.path());
    let m = dir.path().to_str().unwrap();
    let rows = json(&[
        "fit",
        "-m",
        m,
        "--ctx",
        "64",
        "--kv-dtype",
        "f32",
        "--memory",
        "1GiB",
        "--device",
        "cpu",
        "--format",
        "json",
    ]);
    assert_eq!(rows[0]["quant"], "f32", "{rows}");
    let b = &rows[0]["breakdown"];
    // Every tensor of the tiny model in f32, as the safetensors file stores them.
    let file = std::fs::metadata(dir.path().join("model.safetensors"))
        .unwrap()
        .len();
    let w = b["weights"].as_u64().unwrap();
    assert!(
        w <= file && w > file * 9 / 10,
        "weights {w} of a {file}-byte file"
    );
    let all = json(&[
        "fit",
        "-m",
        m,
        "--engine",
        "all",
        "--ctx",
        "64",
        "--kv-dtype",
        "f32",
        "--memory",
        "1GiB",
        "--device",
        "cpu",
        "--format",
        "json",
    ]);
    let llama = all
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["engine"] == "llama.cpp")
        .unwrap();
    assert!(llama["note"].as_str().unwrap().contains("GGUF"), "{llama}");
    let st = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let err = one_line_error(&["fit", "-m", m]);
    assert!(err.contains("model.safetensors"), "{err}");
}

/// `fit --gpus`: the catalog-wide view. Each cell lists every selected card, smallest first, with
/// the same prediction `fit --gpu` makes for one; the cards it fits on are those with 10% to
/// spare; per card, the largest model and format that fits at each context; an unknown name is
/// the same clear error as `--gpu`'s.
#[test]
fn fit_gpus_lists_the_cards_each_model_fits() {
    let v = json(&[
        "fit", "--gpus", "all", "-m", "12b", "--quant", "q4_k_m", "--ctx", "32K", "--format",
        "json",
    ]);
    let m = &v["models"][0];
    assert_eq!(
        (m["model"].as_str(), m["quant"].as_str()),
        (Some("12b"), Some("q4_k_m"))
    );
    assert_eq!(m["kv_dtype"], "bf16", "--gpus pins a bf16 cache");
    let cards = m["cards"].as_array().unwrap();
    assert!(cards.len() > 10, "the whole catalog: {}", cards.len());
    let totals: Vec<u64> = cards
        .iter()
        .map(|c| c["total_bytes"].as_u64().unwrap())
        .collect();
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "smallest first");
    let need = m["predicted_bytes"].as_u64().unwrap();
    for c in cards {
        let fits = need as f64 <= 0.9 * c["total_bytes"].as_u64().unwrap() as f64;
        assert_eq!(c["verdict"] == "fits", fits, "{c}");
    }
    let one = json(&[
        "fit",
        "--gpu",
        "4090",
        "-m",
        "12b",
        "--quant",
        "q4_k_m",
        "--ctx",
        "32K",
        "--kv-dtype",
        "bf16",
        "--format",
        "json",
    ]);
    assert_eq!(one[0]["predicted_bytes"].as_u64().unwrap(), need);
    // Per card: the 27B in q4_k_m is the most a 24 GiB card holds at 32K.
    let all = json(&[
        "fit", "--gpus", "4090,l4", "--ctx", "32K", "--format", "json",
    ]);
    let best: Vec<&serde_json::Value> = all["cards"].as_array().unwrap().iter().collect();
    assert_eq!(best.len(), 2);
    let b4090 = best
        .iter()
        .find(|b| b["gpu"].as_str().unwrap().contains("4090"))
        .unwrap();
    assert_eq!(
        (b4090["model"].as_str(), b4090["quant"].as_str()),
        (Some("27b"), Some("q4_k_m"))
    );
    gemma_fit()
        .args(["fit", "--gpus", "all", "-m", "12b", "--ctx", "32K"])
        .assert()
        .success()
        .stdout(predicate::str::contains("fits on (GiB free)"))
        .stdout(predicate::str::contains("largest at 32K"));
    // The heatmap: one cell per card × model and format, labelled with the GiB free or short.
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("heat");
    gemma_fit()
        .args([
            "fit",
            "--gpus",
            "4090,l4",
            "-m",
            "12b,27b",
            "--quant",
            "q4_k_m,q8_0",
        ])
        .args(["--ctx", "32K", "--plot", stem.to_str().unwrap()])
        .assert()
        .success();
    let svg = std::fs::read_to_string(dir.path().join("heat.svg")).unwrap();
    assert!(
        std::fs::metadata(dir.path().join("heat.png"))
            .unwrap()
            .len()
            > 1000
    );
    assert!(svg.contains("Which card fits which Gemma 3 at 32K context"));
    assert!(
        svg.contains("RTX 4090 (24 GiB)") && svg.contains("L4 (22 GiB)"),
        "row labels"
    );
    // 2 cards × 4 columns of cells plus the 3 legend swatches, beside the white background.
    let filled = |rgb: &str| svg.matches(&format!("fill=\"{rgb}\"")).count();
    let cells = filled("#78BE78") + filled("#F5C85A") + filled("#E68278");
    assert_eq!(cells, 2 * 4 + 3, "{svg}");
    gemma_fit()
        .args(["fit", "--gpus", "4090,nosuchcard"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("nosuchcard"));
}

/// `fit --gpus --engine`: another engine's profile asked card by card, the same figure as
/// `fit --gpu CARD --engine` gives for each card; vLLM's cells carry its concurrency, and what an
/// engine cannot run is left out with why.
#[test]
fn fit_gpus_takes_the_other_engines() {
    // Smallest first, as --gpus lists them.
    let cards = ["l4", "4090", "h100 pcie"];
    let v = json(&[
        "fit",
        "--gpus",
        "4090,l4,h100 pcie",
        "--engine",
        "llama.cpp",
        "-m",
        "12b",
        "--quant",
        "q4_k_m",
        "--ctx",
        "32K",
        "--format",
        "json",
    ]);
    assert!(
        v["engine"].as_str().unwrap().starts_with("llama.cpp"),
        "{v}"
    );
    let m = &v["models"][0];
    for (card, on) in cards.iter().zip(m["cards"].as_array().unwrap()) {
        let one = json(&[
            "fit",
            "--gpu",
            card,
            "--engine",
            "llama.cpp",
            "-m",
            "12b",
            "--quant",
            "q4_k_m",
            "--ctx",
            "32K",
            "--kv-dtype",
            "bf16",
            "--format",
            "json",
        ]);
        assert_eq!(m["predicted_bytes"], one[0]["predicted_bytes"], "{card}");
        assert_eq!(on["verdict"], one[0]["verdict"], "{card}");
    }
    let v = json(&[
        "fit",
        "--gpus",
        "4090,l4,h100 pcie",
        "--engine",
        "vllm",
        "-m",
        "4b",
        "--quant",
        "bf16,q4_k_m",
        "--ctx",
        "32K",
        "--format",
        "json",
    ]);
    let m = &v["models"].as_array().unwrap();
    assert_eq!(m.len(), 1, "q4_k_m is left out: {v}");
    assert!(v["left_out"][0].as_str().unwrap().contains("q4_k_m"), "{v}");
    for (card, on) in cards.iter().zip(m[0]["cards"].as_array().unwrap()) {
        let one = json(&[
            "fit",
            "--gpu",
            card,
            "--engine",
            "vllm",
            "-m",
            "4b",
            "--quant",
            "bf16",
            "--ctx",
            "32K",
            "--kv-dtype",
            "bf16",
            "--format",
            "json",
        ]);
        assert_eq!(on["max_concurrency"], one[0]["max_concurrency"], "{card}");
        assert_eq!(on["verdict"], one[0]["verdict"], "{card}");
    }
    let err = one_line_error(&["fit", "--gpus", "all", "--engine", "all"]);
    assert!(err.contains("one engine"), "{err}");
}
