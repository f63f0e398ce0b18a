//! A tiny random Gemma 3 written as a Hugging Face folder and as GGUF (F32): both loaders give
//! the same logits, and candle-transformers' dense Gemma 3 agrees inside the window. Bad folders
//! get errors that name the file and tensor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use gemma_fit::engine::decoder::Gemma3;
use gemma_fit::engine::kv_cache::{KvDtype, KvPair};
use gemma_fit::engine::load::gguf::GgufFile;
use gemma_fit::engine::load::LoadedModel;

mod common;
use common::tiny::*;

/// The same model as GGUF: llama.cpp's names, norm weights stored as 1 + w, F32.
fn write_gguf(path: &Path) {
    let gguf_name = |hf: &str| -> String {
        if hf == "model.embed_tokens.weight" {
            return "token_embd.weight".into();
        }
        if hf == "model.norm.weight" {
            return "output_norm.weight".into();
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (i, part) = rest.split_once('.').unwrap();
        let part = match part.trim_end_matches(".weight") {
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "post_attention_norm",
            "pre_feedforward_layernorm" => "ffn_norm",
            "post_feedforward_layernorm" => "post_ffw_norm",
            other => panic!("{other}"),
        };
        format!("blk.{i}.{part}.weight")
    };
    let tensors: Vec<(String, QTensor)> = hf_tensors()
        .into_iter()
        .map(|(name, t)| {
            let t = if t.rank() == 1 { (t + 1.0).unwrap() } else { t };
            (
                gguf_name(&name),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let md = [
        ("general.architecture", Value::String("gemma3".into())),
        ("gemma3.context_length", Value::U32(128)),
        ("gemma3.embedding_length", Value::U32(HIDDEN as u32)),
        ("gemma3.block_count", Value::U32(LAYERS as u32)),
        ("gemma3.feed_forward_length", Value::U32(FF as u32)),
        ("gemma3.attention.head_count", Value::U32(HEADS as u32)),
        (
            "gemma3.attention.head_count_kv",
            Value::U32(KV_HEADS as u32),
        ),
        ("gemma3.attention.key_length", Value::U32(HEAD_DIM as u32)),
        ("gemma3.attention.sliding_window", Value::U32(WINDOW as u32)),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("gemma3.rope.freq_base", Value::F32(1e6)),
    ];
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &md, &t).unwrap();
}

const PROMPT: [u32; 13] = [2, 17, 250, 3, 99, 5, 140, 7, 8, 201, 10, 11, 12];

fn logits(model: &Gemma3, ids: &[u32]) -> Vec<f32> {
    let mut s = model
        .session(ids.len(), KvPair::both(KvDtype::F32))
        .unwrap();
    model.prefill(ids, 5, &mut s).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn safetensors_and_gguf_loaders_agree() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path());
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&gguf);
    let hf = LoadedModel::from_hf_dir(dir.path(), None, false, &Device::Cpu).unwrap();
    let gg = Gemma3::from_gguf(&GgufFile::open_gemma3(&gguf).unwrap(), &Device::Cpu).unwrap();
    let mut hf_cfg = hf.model.cfg.clone();
    hf_cfg.rms_norm_eps = gg.cfg.rms_norm_eps; // f32 in the GGUF file
    assert_eq!(hf_cfg, gg.cfg);
    // Past the window (13 > 8), chunked, through both loaders.
    let d = max_diff(&logits(&hf.model, &PROMPT), &logits(&gg, &PROMPT));
    assert!(d < 1e-4, "max |Δlogit| {d}");
}

#[test]
fn candle_transformers_agrees_inside_the_window() {
    use candle_transformers::models::gemma3 as ct;
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path());
    let ours = LoadedModel::from_hf_dir(dir.path(), None, false, &Device::Cpu).unwrap();
    let cfg = ct::Config {
        attention_bias: false,
        head_dim: HEAD_DIM,
        hidden_activation: candle_nn::Activation::GeluPytorchTanh,
        hidden_size: HIDDEN,
        intermediate_size: FF,
        num_attention_heads: HEADS,
        num_hidden_layers: LAYERS,
        num_key_value_heads: KV_HEADS,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_local_base_freq: 1e4,
        vocab_size: VOCAB,
        final_logit_softcapping: None,
        attn_logit_softcapping: None,
        query_pre_attn_scalar: HEAD_DIM,
        sliding_window: WINDOW,
        sliding_window_pattern: 6,
        max_position_embeddings: 128,
    };
    let files = [dir.path().join("model.safetensors")];
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap()
    };
    let mut theirs = ct::Model::new(false, &cfg, vb).unwrap();
    let ids = &PROMPT[..7];
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let reference: Vec<f32> = theirs
        .forward(&input, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = max_diff(&logits(&ours.model, ids), &reference);
    assert!(d < 1e-3, "max |Δlogit| vs candle-transformers {d}");
}

#[test]
fn quantize_at_load_reports_fallbacks_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path());
    // 64-wide rows cannot hold Q4_K's 256-value blocks: they fall back to Q5_0 (held as Q8_0).
    let m = LoadedModel::from_hf_dir(
        dir.path(),
        Some("q4_k".parse().unwrap()),
        false,
        &Device::Cpu,
    )
    .unwrap();
    assert!(m
        .model
        .repacked
        .iter()
        .any(|(n, _, _)| n == "blk.0.attn_q.weight"));
    assert!(logits(&m.model, &PROMPT).iter().all(|x| x.is_finite()));
    let m = LoadedModel::from_hf_dir(
        dir.path(),
        Some("q8_0".parse().unwrap()),
        false,
        &Device::Cpu,
    )
    .unwrap();
    let b = m.model.weight_bytes;
    assert!(b.resident_weight_bytes < b.file_weight_bytes, "{b:?}");
}

#[test]
fn bad_folders_name_the_file_and_tensor() {
    let err = |dir: &Path| {
        LoadedModel::from_hf_dir(dir, None, false, &Device::Cpu)
            .err()
            .unwrap()
            .to_string()
    };
    // A tensor of the wrong shape.
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path());
    let mut map: HashMap<String, Tensor> = hf_tensors().into_iter().collect();
    map.insert(
        "model.layers.3.mlp.up_proj.weight".into(),
        Tensor::zeros((FF, HIDDEN + 1), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, dir.path().join("model.safetensors")).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("model.layers.3.mlp.up_proj.weight") && e.contains("shape"),
        "{e}"
    );
    // A missing tensor.
    map.remove("model.layers.3.mlp.up_proj.weight");
    candle_core::safetensors::save(&map, dir.path().join("model.safetensors")).unwrap();
    assert!(err(dir.path()).contains("'model.layers.3.mlp.up_proj.weight' is missing"));
    // A config that contradicts the tensors.
    write_hf(dir.path());
    let mut cfg = config_json();
    cfg["hidden_size"] = serde_json::json!(96);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("model.embed_tokens.weight") && e.contains("[300, 96]"),
        "{e}"
    );
    // A missing shard.
    write_hf(dir.path());
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "model.safetensors", "model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
    // A damaged file.
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{",
    )
    .unwrap();
    let e = err(dir.path());
    assert!(e.contains("safetensors damaged"), "{e}");
}
