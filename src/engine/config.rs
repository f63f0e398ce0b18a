//! Gemma 3 text-decoder configuration, read from GGUF metadata with Gemma 3's rules filled in
//! where the file is silent (values and sources in `docs/gemma3.md`).

use serde::{Deserialize, Serialize};

use crate::engine::load::gguf::GgufFile;
use crate::error::{Error, Result};

/// Attention span of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Attends to the last `sliding_window` positions; RoPE base 10,000.
    Sliding,
    /// Attends to every earlier position; RoPE base 1,000,000 (scaled ×8 on 4B and larger).
    Global,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemma3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub sliding_window: usize,
    /// Layer i is global when (i + 1) % pattern == 0.
    pub sliding_window_pattern: usize,
    pub rope_global_base: f64,
    pub rope_local_base: f64,
    /// Linear RoPE scaling factor on global layers (1 when the model has none).
    pub rope_global_scale: f64,
    /// Queries are scaled by `query_pre_attn_scalar^-1/2`.
    pub query_pre_attn_scalar: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
}

/// Gemma 3's fixed values that GGUF files may omit.
pub const SLIDING_WINDOW_PATTERN: usize = 6;
pub const ROPE_LOCAL_BASE: f64 = 10_000.0;
pub const ROPE_GLOBAL_BASE: f64 = 1_000_000.0;
/// 27B is the only size with `query_pre_attn_scalar` != head_dim (168 = hidden / heads).
const LAYERS_27B: usize = 62;

impl Gemma3Config {
    pub fn layer_kind(&self, layer: usize) -> LayerKind {
        if (layer + 1).is_multiple_of(self.sliding_window_pattern) {
            LayerKind::Global
        } else {
            LayerKind::Sliding
        }
    }

    pub fn num_global_layers(&self) -> usize {
        (0..self.num_layers)
            .filter(|&i| self.layer_kind(i) == LayerKind::Global)
            .count()
    }

    pub fn num_sliding_layers(&self) -> usize {
        self.num_layers - self.num_global_layers()
    }

    /// Reads the `gemma3.*` keys. `vocab_size` comes from the token embedding's shape.
    pub fn from_gguf(file: &GgufFile, vocab_size: usize) -> Result<Self> {
        let k = |name: &str| format!("gemma3.{name}");
        let uint = |name: &str| -> Result<usize> { Ok(file.get_uint(&k(name))? as usize) };
        let hidden_size = uint("embedding_length")?;
        let num_heads = uint("attention.head_count")?;
        let num_layers = uint("block_count")?;
        let head_dim = match file.get_opt_uint(&k("attention.key_length"))? {
            Some(v) => v as usize,
            None => hidden_size / num_heads.max(1),
        };
        let rope_global_scale = match file.get_opt_float(&k("rope.scaling.factor"))? {
            Some(f) if f > 0.0 => f,
            _ => 1.0,
        };
        let query_pre_attn_scalar =
            match file.get_opt_float(&k("attention.query_pre_attn_scalar"))? {
                Some(v) => v,
                None if num_layers == LAYERS_27B => (hidden_size / num_heads.max(1)) as f64,
                None => head_dim as f64,
            };
        let cfg = Gemma3Config {
            vocab_size,
            hidden_size,
            intermediate_size: uint("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads: file
                .get_opt_uint(&k("attention.head_count_kv"))?
                .map(|v| v as usize)
                .unwrap_or(num_heads),
            head_dim,
            sliding_window: uint("attention.sliding_window")?,
            sliding_window_pattern: file
                .get_opt_uint(&k("attention.sliding_window_pattern"))?
                .map(|v| v as usize)
                .unwrap_or(SLIDING_WINDOW_PATTERN),
            rope_global_base: file
                .get_opt_float(&k("rope.freq_base"))?
                .unwrap_or(ROPE_GLOBAL_BASE),
            rope_local_base: file
                .get_opt_float(&k("rope.local.freq_base"))?
                .unwrap_or(ROPE_LOCAL_BASE),
            rope_global_scale,
            query_pre_attn_scalar,
            rms_norm_eps: file
                .get_opt_float(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6),
            max_position_embeddings: uint("context_length")?,
        };
        cfg.validate().map_err(|reason| Error::BadMetadata {
            path: file.path.clone(),
            key: "gemma3.*".into(),
            reason,
        })?;
        Ok(cfg)
    }

    /// Checks the values that the engine divides by or sizes buffers with.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // Each size at least 1 and at most a bound far above Gemma 3 27B's (5376 hidden, 21504
        // feed-forward, 62 layers, 32 heads of 128, 262,208 tokens, 128K positions): a larger
        // value is damage, and would size buffers past any machine.
        let sizes = [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_layers", self.num_layers, 1 << 10),
            ("num_heads", self.num_heads, 1 << 10),
            ("num_kv_heads", self.num_kv_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 12),
            ("sliding_window", self.sliding_window, 1 << 24),
            (
                "sliding_window_pattern",
                self.sliding_window_pattern,
                usize::MAX,
            ),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ];
        for (name, v, max) in sizes {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
            if v > max {
                return Err(format!(
                    "{name} is {v}, more than any Gemma 3 could have ({max} at most)"
                ));
            }
        }
        let floats = [
            ("rope_global_base", self.rope_global_base),
            ("rope_local_base", self.rope_local_base),
            ("rope_global_scale", self.rope_global_scale),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("rms_norm_eps", self.rms_norm_eps),
        ];
        for (name, v) in floats {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} is {v}, not a positive number"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "{} attention heads are not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd (RoPE needs pairs)",
                self.head_dim
            ));
        }
        Ok(())
    }
}
