//! A tiny random Gemma 3 as a Hugging Face folder: text-only (`gemma3_text`, tensors under
//! `model.`) or multimodal (`gemma3`, a sparse config, tensors under `language_model.model.`
//! plus a small SigLIP tower and projector).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const VOCAB: usize = 300;
pub const HIDDEN: usize = 64;
pub const FF: usize = 128;
pub const LAYERS: usize = 7;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 1;
pub const HEAD_DIM: usize = 16;
pub const WINDOW: usize = 8;

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "gemma3_text", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": FF, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "sliding_window": WINDOW,
        "sliding_window_pattern": 6, "max_position_embeddings": 128, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": HEAD_DIM, "rms_norm_eps": 1e-6
    })
}

/// Random tensors under HF names (norm weights as HF stores them: w, applied as 1 + w).
pub fn hf_tensors() -> Vec<(String, Tensor)> {
    hf_tensors_with_vocab(VOCAB)
}

/// The same with another vocabulary size (the multimodal model needs Gemma 3's, which holds the
/// begin/end-of-image tokens).
pub fn hf_tensors_with_vocab(vocab: usize) -> Vec<(String, Tensor)> {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut t = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let mut out = vec![
        (
            "model.embed_tokens.weight".to_string(),
            t(&[vocab, HIDDEN], 1.0),
        ),
        ("model.norm.weight".into(), t(&[HIDDEN], 0.2)),
    ];
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}.");
        for (name, shape, scale) in [
            ("self_attn.q_proj", vec![HEADS * HEAD_DIM, HIDDEN], 0.2),
            ("self_attn.k_proj", vec![KV_HEADS * HEAD_DIM, HIDDEN], 0.2),
            ("self_attn.v_proj", vec![KV_HEADS * HEAD_DIM, HIDDEN], 0.2),
            ("self_attn.o_proj", vec![HIDDEN, HEADS * HEAD_DIM], 0.2),
            ("self_attn.q_norm", vec![HEAD_DIM], 0.2),
            ("self_attn.k_norm", vec![HEAD_DIM], 0.2),
            ("mlp.gate_proj", vec![FF, HIDDEN], 0.2),
            ("mlp.up_proj", vec![FF, HIDDEN], 0.2),
            ("mlp.down_proj", vec![HIDDEN, FF], 0.2),
            ("input_layernorm", vec![HIDDEN], 0.2),
            ("post_attention_layernorm", vec![HIDDEN], 0.2),
            ("pre_feedforward_layernorm", vec![HIDDEN], 0.2),
            ("post_feedforward_layernorm", vec![HIDDEN], 0.2),
        ] {
            out.push((format!("{p}{name}.weight"), t(&shape, scale)));
        }
    }
    out
}

pub fn write_hf(dir: &Path) {
    std::fs::write(dir.join("config.json"), config_json().to_string()).unwrap();
    let map: HashMap<String, Tensor> = hf_tensors().into_iter().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}

/// The tiny vision tower: 32 × 32 images of 4 × 4 patches (an 8 × 8 grid), pooled 2 × 2 into 16
/// soft tokens.
pub const V_HIDDEN: usize = 32;
pub const V_FF: usize = 48;
pub const V_LAYERS: usize = 2;
pub const V_HEADS: usize = 4;
pub const V_PATCH: usize = 4;
pub const V_IMAGE: usize = 32;
pub const V_TOKENS: usize = 16;

/// The 4B+ checkpoints' vocabulary (with <start_of_image> 255999 and <end_of_image> 256000).
pub const MM_VOCAB: usize = 262_208;

/// Sparse multimodal config: text keys under `text_config`, a `vision_config`.
pub fn multimodal_config_json() -> serde_json::Value {
    let mut text = config_json();
    text["model_type"] = "gemma3_text".into();
    text["vocab_size"] = MM_VOCAB.into();
    serde_json::json!({
        "model_type": "gemma3", "text_config": text,
        "vision_config": {"hidden_size": V_HIDDEN, "intermediate_size": V_FF,
            "num_hidden_layers": V_LAYERS, "num_attention_heads": V_HEADS,
            "patch_size": V_PATCH, "image_size": V_IMAGE, "model_type": "siglip_vision_model",
            "vision_use_head": false},
        "mm_tokens_per_image": V_TOKENS
    })
}

/// The vision tower and projector under transformers' names.
pub fn hf_vision_tensors() -> Vec<(String, Tensor)> {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut t = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let tower = "vision_tower.vision_model.";
    let grid = (V_IMAGE / V_PATCH) * (V_IMAGE / V_PATCH);
    let mut out = vec![
        (
            format!("{tower}embeddings.patch_embedding.weight"),
            t(&[V_HIDDEN, 3, V_PATCH, V_PATCH], 0.2),
        ),
        (
            format!("{tower}embeddings.patch_embedding.bias"),
            t(&[V_HIDDEN], 0.1),
        ),
        (
            format!("{tower}embeddings.position_embedding.weight"),
            t(&[grid, V_HIDDEN], 0.5),
        ),
        (format!("{tower}post_layernorm.weight"), t(&[V_HIDDEN], 1.0)),
        (format!("{tower}post_layernorm.bias"), t(&[V_HIDDEN], 0.1)),
        (
            "multi_modal_projector.mm_soft_emb_norm.weight".into(),
            t(&[V_HIDDEN], 0.2),
        ),
        (
            "multi_modal_projector.mm_input_projection_weight".into(),
            t(&[V_HIDDEN, HIDDEN], 0.2),
        ),
    ];
    for i in 0..V_LAYERS {
        let p = format!("{tower}encoder.layers.{i}.");
        for (name, out_dim, in_dim) in [
            ("self_attn.q_proj", V_HIDDEN, V_HIDDEN),
            ("self_attn.k_proj", V_HIDDEN, V_HIDDEN),
            ("self_attn.v_proj", V_HIDDEN, V_HIDDEN),
            ("self_attn.out_proj", V_HIDDEN, V_HIDDEN),
            ("mlp.fc1", V_FF, V_HIDDEN),
            ("mlp.fc2", V_HIDDEN, V_FF),
        ] {
            out.push((format!("{p}{name}.weight"), t(&[out_dim, in_dim], 0.3)));
            out.push((format!("{p}{name}.bias"), t(&[out_dim], 0.1)));
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            out.push((format!("{p}{norm}.weight"), t(&[V_HIDDEN], 1.0)));
            out.push((format!("{p}{norm}.bias"), t(&[V_HIDDEN], 0.1)));
        }
    }
    out
}

/// The multimodal folder: the same text weights under `language_model.model.`, plus vision.
pub fn write_hf_multimodal(dir: &Path) {
    std::fs::write(
        dir.join("config.json"),
        multimodal_config_json().to_string(),
    )
    .unwrap();
    let mut map: HashMap<String, Tensor> = hf_tensors_with_vocab(MM_VOCAB)
        .into_iter()
        .map(|(n, t)| (format!("language_model.{n}"), t))
        .collect();
    map.extend(hf_vision_tensors());
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}
