//! Measuring one case end to end, into a [`CaseResult`]: environment fingerprint, phases
//! (baseline → load → warm-up → per repeat: encode → prefill → decode), host peak RSS per phase
//! from the kernel's high-water mark (reset at each boundary), CPU energy from RAPL and GPU
//! readings from the NVML sampler where they can be had, repeats with their spread. A probe that
//! cannot run adds a note; a case that fails is recorded with its outcome.

pub mod pass;

use std::collections::BTreeMap;
use std::time::Duration;

use candle_core::Device;

use self::pass::{LoadedModel, PassPhase};
use crate::error::Result;
use crate::probe::host::{self, HostInfo, Rapl};
use crate::probe::nvml::NvmlSource;
use crate::probe::sampler::{Phase, Sampler, SamplerReport};
use crate::result::{
    CaseKey, CaseParams, CaseResult, DecodeSteps, Environment, GpuFingerprint, Metrics, Outcome,
    PhaseEnergy, PhaseMemory, Probes, Stat, SCHEMA_VERSION,
};

/// Relative standard deviation between repeats above which a figure gets a warning.
pub const SPREAD_WARNING: f64 = 0.10;

/// What to measure.
#[derive(Debug, Clone)]
pub struct CaseRequest {
    /// `--model` as given.
    pub model: String,
    pub quant: Option<String>,
    pub seed: u64,
    /// "cpu" or "cuda:N".
    pub device: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// None: prompt + image + generated tokens.
    pub ctx: Option<usize>,
    pub prefill_chunk: usize,
    pub kv_dtype: String,
    pub image: Option<String>,
    pub repeats: usize,
    pub warmup: usize,
    pub sample_interval: Duration,
    /// A cap on resident memory the case runs under (enforced by the suite runner).
    pub memory_limit_bytes: Option<u64>,
    /// Fill the KV cache with synthetic keys/values up to ctx - (prompt + image + generated)
    /// positions instead of prefilling them, so the prompt and decode run at that depth.
    pub fill_kv: bool,
}

/// A parsed `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device '{s}' (use cpu or cuda:N)")),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "cpu",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }

    /// The candle device; CUDA only in builds with the `cuda` feature.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => Ok(Device::new_cuda(*n)?),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(crate::Error::Unsupported(
                "this gemma-fit was built without CUDA support; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit)".into(),
            )),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The build and machine, with the GPU at `gpu` when the case runs on one.
pub fn environment(gpu: Option<u32>) -> Environment {
    let h = HostInfo::read();
    let gpu = gpu.and_then(|index| {
        let report = crate::probe::nvml::GpuReport::read();
        let g = report.gpus.into_iter().find(|g| g.index == index)?;
        Some(GpuFingerprint {
            index,
            name: g.name,
            uuid: g.uuid,
            driver_version: report.driver_version,
            cuda_version: report.cuda_version,
            memory_total_bytes: g.memory_total_bytes,
            power_limit_w: g.power_limit_w,
        })
    });
    let mut features = Vec::new();
    if cfg!(feature = "cuda") {
        features.push("cuda".to_string());
    }
    Environment {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("GEMMA_FIT_GIT_COMMIT").into(),
        rustc_version: env!("GEMMA_FIT_RUSTC_VERSION").into(),
        candle_version: env!("GEMMA_FIT_CANDLE_VERSION").into(),
        features,
        cpu_model: h.cpu_model,
        physical_cores: h.physical_cores,
        logical_cores: h.logical_cores,
        ram_total_bytes: h.ram_total_bytes,
        os: h.os,
        kernel: h.kernel,
        gpu,
    }
}

/// The last component of a path (what identifies a file across machines).
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The key's `weights` field for a `--model` spec: kind plus file or folder name, no path.
fn weights_id(model: &str) -> String {
    match model.parse::<crate::engine::load::spec::ModelSpec>() {
        Ok(crate::engine::load::spec::ModelSpec::Default) => "default".into(),
        Ok(crate::engine::load::spec::ModelSpec::Synthetic(_)) => "synthetic".into(),
        Ok(crate::engine::load::spec::ModelSpec::Hub(id)) => format!("hf:{id}"),
        Ok(crate::engine::load::spec::ModelSpec::HfDir(p)) => format!("hf-dir:{}", file_name(&p)),
        Ok(crate::engine::load::spec::ModelSpec::Gguf(p)) => format!("gguf:{}", file_name(&p)),
        Err(_) => model.to_string(),
    }
}

/// The preset a loaded model's shape is, if any.
fn size_of(m: &LoadedModel) -> Option<String> {
    let c = &m.model.cfg;
    crate::engine::presets::all()
        .into_iter()
        .find(|p| {
            let q = &p.config;
            (
                q.hidden_size,
                q.num_layers,
                q.num_heads,
                q.num_kv_heads,
                q.intermediate_size,
            ) == (
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.num_kv_heads,
                c.intermediate_size,
            )
        })
        .map(|p| p.name.to_string())
}

/// Host-side figures per phase: the peak-RSS mark (reset at each boundary where the kernel
/// allows) and the RAPL counter.
struct HostPhases {
    can_reset: bool,
    rapl: Option<Rapl>,
    current: Option<(Phase, Option<Vec<u64>>)>,
    peak: BTreeMap<Phase, u64>,
    cpu_j: BTreeMap<Phase, f64>,
}

impl HostPhases {
    fn new(notes: &mut Vec<String>) -> Self {
        let can_reset = match host::reset_peak_rss() {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!("{e}; per-phase peaks are the peak so far"));
                false
            }
        };
        let rapl = match Rapl::open() {
            Ok(r) => Some(r),
            Err(e) => {
                notes.push(format!("{e}: no CPU energy figures"));
                None
            }
        };
        HostPhases {
            can_reset,
            rapl,
            current: None,
            peak: BTreeMap::new(),
            cpu_j: BTreeMap::new(),
        }
    }

    /// Closes the current phase (its peak RSS and energy) and opens `next`.
    fn boundary(&mut self, next: Option<Phase>) {
        let energy = self.rapl.as_ref().and_then(|r| r.read().ok());
        if let Some((phase, start)) = self.current.take() {
            if let Some(rss) = host::peak_rss_bytes() {
                let e = self.peak.entry(phase).or_insert(0);
                *e = (*e).max(rss);
            }
            if let (Some(rapl), Some(a), Some(b)) = (&self.rapl, start, &energy) {
                *self.cpu_j.entry(phase).or_insert(0.0) += rapl.joules_between(&a, b);
            }
        }
        if let Some(p) = next {
            if self.can_reset {
                let _ = host::reset_peak_rss();
            }
            self.current = Some((p, energy));
        }
    }
}

/// All the probes of a case, moved through its phases together.
struct Probe {
    host: HostPhases,
    gpu: Option<Sampler>,
}

impl Probe {
    fn phase(&mut self, p: Phase) {
        self.host.boundary(Some(p));
        if let Some(s) = &self.gpu {
            s.set_phase(p);
        }
    }

    fn finish(mut self) -> (HostPhases, Option<SamplerReport>) {
        self.host.boundary(None);
        (self.host, self.gpu.map(Sampler::finish))
    }
}

/// The case key of a request, before anything runs: what suites and `--resume` match on.
/// (`ctx` left to its default counts an image as Gemma 3's 258 positions; `measure` corrects it
/// for a model whose tower makes a different number.)
pub fn request_key(req: &CaseRequest) -> CaseKey {
    let device_spec = DeviceSpec::parse(&req.device);
    let default_image_positions = req.image.as_ref().map_or(0, |_| {
        pass::image_positions(&crate::engine::vision::VisionConfig::gemma3())
    });
    CaseKey {
        size: match req.model.parse() {
            Ok(crate::engine::load::spec::ModelSpec::Synthetic(s)) => Some(s),
            Ok(crate::engine::load::spec::ModelSpec::Default) => Some("270m".into()),
            _ => None,
        },
        weights: weights_id(&req.model),
        quant: req.quant.clone(),
        kv_dtype: req.kv_dtype.to_ascii_lowercase(),
        ctx: req
            .ctx
            .unwrap_or(req.prompt_tokens + default_image_positions + req.gen_tokens),
        prompt_tokens: req.prompt_tokens,
        gen_tokens: req.gen_tokens,
        prefill_chunk: req.prefill_chunk,
        threads: candle_core::utils::get_num_threads(),
        device_kind: device_spec
            .as_ref()
            .map_or_else(|_| req.device.clone(), |d| d.kind().into()),
        image: req.image.as_ref().map(|i| {
            if i == "synthetic" {
                i.clone()
            } else {
                file_name(std::path::Path::new(i))
            }
        }),
        memory_limit_bytes: req.memory_limit_bytes,
        fill_kv: req.fill_kv.then(|| "synthetic".to_string()),
    }
}

fn request_params(req: &CaseRequest, key: &CaseKey) -> CaseParams {
    CaseParams {
        model: req.model.clone(),
        source: req.model.clone(),
        model_size: key.size.clone(),
        prompt_tokens: req.prompt_tokens,
        gen_tokens: req.gen_tokens,
        ctx: key.ctx,
        prefill_chunk: req.prefill_chunk,
        kv_dtype: key.kv_dtype.clone(),
        threads: key.threads,
        device: req.device.clone(),
        image: req.image.clone(),
        repeats: req.repeats.max(1),
        warmup: req.warmup,
        seed: req.seed,
        fill_kv: req.fill_kv.then(|| "synthetic".to_string()),
    }
}

/// The record of a case that produced none itself (it crashed, was killed, or timed out):
/// its key, parameters, this machine, and the outcome.
pub fn unrun(req: &CaseRequest, outcome: Outcome, note: Option<String>) -> CaseResult {
    let gpu_index = match DeviceSpec::parse(&req.device) {
        Ok(DeviceSpec::Cuda(n)) => Some(n as u32),
        _ => None,
    };
    let key = request_key(req);
    CaseResult {
        schema_version: SCHEMA_VERSION,
        started_unix_s: unix_now(),
        params: request_params(req, &key),
        key,
        environment: environment(gpu_index),
        outcome,
        metrics: None,
        probes: Probes {
            notes: note.into_iter().collect(),
            ..Probes::default()
        },
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Measures `req`, loading the model with `load` (given the device and whether the vision tower
/// is needed). Never fails: what went wrong is the record's outcome.
pub fn measure(
    req: &CaseRequest,
    load: impl FnOnce(&Device, bool) -> Result<LoadedModel>,
) -> CaseResult {
    let started_unix_s = unix_now();
    let mut notes = Vec::new();
    let device_spec = DeviceSpec::parse(&req.device);
    let gpu_index = match device_spec {
        Ok(DeviceSpec::Cuda(n)) => Some(n as u32),
        _ => None,
    };
    let environment = environment(gpu_index);
    let mut key = request_key(req);
    let mut params = request_params(req, &key);

    // Probes, from before the load.
    let mut probe = Probe {
        host: HostPhases::new(&mut notes),
        gpu: None,
    };
    match gpu_index {
        Some(n) => match NvmlSource::open(n) {
            Ok(src) => {
                probe.gpu = Some(Sampler::start(
                    Box::new(src),
                    req.sample_interval,
                    Phase::Baseline,
                ));
                notes.push(
                    "gpu: device figures are sampled every interval_ms and may miss shorter peaks; candle's CUDA allocator exposes no high-water mark".into(),
                );
            }
            Err(e) => notes.push(e),
        },
        None => notes.push(match NvmlSource::open(0) {
            Ok(_) => "gpu: not sampled (the case runs on the CPU)".into(),
            Err(e) => format!("{e}; the case runs on the CPU"),
        }),
    }
    // (The GPU sampler took its first reading in Baseline as it started.)
    probe.host.boundary(Some(Phase::Baseline));

    let outcome_and_metrics = (|| -> Result<Metrics> {
        let kv_dtype = pass::parse_kv_dtype(&req.kv_dtype).map_err(crate::Error::Unsupported)?;
        let device = device_spec
            .clone()
            .map_err(crate::Error::Unsupported)?
            .device()?;
        // On a GPU a memory limit is a ballast: the card is filled down to the limit first.
        let ballast = match (gpu_index, req.memory_limit_bytes) {
            (Some(n), Some(limit)) => Some(gpu_ballast(&device, n, limit)?),
            _ => None,
        };
        probe.phase(Phase::Load);
        let m = load(&device, req.image.is_some())?;
        params.source = m.source.clone();
        params.model_size = size_of(&m);
        let image_positions = m
            .vision
            .as_ref()
            .map_or(0, |v| pass::image_positions(&v.cfg));
        let needed = req.prompt_tokens + image_positions + req.gen_tokens;
        let ctx = req.ctx.unwrap_or(needed);
        key.ctx = ctx;
        params.ctx = ctx;
        if ctx < needed {
            return Err(crate::Error::Unsupported(format!(
                "--ctx {ctx} is smaller than the {needed} positions the case needs (--prompt-tokens {}{} + --gen {})",
                req.prompt_tokens,
                if image_positions > 0 {
                    format!(" + {image_positions} for the image")
                } else {
                    String::new()
                },
                req.gen_tokens
            )));
        }
        let pixels = match &req.image {
            Some(spec) => Some(pass::image_input(spec, &m)?),
            None => None,
        };
        let pass = |probe: &mut Probe, record: bool| {
            pass::run_pass(
                &m,
                pass::PassShape {
                    prompt_tokens: req.prompt_tokens,
                    gen_tokens: req.gen_tokens,
                    ctx,
                    prefill_chunk: req.prefill_chunk,
                    kv_dtype,
                    fill_depth: if req.fill_kv { ctx - needed } else { 0 },
                },
                pixels.as_ref(),
                &mut |p| {
                    if record {
                        probe.phase(match p {
                            PassPhase::Encode => Phase::Encode,
                            PassPhase::Prefill => Phase::Prefill,
                            PassPhase::Decode => Phase::Decode,
                        })
                    }
                },
            )
        };
        if req.warmup > 0 {
            probe.phase(Phase::Warmup);
            for _ in 0..req.warmup {
                pass(&mut probe, false)?;
            }
        }
        let mut passes = Vec::with_capacity(req.repeats.max(1));
        for _ in 0..req.repeats.max(1) {
            passes.push(pass(&mut probe, true)?);
        }
        let stat =
            |f: &dyn Fn(&pass::Pass) -> f64| Stat::of(&passes.iter().map(f).collect::<Vec<_>>());
        let first = &passes[0];
        Ok(Metrics {
            load_s: m.load_s,
            prompt_positions: first.positions,
            fill_depth: first.depth,
            ttft_ms: stat(&|p| p.ttft_s * 1e3),
            prefill_tok_per_s: stat(&|p| p.positions as f64 / p.prefill_s),
            decode_tok_per_s: stat(&|p| {
                let median = crate::result::percentile(&p.decode_ms, 50.0);
                if median > 0.0 {
                    1e3 / median
                } else {
                    0.0
                }
            }),
            decode_steps: DecodeSteps::of(
                passes.iter().flat_map(|p| p.decode_ms.clone()).collect(),
            ),
            image_encode_ms: first
                .encode_s
                .is_some()
                .then(|| stat(&|p| p.encode_s.unwrap_or(0.0) * 1e3)),
            kv_bytes: first.kv_bytes,
            rope_bytes: first.rope_bytes,
            weights: m.model.weight_bytes,
            vision_weights: m.vision.as_ref().map(|v| v.weight_bytes),
            peak_rss_bytes: None,
            ballast_bytes: ballast.as_ref().map(|t| t.elem_count() as u64),
            memory: Vec::new(),
            energy: Vec::new(),
        })
    })();

    let (host, gpu) = probe.finish();
    let mut probes = Probes {
        gpu,
        notes,
        warnings: Vec::new(),
    };
    if let Some(g) = probes.gpu.as_ref().and_then(|g| g.error.clone()) {
        probes
            .notes
            .push(format!("gpu sampling stopped early: {g}"));
    }
    let (outcome, metrics) = match outcome_and_metrics {
        Ok(mut m) => {
            m.peak_rss_bytes = host::peak_rss_bytes()
                .map(|now| host.peak.values().copied().max().unwrap_or(now).max(now));
            fill_phases(&mut m, &host, probes.gpu.as_ref(), req);
            probes.warnings = spread_warnings(&m);
            (Outcome::Ok, Some(m))
        }
        Err(e) => (Outcome::from_error(e.to_string()), None),
    };
    CaseResult {
        schema_version: SCHEMA_VERSION,
        started_unix_s,
        key,
        params,
        environment,
        outcome,
        metrics,
        probes,
    }
}

/// Per-phase memory and energy from the host figures and the GPU sampler.
fn fill_phases(m: &mut Metrics, host: &HostPhases, gpu: Option<&SamplerReport>, req: &CaseRequest) {
    let gpu_phase = |p: Phase| gpu.and_then(|g| g.phases.iter().find(|s| s.phase == Some(p)));
    let mut phases: Vec<Phase> = host.peak.keys().copied().collect();
    for g in gpu.map(|g| g.phases.as_slice()).unwrap_or(&[]) {
        if let Some(p) = g.phase {
            if !phases.contains(&p) {
                phases.push(p);
            }
        }
    }
    phases.sort();
    let repeats = req.repeats.max(1) as f64;
    let ballast = m.ballast_bytes.unwrap_or(0);
    for p in phases {
        let g = gpu_phase(p);
        m.memory.push(PhaseMemory {
            phase: Some(p),
            host_peak_rss_bytes: host.peak.get(&p).copied(),
            gpu_used_peak_bytes: g
                .and_then(|g| g.used_bytes)
                .map(|v| (v.peak as u64).saturating_sub(ballast)),
            gpu_process_peak_bytes: g
                .and_then(|g| g.process_bytes)
                .map(|v| (v.peak as u64).saturating_sub(ballast)),
        });
        let gpu_j = g.and_then(|g| g.energy_j);
        let cpu_j = host.cpu_j.get(&p).copied();
        let tokens = match p {
            Phase::Prefill => Some(m.prompt_positions as f64 * repeats),
            Phase::Decode => Some(req.gen_tokens as f64 * repeats),
            _ => None,
        };
        let total = match (gpu_j, cpu_j) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        if gpu_j.is_some() || cpu_j.is_some() {
            m.energy.push(PhaseEnergy {
                phase: Some(p),
                gpu_j,
                cpu_j,
                j_per_token: match (total, tokens) {
                    (Some(j), Some(t)) if t > 0.0 => Some(j / t),
                    _ => None,
                },
            });
        }
    }
}

/// Fills GPU `index` down to `limit` bytes of total memory with a tensor the caller holds for
/// the whole case: a stand-in for a smaller card (the CUDA context, created with the device, is
/// already in use, as it would be on that card).
fn gpu_ballast(device: &Device, index: u32, limit: u64) -> Result<candle_core::Tensor> {
    let total = crate::probe::nvml::total_memory_bytes(index).map_err(|e| {
        crate::Error::Unsupported(format!("a memory limit on a GPU needs NVML's total: {e}"))
    })?;
    if limit >= total {
        return Err(crate::Error::Unsupported(format!(
            "the memory limit ({:.2} GiB) is not below the card's {:.2} GiB",
            limit as f64 / GIB,
            total as f64 / GIB
        )));
    }
    let bytes = (total - limit) as usize;
    candle_core::Tensor::zeros(bytes, candle_core::DType::U8, device).map_err(|e| {
        crate::Error::Unsupported(format!(
            "could not allocate the {:.2} GiB ballast for a {:.2} GiB limit: {e}",
            bytes as f64 / GIB,
            limit as f64 / GIB
        ))
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// Warnings for figures whose spread between repeats is too wide to trust (as hyperfine warns).
pub fn spread_warnings(m: &Metrics) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, s: &Stat| {
        if s.n >= 2 && s.relative_spread() > SPREAD_WARNING {
            out.push(format!(
                "{name} varies by ±{:.0}% between repeats (stddev {:.3} around a median of {:.3}; more than {:.0}%): \
                 the figure is not stable; close other programs, add --warmup, raise --repeats",
                100.0 * s.relative_spread(),
                s.stddev,
                s.median,
                100.0 * SPREAD_WARNING
            ));
        }
    };
    check("prefill tok/s", &m.prefill_tok_per_s);
    check("decode tok/s", &m.decode_tok_per_s);
    check("time to first token", &m.ttft_ms);
    if let Some(e) = &m.image_encode_ms {
        check("image encode time", e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("CUDA:1"), Ok(DeviceSpec::Cuda(1)));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert!(DeviceSpec::parse("metal")
            .unwrap_err()
            .contains("cpu or cuda:N"));
        #[cfg(not(feature = "cuda"))]
        assert!(DeviceSpec::Cuda(0)
            .device()
            .unwrap_err()
            .to_string()
            .contains("--features cuda"));
    }

    #[test]
    fn wide_spread_is_warned_about() {
        let m = Metrics {
            prefill_tok_per_s: Stat::of(&[100.0, 101.0, 99.0]),
            decode_tok_per_s: Stat::of(&[50.0, 80.0, 20.0]),
            ..Metrics::default()
        };
        let w = spread_warnings(&m);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("decode tok/s varies"), "{w:?}");
    }
}
