//! `gemma-fit bench`: a suite, each case in a child process, and the report of the results.

use anyhow::Result;

use crate::cli::BenchArgs;
use crate::suite::child::ChildProcess;
use crate::suite::runner::{self, BenchOptions};

pub fn run(args: &BenchArgs) -> Result<()> {
    let (mut suite, origin) = crate::suite::find(&args.suite)?;
    if let (Some(kind), Some(shards)) = (args.emit, args.shards) {
        let mut extra = Vec::new();
        if let Some(limit) = args.memory_limit {
            extra.extend(["--memory-limit".to_string(), format!("{limit}B")]);
        }
        if let Some(t) = args.threads {
            extra.extend(["--threads".to_string(), t.to_string()]);
        }
        if let crate::result::case::CaseEngine::LlamaCpp { .. } = args.peer.case_engine() {
            extra.extend(
                [
                    "--engine",
                    "llama.cpp",
                    "--ubatch",
                    &args.peer.ubatch.to_string(),
                    "--flash-attn",
                    &args.peer.flash_attn,
                ]
                .map(String::from),
            );
            if args.peer.swa_full {
                extra.push("--swa-full".into());
            }
        }
        let job = crate::suite::emit::Job {
            suite: args.suite.clone(),
            name: suite.name.clone(),
            shards,
            extra,
        };
        print!("{}", crate::suite::emit::render(kind, &job)?);
        return Ok(());
    }
    let threads = super::threads(args.threads);
    let all = suite.cases(threads).len();
    suite.engine = args.peer.case_engine();
    let runnable = suite.cases(threads).len();
    if runnable < all {
        eprintln!(
            "{}: {} of the suite's {all} cases skipped (GGUF files on the CPU, text from position 0 only)",
            suite.engine,
            all - runnable
        );
    }
    if args.list {
        println!(
            "# {} ({}): {}",
            suite.name,
            origin.display(),
            suite.description
        );
        for (i, c) in suite.cases(threads).iter().enumerate() {
            if args.shard.is_none_or(|s| s.has(i)) {
                println!(
                    "{} {} kv={} ctx={} prompt={} gen={} chunk={} image={}",
                    c.model,
                    c.quant.map_or("-".into(), |q| q.to_string()),
                    c.kv_dtype,
                    c.ctx.unwrap_or(0),
                    c.prompt_tokens,
                    c.gen_tokens,
                    c.prefill_chunk,
                    c.image.as_ref().map_or("-".into(), |i| i.to_string())
                );
            }
        }
        return Ok(());
    }
    eprintln!(
        "suite {} ({}): {} cases",
        suite.name,
        origin.display(),
        runnable
    );
    let summary = runner::run(
        &BenchOptions {
            suite,
            out: args.out.clone(),
            resume: args.resume,
            shard: args.shard,
            memory_limit: args.memory_limit,
            threads,
            progress: super::show_progress(),
        },
        &ChildProcess::new()?,
    )?;
    println!("{summary}");
    if let (Some(shard), Some(dir)) = (args.shard, summary.results.parent()) {
        // One shard's report would be partial, and shards sharing a folder would write it at
        // once: the report comes from all of them, when all are done.
        println!(
            "shard {}/{} done; when every shard is: gemma-fit report {}",
            shard.index,
            shard.count,
            dir.display()
        );
    } else if let Some(dir) = summary.results.parent() {
        // The report of everything the results file holds, beside it.
        let (records, _) = crate::result::store::read_records(&summary.results)?;
        let pages = crate::report::write(records, &super::beside_bandwidth(&[dir])?, dir)?;
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
