//! `fit -m FILE.gguf` or `fit -m FOLDER`: a model read from its headers alone, so a prediction
//! is about the exact model a user has: its configuration and each tensor's stored type. A GGUF
//! file through the bounded reader of `engine/load/gguf_header.rs` (metadata, tensor names,
//! shapes and types); a Hugging Face folder through its `config.json` and each safetensors
//! file's header (at most 100 MB of JSON, as the safetensors crate allows). No weight is read.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;

use crate::engine::config::Gemma3Config;
use crate::engine::load::format::{is_vision_tensor, Format};
use crate::engine::load::gguf::GgufFile;
use crate::error::{Error, Result};

/// A GGUF model as its header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileModel {
    /// The file's name (what tables show).
    pub name: String,
    pub path: PathBuf,
    pub cfg: Gemma3Config,
    /// The text model's tensors: (name, shape as [rows, columns], stored type).
    pub tensors: Vec<(String, Vec<usize>, GgmlDType)>,
    /// The preset whose shape the file has, if any.
    pub size: Option<&'static str>,
    /// The file's size (a folder's safetensors files together).
    pub file_bytes: u64,
    /// A Hugging Face folder's one stored type (bf16, f16 or f32); None for a GGUF file.
    pub dense: Option<Format>,
}

impl FileModel {
    /// Reads `path`'s header: a Gemma 3 GGUF file, or a clear error naming what is wrong.
    pub fn read(path: &Path) -> Result<Self> {
        let file = GgufFile::open_gemma3(path)?;
        let cfg = crate::engine::decoder::Gemma3::config_of(&file)?;
        let mut tensors: Vec<(String, Vec<usize>, GgmlDType)> = file
            .content
            .tensor_infos
            .iter()
            .filter(|(name, _)| !is_vision_tensor(name))
            .map(|(name, t)| (name.clone(), t.shape.dims().to_vec(), t.ggml_dtype))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(FileModel {
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            path: path.into(),
            size: crate::engine::presets::name_of(&cfg),
            cfg,
            tensors,
            file_bytes: file.file_size,
            dense: None,
        })
    }

    /// Reads a Hugging Face folder: `config.json` and the safetensors headers of its shards.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        use crate::engine::load::safetensors::{hf_text_name, read_config, shard_files};
        let cfg = read_config(dir)?.text;
        let mut stored = std::collections::HashMap::new();
        let mut file_bytes = 0;
        for f in shard_files(dir)? {
            file_bytes += std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?.len();
            stored.extend(safetensors_header(&f)?);
        }
        let prefix = ["model.", "language_model.model.", "model.language_model."]
            .into_iter()
            .find(|p| stored.contains_key(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| Error::MissingTensor {
                path: dir.into(),
                name: "model.embed_tokens.weight".into(),
            })?;
        let mut tensors = Vec::new();
        let mut types = std::collections::BTreeSet::new();
        for (gguf, shape) in crate::engine::decoder::tensor_shapes(&cfg) {
            let hf = hf_text_name(prefix, &gguf);
            let Some((dtype, stored_shape)) = stored.get(&hf) else {
                if gguf == "output.weight" {
                    continue; // tied to the embedding
                }
                return Err(Error::MissingTensor {
                    path: dir.into(),
                    name: hf,
                });
            };
            if *stored_shape != shape {
                return Err(Error::CorruptSafetensors {
                    path: dir.into(),
                    reason: format!("{hf} is {stored_shape:?}; config.json makes it {shape:?}"),
                });
            }
            let t = match dtype.as_str() {
                "BF16" => GgmlDType::BF16,
                "F16" => GgmlDType::F16,
                "F32" => GgmlDType::F32,
                other => {
                    return Err(Error::CorruptSafetensors {
                        path: dir.into(),
                        reason: format!("{hf} is {other}; gemma-fit reads F32, F16 and BF16"),
                    })
                }
            };
            if shape.len() == 2 {
                types.insert(format!("{t:?}"));
            }
            tensors.push((gguf, shape, t));
        }
        let dense = match tensors.iter().find(|t| t.1.len() == 2).map(|t| t.2) {
            Some(t) if types.len() == 1 => Some(Format::Plain(t)),
            _ => None,
        };
        Ok(FileModel {
            name: dir
                .file_name()
                .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into()),
            path: dir.into(),
            size: crate::engine::presets::name_of(&cfg),
            cfg,
            tensors,
            file_bytes,
            dense,
        })
    }

    /// Whether this is a GGUF file (not a Hugging Face folder).
    pub fn is_gguf(&self) -> bool {
        self.dense.is_none() && self.path.is_file()
    }

    /// The bytes before the tensor data (metadata, tokenizer, tensor index; and any vision
    /// tensors, which are not in `tensors`).
    pub fn header_bytes(&self) -> u64 {
        let data: u64 = crate::engine::plan::stored_tensors(&self.tensors, false)
            .iter()
            .map(|t| t.file_bytes)
            .sum();
        self.file_bytes.saturating_sub(data)
    }

    /// Whether a `-m` value names a file or folder rather than a size.
    pub fn is_path(model: &str) -> bool {
        model.to_ascii_lowercase().ends_with(".gguf")
            || crate::engine::load::safetensors::is_model_dir(Path::new(model))
    }

    /// Reads what `model` names: a GGUF file or a Hugging Face folder.
    pub fn read_any(model: &str) -> Result<Self> {
        let path = Path::new(model);
        if path.is_dir() {
            Self::read_dir(path)
        } else {
            Self::read(path)
        }
    }
}

/// A safetensors file's header (its first 8 + n bytes, JSON), without its data: each tensor's
/// dtype name ("BF16" …) and shape.
fn safetensors_header(
    path: &Path,
) -> Result<std::collections::HashMap<String, (String, Vec<usize>)>> {
    let bad = |reason: String| Error::CorruptSafetensors {
        path: path.into(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(bad(format!("a header of {n} bytes (at most 100 MB)")));
    }
    let mut buf = Vec::new();
    f.take(n)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 != n {
        return Err(bad(format!("a {n}-byte header, cut at {}", buf.len())));
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<usize>,
    }
    let mut map: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| bad(format!("header: {e}")))?;
    map.remove("__metadata__");
    map.into_iter()
        .map(|(name, v)| {
            let e: Entry = serde_json::from_value(v).map_err(|e| bad(format!("{name}: {e}")))?;
            Ok((name, (e.dtype, e.shape)))
        })
        .collect()
}
