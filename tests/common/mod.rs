//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod tiny;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Set to 1 to skip tests that need the real default model (they print that they were skipped).
pub const SKIP_VAR: &str = "GEMMA_FIT_SKIP_MODEL_TESTS";

/// The real default model, through the same fetch code users run (cached after the first time).
/// Fails loudly when it cannot be had, unless `GEMMA_FIT_SKIP_MODEL_TESTS=1`.
pub fn default_model(test: &str) -> Option<PathBuf> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {SKIP_VAR}=1");
        return None;
    }
    match gemma_fit::engine::load::fetch::default_model_path(false) {
        Ok(p) => Some(p),
        Err(e) => panic!(
            "{test} needs the default model and it could not be fetched: {e}\n\
             (set {SKIP_VAR}=1 to skip the tests that need it)"
        ),
    }
}

/// llama-cpp-python's python (where `scripts/install-llamacpp.sh` puts it, in
/// $GEMMA_FIT_HOME/peer/llamacpp-venv; GEMMA_FIT_LLAMACPP_PYTHON names another), or None with a
/// message where it is not installed — except under `CI=true`, where `.ci/run` installs it and
/// its absence fails the test.
#[allow(dead_code)] // Not every test binary runs llama.cpp.
pub fn llamacpp_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("GEMMA_FIT_LLAMACPP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            gemma_fit::engine::load::fetch::home_dir().join("peer/llamacpp-venv/bin/python")
        });
    if python.exists() {
        return Some(python);
    }
    missing(&format!(
        "{test} needs llama-cpp-python at {} (scripts/install-llamacpp.sh installs it)",
        python.display()
    ));
    None
}

/// A tool a test needs is not installed: the test is skipped with `why`, except under
/// `CI=true`, where `.ci/run` installs it and its absence fails the test.
pub fn missing(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
}

/// A program on the PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !p.trim().is_empty()).then(|| PathBuf::from(p.trim()))
}

pub fn reference(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/llamacpp")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Writes a small GGUF file with a SentencePiece-style vocabulary and one tensor.
pub fn write_tiny_gguf(path: &Path, arch: &str) {
    write_gguf(path, arch, &[], &[("blk.0.x.weight", (64, 64))]);
}

/// Writes a GGUF file with the tiny vocabulary (265 tokens), extra metadata and zero F32 tensors.
pub fn write_gguf(
    path: &Path,
    arch: &str,
    extra: &[(&str, Value)],
    tensors: &[(&str, (usize, usize))],
) {
    let qs: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(name, shape)| {
            let t = Tensor::zeros(*shape, candle_core::DType::F32, &Device::Cpu).unwrap();
            (
                name.to_string(),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    write_gguf_tensors(path, arch, extra, qs);
}

/// A complete tiny Gemma 3 that runs (`tiny_gemma3_metadata`, the tiny vocabulary): seeded
/// random weights, Q8_0 matrices and f32 norms.
pub fn write_tiny_model_gguf(path: &Path) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let (h, heads, kv, hd, ff, layers, vocab) = (64, 2, 1, 32, 128, 2, 265);
    let mut t = |shape: &[usize], dtype: GgmlDType| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.3f32..0.3)).collect();
        QTensor::quantize(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap(), dtype).unwrap()
    };
    let mut qs = vec![
        (
            "token_embd.weight".to_string(),
            t(&[vocab, h], GgmlDType::Q8_0),
        ),
        ("output_norm.weight".into(), t(&[h], GgmlDType::F32)),
    ];
    for i in 0..layers {
        for (name, shape, dtype) in [
            ("attn_q", vec![heads * hd, h], GgmlDType::Q8_0),
            ("attn_k", vec![kv * hd, h], GgmlDType::Q8_0),
            ("attn_v", vec![kv * hd, h], GgmlDType::Q8_0),
            ("attn_output", vec![h, heads * hd], GgmlDType::Q8_0),
            ("attn_q_norm", vec![hd], GgmlDType::F32),
            ("attn_k_norm", vec![hd], GgmlDType::F32),
            ("ffn_gate", vec![ff, h], GgmlDType::Q8_0),
            ("ffn_up", vec![ff, h], GgmlDType::Q8_0),
            ("ffn_down", vec![h, ff], GgmlDType::Q8_0),
            ("attn_norm", vec![h], GgmlDType::F32),
            ("post_attention_norm", vec![h], GgmlDType::F32),
            ("ffn_norm", vec![h], GgmlDType::F32),
            ("post_ffw_norm", vec![h], GgmlDType::F32),
        ] {
            qs.push((format!("blk.{i}.{name}.weight"), t(&shape, dtype)));
        }
    }
    write_gguf_tensors(path, "gemma3", &tiny_gemma3_metadata(), qs);
}

fn write_gguf_tensors(
    path: &Path,
    arch: &str,
    extra: &[(&str, Value)],
    qs: Vec<(String, QTensor)>,
) {
    let mut tokens = vec!["<pad>", "<eos>", "<bos>", "<unk>"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    let mut types = vec![3i32, 3, 3, 2];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in ["h", "i", "hi", "\u{2581}", "\u{2581}hi"] {
        tokens.push(p.into());
        types.push(1);
    }
    let scores: Vec<Value> = (0..tokens.len()).map(|i| Value::F32(-(i as f32))).collect();
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ];
    let mut md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    md_refs.extend(extra.iter().map(|(k, v)| (*k, v)));
    let q_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &q_refs).unwrap();
}

/// Gemma 3 hyper-parameters for a tiny model over the tiny vocabulary.
pub fn tiny_gemma3_metadata() -> Vec<(&'static str, Value)> {
    vec![
        ("gemma3.context_length", Value::U32(64)),
        ("gemma3.embedding_length", Value::U32(64)),
        ("gemma3.block_count", Value::U32(2)),
        ("gemma3.feed_forward_length", Value::U32(128)),
        ("gemma3.attention.head_count", Value::U32(2)),
        ("gemma3.attention.head_count_kv", Value::U32(1)),
        ("gemma3.attention.key_length", Value::U32(32)),
        ("gemma3.attention.sliding_window", Value::U32(8)),
    ]
}
