//! Hugging Face model folders: `config.json` plus `*.safetensors` (one file or shards listed in
//! `model.safetensors.index.json`). Tensors are mapped from GGUF names (what the loader asks for)
//! to HF names, kept in their stored width (bf16 stays 2 bytes per value) or quantized at load
//! to `--quant`'s format, with llama.cpp's fallback for rows that do not fit the block.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::engine::load::format::Format;
use crate::engine::load::hf_config::{self, HfConfig};
use crate::engine::load::weights::{cpu_storage, WeightBytes, WeightSource};
use crate::error::{Error, Result};

/// Whether `path` looks like a Hugging Face model folder.
pub fn is_model_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

/// Reads and parses `<dir>/config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    hf_config::parse(&text).map_err(|reason| Error::BadConfig { path, reason })
}

/// The safetensors files of a folder: the shards its index names (each must exist), or every
/// `*.safetensors` file when there is no index.
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadConfig {
            path: index.clone(),
            reason: e.to_string(),
        })?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| Error::BadConfig {
                path: index.clone(),
                reason: "no weight_map".into(),
            })?;
        let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        let mut files = Vec::new();
        for name in names {
            let f = dir.join(name);
            if !f.is_file() {
                return Err(Error::MissingShard { index, shard: f });
            }
            files.push(f);
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::ModelNotFound {
            path: dir.join("*.safetensors"),
        });
    }
    Ok(files)
}

pub struct SafetensorsWeights {
    dir: PathBuf,
    st: MmapedSafetensors,
    /// "model.", "language_model.model." or "model.language_model.".
    prefix: String,
    /// Where the vision tower and projector live ("" before `vision_tower.` or "model.").
    vision_prefix: String,
    target: Option<Format>,
    layers: usize,
    bytes: WeightBytes,
    repacked: Vec<(String, GgmlDType, GgmlDType)>,
    /// Tensors whose requested format did not fit their rows: (name, requested, used).
    pub fallbacks: Vec<(String, GgmlDType, GgmlDType)>,
}

impl SafetensorsWeights {
    /// `target`: quantize at load to this format; None keeps the stored dtype.
    pub fn open(
        dir: &Path,
        layers: usize,
        target: Option<Format>,
        device: &Device,
    ) -> Result<Self> {
        if !device.is_cpu() {
            return Err(Error::Unsupported(
                "safetensors folders load on the CPU only (for now)".into(),
            ));
        }
        let files = shard_files(dir)?;
        // SAFETY: the files are mapped read-only; gemma-fit does not modify them while running.
        let st =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| Error::CorruptSafetensors {
                path: dir.into(),
                reason: short_reason(&e.to_string()),
            })?;
        let prefix = ["model.", "language_model.model.", "model.language_model."]
            .into_iter()
            .find(|p| st.get(&format!("{p}embed_tokens.weight")).is_ok())
            .ok_or_else(|| Error::MissingTensor {
                path: dir.into(),
                name: "model.embed_tokens.weight".into(),
            })?
            .to_string();
        let vision_prefix = ["", "model."]
            .into_iter()
            .find(|p| {
                st.get(&format!("{p}multi_modal_projector.mm_soft_emb_norm.weight"))
                    .is_ok()
            })
            .unwrap_or("")
            .to_string();
        Ok(SafetensorsWeights {
            dir: dir.into(),
            st,
            prefix,
            vision_prefix,
            target,
            layers,
            bytes: WeightBytes::default(),
            repacked: Vec::new(),
            fallbacks: Vec::new(),
        })
    }

    /// The HF name of a GGUF tensor name.
    fn hf_name(&self, gguf: &str) -> String {
        if crate::engine::load::format::is_vision_tensor(gguf) {
            return self.hf_vision_name(gguf);
        }
        hf_text_name(&self.prefix, gguf)
    }

    /// The HF name of a vision tensor (llama.cpp `mmproj` name → transformers' SigLIP name).
    fn hf_vision_name(&self, gguf: &str) -> String {
        let p = &self.vision_prefix;
        let tower = format!("{p}vision_tower.vision_model.");
        let fixed = match gguf {
            "mm.input_projection.weight" => {
                Some("multi_modal_projector.mm_input_projection_weight")
            }
            "mm.soft_emb_norm.weight" => Some("multi_modal_projector.mm_soft_emb_norm.weight"),
            _ => None,
        };
        if let Some(name) = fixed {
            return format!("{p}{name}");
        }
        let Some(rest) = gguf.strip_prefix("v.") else {
            return gguf.into();
        };
        let Some((stem, kind)) = rest.rsplit_once('.') else {
            return gguf.into();
        };
        let part = match stem {
            "patch_embd" => "embeddings.patch_embedding".to_string(),
            "position_embd" => "embeddings.position_embedding".to_string(),
            "post_ln" => "post_layernorm".to_string(),
            _ => match stem.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
                Some((layer, part)) => {
                    let hf = match part {
                        "attn_q" => "self_attn.q_proj",
                        "attn_k" => "self_attn.k_proj",
                        "attn_v" => "self_attn.v_proj",
                        "attn_out" => "self_attn.out_proj",
                        "ln1" => "layer_norm1",
                        "ln2" => "layer_norm2",
                        "ffn_up" => "mlp.fc1",
                        "ffn_down" => "mlp.fc2",
                        other => other,
                    };
                    format!("encoder.layers.{layer}.{hf}")
                }
                None => stem.to_string(),
            },
        };
        format!("{tower}{part}.{kind}")
    }

    /// The HF name of a tensor and its header entry, checked: present, this shape, f32, f16 or
    /// bf16 (the header's offsets, sizes and overlaps are checked by the safetensors crate when
    /// the file is opened).
    fn entry(
        &self,
        gguf: &str,
        shape: &[usize],
    ) -> Result<(String, safetensors::tensor::TensorView<'_>)> {
        let name = self.hf_name(gguf);
        let view = self.st.get(&name).map_err(|_| Error::MissingTensor {
            path: self.dir.clone(),
            name: name.clone(),
        })?;
        if view.shape() != shape {
            return Err(Error::TensorShape {
                path: self.dir.clone(),
                name,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        use safetensors::Dtype;
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::CorruptSafetensors {
                path: self.dir.clone(),
                reason: format!(
                    "tensor '{name}' is {:?}; expected f32, f16 or bf16",
                    view.dtype()
                ),
            });
        }
        Ok((name, view))
    }

    /// The tensor as stored, checked.
    fn view(&self, gguf: &str, shape: &[usize]) -> Result<(String, Tensor)> {
        let (name, _) = self.entry(gguf, shape)?;
        let t = self
            .st
            .load(&name, &Device::Cpu)
            .map_err(|e| Error::CorruptSafetensors {
                path: self.dir.clone(),
                reason: format!("tensor '{name}': {}", short_reason(&e.to_string())),
            })?;
        Ok((name, t))
    }
}

impl WeightSource for SafetensorsWeights {
    fn has(&self, name: &str) -> bool {
        self.st.get(&self.hf_name(name)).is_ok()
    }

    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let (_, t) = self.view(name, shape)?;
        self.bytes.file_weight_bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let q = match self.target {
            None => {
                // Keep the stored width: copy the bytes straight into a dense QTensor.
                let dtype = match t.dtype() {
                    DType::BF16 => GgmlDType::BF16,
                    DType::F16 => GgmlDType::F16,
                    _ => GgmlDType::F32,
                };
                let raw = t.flatten_all()?;
                let size = raw.elem_count() * raw.dtype().size_in_bytes();
                let storage = cpu_storage(dtype, size, |buf: &mut [u8]| -> Result<()> {
                    match dtype {
                        GgmlDType::BF16 => {
                            copy_le(&raw.to_vec1::<half::bf16>()?, buf, |x| x.to_le_bytes())
                        }
                        GgmlDType::F16 => {
                            copy_le(&raw.to_vec1::<half::f16>()?, buf, |x| x.to_le_bytes())
                        }
                        _ => copy_le(&raw.to_vec1::<f32>()?, buf, |x| x.to_le_bytes()),
                    }
                    Ok(())
                })?;
                QTensor::new(storage, shape)?
            }
            Some(format) => {
                let wanted = format.tensor_type(name, shape, self.layers);
                let plain = match format {
                    Format::Plain(t) => t,
                    _ => wanted,
                };
                // (The vision tower's F16 under a quantized format is a convention, not a fallback.)
                if wanted != plain && !crate::engine::load::format::is_vision_tensor(name) {
                    self.fallbacks.push((name.into(), plain, wanted));
                }
                let dtype = if wanted == GgmlDType::Q5_0 {
                    // Held as Q8_0 on the CPU (see weights.rs): quantize to Q5_0's values first.
                    self.repacked
                        .push((name.into(), GgmlDType::Q5_0, GgmlDType::Q8_0));
                    GgmlDType::Q5_0
                } else {
                    wanted
                };
                let q = QTensor::quantize(&t.to_dtype(DType::F32)?, dtype)?;
                if dtype == GgmlDType::Q5_0 {
                    let data = q.data()?;
                    let storage = cpu_storage(
                        GgmlDType::Q5_0,
                        data.len(),
                        |buf: &mut [u8]| -> Result<()> {
                            buf.copy_from_slice(&data);
                            Ok(())
                        },
                    )?;
                    QTensor::new(storage, shape)?
                } else {
                    q
                }
            }
        };
        self.bytes.resident_weight_bytes += q.storage_size_in_bytes() as u64;
        Ok(q)
    }

    fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (_, t) = self.view(name, shape)?;
        self.bytes.file_weight_bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        // HF stores Gemma's RMSNorm weights as w and applies 1 + w; GGUF stores 1 + w. The
        // vision tower's LayerNorm weights and biases are used as they are.
        let t = t.to_dtype(DType::F32)?;
        let t = if name.starts_with("v.") {
            t
        } else {
            (t + 1.0)?
        };
        self.bytes.resident_weight_bytes += (t.elem_count() * 4) as u64;
        Ok(t)
    }

    fn bytes(&self) -> WeightBytes {
        self.bytes
    }

    fn repacked(&self) -> &[(String, GgmlDType, GgmlDType)] {
        &self.repacked
    }

    fn check(&self, name: &str, shape: &[usize]) -> Result<(String, u64)> {
        let (_, view) = self.entry(name, shape)?;
        Ok((format!("{:?}", view.dtype()), view.data().len() as u64))
    }
}

/// The Hugging Face name of a GGUF text-model tensor name, under `prefix` ("model." for a
/// `gemma3_text` checkpoint).
pub fn hf_text_name(p: &str, gguf: &str) -> String {
    match gguf {
        "token_embd.weight" => return format!("{p}embed_tokens.weight"),
        "output_norm.weight" => return format!("{p}norm.weight"),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let Some((layer, part)) = gguf.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
        return gguf.into();
    };
    let hf = match part.trim_end_matches(".weight") {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "attn_norm" => "input_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "ffn_norm" => "pre_feedforward_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => other,
    };
    format!("{p}layers.{layer}.{hf}.weight")
}

/// candle's safetensors error in a few words: without the path it repeats (the error names the
/// folder) and without serde's list of every dtype it expected.
fn short_reason(e: &str) -> String {
    let mut s = e;
    if let Some(rest) = s.strip_prefix("path: \"") {
        if let Some(end) = rest.find("\" ") {
            s = &rest[end + 2..];
        }
    }
    let s = s.split(", expected one of").next().unwrap_or(s);
    let cut: String = s.chars().take(200).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

fn copy_le<T: Copy, const N: usize>(src: &[T], dst: &mut [u8], bytes: impl Fn(T) -> [u8; N]) {
    for (d, &s) in dst.chunks_exact_mut(N).zip(src) {
        d.copy_from_slice(&bytes(s));
    }
}
