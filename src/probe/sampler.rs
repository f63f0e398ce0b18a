//! A background sampler of device readings, split into the phases of a case.
//!
//! A [`SampleSource`] (NVML in `nvml.rs`, a scripted fake in tests) is read every `interval` on
//! a thread of its own, and once more at every phase boundary from the caller's thread, so each
//! phase has a reading at its start and its end however short it is. A boundary reading closes
//! the old phase and opens the new one (energy per phase is the counter's difference between
//! them). A source that fails stops the sampling and leaves a note; what was collected stays and
//! the case goes on.
//!
//! Sampling can miss a peak shorter than the interval; figures from an allocator's own
//! high-water mark, where there is one, are recorded apart from these.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The phases of a measured case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the model is loaded: what the device already holds.
    Baseline,
    Load,
    /// Untimed passes before the measured repeats.
    Warmup,
    /// The vision tower encoding an image.
    Encode,
    Prefill,
    Decode,
}

/// One reading. Fields a source cannot read are None.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Device memory in use (NVML's v2 call: excludes memory the driver reserves).
    pub used_bytes: Option<u64>,
    /// Memory used by this process and its children on the device.
    pub process_bytes: Option<u64>,
    pub power_mw: Option<u32>,
    /// The device's total-energy counter since driver load.
    pub energy_mj: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    pub utilization_pct: Option<u32>,
    /// Throttle-reason bits (NVML's `nvmlClocksThrottleReasons`); 0 when not throttled.
    pub throttle_reasons: Option<u64>,
}

/// Something that can be read repeatedly.
pub trait SampleSource: Send {
    fn sample(&mut self) -> Result<Sample, String>;
}

/// Peak and mean of one quantity over a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakMean {
    pub peak: f64,
    pub mean: f64,
}

/// What the readings of one phase add up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub phase: Option<Phase>,
    pub samples: usize,
    pub duration_s: f64,
    pub used_bytes: Option<PeakMean>,
    pub process_bytes: Option<PeakMean>,
    pub power_w: Option<PeakMean>,
    /// Energy counter at the phase's end minus at its start.
    pub energy_j: Option<f64>,
    pub sm_clock_mhz: Option<PeakMean>,
    pub mem_clock_mhz: Option<PeakMean>,
    pub temperature_c: Option<PeakMean>,
    pub utilization_pct: Option<PeakMean>,
    /// Every throttle reason seen during the phase, ORed.
    pub throttle_reasons: Option<u64>,
}

/// Running sums of one quantity.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    n: usize,
    sum: f64,
    peak: f64,
}

impl Acc {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.peak = if self.n == 0 { v } else { self.peak.max(v) };
            self.sum += v;
            self.n += 1;
        }
    }

    fn get(&self) -> Option<PeakMean> {
        (self.n > 0).then(|| PeakMean {
            peak: self.peak,
            mean: self.sum / self.n as f64,
        })
    }
}

#[derive(Debug, Default)]
struct PhaseAcc {
    samples: usize,
    started: Option<Instant>,
    ended: Option<Instant>,
    used: Acc,
    process: Acc,
    power: Acc,
    energy_first: Option<u64>,
    energy_last: Option<u64>,
    sm: Acc,
    mem: Acc,
    temp: Acc,
    util: Acc,
    throttle: Option<u64>,
}

impl PhaseAcc {
    fn add(&mut self, s: &Sample, at: Instant) {
        let f = |v: Option<u32>| v.map(f64::from);
        self.samples += 1;
        self.started.get_or_insert(at);
        self.ended = Some(at);
        self.used.add(s.used_bytes.map(|v| v as f64));
        self.process.add(s.process_bytes.map(|v| v as f64));
        self.power.add(s.power_mw.map(|v| v as f64 / 1e3));
        if let Some(e) = s.energy_mj {
            self.energy_first.get_or_insert(e);
            self.energy_last = Some(e);
        }
        self.sm.add(f(s.sm_clock_mhz));
        self.mem.add(f(s.mem_clock_mhz));
        self.temp.add(f(s.temperature_c));
        self.util.add(f(s.utilization_pct));
        if let Some(t) = s.throttle_reasons {
            self.throttle = Some(self.throttle.unwrap_or(0) | t);
        }
    }

    fn stats(&self, phase: Phase) -> PhaseStats {
        PhaseStats {
            phase: Some(phase),
            samples: self.samples,
            duration_s: match (self.started, self.ended) {
                (Some(a), Some(b)) => (b - a).as_secs_f64(),
                _ => 0.0,
            },
            used_bytes: self.used.get(),
            process_bytes: self.process.get(),
            power_w: self.power.get(),
            energy_j: match (self.energy_first, self.energy_last) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e3),
                _ => None,
            },
            sm_clock_mhz: self.sm.get(),
            mem_clock_mhz: self.mem.get(),
            temperature_c: self.temp.get(),
            utilization_pct: self.util.get(),
            throttle_reasons: self.throttle,
        }
    }
}

struct State {
    phase: Phase,
    phases: BTreeMap<Phase, PhaseAcc>,
    error: Option<String>,
    stop: bool,
}

struct Shared {
    source: Mutex<Box<dyn SampleSource>>,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    /// Reads the source once and files the reading under the current phase (and, at a
    /// boundary, under the next one too).
    fn read(&self, next: Option<Phase>) {
        let reading = match self.source.lock() {
            Ok(mut src) => {
                if self.state.lock().is_ok_and(|s| s.error.is_some()) {
                    None
                } else {
                    Some(src.sample())
                }
            }
            Err(_) => Some(Err("sample source panicked".to_string())),
        };
        let at = Instant::now();
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match reading {
            Some(Ok(s)) => {
                let phase = st.phase;
                st.phases.entry(phase).or_default().add(&s, at);
                if let Some(p) = next {
                    st.phases.entry(p).or_default().add(&s, at);
                }
            }
            Some(Err(e)) => st.error = Some(e),
            None => {}
        }
        if let Some(p) = next {
            st.phase = p;
        }
    }
}

/// What a finished sampler hands back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplerReport {
    pub interval_ms: f64,
    pub phases: Vec<PhaseStats>,
    /// Why sampling stopped early, if it did.
    pub error: Option<String>,
}

/// Samples `source` every `interval` on a background thread until [`Sampler::finish`].
pub struct Sampler {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    interval: Duration,
}

impl Sampler {
    /// Starts in `phase`, with a first reading taken before returning.
    pub fn start(source: Box<dyn SampleSource>, interval: Duration, phase: Phase) -> Self {
        let shared = Arc::new(Shared {
            source: Mutex::new(source),
            state: Mutex::new(State {
                phase,
                phases: BTreeMap::new(),
                error: None,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        shared.read(None);
        let bg = shared.clone();
        let thread = std::thread::Builder::new()
            .name("gemma-fit-sampler".into())
            .spawn(move || loop {
                {
                    let Ok(st) = bg.state.lock() else { return };
                    let Ok((st, _)) = bg.wake.wait_timeout_while(st, interval, |s| !s.stop) else {
                        return;
                    };
                    if st.stop || st.error.is_some() {
                        return;
                    }
                }
                bg.read(None);
            })
            .ok();
        Sampler {
            shared,
            thread,
            interval,
        }
    }

    /// Ends the current phase and begins `phase`, with a reading at the boundary.
    pub fn set_phase(&self, phase: Phase) {
        self.shared.read(Some(phase));
    }

    /// Takes a last reading, stops the thread and returns the per-phase figures.
    pub fn finish(mut self) -> SamplerReport {
        self.shared.read(None);
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let st = match self.shared.state.lock() {
            Ok(st) => st,
            Err(p) => p.into_inner(),
        };
        SamplerReport {
            interval_ms: self.interval.as_secs_f64() * 1e3,
            phases: st.phases.iter().map(|(p, a)| a.stats(*p)).collect(),
            error: st.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Replays `used` values (bytes), an energy counter that grows by 1000 mJ per reading, and
    /// fails at reading `fail_at` when given.
    struct Script {
        used: Vec<u64>,
        next: Arc<AtomicUsize>,
        fail_at: Option<usize>,
    }

    impl SampleSource for Script {
        fn sample(&mut self) -> Result<Sample, String> {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if Some(i) == self.fail_at {
                return Err("nvml: GPU is lost".into());
            }
            let used = *self.used.get(i).or(self.used.last()).unwrap_or(&0);
            Ok(Sample {
                used_bytes: Some(used),
                energy_mj: Some(1000 * i as u64),
                throttle_reasons: Some(if i == 2 { 4 } else { 0 }),
                ..Sample::default()
            })
        }
    }

    fn script(used: &[u64], fail_at: Option<usize>) -> (Box<Script>, Arc<AtomicUsize>) {
        let next = Arc::new(AtomicUsize::new(0));
        let s = Script {
            used: used.to_vec(),
            next: next.clone(),
            fail_at,
        };
        (Box::new(s), next)
    }

    fn phase(r: &SamplerReport, p: Phase) -> &PhaseStats {
        r.phases.iter().find(|s| s.phase == Some(p)).unwrap()
    }

    /// With an hour between background readings, only the start, the boundaries and the finish
    /// read the source: readings 0 (baseline start), 1 (baseline→load), 2 (load→prefill),
    /// 3 (finish).
    #[test]
    fn boundaries_close_one_phase_and_open_the_next() {
        let (src, _) = script(&[10, 50, 30, 20], None);
        let s = Sampler::start(src, Duration::from_secs(3600), Phase::Baseline);
        s.set_phase(Phase::Load);
        s.set_phase(Phase::Prefill);
        let r = s.finish();
        assert_eq!(r.error, None);
        let base = phase(&r, Phase::Baseline);
        assert_eq!(base.samples, 2);
        assert_eq!(base.used_bytes.unwrap().peak, 50.0);
        assert_eq!(base.used_bytes.unwrap().mean, 30.0);
        let load = phase(&r, Phase::Load);
        assert_eq!((load.samples, load.used_bytes.unwrap().peak), (2, 50.0));
        assert_eq!(load.energy_j, Some(1.0), "reading 1 to reading 2");
        assert_eq!(load.throttle_reasons, Some(4));
        let prefill = phase(&r, Phase::Prefill);
        assert_eq!(prefill.used_bytes.unwrap().peak, 30.0);
        assert_eq!(
            prefill.throttle_reasons,
            Some(4),
            "reading 2 opens prefill too"
        );
        assert!(r.phases.iter().all(|p| p.phase != Some(Phase::Decode)));
    }

    #[test]
    fn a_failing_source_stops_sampling_and_keeps_what_it_had() {
        let (src, next) = script(&[10, 70, 20, 90], Some(2));
        let s = Sampler::start(src, Duration::from_secs(3600), Phase::Load);
        s.set_phase(Phase::Prefill); // reading 1: 70
        s.set_phase(Phase::Decode); // reading 2 fails
        let r = s.finish(); // not read again
        assert_eq!(r.error.as_deref(), Some("nvml: GPU is lost"));
        assert_eq!(next.load(Ordering::SeqCst), 3);
        assert_eq!(phase(&r, Phase::Load).used_bytes.unwrap().peak, 70.0);
        assert_eq!(phase(&r, Phase::Prefill).samples, 1);
        assert!(r.phases.iter().all(|p| p.phase != Some(Phase::Decode)));
    }

    /// The background thread catches a peak between boundaries.
    #[test]
    fn the_thread_samples_between_boundaries() {
        let mut used = vec![5; 4];
        used.extend([500, 5]);
        let (src, next) = script(&used, None);
        let s = Sampler::start(src, Duration::from_millis(1), Phase::Decode);
        let deadline = Instant::now() + Duration::from_secs(10);
        while next.load(Ordering::SeqCst) < 8 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = s.finish();
        assert_eq!(phase(&r, Phase::Decode).used_bytes.unwrap().peak, 500.0);
    }
}
