//! A GGUF model written out as a Hugging Face folder (`config.json` + `model.safetensors`),
//! every tensor dequantized to f32, bf16 or f16 (`gemma-fit dequantize`). Loading that folder
//! with `--quant FORMAT` quantizes the same weights into any format at load, so the quality of
//! each format can be measured from one source.
//!
//! Names follow transformers' `gemma3_text` checkpoints (`safetensors::hf_text_name`); RMSNorm
//! weights, which GGUF stores as 1 + w, are written as HF stores them (w).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::engine::config::Gemma3Config;
use crate::engine::decoder::{tensor_shapes, Gemma3};
use crate::engine::load::gguf::GgufFile;
use crate::engine::load::safetensors::hf_text_name;
use crate::engine::load::weights::{GgufWeights, WeightSource};
use crate::error::{Error, Result};

/// What [`gguf_to_hf`] wrote: tensors per stored GGUF type, and the bytes of the safetensors.
pub struct Exported {
    pub types: BTreeMap<String, usize>,
    pub bytes: u64,
}

/// The `config.json` of a `gemma3_text` checkpoint with `cfg`'s shape.
pub fn config_json(cfg: &Gemma3Config) -> serde_json::Value {
    let mut c = json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "sliding_window": cfg.sliding_window,
        "sliding_window_pattern": cfg.sliding_window_pattern,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_global_base,
        "rope_local_base_freq": cfg.rope_local_base,
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
        "rms_norm_eps": cfg.rms_norm_eps,
        "torch_dtype": "float32",
    });
    if cfg.rope_global_scale != 1.0 {
        c["rope_scaling"] = json!({"rope_type": "linear", "factor": cfg.rope_global_scale});
    }
    c
}

/// Writes the GGUF file `src` as a Hugging Face folder `out` (created; it must not hold a model
/// already) with tensors in `dtype`. `each` is called after each tensor.
pub fn gguf_to_hf(
    src: &Path,
    out: &Path,
    dtype: DType,
    mut each: impl FnMut(usize, usize),
) -> Result<Exported> {
    let file = GgufFile::open_gemma3(src)?;
    let cfg = Gemma3::config_of(&file)?;
    if out.join("config.json").exists() || out.join("model.safetensors").exists() {
        return Err(Error::BadInput(format!(
            "{} already holds a model; give a new folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut w = GgufWeights::new(&file, &Device::Cpu)?;
    let mut shapes = tensor_shapes(&cfg);
    if w.has("output.weight") {
        shapes.push((
            "output.weight".into(),
            vec![cfg.vocab_size, cfg.hidden_size],
        ));
    }
    let mut types = BTreeMap::new();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let total = shapes.len();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let t = if shape.len() == 1 {
            // Norm weights: GGUF holds 1 + w, HF holds w.
            *types.entry("F32".to_string()).or_insert(0) += 1;
            (w.f32_tensor(name, shape)? - 1.0)?
        } else {
            let (stored, _) = w.check(name, shape)?;
            *types.entry(stored).or_insert(0) += 1;
            w.qtensor(name, shape)?.dequantize(&Device::Cpu)?
        };
        tensors.insert(hf_text_name("model.", name), t.to_dtype(dtype)?);
        each(i + 1, total);
    }
    let weights = out.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;
    let mut config = config_json(&cfg);
    config["torch_dtype"] = json!(match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    });
    let config_path = out.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)? + "\n")
        .map_err(|e| Error::io(&config_path, e))?;
    let bytes = std::fs::metadata(&weights)
        .map_err(|e| Error::io(&weights, e))?
        .len();
    Ok(Exported { types, bytes })
}
