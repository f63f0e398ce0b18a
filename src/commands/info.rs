//! `gemma-fit info`: this machine, and its NVIDIA GPUs or why none were found.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use crate::cli::InfoArgs;
use crate::probe::host::HostInfo;
use crate::probe::nvml::GpuReport;
use crate::units::gib;

pub fn run(args: &InfoArgs) -> Result<()> {
    let host = HostInfo::read();
    let gpus = GpuReport::read();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"host": host, "gpu": gpus}))?
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "CPU:     {}", host.cpu_model)?;
    writeln!(
        out,
        "Cores:   {} logical{}",
        host.logical_cores,
        host.physical_cores
            .map(|p| format!(", {p} physical"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "RAM:     {:.1} GiB total, {:.1} GiB available",
        gib(host.ram_total_bytes),
        gib(host.ram_available_bytes)
    )?;
    writeln!(
        out,
        "OS:      {} ({}, kernel {})",
        host.os, host.arch, host.kernel
    )?;
    match &gpus.unavailable {
        Some(why) => writeln!(out, "GPU:     none found ({why})")?,
        None => {
            writeln!(
                out,
                "Driver:  {} (CUDA {})",
                gpus.driver_version.as_deref().unwrap_or("?"),
                gpus.cuda_version.as_deref().unwrap_or("?")
            )?;
            for g in &gpus.gpus {
                writeln!(
                    out,
                    "GPU {}:   {}, {} memory{}",
                    g.index,
                    g.name,
                    g.memory_total_bytes
                        .map(|b| format!("{:.1} GiB", gib(b)))
                        .unwrap_or_else(|| "unknown".into()),
                    g.power_limit_w
                        .map(|w| format!(", power limit {w:.0} W"))
                        .unwrap_or_default()
                )?;
            }
        }
    }
    Ok(())
}
