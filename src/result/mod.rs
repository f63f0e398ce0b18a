//! The result record of one measured case, schema v1 (documented in `docs/result-schema.md`).
//!
//! Everything later (suites, the estimator, reports, the regression gate) reads these records.
//! They are plain JSON through serde: fields this version does not know are ignored when read,
//! and fields added later are optional, so old and new records stay readable.

use serde::{Deserialize, Serialize};

pub mod case;
pub mod quality;
pub mod store;

use crate::engine::load::weights::WeightBytes;
use crate::error::Error;
use crate::probe::sampler::{Phase, SamplerReport};
use crate::stats::{median, percentile, Stat};

use self::case::{CaseKey, CaseParams, CaseSpec};

pub const SCHEMA_VERSION: u32 = 1;

/// One case: what was run, where, how it ended, what was measured, and what the probes said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub schema_version: u32,
    /// Seconds since the Unix epoch when the case started.
    pub started_unix_s: u64,
    pub key: CaseKey,
    pub params: CaseParams,
    pub environment: Environment,
    pub outcome: Outcome,
    /// Present when the case ran (also for some failures, with what was measured before them).
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub probes: Probes,
    /// A quality evaluation (`gemma-fit quality`): perplexity, and KL divergence against a
    /// reference. Such a record has no speed metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<quality::Quality>,
}

/// The machine and build the case ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub tool_version: String,
    pub git_commit: String,
    pub rustc_version: String,
    pub candle_version: String,
    /// Cargo features compiled in (e.g. "cuda").
    pub features: Vec<String>,
    pub cpu_model: String,
    pub physical_cores: Option<usize>,
    pub logical_cores: usize,
    pub ram_total_bytes: u64,
    pub os: String,
    pub kernel: String,
    /// The GPU the case ran on, when it ran on one.
    #[serde(default)]
    pub gpu: Option<GpuFingerprint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuFingerprint {
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub power_limit_w: Option<f64>,
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Did not fit: refused before allocating, or the allocator failed.
    Oom {
        message: String,
    },
    Timeout {
        limit_s: f64,
    },
    Error {
        message: String,
    },
}

impl Outcome {
    /// The outcome of a case that failed with `e`: out of memory by its type (our refusal, or a
    /// device allocator's error), anything else an error. (A child process that aborts or is
    /// killed leaves no error value: the runner judges it by its exit status and stderr.)
    pub fn of_error(e: &Error) -> Self {
        let message = e.to_string();
        if e.is_out_of_memory() {
            Outcome::Oom { message }
        } else {
            Outcome::Error { message }
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

impl CaseResult {
    /// The record of a case that produced none itself (it crashed, was killed, timed out, or
    /// never started): its key, parameters, the machine, and the outcome.
    pub fn unrun(
        spec: &CaseSpec,
        outcome: Outcome,
        environment: Environment,
        note: Option<String>,
    ) -> Self {
        let key = spec.key();
        CaseResult {
            schema_version: SCHEMA_VERSION,
            started_unix_s: unix_now(),
            params: spec.params(&key),
            key,
            environment,
            outcome,
            metrics: None,
            probes: Probes {
                notes: note.into_iter().collect(),
                ..Probes::default()
            },
            quality: None,
        }
    }

    /// The memory the case measured at its peak: the GPU process peak (NVML) for GPU cases,
    /// the process's peak RSS on the CPU.
    pub fn peak_bytes(&self) -> Option<u64> {
        let m = self.metrics.as_ref()?;
        if self.key.device_kind == crate::engine::device::DeviceKind::Cpu {
            m.peak_rss_bytes
        } else {
            m.memory
                .iter()
                .filter_map(|p| p.gpu_process_peak_bytes)
                .max()
        }
    }
}

/// Per-token decode step times, pooled over the repeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeSteps {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub samples_ms: Vec<f64>,
}

impl DecodeSteps {
    pub fn of(samples_ms: Vec<f64>) -> Self {
        DecodeSteps {
            median_ms: median(&samples_ms),
            p90_ms: percentile(&samples_ms, 90.0),
            p99_ms: percentile(&samples_ms, 99.0),
            samples_ms,
        }
    }
}

/// Peak memory of one phase, per probe. Which figure is which: `host_peak_rss_bytes` is the
/// kernel's own high-water mark (VmHWM, exact); `gpu_*` are sampled (may miss short peaks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseMemory {
    pub phase: Option<Phase>,
    pub host_peak_rss_bytes: Option<u64>,
    /// GPU figures leave out the ballast of a memory limit (`Metrics::ballast_bytes`).
    pub gpu_used_peak_bytes: Option<u64>,
    pub gpu_process_peak_bytes: Option<u64>,
}

/// Energy of one phase, per probe, and per token where the phase makes tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseEnergy {
    pub phase: Option<Phase>,
    pub gpu_j: Option<f64>,
    pub cpu_j: Option<f64>,
    /// (GPU + CPU where read) energy divided by the phase's tokens (prefill: prompt positions;
    /// decode: generated tokens).
    pub j_per_token: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub load_s: f64,
    /// Positions prefilled per repeat (text plus the image's).
    pub prompt_positions: usize,
    /// Positions filled with synthetic keys/values before the prompt (`fill_kv`), 0 otherwise.
    #[serde(default)]
    pub fill_depth: usize,
    /// Image encode plus prefill, until the first token's logits; with several sequences
    /// (`key.batch`), the median over them, each from the start of the pass.
    pub ttft_ms: Stat,
    /// With several sequences: when the last one got its first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_max_ms: Option<Stat>,
    /// Prompt positions of every sequence over the prefill's time.
    pub prefill_tok_per_s: Stat,
    /// Tokens of every sequence per second: batch × 1000 / the median decode step of each repeat.
    pub decode_tok_per_s: Stat,
    /// The decode steps of every repeat. Each step gives every sequence its next token, so these
    /// are each sequence's times per output token.
    pub decode_steps: DecodeSteps,
    #[serde(default)]
    pub image_encode_ms: Option<Stat>,
    pub kv_bytes: u64,
    pub rope_bytes: u64,
    /// Text model weights (file and resident).
    pub weights: WeightBytes,
    /// Vision tower and projector, when loaded.
    #[serde(default)]
    pub vision_weights: Option<WeightBytes>,
    /// Peak resident memory of the whole process (VmHWM at the end).
    pub peak_rss_bytes: Option<u64>,
    /// GPU memory held as ballast under a memory limit (a smaller card's stand-in), already taken
    /// out of the GPU figures in `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ballast_bytes: Option<u64>,
    pub memory: Vec<PhaseMemory>,
    pub energy: Vec<PhaseEnergy>,
    /// The buffers an engine other than gemma-fit reported allocating, by name (llama.cpp's log:
    /// "model CPU_Mapped", "model CPU_REPACK", "KV global", "KV SWA", "output", "compute"), bytes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub engine_buffers: std::collections::BTreeMap<String, u64>,
}

impl Metrics {
    /// The host's peak RSS before the model loaded (the Baseline phase), where it was read.
    pub fn baseline_rss_bytes(&self) -> Option<u64> {
        self.memory
            .iter()
            .find(|p| p.phase == Some(crate::probe::sampler::Phase::Baseline))
            .and_then(|p| p.host_peak_rss_bytes)
    }
}

/// What each probe did, and why a probe did not run (it never fails the case).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probes {
    /// The GPU sampler's per-phase readings, when it ran.
    #[serde(default)]
    pub gpu: Option<SamplerReport>,
    /// One line per probe that could not run or stopped early, e.g.
    /// "nvml: libnvidia-ml.so not found (no NVIDIA driver installed)".
    #[serde(default)]
    pub notes: Vec<String>,
    /// Warnings about the figures themselves (a wide spread between repeats).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_classified_by_type() {
        let oom = Outcome::of_error(&Error::OutOfMemory(
            "synthetic:27b in f32 needs 100.6 GiB of weights; this machine has 22.0 GiB available"
                .into(),
        ));
        assert_eq!(
            oom,
            Outcome::Oom {
                message: "synthetic:27b in f32 needs 100.6 GiB of weights; this machine has 22.0 GiB available".into()
            }
        );
        // Words alone do not make an out-of-memory.
        assert!(matches!(
            Outcome::of_error(&Error::BadInput("needs 3 GiB, 2 available".into())),
            Outcome::Error { .. }
        ));
        assert!(matches!(
            Outcome::of_error(&Error::ContextFull {
                used: 8,
                requested: 1,
                capacity: 8
            }),
            Outcome::Error { message } if message.starts_with("context full")
        ));
        let v = serde_json::to_value(Outcome::Timeout { limit_s: 60.0 }).unwrap();
        assert_eq!(v, serde_json::json!({"status": "timeout", "limit_s": 60.0}));
    }
}
