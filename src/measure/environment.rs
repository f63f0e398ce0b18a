//! The environment fingerprint every record carries: the build (tool version, commit, rustc,
//! candle, features) and the machine (CPU, RAM, OS, and the GPU the case ran on).

use crate::probe::host::HostInfo;
use crate::probe::nvml::GpuReport;
use crate::result::{Environment, GpuFingerprint};

/// The build and machine, with the GPU at `gpu` when the case runs on one.
pub fn environment(gpu: Option<u32>) -> Environment {
    let h = HostInfo::read();
    let gpu = gpu.and_then(|index| {
        let report = GpuReport::read();
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

/// The machine's name as reports and results folders use it: the GPU's for a GPU, else the
/// CPU model's.
pub fn machine_name(gpu: Option<u32>) -> String {
    let env = environment(gpu);
    env.gpu.map(|g| g.name).unwrap_or(env.cpu_model)
}
