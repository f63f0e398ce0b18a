//! `gemma-fit quality`: perplexity over a text, and KL divergence against a reference logits
//! file (`quality/`).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::cli::QualityArgs;
use crate::engine::load::LoadedModel;
use crate::error::{quote, Error};
use crate::quality::logits_file::{mismatch, scored_per_chunk, Header, LogitsFile, ModelShape};
use crate::quality::{evaluate, summarize, Comparison, Quality, Save, DEFAULT_TEXT};
use crate::result::case::CaseSpec;
use crate::result::store::write_json_atomically;
use crate::result::{CaseResult, Outcome, Probes, SCHEMA_VERSION};

/// The text to evaluate: its name for records, its sha256, and the text.
struct Text {
    name: String,
    sha256: String,
    body: String,
}

fn text(args: &QualityArgs) -> crate::Result<Text> {
    let (name, body) = match &args.text {
        None => ("default".to_string(), DEFAULT_TEXT.to_string()),
        Some(p) => (
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            std::fs::read_to_string(p).map_err(|e| {
                Error::BadInput(format!("--text {}: cannot read it: {e}", p.display()))
            })?,
        ),
    };
    Ok(Text {
        name,
        sha256: hex::encode(Sha256::digest(body.as_bytes())),
        body,
    })
}

fn shape_of(m: &LoadedModel) -> ModelShape {
    let c = &m.model.cfg;
    ModelShape {
        vocab: c.vocab_size,
        layers: c.num_layers,
        hidden: c.hidden_size,
    }
}

/// The token ids to evaluate: the text's through the model's tokenizer (BOS first), or the
/// reference's where the model has no tokenizer; a reference must hold the same ids (a prefix of
/// the text's, when it was made over fewer chunks).
fn tokens(
    m: &LoadedModel,
    text: &Text,
    args: &QualityArgs,
    reference: Option<&LogitsFile>,
) -> crate::Result<Vec<u32>> {
    let Some(tokenizer) = &m.tokenizer else {
        return match (reference, &args.text) {
            (Some(r), None) => Ok(r.tokens.clone()),
            (Some(_), Some(_)) => Err(Error::BadInput(format!(
                "{} has no tokenizer, so --text cannot be read; without --text the token ids come from --against",
                m.source
            ))),
            (None, _) => Err(Error::BadInput(format!(
                "{} has no tokenizer: give --against FILE, whose token ids are evaluated",
                m.source
            ))),
        };
    };
    let ours = tokenizer.encode(&text.body, true);
    let Some(r) = reference else {
        return Ok(ours);
    };
    let path = args.against.as_deref().unwrap_or(Path::new("-"));
    if r.header.text_sha256 != text.sha256 {
        return Err(mismatch(
            path,
            format!(
                "it was made from the text {} (sha256 {}…), not {} (pass --text with the file it was made from)",
                quote(&r.header.text),
                quote(r.header.text_sha256.get(..12).unwrap_or("")).trim_matches('\''),
                quote(&text.name)
            ),
        ));
    }
    if let Some(i) = (0..r.tokens.len()).find(|&i| ours.get(i) != Some(&r.tokens[i])) {
        return Err(mismatch(
            path,
            format!(
                "its token ids differ from this model's tokenizer at token {i} ({} here, {} there): it was made with another tokenizer",
                ours.get(i).map_or("none".into(), |t| t.to_string()),
                r.tokens[i]
            ),
        ));
    }
    Ok(r.tokens.clone())
}

fn other_ctx(asked: usize, made: usize) -> Error {
    Error::BadInput(format!(
        "--ctx {asked}, but the reference was made with chunks of {made} (leave --ctx out to use its)"
    ))
}

pub fn run(args: &QualityArgs) -> Result<()> {
    let started = Instant::now();
    let reference = args.against.as_deref().map(LogitsFile::read).transpose()?;
    let ctx = match (args.ctx, &reference) {
        (Some(c), Some(r)) if c != r.header.ctx => return Err(other_ctx(c, r.header.ctx).into()),
        (Some(c), _) => c,
        (None, Some(r)) => r.header.ctx,
        (None, None) => 512,
    };
    let mut text = text(args)?;
    let device = args.engine.device.device()?;
    let m = super::load_model(&args.engine, false, &device)?;
    if ctx > m.model.cfg.max_position_embeddings {
        return Err(Error::BadInput(format!(
            "--ctx {ctx} is past the model's context of {}",
            m.model.cfg.max_position_embeddings
        ))
        .into());
    }
    if let Some(r) = &reference {
        let (theirs, ours) = (r.header.shape, shape_of(&m));
        if theirs != ours {
            return Err(mismatch(
                args.against.as_deref().unwrap_or(Path::new("-")),
                format!(
                    "it is from another model ({}: {theirs}; this one: {ours})",
                    quote(&r.header.model)
                ),
            )
            .into());
        }
    }
    let tokens = tokens(&m, &text, args, reference.as_ref())?;
    if let (None, Some(r)) = (&m.tokenizer, &reference) {
        // The reference's token ids were evaluated: its text is this run's text.
        text.name = r.header.text.clone();
        text.sha256 = r.header.text_sha256.clone();
    }
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(Error::BadInput(format!(
            "the text has {} tokens, fewer than one chunk of --ctx {ctx} (give a longer --text or a smaller --ctx)",
            tokens.len()
        ))
        .into());
    }
    let chunks = args.chunks.map_or(available, |c| c.min(available));
    let positions = chunks * scored_per_chunk(ctx);
    let save = args.save_logits.as_ref().map(|_| Save {
        top_k: args.top_k.min(m.model.cfg.vocab_size),
        full_rows: args.full_rows.min(positions),
    });
    let bar = crate::output::progress::steps(chunks, "chunks", super::show_progress());
    let _ = crate::probe::host::reset_peak_rss();
    let eval = evaluate(
        &m.model,
        args.engine.kv(),
        &tokens,
        ctx,
        chunks,
        args.engine.prefill_chunk as usize,
        reference.as_ref(),
        save.as_ref(),
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let against_name = args.against.as_deref().map(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let (ppl, comparison) = summarize(
        &eval.positions,
        ctx,
        reference.as_ref().zip(against_name.as_deref()),
        args.worst,
    )?;
    if let (Some(path), Some(save)) = (&args.save_logits, &save) {
        LogitsFile {
            header: Header {
                producer: format!("gemma-fit {}", env!("CARGO_PKG_VERSION")),
                model: m.source.clone(),
                shape: shape_of(&m),
                kv: args.engine.kv().to_string(),
                text: text.name.clone(),
                text_sha256: text.sha256.clone(),
                ctx,
                top_k: save.top_k,
                n_tokens: chunks * ctx,
                positions,
                full_rows: save.full_rows,
            },
            tokens: tokens[..chunks * ctx].to_vec(),
            records: eval.records,
            full: eval.full,
        }
        .write(path)?;
    }
    let quality = Quality {
        text: text.name.clone(),
        text_sha256: text.sha256.clone(),
        tokens: tokens.len(),
        ctx,
        chunks,
        positions,
        ppl,
        weight_bytes: m.model.weight_bytes.resident_weight_bytes,
        tensor_types: tensor_types(args, &m),
        peak_rss_bytes: crate::probe::host::peak_rss_bytes(),
        seconds,
        against: comparison,
    };
    let record = record(args, &m, quality);
    if let Some(out) = &args.out {
        write_json_atomically(out, &record)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print(&record, &m, args);
    }
    Ok(())
}

/// Matrices per stored type: as `--quant` makes them (fallbacks included), or as the file holds
/// them.
fn tensor_types(args: &QualityArgs, m: &LoadedModel) -> std::collections::BTreeMap<String, usize> {
    let cfg = &m.model.cfg;
    let mut types = std::collections::BTreeMap::new();
    match args.engine.quant {
        Some(format) => {
            for (name, shape) in crate::engine::decoder::tensor_shapes(cfg) {
                if shape.len() > 1 {
                    let t = format.tensor_type(&name, &shape, cfg.num_layers);
                    *types.entry(format!("{t:?}")).or_insert(0) += 1;
                }
            }
        }
        None => {
            if let Ok(check) = crate::engine::load::check(&args.engine.model, false) {
                types = check.types.into_iter().map(|(t, (n, _))| (t, n)).collect();
                let norms = crate::engine::decoder::tensor_shapes(cfg)
                    .iter()
                    .filter(|(_, s)| s.len() == 1)
                    .count();
                if let Some(n) = types.get_mut("F32") {
                    *n = n.saturating_sub(norms);
                }
                types.retain(|_, n| *n > 0);
            }
        }
    }
    types
}

/// The result record of an evaluation: the case key of the model, quantization, KV type and
/// chunk length (prompt = the tokens evaluated, nothing generated), and the quality block.
fn record(args: &QualityArgs, m: &LoadedModel, quality: Quality) -> CaseResult {
    let spec = CaseSpec {
        model: args.engine.model.clone(),
        quant: args.engine.quant,
        seed: args.engine.seed,
        device: args.engine.device,
        threads: super::threads(args.engine.threads),
        prompt_tokens: quality.chunks * quality.ctx,
        gen_tokens: 0,
        ctx: Some(quality.ctx),
        prefill_chunk: args.engine.prefill_chunk as usize,
        kv_dtype: args.engine.kv(),
        image: None,
        fill_kv: Default::default(),
        repeats: 1,
        warmup: 0,
        sample_ms: 10.0,
        memory_limit_bytes: None,
        batch: 1,
        engine: Default::default(),
    };
    let key = spec.key();
    let mut params = spec.params(&key);
    params.source = m.source.clone();
    CaseResult {
        schema_version: SCHEMA_VERSION,
        started_unix_s: crate::result::unix_now(),
        key,
        params,
        environment: crate::measure::environment::environment(None),
        outcome: Outcome::Ok,
        metrics: None,
        probes: Probes::default(),
        quality: Some(quality),
    }
}

fn print(r: &CaseResult, m: &LoadedModel, args: &QualityArgs) {
    let Some(q) = &r.quality else { return };
    let piece = |id: u32| match &m.tokenizer {
        Some(t) => quote(&t.decode(&[id])),
        None => format!("#{id}"),
    };
    println!("model            {} (kv {})", m.source, args.engine.kv());
    println!(
        "text             {} ({} tokens): {} chunks of {}, {} positions scored",
        q.text, q.tokens, q.chunks, q.ctx, q.positions
    );
    println!("perplexity       {:.4} ± {:.4}", q.ppl.value, q.ppl.unc);
    let types: Vec<String> = q
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    println!(
        "weights          {:.1} MiB resident ({})",
        crate::units::mib(q.weight_bytes),
        types.join(", ")
    );
    if let Some(c) = &q.against {
        print_comparison(c, &piece);
    }
    println!(
        "time             {:.1} s{}",
        q.seconds,
        q.peak_rss_bytes.map_or(String::new(), |b| format!(
            ", peak RSS {:.1} MiB",
            crate::units::mib(b)
        ))
    );
}

/// Decimals that show four significant digits of `v`.
fn decimals(v: f64) -> usize {
    (3 - v.abs().max(1e-12).log10().floor() as i32).clamp(0, 12) as usize
}

fn print_comparison(c: &Comparison, piece: &dyn Fn(u32) -> String) {
    let est = |e: &crate::quality::Est| {
        let d = decimals(e.value);
        format!("{:.d$} ± {:.d$}", e.value, e.unc)
    };
    println!(
        "against          {} ({}, {}, kv {}, top {})",
        quote(&c.file),
        quote(&c.producer),
        quote(&c.model),
        quote(&c.kv),
        c.top_k
    );
    println!("  its perplexity {}", est(&c.ref_ppl));
    println!("  PPL ratio      {} (ours / reference)", est(&c.ppl_ratio));
    println!("  mean KL        {} nats", est(&c.kl_mean));
    println!("  median KL      {} nats", est(&c.kl_median));
    println!("  p99 KL         {} nats", est(&c.kl_p99));
    println!(
        "  max KL         {:.d$} nats",
        c.kl_max,
        d = decimals(c.kl_max)
    );
    println!("  top-1 agree    {} %", est(&c.top1_pct));
    println!(
        "  mean Δp        {} % (p of the next token, ours − reference)",
        est(&c.dp_mean_pct)
    );
    println!("  RMS Δp         {} %", est(&c.dp_rms_pct));
    if let Some(k) = &c.top_k_check {
        println!(
            "  top-{} KL check: over {} positions with full rows, |top-K KL − full KL| at most {:.2e} nats (mean {:.2e})",
            c.top_k, k.positions, k.max_abs_diff, k.mean_abs_diff
        );
    }
    if !c.worst.is_empty() {
        println!("  largest KL at (token index, chunk): next token, top token ours / reference");
        for w in &c.worst {
            println!(
                "    {:>7} (chunk {}): KL {:.4}, next {}, top {} / {}",
                w.token_index,
                w.chunk,
                w.kl,
                piece(w.target),
                piece(w.ours),
                piece(w.reference)
            );
        }
    }
}
