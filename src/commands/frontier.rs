//! `gemma-fit frontier`: the measured fit frontier, by bisection over the context.

use anyhow::Result;

use crate::cli::FrontierArgs;
use crate::output::outcome;
use crate::suite::child::ChildProcess;
use crate::suite::frontier::{frontier, FrontierOptions, FrontierRow};
use crate::units::mib;

pub fn run(args: &FrontierArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let found = frontier(
        &FrontierOptions {
            models: args.model.clone(),
            quants: args.quant.clone(),
            kv_dtypes: args.kv_dtype.clone(),
            device: args.device,
            memory_limit: args.memory_limit,
            min_ctx: args.min_ctx,
            max_ctx: args.max_ctx,
            step: args.step as usize,
            prompt_tokens: args.prompt_tokens,
            gen_tokens: args.gen,
            timeout: std::time::Duration::from_secs_f64(args.timeout),
            out: args.out.clone(),
            threads: super::threads(args.threads),
            progress: super::show_progress(),
            batch_search: args.batch_search.then_some(args.ctx.unwrap_or(8192)),
            max_batch: args.max_batch,
        },
        &ChildProcess::new()?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found.rows)?);
    } else {
        print_rows(&found.rows);
        println!("probe records in {}", found.results.display());
    }
    if found.not_searched > 0 {
        anyhow::bail!(
            "interrupted: {} of the searches not finished (their probes are recorded)",
            found.not_searched
        );
    }
    Ok(())
}

fn print_rows(rows: &[FrontierRow]) {
    let mib = |b: u64| format!("{:.0} MiB", mib(b));
    for r in rows {
        let what = format!(
            "{} {} kv {}{}",
            r.model,
            r.quant.map_or(String::new(), |q| q.to_string()),
            r.kv_dtype,
            r.memory_limit_bytes
                .map_or(String::new(), |b| format!(", limit {}", mib(b)))
        );
        let peak = r
            .largest_ok_peak_bytes
            .map_or(String::new(), |p| format!(" (peak {})", mib(p)));
        let (ok, failing, predicted) = match r.batch_ctx {
            None => (
                match r.largest_ok_ctx {
                    Some(c) => format!("largest context {c}{peak}"),
                    None => "does not run at the smallest context".into(),
                },
                match (&r.smallest_failing_ctx, &r.failure) {
                    (Some(c), Some(o)) => format!("; {c} fails ({})", outcome::line(o)),
                    _ => "; the largest context tried runs".into(),
                },
                r.predicted_ctx,
            ),
            Some(ctx) => (
                match r.largest_ok_batch {
                    Some(b) => format!("{b} sequences of {ctx} positions run together{peak}"),
                    None => format!("one sequence of {ctx} positions does not run"),
                },
                match (&r.smallest_failing_batch, &r.failure) {
                    (Some(b), Some(o)) => format!("; {b} fail ({})", outcome::line(o)),
                    _ => "; the largest batch tried runs".into(),
                },
                r.predicted_batch,
            ),
        };
        let predicted = predicted.map_or(String::new(), |c| format!("; estimator: {c}"));
        println!("{what}: {ok}{failing}{predicted} [{} probes]", r.probes);
    }
}
