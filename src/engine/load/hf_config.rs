//! Hugging Face `config.json` for Gemma 3: the full text config of 270M/1B (`gemma3_text`) and
//! the sparse multimodal config of 4B/12B/27B (`gemma3`, whose `text_config` lists only the keys
//! that differ from `Gemma3TextConfig`'s defaults). Defaults from `docs/gemma3.md` §2 (transformers
//! v4.50 `Gemma3TextConfig`).

use serde::Deserialize;

use crate::engine::config::{
    Gemma3Config, ROPE_GLOBAL_BASE, ROPE_LOCAL_BASE, SLIDING_WINDOW_PATTERN,
};
use crate::engine::vision::VisionConfig;

#[derive(Debug, Deserialize)]
struct RopeScaling {
    factor: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The text part of a config; every field optional (absent = transformers' default).
#[derive(Debug, Default, Deserialize)]
struct TextConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    sliding_window_pattern_private: Option<usize>,
    layer_types: Option<Vec<String>>,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_scaling: Option<RopeScaling>,
    rope_parameters: Option<serde_json::Value>,
    query_pre_attn_scalar: Option<f64>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
}

/// `vision_config`: absent keys take Gemma 3's SigLIP values (`docs/gemma3.md` §5), not SigLIP's
/// generic defaults, since every Gemma 3 release uses that one tower.
#[derive(Debug, Default, Deserialize)]
struct VisionJson {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    patch_size: Option<usize>,
    image_size: Option<usize>,
    num_channels: Option<usize>,
    layer_norm_eps: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct TopConfig {
    model_type: Option<String>,
    text_config: Option<TextConfig>,
    vision_config: Option<VisionJson>,
    mm_tokens_per_image: Option<usize>,
    #[serde(flatten)]
    text: TextConfig,
}

/// What a `config.json` describes.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub text: Gemma3Config,
    /// The vision tower of a `gemma3` (multimodal) config; None for `gemma3_text`.
    pub vision: Option<VisionConfig>,
}

/// Parses a config.json's text.
pub fn parse(json: &str) -> Result<HfConfig, String> {
    let top: TopConfig =
        serde_json::from_str(json).map_err(|e| format!("not a valid config.json: {e}"))?;
    let (t, multimodal) = match top.text_config {
        Some(t) => (t, true),
        None => (top.text, false),
    };
    let model_type = top.model_type.or(t.model_type.clone()).unwrap_or_default();
    if !matches!(model_type.as_str(), "gemma3" | "gemma3_text") {
        return Err(format!(
            "model_type '{model_type}' is not Gemma 3 (expected gemma3 or gemma3_text)"
        ));
    }
    // Gemma3TextConfig defaults (transformers v4.50).
    let hidden = t.hidden_size.unwrap_or(2304);
    let heads = t.num_attention_heads.unwrap_or(8);
    let layers = t.num_hidden_layers.unwrap_or(26);
    let mut pattern = t
        .sliding_window_pattern
        .or(t.sliding_window_pattern_private)
        .unwrap_or(SLIDING_WINDOW_PATTERN);
    if let Some(types) = &t.layer_types {
        if types.len() != layers {
            return Err(format!(
                "layer_types lists {} layers, num_hidden_layers is {layers}",
                types.len()
            ));
        }
        let first_global = types
            .iter()
            .position(|s| s == "full_attention")
            .map(|i| i + 1);
        pattern = first_global.unwrap_or(usize::MAX);
        for (i, kind) in types.iter().enumerate() {
            let global = (i + 1) % pattern == 0;
            if (kind == "full_attention") != global {
                return Err(format!(
                    "layer_types[{i}] = {kind} does not follow a global-every-{pattern} pattern"
                ));
            }
        }
    }
    // transformers v5: rope_parameters {full_attention: {rope_type, factor, rope_theta}, sliding_attention: {...}}.
    let v5 = |part: &str, key: &str| {
        t.rope_parameters
            .as_ref()
            .and_then(|p| p.get(part))
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_f64())
    };
    let scale = match &t.rope_scaling {
        Some(s) => {
            let kind = s
                .rope_type
                .as_deref()
                .or(s.kind.as_deref())
                .unwrap_or("linear");
            if kind != "linear" {
                return Err(format!(
                    "rope_scaling type '{kind}' is not supported (Gemma 3 uses linear)"
                ));
            }
            s.factor.unwrap_or(1.0)
        }
        None => v5("full_attention", "factor").unwrap_or(1.0),
    };
    let head_dim = t.head_dim.unwrap_or(256);
    let cfg = Gemma3Config {
        vocab_size: t.vocab_size.unwrap_or(262_208),
        hidden_size: hidden,
        intermediate_size: t.intermediate_size.unwrap_or(9216),
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: t.num_key_value_heads.unwrap_or(4),
        head_dim,
        sliding_window: t.sliding_window.unwrap_or(4096),
        sliding_window_pattern: pattern,
        rope_global_base: t
            .rope_theta
            .or(v5("full_attention", "rope_theta"))
            .unwrap_or(ROPE_GLOBAL_BASE),
        rope_local_base: t
            .rope_local_base_freq
            .or(v5("sliding_attention", "rope_theta"))
            .unwrap_or(ROPE_LOCAL_BASE),
        rope_global_scale: scale,
        query_pre_attn_scalar: t.query_pre_attn_scalar.unwrap_or(256.0),
        rms_norm_eps: t.rms_norm_eps.unwrap_or(1e-6),
        max_position_embeddings: t.max_position_embeddings.unwrap_or(131_072),
    };
    cfg.validate()?;
    let vision = if multimodal {
        let v = top.vision_config.unwrap_or_default();
        let g = VisionConfig::gemma3();
        let vision = VisionConfig {
            hidden_size: v.hidden_size.unwrap_or(g.hidden_size),
            intermediate_size: v.intermediate_size.unwrap_or(g.intermediate_size),
            num_layers: v.num_hidden_layers.unwrap_or(g.num_layers),
            num_heads: v.num_attention_heads.unwrap_or(g.num_heads),
            patch_size: v.patch_size.unwrap_or(g.patch_size),
            image_size: v.image_size.unwrap_or(g.image_size),
            num_channels: v.num_channels.unwrap_or(g.num_channels),
            layer_norm_eps: v.layer_norm_eps.unwrap_or(g.layer_norm_eps),
            tokens_per_image: top.mm_tokens_per_image.unwrap_or(g.tokens_per_image),
        };
        vision.validate()?;
        Some(vision)
    } else {
        None
    };
    Ok(HfConfig { text: cfg, vision })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::presets;

    /// 27B's hub config, verbatim keys (`docs/gemma3.md` §2): only non-default keys in text_config.
    const SPARSE_27B: &str = r#"{
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
            "model_type": "gemma3_text", "num_attention_heads": 32, "num_hidden_layers": 62,
            "num_key_value_heads": 16, "query_pre_attn_scalar": 168,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
        "vision_config": {"hidden_size": 1152}, "mm_tokens_per_image": 256}"#;

    #[test]
    fn sparse_multimodal_config_gets_the_defaults() {
        let c = parse(SPARSE_27B).unwrap();
        let preset = presets::find("27b").unwrap();
        assert_eq!(c.text, preset.config);
        assert_eq!(c.vision, preset.vision);
        let odd = SPARSE_27B.replace(
            r#""mm_tokens_per_image": 256"#,
            r#""mm_tokens_per_image": 200"#,
        );
        assert!(parse(&odd).unwrap_err().contains("square"));
    }

    #[test]
    fn full_270m_config_with_layer_types() {
        let mut types = vec!["sliding_attention"; 18];
        for i in [5, 11, 17] {
            types[i] = "full_attention";
        }
        let json = serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
            "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "sliding_window": 512,
            "_sliding_window_pattern": 6, "layer_types": types, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null,
            "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6
        });
        let c = parse(&json.to_string()).unwrap();
        assert!(c.vision.is_none());
        assert_eq!(c.text, presets::find("270m").unwrap().config);
    }

    #[test]
    fn contradictions_are_errors() {
        assert!(parse(r#"{"model_type": "llama"}"#)
            .unwrap_err()
            .contains("not Gemma 3"));
        let bad = r#"{"model_type": "gemma3_text", "num_hidden_layers": 3,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}"#;
        assert!(
            parse(bad).is_ok(),
            "global every 2nd layer is a consistent pattern"
        );
        let bad = r#"{"model_type": "gemma3_text", "num_hidden_layers": 2, "layer_types": ["full_attention"]}"#;
        assert!(parse(bad).unwrap_err().contains("layer_types"));
        let bad =
            r#"{"model_type": "gemma3_text", "num_attention_heads": 6, "num_key_value_heads": 4}"#;
        assert!(parse(bad).unwrap_err().contains("multiple"));
    }
}
