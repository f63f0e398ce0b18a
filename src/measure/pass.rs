//! Running the engine: loading a model spec, one measured pass (encode, prefill, decode), and
//! greedy generation. `case.rs` drives passes through phases and probes into a result record.

use std::time::Instant;

use candle_core::{DType, Device};

use crate::engine::decoder::{Gemma3, Segment};
use crate::engine::load::gguf::GgufFile;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::VisionTower;
use crate::error::Result;

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
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        let start = Instant::now();
        let mut file = GgufFile::open_gemma3(path)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
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

    /// A Gemma 3 size with synthetic weights in `format` (see `model/synthetic.rs`); with its
    /// vision tower and projector when `vision` (4B and larger).
    pub fn synthetic(
        size: &str,
        format: &str,
        seed: u64,
        vision: bool,
        device: &Device,
    ) -> Result<Self> {
        let start = Instant::now();
        let preset =
            crate::engine::presets::find(size).ok_or_else(|| crate::Error::UnknownModelSpec {
                spec: format!("synthetic:{size}"),
            })?;
        let parsed = crate::engine::load::synthetic::parse_format(format)?;
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
            let need = crate::engine::load::synthetic::file_weight_bytes(&cfg, parsed)
                + vision_cfg.as_ref().map_or(0, |v| {
                    crate::engine::load::synthetic::vision_weight_bytes(v, cfg.hidden_size, parsed)
                });
            let have = crate::probe::host::HostInfo::read().ram_available_bytes;
            if need > have {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                return Err(crate::Error::Unsupported(format!(
                    "synthetic:{} in {format} needs {:.1} GiB of weights; this machine has {:.1} GiB available",
                    preset.name,
                    gib(need),
                    gib(have)
                )));
            }
        }
        let mut weights = crate::engine::load::synthetic::SyntheticWeights::new(
            parsed,
            cfg.num_layers,
            seed,
            device,
        )?;
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
        dir: &std::path::Path,
        quant: Option<&str>,
        vision: bool,
        device: &Device,
    ) -> Result<Self> {
        let start = Instant::now();
        let cfg = crate::engine::load::safetensors::read_config(dir)?;
        let target = quant
            .map(crate::engine::load::synthetic::parse_format)
            .transpose()?;
        let mut weights = crate::engine::load::safetensors::SafetensorsWeights::open(
            dir,
            cfg.text.num_layers,
            target,
            device,
        )?;
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

    /// The model a `--model` spec names (see `model/spec.rs`), on `device`; `quant` for
    /// synthetic models and safetensors folders; the vision tower too when `vision`.
    /// `progress`: show download progress bars.
    pub fn from_spec(
        spec: &str,
        quant: Option<&str>,
        seed: u64,
        vision: bool,
        device: &Device,
        progress: bool,
    ) -> Result<Self> {
        use crate::engine::load::spec::ModelSpec;
        let spec: ModelSpec = spec.parse()?;
        match (&spec, quant) {
            (ModelSpec::Synthetic(size), Some(quant)) => {
                Self::synthetic(size, quant, seed, vision, device)
            }
            (ModelSpec::HfDir(dir), quant) => Self::from_hf_dir(dir, quant, vision, device),
            (ModelSpec::Hub(_), quant) => {
                Self::from_hf_dir(&spec.resolve(progress)?, quant, vision, device)
            }
            (ModelSpec::Synthetic(size), None) => Err(crate::Error::Unsupported(format!(
                "synthetic:{size} needs --quant FORMAT (e.g. --quant q4_k)"
            ))),
            (_, Some(quant)) => Err(crate::Error::Unsupported(format!(
                "--quant {quant} applies to synthetic models and safetensors folders; a GGUF file runs in its own formats"
            ))),
            (spec, None) if vision => Err(crate::Error::Unsupported(format!(
                "{spec}: a GGUF model file holds no vision tower (llama.cpp ships it as a separate mmproj file, which gemma-fit does not read yet); --image needs synthetic:4b/12b/27b or a Hugging Face folder of a 4B+ model"
            ))),
            (spec, None) => Self::load(&spec.resolve(progress)?, device),
        }
    }

    /// A prompt of exactly `n` tokens: the fixed text through the tokenizer, or for synthetic
    /// weights a fixed sequence of ordinary ids after BOS.
    pub fn prompt(&self, n: usize) -> Vec<u32> {
        match &self.tokenizer {
            Some(t) => prompt_of(t, n),
            None => {
                // Ordinary ids past the control/special tokens at the start of the vocabulary
                // (a tiny test vocabulary has no room for 1000 of them).
                let vocab = self.model.cfg.vocab_size as u32;
                let first = 1000.min(vocab / 4);
                (0..n as u32)
                    .map(|i| {
                        if i == 0 {
                            2
                        } else {
                            first + (i * 7919) % (vocab - first)
                        }
                    })
                    .collect()
            }
        }
    }
}

fn no_vision(model: &str) -> crate::Error {
    crate::Error::Unsupported(format!(
        "{model} has no vision tower (Gemma 3 270M and 1B are text-only; 4B, 12B and 27B see images)"
    ))
}

/// Parses a KV-cache dtype name.
pub fn parse_kv_dtype(s: &str) -> std::result::Result<DType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(format!(
            "unsupported KV dtype '{other}' (choose f32, f16 or bf16)"
        )),
    }
}

/// Gemma 3's begin- and end-of-image tokens (fact sheet §2), for models without a tokenizer.
const BOI: u32 = 255_999;
const EOI: u32 = 256_000;

/// Deterministic English text used to build prompts of a given length.
const FILLER: &str =
    "The river ran past the old mill, where the miller kept his ledgers of grain and \
flour. Every spring the water rose, and the village gathered to watch the wheel turn faster. \
Children counted the boats that drifted down from the hills, and the baker sold warm bread at \
the bridge. In the evening the lamps were lit along the towpath, and travellers told stories \
of the cities beyond the forest, of markets and bells and libraries full of maps. ";

/// A prompt of exactly `n` tokens (BOS first when the model adds it).
pub fn prompt_of(tokenizer: &Tokenizer, n: usize) -> Vec<u32> {
    let mut text = String::from(FILLER);
    loop {
        let ids = tokenizer.encode(&text, true);
        if ids.len() >= n {
            return ids[..n].to_vec();
        }
        text.push_str(FILLER);
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// What one pass over a case measured: image encode (if any), prefill, decode.
#[derive(Debug, Clone)]
pub struct Pass {
    pub encode_s: Option<f64>,
    pub prefill_s: f64,
    /// Encode plus prefill, until the first token's logits.
    pub ttft_s: f64,
    /// Positions prefilled (text plus the image's).
    pub positions: usize,
    /// Synthetic positions before them.
    pub depth: usize,
    pub decode_ms: Vec<f64>,
    pub kv_bytes: u64,
    pub rope_bytes: u64,
}

/// The phase a pass is entering, for probes that split their readings by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassPhase {
    Encode,
    Prefill,
    Decode,
}

/// The shape of a pass.
#[derive(Debug, Clone, Copy)]
pub struct PassShape {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Positions the KV cache is allocated for.
    pub ctx: usize,
    pub prefill_chunk: usize,
    pub kv_dtype: DType,
    /// Positions filled with synthetic keys and values before the prompt (`--fill-kv`): the
    /// prompt is then prefilled, and the tokens decoded, at this depth.
    pub fill_depth: usize,
}

/// One pass on a fresh session of `shape.ctx` positions: encodes `pixels` (if any), prefills
/// `prompt_tokens` text tokens (the image's soft tokens between begin/end-of-image markers after
/// BOS), then decodes `gen_tokens` greedily, one at a time. `on_phase` is called as each phase
/// begins (after the session's memory is allocated).
pub fn run_pass(
    m: &LoadedModel,
    shape: PassShape,
    pixels: Option<&candle_core::Tensor>,
    on_phase: &mut dyn FnMut(PassPhase),
) -> Result<Pass> {
    let PassShape {
        prompt_tokens,
        gen_tokens,
        ctx,
        prefill_chunk,
        kv_dtype,
        fill_depth,
    } = shape;
    let prompt = m.prompt(prompt_tokens.max(1));
    let vision = match (pixels, &m.vision) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(crate::Error::Unsupported(format!(
                "{} was loaded without a vision tower; an image case needs one",
                m.source
            )))
        }
        (Some(px), Some(v)) => Some((px, v)),
    };
    let mut session = m.model.session(ctx, kv_dtype)?;
    if fill_depth > 0 {
        session.cache.fill_synthetic(fill_depth)?;
    }
    let start = Instant::now();
    let (encode_s, soft) = match vision {
        Some((px, v)) => {
            on_phase(PassPhase::Encode);
            let soft = v.encode(px)?;
            (Some(start.elapsed().as_secs_f64()), Some(soft))
        }
        None => (None, None),
    };
    let (boi, eoi) = image_markers(m)?;
    let segments = match &soft {
        Some(soft) => vec![
            Segment::Text(&prompt[..1]),
            Segment::Text(std::slice::from_ref(&boi)),
            Segment::Image(soft),
            Segment::Text(std::slice::from_ref(&eoi)),
            Segment::Text(&prompt[1..]),
        ],
        None => vec![Segment::Text(&prompt)],
    };
    let image_positions = match &soft {
        Some(s) => s.dim(0)? + 2,
        None => 0,
    };
    on_phase(PassPhase::Prefill);
    let prefill_start = Instant::now();
    let logits = m
        .model
        .prefill_segments(&segments, prefill_chunk, &mut session)?;
    let mut next = argmax(&logits);
    let prefill_s = prefill_start.elapsed().as_secs_f64();
    let ttft_s = start.elapsed().as_secs_f64();
    on_phase(PassPhase::Decode);
    let mut decode_ms = Vec::with_capacity(gen_tokens);
    for _ in 0..gen_tokens {
        let t = Instant::now();
        let logits = m.model.forward(&[next], &mut session)?;
        next = argmax(&logits);
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Pass {
        encode_s,
        prefill_s,
        ttft_s,
        positions: prompt.len() + image_positions,
        depth: fill_depth,
        decode_ms,
        kv_bytes: session.cache.allocated_bytes() as u64,
        rope_bytes: session.rope_bytes() as u64,
    })
}

/// Positions an image takes in the context: its soft tokens and the two markers.
pub fn image_positions(vision: &crate::engine::vision::VisionConfig) -> usize {
    vision.tokens_per_image + 2
}

/// The encoder input for `--image`: "synthetic" or an image file, sized for the model's tower.
pub fn image_input(spec: &str, m: &LoadedModel) -> Result<candle_core::Tensor> {
    let Some(v) = &m.vision else {
        return Err(no_vision(&m.source));
    };
    let device = m.model.device();
    if spec == "synthetic" {
        crate::engine::vision::synthetic_image(v.cfg.image_size, 0, device)
    } else {
        crate::engine::vision::load_image(std::path::Path::new(spec), v.cfg.image_size, device)
    }
}

/// Begin/end-of-image ids: the tokenizer's, else Gemma 3's fixed ids.
fn image_markers(m: &LoadedModel) -> Result<(u32, u32)> {
    let id = |piece: &str, fixed: u32| {
        m.tokenizer
            .as_ref()
            .and_then(|t| t.id_of(piece))
            .unwrap_or(fixed)
    };
    let (boi, eoi) = (id("<start_of_image>", BOI), id("<end_of_image>", EOI));
    let vocab = m.model.cfg.vocab_size;
    if boi as usize >= vocab || eoi as usize >= vocab {
        return Err(crate::Error::Unsupported(format!(
            "{}: its vocabulary of {vocab} has no <start_of_image>/<end_of_image> tokens ({boi}/{eoi})",
            m.source
        )));
    }
    Ok((boi, eoi))
}

/// Greedy generation: returns the generated ids (stops at an end-of-sequence token).
pub fn generate(
    m: &LoadedModel,
    prompt: &[u32],
    max_tokens: usize,
    prefill_chunk: usize,
    kv_dtype: DType,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    let mut session = m.model.session(prompt.len() + max_tokens, kv_dtype)?;
    let stop: Vec<u32> = match &m.tokenizer {
        Some(t) => [t.eos_id, t.id_of("<end_of_turn>")]
            .into_iter()
            .flatten()
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(max_tokens);
    if max_tokens == 0 {
        return Ok(out);
    }
    let mut logits = m.model.prefill(prompt, prefill_chunk, &mut session)?;
    loop {
        let next = argmax(&logits);
        out.push(next);
        on_token(next);
        if stop.contains(&next) || out.len() >= max_tokens {
            return Ok(out);
        }
        logits = m.model.forward(&[next], &mut session)?;
    }
}
