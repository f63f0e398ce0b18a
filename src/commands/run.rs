//! `gemma-fit run`: one measured case, printed (or as its record with --json) and written with
//! --out.

use anyhow::Result;

use crate::cli::RunArgs;
use crate::measure::measure;
use crate::output::outcome;
use crate::result::case::{CaseEngine, CaseSpec};
use crate::result::store::write_json_atomically;
use crate::result::{CaseResult, Outcome};
use crate::stats::Stat;
use crate::units::mib;

/// The case `run`'s options describe.
pub fn spec(args: &RunArgs) -> CaseSpec {
    CaseSpec {
        model: args.engine.model.clone(),
        quant: args.engine.quant,
        seed: args.engine.seed,
        device: args.engine.device,
        threads: super::threads(args.engine.threads),
        prompt_tokens: args.prompt_tokens as usize,
        gen_tokens: args.gen,
        ctx: args.ctx,
        prefill_chunk: args.engine.prefill_chunk as usize,
        kv_dtype: args.engine.kv(),
        image: args.image.clone(),
        fill_kv: args.fill_kv,
        repeats: args.repeats as usize,
        warmup: args.warmup,
        sample_ms: args.sample_ms,
        memory_limit_bytes: args.memory_limit_bytes,
        batch: args.batch,
        engine: args.peer.case_engine(),
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let spec = spec(args);
    spec.check()?;
    let result = measure(&spec, |device, vision| {
        super::load_model(&args.engine, vision, device)
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
    exit_for(&result.outcome)
}

/// Ok for a finished case; otherwise the error the command ends with.
pub fn exit_for(o: &Outcome) -> Result<()> {
    match o {
        Outcome::Ok => Ok(()),
        Outcome::Oom { message } => anyhow::bail!("does not fit: {message}"),
        Outcome::Error { message } => anyhow::bail!("{message}"),
        Outcome::Timeout { limit_s } => anyhow::bail!("timed out after {limit_s} s"),
    }
}

/// The human-readable form of a case record.
fn print_case(r: &CaseResult) {
    let p = &r.params;
    println!("model            {}", p.source);
    if r.key.engine != CaseEngine::GemmaFit {
        println!("engine           {}", r.key.engine);
    }
    println!(
        "case             {}prompt {} tokens, decode {}, ctx {}, chunk {}, kv {}, {} threads, {}{}",
        match p.batch {
            1 => String::new(),
            b => format!("{b} sequences, each "),
        },
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
        println!("outcome          {}", outcome::line(&r.outcome));
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
    match &m.ttft_max_ms {
        None => println!("time to 1st tok  {} ms", stat(&m.ttft_ms, 1)),
        Some(max) => println!(
            "time to 1st tok  median {} ms, last sequence {} ms (from when all arrive)",
            stat(&m.ttft_ms, 1),
            stat(max, 1)
        ),
    }
    println!("prefill          {} tok/s", stat(&m.prefill_tok_per_s, 1));
    println!(
        "decode           {} tok/s{} (per token: median {:.2} ms, p90 {:.2}, p99 {:.2})",
        stat(&m.decode_tok_per_s, 1),
        if p.batch > 1 {
            " over all sequences"
        } else {
            ""
        },
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
