//! NVIDIA GPUs through NVML. Every failure becomes a one-line reason, never a panic: machines
//! without NVIDIA drivers are the common case.

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub power_limit_w: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuReport {
    pub driver_version: Option<String>,
    /// CUDA version the driver supports, e.g. "13.0".
    pub cuda_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    /// Why no GPU is listed, when none is.
    pub unavailable: Option<String>,
}

/// Explains an NVML error in words a user can act on.
pub fn explain(err: &NvmlError) -> String {
    match err {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "nvml: libnvidia-ml.so not found (no NVIDIA driver installed)".into()
        }
        NvmlError::DriverNotLoaded => "nvml: the NVIDIA kernel driver is not loaded".into(),
        NvmlError::NoPermission => "nvml: no permission to query the NVIDIA driver".into(),
        other => format!("nvml: {other}"),
    }
}

impl GpuReport {
    pub fn read() -> Self {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => return Self::none(explain(&e)),
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => return Self::none(explain(&e)),
        };
        let driver_version = nvml.sys_driver_version().ok();
        let cuda_version = nvml
            .sys_cuda_driver_version()
            .ok()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
        let mut gpus = Vec::new();
        for index in 0..count {
            let Ok(dev) = nvml.device_by_index(index) else {
                continue;
            };
            let mem = dev.memory_info().ok();
            gpus.push(GpuInfo {
                index,
                name: dev
                    .name()
                    .unwrap_or_else(|e| format!("unknown ({})", explain(&e))),
                uuid: dev.uuid().ok(),
                memory_total_bytes: mem.as_ref().map(|m| m.total),
                memory_used_bytes: mem.as_ref().map(|m| m.used),
                power_limit_w: dev
                    .power_management_limit()
                    .ok()
                    .map(|mw| mw as f64 / 1000.0),
            });
        }
        let unavailable = gpus
            .is_empty()
            .then(|| "nvml: the driver is loaded but reports no NVIDIA device".to_string());
        GpuReport {
            driver_version,
            cuda_version,
            gpus,
            unavailable,
        }
    }

    fn none(reason: String) -> Self {
        GpuReport {
            driver_version: None,
            cuda_version: None,
            gpus: Vec::new(),
            unavailable: Some(reason),
        }
    }
}

/// Total memory of GPU `index` as the driver reports it.
pub fn total_memory_bytes(index: u32) -> Result<u64, String> {
    let nvml = Nvml::init().map_err(|e| explain(&e))?;
    let dev = nvml.device_by_index(index).map_err(|e| explain(&e))?;
    Ok(dev.memory_info().map_err(|e| explain(&e))?.total)
}

/// NVML readings of one GPU as a [`SampleSource`] for the phase sampler.
pub struct NvmlSource {
    nvml: Nvml,
    index: u32,
    pid: u32,
}

impl NvmlSource {
    /// Opens NVML for GPU `index`; the error says why it cannot (no driver, no such GPU).
    pub fn open(index: u32) -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| explain(&e))?;
        nvml.device_by_index(index).map_err(|e| explain(&e))?;
        Ok(NvmlSource {
            nvml,
            index,
            pid: std::process::id(),
        })
    }
}

/// Whether `pid` is this process or one of its descendants (from /proc; false where unreadable).
fn is_ours(pid: u32, me: u32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == me {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            return false;
        };
        // The parent pid is the second field after the parenthesized command name.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        else {
            return false;
        };
        if ppid <= 1 {
            return false;
        }
        p = ppid;
    }
    false
}

impl crate::probe::sampler::SampleSource for NvmlSource {
    fn sample(&mut self) -> Result<crate::probe::sampler::Sample, String> {
        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
        use nvml_wrapper::enums::device::UsedGpuMemory;
        let dev = self
            .nvml
            .device_by_index(self.index)
            .map_err(|e| explain(&e))?;
        // Device memory is the one reading a sample cannot do without.
        let used = dev.memory_info().map_err(|e| explain(&e))?.used;
        let process_bytes = dev.running_compute_processes().ok().map(|procs| {
            procs
                .iter()
                .filter(|p| is_ours(p.pid, self.pid))
                .map(|p| match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => b,
                    UsedGpuMemory::Unavailable => 0,
                })
                .sum()
        });
        Ok(crate::probe::sampler::Sample {
            used_bytes: Some(used),
            process_bytes,
            power_mw: dev.power_usage().ok(),
            energy_mj: dev.total_energy_consumption().ok(),
            sm_clock_mhz: dev.clock_info(Clock::SM).ok(),
            mem_clock_mhz: dev.clock_info(Clock::Memory).ok(),
            temperature_c: dev.temperature(TemperatureSensor::Gpu).ok(),
            utilization_pct: dev.utilization_rates().ok().map(|u| u.gpu),
            throttle_reasons: dev.current_throttle_reasons().ok().map(|r| r.bits()),
        })
    }
}
