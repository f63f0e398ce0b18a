//! The result record of one measured case, schema v1 (documented in `docs/result-schema.md`).
//!
//! Everything later (suites, the estimator, reports, the regression gate) reads these records.
//! They are plain JSON through serde: fields this version does not know are ignored when read,
//! and fields added later are optional, so old and new records stay readable.

use serde::{Deserialize, Serialize};

use crate::engine::load::weights::WeightBytes;
use crate::probe::sampler::{Phase, SamplerReport};

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
}

/// The fields that identify a case across runs and machines (never anything about the machine:
/// that is [`Environment`]). Suites, `--resume`, `compare` and `fit --results` match on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CaseKey {
    /// Gemma 3 size ("270m" … "27b"), when the model's shape is one of the presets.
    pub size: Option<String>,
    /// Where the weights come from: "default", "synthetic", "gguf:FILE", "hf-dir:FOLDER",
    /// "hf:ORG/NAME" (file and folder by name, not path, so machines agree).
    pub weights: String,
    /// `--quant` (synthetic or quantized at load); None for a GGUF file's own formats.
    pub quant: Option<String>,
    pub kv_dtype: String,
    pub ctx: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_chunk: usize,
    pub threads: usize,
    /// "cpu" or "cuda".
    pub device_kind: String,
    /// "synthetic", an image file's name, or None.
    pub image: Option<String>,
    /// A memory cap the case ran under, if any.
    pub memory_limit_bytes: Option<u64>,
    /// How the context before the prompt was reached: None (nothing before the prompt) or
    /// "synthetic" (the KV cache filled with synthetic keys/values to ctx - prompt - image - gen).
    #[serde(default)]
    pub fill_kv: Option<String>,
}

impl CaseKey {
    /// A stable one-line id, e.g. `4b|synthetic|q4_k|f32|ctx4096|p64|g8|c512|t2|cpu|-|-`.
    pub fn id(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        format!(
            "{}|{}|{}|{}|ctx{}|p{}|g{}|c{}|t{}|{}|{}|{}{}",
            opt(&self.size),
            self.weights,
            opt(&self.quant),
            self.kv_dtype,
            self.ctx,
            self.prompt_tokens,
            self.gen_tokens,
            self.prefill_chunk,
            self.threads,
            self.device_kind,
            opt(&self.image),
            self.memory_limit_bytes
                .map_or("-".into(), |b| b.to_string()),
            self.fill_kv
                .as_ref()
                .map_or(String::new(), |f| format!("|fill-{f}"))
        )
    }
}

/// How the case was run (the key's fields plus the details that do not identify it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseParams {
    /// `--model` as given.
    pub model: String,
    /// What was loaded, e.g. "synthetic:4b (q4_k)" or a file path.
    pub source: String,
    /// The preset the model's shape matches ("270m" … "27b"), when known.
    #[serde(default)]
    pub model_size: Option<String>,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub ctx: usize,
    pub prefill_chunk: usize,
    pub kv_dtype: String,
    pub threads: usize,
    /// "cpu" or "cuda:N".
    pub device: String,
    #[serde(default)]
    pub image: Option<String>,
    pub repeats: usize,
    pub warmup: usize,
    pub seed: u64,
    #[serde(default)]
    pub fill_kv: Option<String>,
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
    /// Classifies an error message: out-of-memory conditions are `Oom`, the rest `Error`.
    pub fn from_error(message: String) -> Self {
        let m = message.to_ascii_lowercase();
        let oom = m.contains("out of memory")
            || m.contains("cuda_error_out_of_memory")
            || m.contains("memory allocation of")
            || (m.contains("needs") && m.contains("available"));
        if oom {
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
    /// The memory the case measured at its peak: the GPU process peak (NVML) for GPU cases,
    /// the process's peak RSS on the CPU.
    pub fn peak_bytes(&self) -> Option<u64> {
        let m = self.metrics.as_ref()?;
        if self.key.device_kind == "cpu" {
            m.peak_rss_bytes
        } else {
            m.memory
                .iter()
                .filter_map(|p| p.gpu_process_peak_bytes)
                .max()
        }
    }
}

/// The records of several results files, and how many lines did not parse.
pub fn read_all(paths: &[std::path::PathBuf]) -> crate::Result<(Vec<CaseResult>, usize)> {
    let mut all = Vec::new();
    let mut bad = 0;
    for p in paths {
        let (mut r, b) = read_records(p)?;
        all.append(&mut r);
        bad += b;
    }
    Ok((all, bad))
}

/// The records of a results file: JSON lines (`bench`), or one JSON record (`run --out`).
/// Lines that do not parse (one cut short by a kill) are skipped and counted; a file with no
/// record at all is an error.
pub fn read_records(path: &std::path::Path) -> crate::Result<(Vec<CaseResult>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    if let Ok(one) = serde_json::from_str::<CaseResult>(&text) {
        return Ok((vec![one], 0));
    }
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<CaseResult>(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    if records.is_empty() {
        return Err(crate::Error::Unsupported(format!(
            "{}: no result records (expected JSON lines from `bench` or a record from `run --out`)",
            path.display()
        )));
    }
    Ok((records, bad))
}

/// Merges records (e.g. concatenated result files from several machines or shards): one per
/// case key, the newest (`started_unix_s`; on a tie, the later in the input), in input order.
pub fn newest_per_key(records: Vec<CaseResult>) -> Vec<CaseResult> {
    let mut best: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let id = r.key.id();
        match best.get(&id) {
            Some(&j) if records[j].started_unix_s > r.started_unix_s => {}
            _ => {
                best.insert(id, i);
            }
        }
    }
    let keep: std::collections::HashSet<usize> = best.into_values().collect();
    records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, r)| r)
        .collect()
}

/// The spread of a figure over the repeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    /// Every repeat's value, in order (absent in records written before they were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn of(samples: &[f64]) -> Self {
        let n = samples.len();
        if n == 0 {
            return Stat::default();
        }
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stat {
            n,
            median: percentile(samples, 50.0),
            mean,
            stddev: var.sqrt(),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            samples: samples.to_vec(),
        }
    }

    /// Standard deviation relative to the median (0 when undefined).
    pub fn relative_spread(&self) -> f64 {
        if self.median.abs() > 0.0 {
            self.stddev / self.median.abs()
        } else {
            0.0
        }
    }
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
            median_ms: percentile(&samples_ms, 50.0),
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
    /// Image encode plus prefill, until the first token's logits.
    pub ttft_ms: Stat,
    pub prefill_tok_per_s: Stat,
    /// 1000 / the median decode step of each repeat.
    pub decode_tok_per_s: Stat,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CaseKey {
        CaseKey {
            size: Some("4b".into()),
            weights: "synthetic".into(),
            quant: Some("q4_k".into()),
            kv_dtype: "f32".into(),
            ctx: 4096,
            prompt_tokens: 64,
            gen_tokens: 8,
            prefill_chunk: 512,
            threads: 2,
            device_kind: "cpu".into(),
            image: None,
            memory_limit_bytes: None,
            fill_kv: None,
        }
    }

    #[test]
    fn key_id_is_stable_and_distinguishes_cases() {
        let k = key();
        assert_eq!(
            k.id(),
            "4b|synthetic|q4_k|f32|ctx4096|p64|g8|c512|t2|cpu|-|-"
        );
        let mut other = key();
        other.image = Some("synthetic".into());
        assert_ne!(k.id(), other.id());
    }

    #[test]
    fn merged_files_keep_the_newest_record_per_case() {
        let rec = |key: CaseKey, t: u64, outcome: Outcome| CaseResult {
            schema_version: 1,
            started_unix_s: t,
            params: CaseParams {
                model: "m".into(),
                source: "m".into(),
                model_size: None,
                prompt_tokens: key.prompt_tokens,
                gen_tokens: key.gen_tokens,
                ctx: key.ctx,
                prefill_chunk: key.prefill_chunk,
                kv_dtype: key.kv_dtype.clone(),
                threads: key.threads,
                device: "cpu".into(),
                image: None,
                repeats: 1,
                warmup: 0,
                seed: 0,
                fill_kv: None,
            },
            key,
            environment: Environment {
                tool_version: String::new(),
                git_commit: String::new(),
                rustc_version: String::new(),
                candle_version: String::new(),
                features: Vec::new(),
                cpu_model: String::new(),
                physical_cores: None,
                logical_cores: 1,
                ram_total_bytes: 0,
                os: String::new(),
                kernel: String::new(),
                gpu: None,
            },
            outcome,
            metrics: None,
            probes: Probes::default(),
        };
        let mut other = key();
        other.ctx = 8192;
        let err = || Outcome::Error {
            message: "x".into(),
        };
        let merged = newest_per_key(vec![
            rec(key(), 10, err()),
            rec(other.clone(), 5, Outcome::Ok),
            rec(key(), 20, Outcome::Ok),
            rec(other, 3, err()),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].key.ctx, merged[0].started_unix_s), (8192, 5));
        assert_eq!(
            (merged[1].key.ctx, merged[1].outcome.clone()),
            (4096, Outcome::Ok)
        );
    }

    #[test]
    fn stat_spread() {
        let s = Stat::of(&[10.0, 12.0, 11.0, 9.0, 13.0]);
        assert_eq!(
            (s.n, s.median, s.mean, s.min, s.max),
            (5, 11.0, 11.0, 9.0, 13.0)
        );
        assert!((s.stddev - 2.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(&[4.0]).stddev, 0.0);
        assert_eq!(Stat::of(&[]).n, 0);
    }

    #[test]
    fn outcomes_classify_out_of_memory() {
        let oom = Outcome::from_error(
            "unsupported: synthetic:27b in f32 needs 100.6 GiB of weights; this machine has 22.0 GiB available".into(),
        );
        assert!(matches!(oom, Outcome::Oom { .. }));
        assert!(matches!(
            Outcome::from_error("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into()),
            Outcome::Oom { .. }
        ));
        assert!(matches!(
            Outcome::from_error("tensor 'x' is missing".into()),
            Outcome::Error { .. }
        ));
        let v = serde_json::to_value(Outcome::Timeout { limit_s: 60.0 }).unwrap();
        assert_eq!(v, serde_json::json!({"status": "timeout", "limit_s": 60.0}));
    }
}
