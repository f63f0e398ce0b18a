//! Built-in configurations for every Gemma 3 size (values and their sources in
//! `docs/gemma3.md`), and their exact parameter counts.

use serde::Serialize;

use crate::engine::config::{
    Gemma3Config, ROPE_GLOBAL_BASE, ROPE_LOCAL_BASE, SLIDING_WINDOW_PATTERN,
};
use crate::engine::vision::VisionConfig;

/// A Gemma 3 size.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    /// "270m", "1b", "4b", "12b", "27b".
    pub name: &'static str,
    pub config: Gemma3Config,
    /// 4B and larger carry a SigLIP vision tower and a projector.
    pub vision: Option<VisionConfig>,
}

#[allow(clippy::too_many_arguments)]
fn config(
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
    max_pos: usize,
    qpas: f64,
    rope_scale: f64,
) -> Gemma3Config {
    Gemma3Config {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        sliding_window: window,
        sliding_window_pattern: SLIDING_WINDOW_PATTERN,
        rope_global_base: ROPE_GLOBAL_BASE,
        rope_local_base: ROPE_LOCAL_BASE,
        rope_global_scale: rope_scale,
        query_pre_attn_scalar: qpas,
        rms_norm_eps: 1e-6,
        max_position_embeddings: max_pos,
    }
}

/// Every size, smallest first.
pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            name: "270m",
            config: config(262_144, 640, 2048, 18, 4, 1, 256, 512, 32_768, 256.0, 1.0),
            vision: None,
        },
        Preset {
            name: "1b",
            config: config(262_144, 1152, 6912, 26, 4, 1, 256, 512, 32_768, 256.0, 1.0),
            vision: None,
        },
        Preset {
            name: "4b",
            config: config(
                262_208, 2560, 10_240, 34, 8, 4, 256, 1024, 131_072, 256.0, 8.0,
            ),
            vision: Some(VisionConfig::gemma3()),
        },
        Preset {
            name: "12b",
            config: config(
                262_208, 3840, 15_360, 48, 16, 8, 256, 1024, 131_072, 256.0, 8.0,
            ),
            vision: Some(VisionConfig::gemma3()),
        },
        Preset {
            name: "27b",
            config: config(
                262_208, 5376, 21_504, 62, 32, 16, 128, 1024, 131_072, 168.0, 8.0,
            ),
            vision: Some(VisionConfig::gemma3()),
        },
    ]
}

/// A preset by name ("27b", "27B", "gemma-3-27b").
pub fn find(name: &str) -> Option<Preset> {
    let n = name.trim().to_ascii_lowercase();
    let n = n
        .strip_prefix("gemma-3-")
        .or(n.strip_prefix("gemma3-"))
        .unwrap_or(&n)
        .to_string();
    all().into_iter().find(|p| p.name == n)
}

/// The size whose shape `cfg` has (layers, widths, heads), if it is one of the presets.
pub fn name_of(cfg: &Gemma3Config) -> Option<&'static str> {
    let shape = |c: &Gemma3Config| {
        (
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.intermediate_size,
        )
    };
    all()
        .into_iter()
        .find(|p| shape(&p.config) == shape(cfg))
        .map(|p| p.name)
}

/// Parameter counts, as the HF checkpoints hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Token embedding (vocab × hidden; tied with the output projection).
    pub embedding: u64,
    /// Decoder layers and the final norm.
    pub non_embedding: u64,
    pub text: u64,
    pub vision_tower: u64,
    /// RMSNorm(1152) + 1152 × hidden projection into the text width.
    pub projector: u64,
    pub total: u64,
}

impl Preset {
    pub fn params(&self) -> ParamCounts {
        param_counts(&self.config, self.vision.as_ref())
    }
}

/// Counts from the shapes: per layer q, k, v, o, gate, up, down, four RMSNorms over the hidden
/// width and q/k norms over the head width; plus the final norm.
pub fn param_counts(c: &Gemma3Config, vision: Option<&VisionConfig>) -> ParamCounts {
    let (h, i, hd) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.head_dim as u64,
    );
    let (q, kv) = (c.num_heads as u64 * hd, c.num_kv_heads as u64 * hd);
    let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 4 * h + 2 * hd;
    let embedding = c.vocab_size as u64 * h;
    let non_embedding = per_layer * c.num_layers as u64 + h;
    let (vision_tower, projector) = match vision {
        Some(v) => (v.tower_params(), v.projector_params(c.hidden_size)),
        None => (0, 0),
    };
    let text = embedding + non_embedding;
    ParamCounts {
        embedding,
        non_embedding,
        text,
        vision_tower,
        projector,
        total: text + vision_tower + projector,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact figures of `docs/gemma3.md` §3.
    #[test]
    fn parameter_counts_match_the_fact_sheet() {
        let want = [
            (
                "270m",
                167_772_160,
                100_326_016,
                268_098_176,
                0,
                0,
                268_098_176,
            ),
            (
                "1b",
                301_989_888,
                697_896_064,
                999_885_952,
                0,
                0,
                999_885_952,
            ),
            (
                "4b",
                671_252_480,
                3_209_010_688,
                3_880_263_168,
                416_866_032,
                2_950_272,
                4_300_079_472,
            ),
            (
                "12b",
                1_006_878_720,
                10_759_155_456,
                11_766_034_176,
                416_866_032,
                4_424_832,
                12_187_325_040,
            ),
            (
                "27b",
                1_409_630_208,
                25_599_716_096,
                27_009_346_304,
                416_866_032,
                6_194_304,
                27_432_406_640,
            ),
        ];
        for (name, emb, non_emb, text, vision, proj, total) in want {
            let p = find(name).unwrap().params();
            assert_eq!(
                (
                    p.embedding,
                    p.non_embedding,
                    p.text,
                    p.vision_tower,
                    p.projector,
                    p.total
                ),
                (emb, non_emb, text, vision, proj, total),
                "{name}"
            );
        }
    }

    #[test]
    fn layer_layout_and_attention_scale() {
        let c = find("27B").unwrap().config;
        assert_eq!((c.num_global_layers(), c.num_sliding_layers()), (10, 52));
        assert_eq!(c.query_pre_attn_scalar, 168.0);
        let c = find("gemma-3-1b").unwrap().config;
        assert_eq!(
            (
                c.num_global_layers(),
                c.num_sliding_layers(),
                c.sliding_window
            ),
            (4, 22, 512)
        );
        assert!(find("2b").is_none());
    }
}
