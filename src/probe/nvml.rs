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
