//! One measured case: load, prefill, decode, with timings and memory.

use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::gguf::GgufFile;
use crate::model::text::{Gemma3, Segment};
use crate::model::tokenizer::Tokenizer;
use crate::model::vision::VisionTower;
use crate::probe::host;

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
            crate::model::presets::find(size).ok_or_else(|| crate::Error::UnknownModelSpec {
                spec: format!("synthetic:{size}"),
            })?;
        let parsed = crate::model::synthetic::parse_format(format)?;
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
            let need = crate::model::synthetic::file_weight_bytes(&cfg, parsed)
                + vision_cfg.as_ref().map_or(0, |v| {
                    crate::model::synthetic::vision_weight_bytes(v, cfg.hidden_size, parsed)
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
        let mut weights =
            crate::model::synthetic::SyntheticWeights::new(parsed, cfg.num_layers, seed, device)?;
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
        let cfg = crate::model::safetensors::read_config(dir)?;
        let target = quant
            .map(crate::model::synthetic::parse_format)
            .transpose()?;
        let mut weights = crate::model::safetensors::SafetensorsWeights::open(
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseParams {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub ctx: usize,
    pub prefill_chunk: usize,
    pub kv_dtype: String,
    pub threads: usize,
    /// An image placed after BOS: a file path, or "synthetic" (seeded random pixels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Gemma 3's begin- and end-of-image tokens (fact sheet §2), for models without a tokenizer.
const BOI: u32 = 255_999;
const EOI: u32 = 256_000;

/// What an image added to a case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMetrics {
    /// Time of the vision tower and projector for the one image (part of `ttft_ms`).
    pub encode_ms: f64,
    /// Soft tokens of the image, plus its begin/end markers: positions it takes in the context.
    pub positions: usize,
    pub file_weight_bytes: u64,
    pub resident_weight_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseMetrics {
    pub load_s: f64,
    /// Positions prefilled (text tokens plus the image's, if any).
    pub prompt_positions: usize,
    /// Image encode plus prefill, until the first token's logits.
    pub ttft_ms: f64,
    pub prefill_tok_per_s: f64,
    pub decode_tok_per_s: f64,
    pub decode_ms_median: f64,
    pub decode_ms_p90: f64,
    pub decode_ms_samples: Vec<f64>,
    pub kv_bytes: u64,
    pub rope_bytes: u64,
    pub file_weight_bytes: u64,
    pub resident_weight_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMetrics>,
}

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

/// Percentile (nearest rank) of unsorted samples; 0 for none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Encodes `params.image` (if any), prefills `params.prompt_tokens` text tokens (the image's
/// soft tokens between begin/end-of-image markers after BOS), then decodes `params.gen_tokens`
/// greedily, one at a time.
pub fn run_case(m: &LoadedModel, params: &CaseParams, kv_dtype: DType) -> Result<CaseMetrics> {
    let prompt = m.prompt(params.prompt_tokens.max(1));
    let pixels = match (&params.image, &m.vision) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(crate::Error::Unsupported(format!(
                "{} was loaded without a vision tower; an image case needs one",
                m.source
            )))
        }
        (Some(spec), Some(v)) => Some(image_input(spec, v, m.model.device())?),
    };
    let mut session = m.model.session(params.ctx, kv_dtype)?;
    let start = Instant::now();
    let (encode_s, soft) = match (&pixels, &m.vision) {
        (Some(px), Some(v)) => {
            let soft = v.encode(px)?;
            (start.elapsed().as_secs_f64(), Some(soft))
        }
        _ => (0.0, None),
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
    let image_positions = soft.as_ref().map_or(0, |s| s.dim(0).unwrap_or(0) + 2);
    let prefill_start = Instant::now();
    let logits = m
        .model
        .prefill_segments(&segments, params.prefill_chunk, &mut session)?;
    let mut next = argmax(&logits);
    let prefill_s = prefill_start.elapsed().as_secs_f64();
    let ttft_s = start.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(params.gen_tokens);
    for _ in 0..params.gen_tokens {
        let t = Instant::now();
        let logits = m.model.forward(&[next], &mut session)?;
        next = argmax(&logits);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = percentile(&samples, 50.0);
    let positions = prompt.len() + image_positions;
    Ok(CaseMetrics {
        load_s: m.load_s,
        prompt_positions: positions,
        ttft_ms: ttft_s * 1e3,
        prefill_tok_per_s: positions as f64 / prefill_s,
        decode_tok_per_s: if median > 0.0 { 1e3 / median } else { 0.0 },
        decode_ms_median: median,
        decode_ms_p90: percentile(&samples, 90.0),
        decode_ms_samples: samples,
        kv_bytes: session.cache.allocated_bytes() as u64,
        rope_bytes: session.rope_bytes() as u64,
        file_weight_bytes: m.model.weight_bytes.file_weight_bytes,
        resident_weight_bytes: m.model.weight_bytes.resident_weight_bytes,
        peak_rss_bytes: host::peak_rss_bytes(),
        image: m
            .vision
            .as_ref()
            .filter(|_| soft.is_some())
            .map(|v| ImageMetrics {
                encode_ms: encode_s * 1e3,
                positions: image_positions,
                file_weight_bytes: v.weight_bytes.file_weight_bytes,
                resident_weight_bytes: v.weight_bytes.resident_weight_bytes,
            }),
    })
}

/// Positions an image takes in the context: its soft tokens and the two markers.
pub fn image_positions(vision: &crate::model::vision::VisionConfig) -> usize {
    vision.tokens_per_image + 2
}

/// The encoder input for `--image`: "synthetic" or an image file.
fn image_input(spec: &str, v: &VisionTower, device: &Device) -> Result<candle_core::Tensor> {
    if spec == "synthetic" {
        crate::model::vision::synthetic_image(v.cfg.image_size, 0, device)
    } else {
        crate::model::vision::load_image(std::path::Path::new(spec), v.cfg.image_size, device)
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
