//! `gemma-fit fit`: the fit table of a GPU or a memory size, or measured results beside their
//! predictions.

use anyhow::Result;

use crate::cli::FitArgs;
use crate::engine::kv_cache::{KvDtype, KvPair};
use crate::estimate::catalog::Catalog;
use crate::estimate::engines::{self, llamacpp, Engine};
use crate::estimate::{accuracy, cards, fit, Target};
use crate::probe::host::HostInfo;
use crate::units::gib;

/// `gemma-fit fit`: the fit table of a GPU or memory size, or measured results beside their
/// predictions.
pub fn run(args: &FitArgs) -> Result<()> {
    if !args.results.is_empty() {
        let (records, bad) = crate::result::store::read_all(&args.results)?;
        if bad > 0 {
            eprintln!("warning: {bad} line(s) are not result records; skipped");
        }
        let (compared, skipped) = accuracy::against(&records);
        print!("{}", accuracy::render(&compared, &skipped, args.format)?);
        return Ok(());
    }
    let catalog = Catalog::load(&args.catalog)?;
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
            name: format!("{:.1} GiB", gib(bytes)),
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
        kv_dtypes: match (args.kv_dtype.is_empty(), args.gpus.is_empty()) {
            (false, _) => args.kv_dtype.clone(),
            (true, true) => vec![KvPair::both(KvDtype::Bf16), KvPair::both(KvDtype::Q8_0)],
            (true, false) => vec![KvPair::both(KvDtype::Bf16)],
        },
        ctxs: args.ctx.clone(),
        rows: args.prefill_chunk as usize,
        batch: args.batch,
        image: args.image,
        breakdown: args.breakdown,
    };
    let llamacpp = llamacpp::Settings {
        ctx: 0,
        seqs: args.batch,
        n_batch: args.n_batch,
        n_ubatch: args.ubatch,
        swa_full: args.swa_full,
        flash_attn: args.flash_attn == "on",
        kv: KvPair::both(KvDtype::F16),
        unified: false,
    };
    let options = engines::Options {
        llamacpp,
        gpu_util: args.gpu_util,
        tf_cache: args.tf_cache,
    };
    if !args.gpus.is_empty() {
        let gpus = cards::select(&catalog, &args.gpus)?;
        let c = cards::cards(&req, &gpus, args.engine, &options)?;
        print!("{}", cards::render(&c, &req, args.format)?);
        if let Some(stem) = &args.plot {
            let caption = format!(
                "{}, one CUDA process{}; KV {}; {} sequence(s); {}",
                c.engine,
                if args.engine == Engine::GemmaFit {
                    " (CUDA context estimated)"
                } else {
                    ""
                },
                req.kv_label(),
                req.batch,
                cards::fits_rule(&c.engine),
            );
            for &ctx in &req.ctxs {
                let path = if req.ctxs.len() == 1 {
                    stem.clone()
                } else {
                    let name = stem
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    stem.with_file_name(format!("{name}-{}", crate::units::ctx_label(ctx)))
                };
                crate::report::heatmap::fit_heatmap(&c, ctx, &caption).write(&path)?;
                eprintln!("heatmap: {}.svg, {}.png", path.display(), path.display());
            }
        }
        return Ok(());
    }
    match args.engine {
        Engine::GemmaFit => {}
        Engine::LlamaCpp => {
            let cells = engines::llamacpp_table(&req, &cap, llamacpp)?;
            print!(
                "{}",
                engines::render_llamacpp(&cells, &cap, &llamacpp, args.format)?
            );
            return Ok(());
        }
        other => {
            let figures = engines::figures(other, &req, &cap, &options)?;
            print!("{}", engines::render_figures(&figures, &cap, args.format)?);
            return Ok(());
        }
    }
    let rows = fit::table(&req, &cap)?;
    print!("{}", fit::render(&rows, &req, &cap, args.format)?);
    Ok(())
}
