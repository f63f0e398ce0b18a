//! Measuring one case end to end, into a [`CaseResult`]: environment fingerprint
//! (`environment.rs`), phases (baseline → load → warm-up → per repeat: encode → prefill →
//! decode) with the host's peak RSS and energy and the GPU sampler's readings per phase
//! (`phases.rs`), the passes themselves (`pass.rs`), repeats with their spread. A probe that
//! cannot run adds a note; a case that fails is recorded with its outcome.

pub mod environment;
pub mod llamacpp;
pub mod pass;
pub mod phases;

use std::time::Duration;

use candle_core::{Device, Tensor};

use crate::engine::load::LoadedModel;
use crate::error::{Error, Result};
use crate::output::warnings::Warning;
use crate::probe::host;
use crate::probe::nvml::NvmlSource;
use crate::probe::sampler::{Phase, Sampler};
use crate::result::case::{CaseSpec, FillKv};
use crate::result::{CaseResult, DecodeSteps, Metrics, Outcome, Probes, SCHEMA_VERSION};
use crate::stats::{median, Stat};
use crate::units::gib;

use self::pass::{Pass, PassPhase, PassShape};
use self::phases::{fill_phases, HostPhases, Probe};

/// Measures `spec`, loading the model with `load` (given the device and whether the vision
/// tower is needed) — or, for a case of another engine, running that engine
/// ([`llamacpp::measure`]). Never fails: what went wrong is the record's outcome.
pub fn measure(
    spec: &CaseSpec,
    load: impl FnOnce(&Device, bool) -> Result<LoadedModel>,
) -> CaseResult {
    if spec.engine != crate::result::case::CaseEngine::GemmaFit {
        return llamacpp::measure(spec);
    }
    let started_unix_s = crate::result::unix_now();
    let mut notes = Vec::new();
    let gpu_index = spec.device.gpu_index();
    let environment = environment::environment(gpu_index);
    let mut key = spec.key();
    let mut params = spec.params(&key);

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
                    Duration::from_secs_f64(spec.sample_ms / 1e3),
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
        let device = spec.device.device()?;
        // On a GPU a memory limit is a ballast: the card is filled down to the limit first.
        let ballast = match (gpu_index, spec.memory_limit_bytes) {
            (Some(n), Some(limit)) => Some(gpu_ballast(&device, n, limit)?),
            _ => None,
        };
        probe.phase(Phase::Load);
        let m = load(&device, spec.image.is_some())?;
        params.source = m.source.clone();
        params.model_size = crate::engine::presets::name_of(&m.model.cfg).map(String::from);
        let image_positions = m.vision.as_ref().map_or(0, |v| v.cfg.positions_per_image());
        let needed = spec.needed_positions(image_positions);
        let ctx = spec.ctx.unwrap_or(needed);
        key.ctx = ctx;
        params.ctx = ctx;
        if ctx < needed {
            return Err(Error::BadInput(format!(
                "--ctx {ctx} is smaller than the {needed} positions the case needs (--prompt-tokens {}{} + --gen {})",
                spec.prompt_tokens,
                if image_positions > 0 {
                    format!(" + {image_positions} for the image")
                } else {
                    String::new()
                },
                spec.gen_tokens
            )));
        }
        let pixels = match &spec.image {
            Some(image) => Some(pass::image_input(image, &m)?),
            None => None,
        };
        let shape = PassShape {
            prompt_tokens: spec.prompt_tokens,
            gen_tokens: spec.gen_tokens,
            ctx,
            prefill_chunk: spec.prefill_chunk,
            kv_dtype: spec.kv_dtype,
            fill_depth: match spec.fill_kv {
                FillKv::None => 0,
                FillKv::Synthetic => ctx - needed,
            },
            batch: spec.batch,
        };
        let run = |probe: &mut Probe, record: bool| {
            pass::run_pass(&m, shape, pixels.as_ref(), &mut |p| {
                if record {
                    probe.phase(match p {
                        PassPhase::Encode => Phase::Encode,
                        PassPhase::Prefill => Phase::Prefill,
                        PassPhase::Decode => Phase::Decode,
                    })
                }
            })
        };
        if spec.warmup > 0 {
            probe.phase(Phase::Warmup);
            for _ in 0..spec.warmup {
                run(&mut probe, false)?;
            }
        }
        let mut passes = Vec::with_capacity(spec.repeats.max(1));
        for _ in 0..spec.repeats.max(1) {
            passes.push(run(&mut probe, true)?);
        }
        Ok(metrics(&m, &passes, ballast.as_ref()))
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
            fill_phases(
                &mut m,
                &host,
                probes.gpu.as_ref(),
                spec.repeats,
                spec.gen_tokens,
                spec.batch,
            );
            probes.warnings = spread_warnings(&m)
                .iter()
                .map(ToString::to_string)
                .collect();
            (Outcome::Ok, Some(m))
        }
        Err(e) => (Outcome::of_error(&e), None),
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
        quality: None,
    }
}

/// The metrics of the passes (all of the same shape) over `m`; memory and energy per phase are
/// filled in once the probes have finished.
fn metrics(m: &LoadedModel, passes: &[Pass], ballast: Option<&Tensor>) -> Metrics {
    let stat = |f: &dyn Fn(&Pass) -> f64| Stat::of(&passes.iter().map(f).collect::<Vec<_>>());
    let first = &passes[0];
    Metrics {
        load_s: m.load_s,
        prompt_positions: first.positions,
        fill_depth: first.depth,
        ttft_ms: stat(&|p| p.ttft_s * 1e3),
        ttft_max_ms: (first.batch > 1).then(|| stat(&|p| p.ttft_max_s * 1e3)),
        prefill_tok_per_s: stat(&|p| (p.positions * p.batch) as f64 / p.prefill_s),
        decode_tok_per_s: stat(&|p| {
            let step = median(&p.decode_ms);
            if step > 0.0 {
                p.batch as f64 * 1e3 / step
            } else {
                0.0
            }
        }),
        decode_steps: DecodeSteps::of(passes.iter().flat_map(|p| p.decode_ms.clone()).collect()),
        image_encode_ms: first
            .encode_s
            .is_some()
            .then(|| stat(&|p| p.encode_s.unwrap_or(0.0) * 1e3)),
        kv_bytes: first.kv_bytes,
        rope_bytes: first.rope_bytes,
        weights: m.model.weight_bytes,
        vision_weights: m.vision.as_ref().map(|v| v.weight_bytes),
        peak_rss_bytes: None,
        ballast_bytes: ballast.map(|t| t.elem_count() as u64),
        memory: Vec::new(),
        energy: Vec::new(),
        engine_buffers: Default::default(),
    }
}

/// Fills GPU `index` down to `limit` bytes of total memory with a tensor the caller holds for
/// the whole case: a stand-in for a smaller card (the CUDA context, created with the device, is
/// already in use, as it would be on that card).
fn gpu_ballast(device: &Device, index: u32, limit: u64) -> Result<Tensor> {
    let total = crate::probe::nvml::total_memory_bytes(index).map_err(|e| {
        Error::Unsupported(format!("a memory limit on a GPU needs NVML's total: {e}"))
    })?;
    if limit >= total {
        return Err(Error::BadInput(format!(
            "the memory limit ({:.2} GiB) is not below the card's {:.2} GiB",
            gib(limit),
            gib(total)
        )));
    }
    let bytes = total - limit;
    Tensor::zeros(bytes as usize, candle_core::DType::U8, device).map_err(|e| {
        Error::Unsupported(format!(
            "could not allocate the {:.2} GiB ballast for a {:.2} GiB limit: {}",
            gib(bytes),
            gib(limit),
            Error::Candle(e)
        ))
    })
}

/// Warnings for figures whose spread between repeats is too wide to trust.
pub fn spread_warnings(m: &Metrics) -> Vec<Warning> {
    [
        Warning::unstable("prefill tok/s", &m.prefill_tok_per_s),
        Warning::unstable("decode tok/s", &m.decode_tok_per_s),
        Warning::unstable("time to first token", &m.ttft_ms),
        m.image_encode_ms
            .as_ref()
            .and_then(|e| Warning::unstable("image encode time", e)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_spread_is_warned_about() {
        let m = Metrics {
            prefill_tok_per_s: Stat::of(&[100.0, 101.0, 99.0]),
            decode_tok_per_s: Stat::of(&[50.0, 80.0, 20.0]),
            ..Metrics::default()
        };
        let w = spread_warnings(&m);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].to_string().starts_with("decode tok/s varies"), "{w:?}");
    }
}
