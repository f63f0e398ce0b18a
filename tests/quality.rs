//! `gemma-fit quality` on a tiny model: a reference it makes of itself agrees exactly, another
//! KV type differs a little, and every bad input is one line with exit status 2.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn bin() -> Command {
    Command::cargo_bin("gemma-fit").unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    model: PathBuf,
    text: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let model = path.join("tiny.gguf");
    common::write_tiny_model_gguf(&model);
    let text = path.join("text.txt");
    // Byte-fallback tokens and the vocabulary's few pieces: about 400 tokens.
    let body: String = (0..60)
        .map(|i| format!("hi {} hi{}\n", ["there", "h", "ih"][i % 3], i % 7))
        .collect();
    std::fs::write(&text, body).unwrap();
    Setup {
        _dir: dir,
        dir: path,
        model,
        text,
    }
}

/// `quality` with `args`, its record parsed; asserts it succeeded.
fn quality(s: &Setup, args: &[&str]) -> Value {
    let out = bin()
        .arg("quality")
        .arg("--model")
        .arg(&s.model)
        .args(["--threads", "1", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `quality` with `args` must fail with exit status 2 and one line naming `want`.
fn refused(model: &Path, args: &[&str], want: &str) {
    let out = bin()
        .arg("quality")
        .arg("--model")
        .arg(model)
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "{args:?}: {err} (wanted {want:?})");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_reference_of_itself_agrees_and_another_kv_type_differs() {
    let s_ = setup();
    let reference = s_.dir.join("ref.logits");
    let made = quality(
        &s_,
        &[
            "--text",
            s(&s_.text),
            "--ctx",
            "32",
            "--top-k",
            "16",
            "--full-rows",
            "20",
            "--save-logits",
            s(&reference),
        ],
    );
    let q = &made["quality"];
    let chunks = q["chunks"].as_u64().unwrap();
    assert!(chunks >= 5, "{q}");
    assert_eq!(q["positions"].as_u64().unwrap(), chunks * 15);
    let ppl = q["ppl"]["value"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 265.0 * 4.0, "{ppl}");
    assert!(q["against"].is_null());
    assert_eq!(made["key"]["gen_tokens"], 0);

    let same = quality(&s_, &["--text", s(&s_.text), "--against", s(&reference)]);
    let c = &same["quality"]["against"];
    assert!(c["kl_mean"]["value"].as_f64().unwrap() < 1e-6, "{c}");
    assert!(c["kl_max"].as_f64().unwrap() < 1e-5, "{c}");
    assert_eq!(c["top1_pct"]["value"].as_f64().unwrap(), 100.0);
    assert!((c["ppl_ratio"]["value"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(c["top_k_check"]["positions"], 20);
    assert_eq!(same["quality"]["ppl"], q["ppl"], "the same figures");

    // bf16 keys and values move the distributions a little (KL 7e-8 measured); the top-16 KL over a 265-token
    // vocabulary stays within 1e-4 of the full one.
    let bf16 = quality(
        &s_,
        &[
            "--text",
            s(&s_.text),
            "--against",
            s(&reference),
            "--kv-dtype",
            "bf16",
        ],
    );
    let c = &bf16["quality"]["against"];
    let kl = c["kl_mean"]["value"].as_f64().unwrap();
    assert!(kl > 1e-8 && kl < 0.05, "{c}");
    assert!(
        c["top_k_check"]["max_abs_diff"].as_f64().unwrap() < 1e-4,
        "{c}"
    );
    assert!(c["worst"].as_array().unwrap().len() == 10);
}

#[test]
fn bad_inputs_are_one_line_and_exit_2() {
    let s_ = setup();
    let short = s_.dir.join("short.txt");
    std::fs::write(&short, "hi hi").unwrap();
    refused(
        &s_.model,
        &["--text", s(&short), "--ctx", "32"],
        "fewer than one chunk",
    );
    let reference = s_.dir.join("ref.logits");
    quality(
        &s_,
        &[
            "--text",
            s(&s_.text),
            "--ctx",
            "16",
            "--save-logits",
            s(&reference),
        ],
    );
    // Another text than the reference's.
    refused(
        &s_.model,
        &["--text", s(&short), "--against", s(&reference)],
        "made from the text 'text.txt'",
    );
    // Another chunk length.
    refused(
        &s_.model,
        &[
            "--text",
            s(&s_.text),
            "--ctx",
            "32",
            "--against",
            s(&reference),
        ],
        "chunks of 16",
    );
    // Another model: the tiny Hugging Face folder (vocabulary 300, 7 layers).
    let hf = s_.dir.join("hf");
    std::fs::create_dir(&hf).unwrap();
    common::tiny::write_hf(&hf);
    refused(&hf, &["--against", s(&reference)], "from another model");
    // A damaged file: truncated, and not a logits file at all.
    let bytes = std::fs::read(&reference).unwrap();
    let cut = s_.dir.join("cut.logits");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    refused(
        &s_.model,
        &["--text", s(&s_.text), "--against", s(&cut)],
        "damaged or truncated",
    );
    refused(
        &s_.model,
        &["--against", s(&s_.model)],
        "a gemma-fit logits file starts with",
    );
    refused(
        &s_.model,
        &["--against", s(&s_.dir.join("missing.logits"))],
        "not found",
    );
}

/// Another tokenizer is caught by the token ids even when the text is the same: the reference's
/// ids are edited (and the file otherwise kept valid) to stand for another tokenizer's.
#[test]
fn another_tokenizer_is_caught_by_the_ids() {
    let s_ = setup();
    let reference = s_.dir.join("ref.logits");
    quality(
        &s_,
        &[
            "--text",
            s(&s_.text),
            "--ctx",
            "16",
            "--save-logits",
            s(&reference),
        ],
    );
    let mut file = gemma_fit::quality::logits_file::LogitsFile::read(&reference).unwrap();
    file.tokens[3] = (file.tokens[3] + 1) % 265;
    file.write(&reference).unwrap();
    refused(
        &s_.model,
        &["--text", s(&s_.text), "--against", s(&reference)],
        "another tokenizer",
    );
}

/// A folder without a tokenizer takes its token ids from the reference, and a dequantized GGUF
/// scores as the GGUF does up to the 8-bit activations of its products.
#[test]
fn a_dequantized_folder_evaluates_the_references_ids() {
    let s_ = setup();
    let reference = s_.dir.join("ref.logits");
    quality(
        &s_,
        &[
            "--text",
            s(&s_.text),
            "--ctx",
            "16",
            "--save-logits",
            s(&reference),
        ],
    );
    let folder = s_.dir.join("f32");
    bin()
        .args(["dequantize", "--model", s(&s_.model), "--out", s(&folder)])
        .assert()
        .success();
    let out = bin()
        .args(["quality", "--threads", "1", "--json", "--model", s(&folder)])
        .args(["--against", s(&reference)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &r["quality"]["against"];
    let kl = c["kl_mean"]["value"].as_f64().unwrap();
    assert!(kl < 0.01, "{c}");
    assert!(c["top1_pct"]["value"].as_f64().unwrap() > 90.0, "{c}");
    assert_eq!(r["quality"]["tensor_types"]["F32"], 15, "{r}");
    assert_eq!(
        r["quality"]["text"], "text.txt",
        "the reference's text was evaluated"
    );
    // Writing into a folder that holds a model is refused.
    bin()
        .args(["dequantize", "--model", s(&s_.model), "--out", s(&folder)])
        .assert()
        .failure();
    // --text cannot be read without a tokenizer.
    refused(
        &folder,
        &["--text", s(&s_.text), "--against", s(&reference)],
        "has no tokenizer",
    );
}

/// `fit --results` sets a quality record's KL beside the measured case of the same model,
/// format and KV type (the default model: `fit` compares preset shapes only).
#[test]
fn fit_results_show_the_kl_of_a_matching_quality_record() {
    let Some(_) = common::default_model("fit_results_show_the_kl_of_a_matching_quality_record")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let q = |args: &[&str]| {
        bin()
            .args(["quality", "--threads", "2", "--ctx", "64", "--chunks", "2"])
            .args(args)
            .assert()
            .success();
    };
    q(&["--kv-dtype", "bf16", "--save-logits", &p("ref.logits")]);
    q(&["--against", &p("ref.logits"), "--out", &p("q.json")]);
    bin()
        .args([
            "run",
            "--prompt-tokens",
            "8",
            "--gen",
            "2",
            "--threads",
            "2",
        ])
        .args(["--out", &p("run.json")])
        .assert()
        .success();
    let out = bin()
        .args([
            "fit",
            "--results",
            &p("run.json"),
            &p("q.json"),
            "--format",
            "md",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("KL (nats)"), "{text}");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(p("q.json")).unwrap()).unwrap();
    let kl = record["quality"]["against"]["kl_mean"]["value"]
        .as_f64()
        .unwrap();
    assert!(kl > 0.0);
    assert!(text.contains(&format!("{kl:.4}")), "{text}");
    assert!(
        !text.contains("not compared"),
        "the quality record is not a case: {text}"
    );
    // The report's fit table too, where the quality record adds no row and no context.
    bin()
        .args([
            "report",
            &p("run.json"),
            &p("q.json"),
            "--out",
            &p("report"),
        ])
        .assert()
        .success();
    let table = std::fs::read_to_string(dir.path().join("report/fit-table.md")).unwrap();
    assert!(table.contains("KL (nats)"), "{table}");
    assert!(table.contains(&format!("{kl:.4}")), "{table}");
    let header = table.lines().next().unwrap();
    assert!(
        !header.contains("| 64 |"),
        "no column for the quality record's ctx 64: {table}"
    );
}
