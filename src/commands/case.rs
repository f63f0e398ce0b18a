//! `gemma-fit case --spec FILE --out FILE` (hidden): one case from its spec as JSON, its record
//! written to FILE. The suite runner and the frontier search run every case this way, each in a
//! process of its own.

use std::io::Read;

use anyhow::{Context, Result};

use crate::cli::CaseArgs;
use crate::engine::load::LoadedModel;
use crate::measure::measure;
use crate::result::case::CaseSpec;
use crate::result::store::write_json_atomically;

pub fn run(args: &CaseArgs) -> Result<()> {
    let text = if args.spec.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the case spec from standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.spec)
            .with_context(|| format!("reading the case spec {}", args.spec.display()))?
    };
    let spec: CaseSpec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a case spec", args.spec.display()))?;
    spec.check()?;
    // candle sizes its thread pool from RAYON_NUM_THREADS when it is first used.
    std::env::set_var("RAYON_NUM_THREADS", spec.threads.to_string());
    let result = measure(&spec, |device, vision| {
        LoadedModel::from_spec(&spec.model, spec.quant, spec.seed, vision, device, false)
    });
    write_json_atomically(&args.out, &result)?;
    super::run::exit_for(&result.outcome)
}
