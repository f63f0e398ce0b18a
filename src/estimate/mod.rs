//! Predicting a run's memory without running it: the engine's own plan ([`crate::engine::plan`])
//! plus the runtime's overhead, with constants measured on real runs and recorded here with
//! where they came from. [`catalog`] holds the GPUs; [`fit`] turns predictions into verdicts
//! and tables; [`accuracy`] sets measured results beside their predictions.

pub mod accuracy;
pub mod cards;
pub mod catalog;
pub mod engines;
pub mod file;
pub mod fit;

use serde::Serialize;

use crate::engine::device::DeviceKind;
use crate::engine::kv_cache::KvPair;
use crate::engine::load::format::Format;
use crate::engine::plan::{self, RunShape};
use crate::engine::presets::{self, Preset};
use crate::engine::vision::VisionConfig;
use crate::error::{Error, Result};
use crate::result::case::{CaseKey, CaseSpec};
use crate::result::CaseResult;
use crate::units::MIB;

/// Resident memory of the engine's process that no plan item accounts for, on the CPU: the
/// binary's touched pages, libraries, thread stacks and allocator state (5 MiB before anything
/// loads). Measured 2026-11-27 on the 2-core dev VM (release build, 2 threads): peak RSS minus
/// plan over 1-position and 64..1024-position prefills of synthetic 270M/1B/4B, 11.5–14.4 MiB.
pub const CPU_RUNTIME_BYTES: u64 = 12 * MIB;
/// A GGUF model's tokenizer (262,144 pieces) held beside the weights. Measured as the default
/// 270M file's peak RSS minus synthetic 270M's in the same shape (ctx 2048, 128 + 16 tokens).
pub const GGUF_TOKENIZER_BYTES: u64 = 5 * MIB + MIB / 4;
/// Device memory a CUDA process holds before its first tensor: context, kernel modules loaded
/// lazily, cuBLAS handle and workspace. NOT measured for this engine (no GPU was lent when the
/// estimator was built): the figure is PyTorch's measured context with lazy module loading
/// (287 MB, pytorch/pytorch#86509; 256 MiB on an RTX 3090, invoke-ai/InvokeAI#9413) plus cuBLAS's
/// 32 MiB Hopper workspace. `fit` says so next to every GPU prediction.
pub const CUDA_CONTEXT_BYTES: u64 = 320 * MIB;

/// Where a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Host memory: the prediction is the process's peak RSS.
    Cpu,
    /// An NVIDIA GPU: the prediction is the process's device memory.
    Cuda,
}

impl From<DeviceKind> for Target {
    fn from(k: DeviceKind) -> Self {
        match k {
            DeviceKind::Cpu => Target::Cpu,
            DeviceKind::Cuda => Target::Cuda,
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Target::Cpu),
            "cuda" | "gpu" => Ok(Target::Cuda),
            other => Err(format!("'{other}': the target is cpu or cuda")),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Cpu => "cpu",
            Target::Cuda => "cuda",
        })
    }
}

/// One case to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// A Gemma 3 size ("270m" … "27b").
    pub size: String,
    pub quant: Format,
    pub kv_dtype: KvPair,
    pub ctx: usize,
    /// The most positions one forward pass takes: the prefill chunk, or shorter prompts (all
    /// the batch's together, as they are packed into chunks).
    pub rows: usize,
    /// Sequences served at once, each with its own KV cache.
    pub batch: usize,
    pub image: bool,
    pub target: Target,
    /// Whether the model comes from a GGUF file (and so holds its tokenizer).
    pub tokenizer: bool,
    /// A model file read from its header (`fit -m FILE.gguf`): its configuration and stored
    /// types replace the preset's and `quant`'s.
    pub file: Option<std::sync::Arc<file::FileModel>>,
}

impl Query {
    /// The query for a case with `key` whose image (if any) takes `image_positions`: its size,
    /// format, KV dtype, context, largest forward pass (the chunk, or a shorter prompt with its
    /// image), image and device. Only synthetic weights and the default model are covered
    /// (their formats are known).
    pub fn for_key(k: &CaseKey, image_positions: usize) -> std::result::Result<Query, String> {
        let size = k
            .size
            .clone()
            .ok_or("not a Gemma 3 preset shape (a file of its own)")?;
        let (quant, tokenizer) = match (k.weights.as_str(), k.quant) {
            ("default", _) => (Format::Q4KM, true),
            ("synthetic", Some(q)) => (q, false),
            _ => {
                return Err(format!(
                    "weights '{}' are not predicted (synthetic and the default model are)",
                    k.weights
                ))
            }
        };
        Ok(Query {
            size,
            quant,
            kv_dtype: k.kv(),
            ctx: k.ctx,
            rows: k
                .prefill_chunk
                .min(k.batch.max(1) * (k.prompt_tokens + image_positions))
                .max(1),
            batch: k.batch.max(1),
            image: k.image.is_some(),
            target: k.device_kind.into(),
            tokenizer,
            file: None,
        })
    }

    /// The query for the case a result record ran (its image positions as measured).
    pub fn for_record(r: &CaseResult) -> std::result::Result<Query, String> {
        let image_positions = match (&r.key.image, &r.metrics) {
            (None, _) => 0,
            (Some(_), Some(m)) => m.prompt_positions.saturating_sub(r.key.prompt_tokens),
            (Some(_), None) => VisionConfig::gemma3().positions_per_image(),
        };
        Self::for_key(&r.key, image_positions)
    }

    /// The query for a case before it runs.
    pub fn for_spec(spec: &CaseSpec) -> std::result::Result<Query, String> {
        let image_positions = spec
            .image
            .as_ref()
            .map_or(0, |_| VisionConfig::gemma3().positions_per_image());
        Self::for_key(&spec.key(), image_positions)
    }
}

/// A prediction, by what holds the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    pub weights: u64,
    pub vision_weights: u64,
    pub kv_cache: u64,
    pub rope_tables: u64,
    pub workspace: u64,
    /// Process or CUDA context overhead, and the tokenizer of a GGUF model.
    pub runtime: u64,
    /// The most the load holds at once (see [`plan::MemoryPlan::load_peak`]); the total is the larger
    /// of the load (with the runtime) and the run.
    pub load_peak: u64,
}

impl Breakdown {
    pub fn total(&self) -> u64 {
        (self.weights + self.vision_weights + self.non_weight()).max(self.load_peak + self.runtime)
    }

    /// What is not weights: KV cache, RoPE tables, workspace, runtime.
    pub fn non_weight(&self) -> u64 {
        self.kv_cache + self.rope_tables + self.workspace + self.runtime
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub breakdown: Breakdown,
    /// Bytes a decoded token reads at the full context: weights (the tied embedding is read
    /// whole as the output projection) and the KV cache in every layer's span.
    pub bytes_per_token: u64,
    pub max_ctx: usize,
}

/// A preset by name, with the vocabulary GGUF files (and synthetic weights) hold.
pub fn preset(size: &str) -> Result<Preset> {
    let mut p = presets::find(size).ok_or_else(|| {
        Error::BadInput(format!(
            "unknown Gemma 3 size '{size}'; sizes: {}",
            presets::all()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    p.config.vocab_size = 262_144;
    Ok(p)
}

pub fn predict(q: &Query) -> Result<Prediction> {
    let on_cpu = q.target == Target::Cpu;
    let shape = RunShape {
        ctx: q.ctx,
        kv_dtype: q.kv_dtype,
        rows: q.rows,
        batch: q.batch,
        image: q.image,
        on_cpu,
    };
    let (cfg, m) = match &q.file {
        Some(f) => {
            if q.image {
                return Err(Error::Unsupported(format!(
                    "--image with {}: a vision projector file (mmproj) is not read yet",
                    f.name
                )));
            }
            let text = plan::stored_tensors(&f.tensors, on_cpu);
            (f.cfg.clone(), plan::plan_of(&f.cfg, &text, None, shape))
        }
        None => {
            let p = preset(&q.size)?;
            if q.image && p.vision.is_none() {
                return Err(Error::BadInput(format!(
                    "Gemma 3 {} has no vision tower (4B, 12B and 27B do)",
                    p.name
                )));
            }
            let m = plan::plan(&p.config, p.vision.as_ref(), q.quant, shape);
            (p.config, m)
        }
    };
    let runtime = match q.target {
        Target::Cpu => CPU_RUNTIME_BYTES + if q.tokenizer { GGUF_TOKENIZER_BYTES } else { 0 },
        Target::Cuda => CUDA_CONTEXT_BYTES,
    };
    Ok(Prediction {
        breakdown: Breakdown {
            weights: m.weights,
            vision_weights: m.vision_weights,
            kv_cache: m.kv_cache,
            rope_tables: m.rope_tables,
            workspace: m.workspace,
            runtime,
            load_peak: m.load_peak,
        },
        bytes_per_token: m.weights
            + q.batch.max(1) as u64 * plan::kv_bytes_read_per_token(&cfg, q.ctx, q.kv_dtype),
        max_ctx: cfg.max_position_embeddings,
    })
}

/// The prediction for the case a record ran, at context `ctx`: gemma-fit's plan, or for a case
/// llama.cpp ran, its profile's resident rule ([`engines::llamacpp::resident`]) with the
/// process's baseline as the record measured it before the load. Err: why it is not predicted.
pub fn predict_record(r: &CaseResult, ctx: usize) -> std::result::Result<Breakdown, String> {
    let q = Query {
        ctx,
        ..Query::for_record(r)?
    };
    match r.key.engine {
        crate::result::case::CaseEngine::GemmaFit => {
            predict(&q).map(|p| p.breakdown).map_err(|e| e.to_string())
        }
        crate::result::case::CaseEngine::LlamaCpp {
            n_ubatch,
            flash_attn,
            swa_full,
        } => {
            use engines::llamacpp;
            let p = preset(&q.size).map_err(|e| e.to_string())?;
            let s = llamacpp::Settings {
                ctx,
                seqs: q.batch,
                n_batch: r.key.prefill_chunk,
                n_ubatch,
                swa_full,
                flash_attn,
                kv: q.kv_dtype,
                unified: false,
            };
            let a = llamacpp::allocate(&p.config, &s)?;
            let tensors = plan::text_tensors(&p.config, q.quant, false);
            let res = llamacpp::resident(
                &p.config,
                &s,
                &a,
                &tensors,
                llamacpp::GGUF_HEADER_BYTES,
                r.key.prompt_tokens,
            );
            let baseline = r
                .metrics
                .as_ref()
                .and_then(|m| m.baseline_rss_bytes())
                .ok_or("no baseline reading of llama.cpp's process")?;
            Ok(Breakdown {
                weights: res.file + res.repacked,
                vision_weights: 0,
                kv_cache: res.kv,
                rope_tables: 0,
                workspace: res.compute + res.output,
                runtime: baseline + res.vocab,
                load_peak: 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = crate::units::GIB as f64;

    fn q(size: &str, quant: &str, ctx: usize) -> Query {
        Query {
            size: size.into(),
            quant: quant.parse().unwrap(),
            kv_dtype: KvPair::both(crate::engine::kv_cache::KvDtype::Bf16),
            ctx,
            rows: 512,
            batch: 1,
            image: false,
            target: Target::Cuda,
            tokenizer: false,
            file: None,
        }
    }

    /// The sliding window, from the arithmetic: 27B keeps 128K positions in its 10 global layers
    /// and 1024 in its 52 sliding ones, 16 KV heads × 128 × 2 bytes × K and V per position.
    #[test]
    fn kv_cache_follows_the_sliding_window() {
        let kv = |size: &str, ctx| predict(&q(size, "q4_k_m", ctx)).unwrap().breakdown.kv_cache;
        assert_eq!(
            kv("27b", 131_072),
            (10 * 131_072 + 52 * 1024) * 2 * 16 * 128 * 2
        );
        assert!((kv("27b", 131_072) as f64 / GIB - 10.41).abs() < 0.01);
        assert_eq!(
            kv("4b", 131_072),
            (5 * 131_072 + 29 * 1024) * 2 * 4 * 256 * 2
        );
        assert!((kv("4b", 131_072) as f64 / GIB - 2.61).abs() < 0.01);
        // 1B at 32K: 4 global layers × 32K + 22 × 512 (window 512), one KV head of 256.
        assert_eq!(kv("1b", 32_768), (4 * 32_768 + 22 * 512) * 2 * 256 * 2);
    }

    #[test]
    fn a_prediction_adds_up_and_names_what_it_cannot_do() {
        let p = predict(&q("12b", "q4_k_m", 32_768)).unwrap();
        let b = p.breakdown;
        assert_eq!(
            b.total(),
            b.weights + b.kv_cache + b.rope_tables + b.workspace + b.runtime
        );
        assert!(b.load_peak < b.weights);
        assert_eq!(b.runtime, CUDA_CONTEXT_BYTES);
        assert!(p.bytes_per_token > b.weights);
        assert!(predict(&Query {
            image: true,
            ..q("1b", "q8_0", 4096)
        })
        .unwrap_err()
        .to_string()
        .contains("no vision tower"));
        assert!(predict(&q("2b", "q8_0", 4096))
            .unwrap_err()
            .to_string()
            .contains("unknown Gemma 3 size '2b'"));
        assert!("q3_k".parse::<Format>().is_err());
    }
}
