//! Weight formats (`--quant`): one GGML type for every matrix, or a file-level mix such as
//! llama.cpp's Q4_K_M, and the type each tensor has in a GGUF file of the format. Synthetic
//! weights, safetensors quantized at load and the memory plan all take their types from here.

use candle_core::quantized::GgmlDType;
use serde_with::{DeserializeFromStr, SerializeDisplay};

/// Every format, by the name `--quant` takes (the first name of each; `q4_0_qat` also works).
pub const FORMATS: [(&str, Format); 13] = [
    ("f32", Format::Plain(GgmlDType::F32)),
    ("f16", Format::Plain(GgmlDType::F16)),
    ("bf16", Format::Plain(GgmlDType::BF16)),
    ("q8_0", Format::Plain(GgmlDType::Q8_0)),
    ("q6_k", Format::Plain(GgmlDType::Q6K)),
    ("q5_k", Format::Plain(GgmlDType::Q5K)),
    ("q4_k", Format::Plain(GgmlDType::Q4K)),
    ("q5_1", Format::Plain(GgmlDType::Q5_1)),
    ("q5_0", Format::Plain(GgmlDType::Q5_0)),
    ("q4_1", Format::Plain(GgmlDType::Q4_1)),
    ("q4_0", Format::Plain(GgmlDType::Q4_0)),
    ("q4_k_m", Format::Q4KM),
    ("qat_q4_0", Format::QatQ4_0),
];

/// A weight format: one type for every matrix, or a file-level mix.
/// Records hold a format by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum Format {
    Plain(GgmlDType),
    /// llama.cpp's Q4_K_M: Q4_K, with attn_v and ffn_down in Q6_K on the layers where
    /// `use_more_bits`, and the output projection (the tied embedding for Gemma) in Q6_K.
    Q4KM,
    /// Google's QAT release: Q4_0, token embedding in F16.
    QatQ4_0,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third between.
fn use_more_bits(layer: usize, layers: usize) -> bool {
    let eighth = layers / 8;
    layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2
}

/// Whether a tensor belongs to the vision tower or projector (llama.cpp's `mmproj` names).
pub fn is_vision_tensor(name: &str) -> bool {
    name.starts_with("v.") || name.starts_with("mm.")
}

impl Format {
    /// The type of a vision tower or projector matrix: a dense format as it is; under a
    /// quantized format, llama.cpp's `mmproj-model-f16.gguf` layout that ships next to quantized
    /// text weights (patch and position embeddings F32, everything else F16).
    pub fn vision_type(&self, name: &str) -> GgmlDType {
        match self {
            Format::Plain(t @ (GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)) => *t,
            _ if name.starts_with("v.patch_embd") || name.starts_with("v.position_embd") => {
                GgmlDType::F32
            }
            _ => GgmlDType::F16,
        }
    }

    /// The type a tensor has in a GGUF file of this format (`layers`: the model's layer count).
    pub fn tensor_type(&self, name: &str, shape: &[usize], layers: usize) -> GgmlDType {
        if is_vision_tensor(name) {
            return self.vision_type(name);
        }
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let output = name == "token_embd.weight" || name == "output.weight";
        let base = match self {
            Format::Plain(t) => *t,
            Format::Q4KM if output => GgmlDType::Q6K,
            Format::Q4KM => match layer {
                Some(i)
                    if (name.contains("attn_v") || name.contains("ffn_down"))
                        && use_more_bits(i, layers) =>
                {
                    GgmlDType::Q6K
                }
                _ => GgmlDType::Q4K,
            },
            Format::QatQ4_0 if name == "token_embd.weight" => GgmlDType::F16,
            Format::QatQ4_0 => GgmlDType::Q4_0,
        };
        row_format(base, *shape.last().unwrap_or(&0))
    }
}

/// llama.cpp's fallback for rows whose length is not a multiple of the K-quant super-block (256).
pub fn row_format(format: GgmlDType, row_len: usize) -> GgmlDType {
    if row_len.is_multiple_of(format.block_size()) {
        return format;
    }
    match format {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        _ => GgmlDType::Q8_0,
    }
}

impl Format {
    /// The format's `--quant` name.
    pub fn name(&self) -> &'static str {
        FORMATS
            .iter()
            .find(|(_, f)| f == self)
            .map_or("?", |(n, _)| n)
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let t = if t == "q4_0_qat" {
            "qat_q4_0".into()
        } else {
            t
        };
        FORMATS
            .iter()
            .find(|(n, _)| *n == t)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                format!(
                    "unknown weight format '{}' (choose {})",
                    s.trim(),
                    FORMATS.map(|(n, _)| n).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, f) in FORMATS {
            assert_eq!(name.parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), name);
        }
        assert_eq!("Q4_0_QAT".parse::<Format>(), Ok(Format::QatQ4_0));
        let e = "q3_x".parse::<Format>().unwrap_err();
        assert!(e.contains("'q3_x'") && e.contains("q4_k_m"), "{e}");
    }
}
