//! The probes of a case moved through its phases together: the host's peak-RSS mark (reset at
//! each boundary where the kernel allows) and RAPL counter, and the GPU sampler; at the end,
//! their figures per phase into the record's metrics.

use std::collections::BTreeMap;

use crate::probe::host::{self, Rapl};
use crate::probe::sampler::{Phase, Sampler, SamplerReport};
use crate::result::{Metrics, PhaseEnergy, PhaseMemory};

/// Host-side figures per phase.
pub struct HostPhases {
    can_reset: bool,
    rapl: Option<Rapl>,
    current: Option<(Phase, Option<Vec<u64>>)>,
    pub peak: BTreeMap<Phase, u64>,
    cpu_j: BTreeMap<Phase, f64>,
}

impl HostPhases {
    /// The host probes; a note for each that cannot run.
    pub fn new(notes: &mut Vec<String>) -> Self {
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
    pub fn boundary(&mut self, next: Option<Phase>) {
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

/// All the probes of a case.
pub struct Probe {
    pub host: HostPhases,
    pub gpu: Option<Sampler>,
}

impl Probe {
    pub fn phase(&mut self, p: Phase) {
        self.host.boundary(Some(p));
        if let Some(s) = &self.gpu {
            s.set_phase(p);
        }
    }

    pub fn finish(mut self) -> (HostPhases, Option<SamplerReport>) {
        self.host.boundary(None);
        (self.host, self.gpu.map(Sampler::finish))
    }
}

/// Per-phase memory and energy from the host figures and the GPU sampler; `repeats`,
/// `gen_tokens` and `batch` (sequences) turn a phase's energy into J/token.
pub fn fill_phases(
    m: &mut Metrics,
    host: &HostPhases,
    gpu: Option<&SamplerReport>,
    repeats: usize,
    gen_tokens: usize,
    batch: usize,
) {
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
    let runs = (repeats.max(1) * batch.max(1)) as f64; // sequences over all repeats
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
            Phase::Prefill => Some(m.prompt_positions as f64 * runs),
            Phase::Decode => Some(gen_tokens as f64 * runs),
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
