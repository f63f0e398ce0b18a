//! `gemma-fit gpus`: the GPU catalog `fit` uses.

use anyhow::Result;

use crate::cli::GpusArgs;
use crate::estimate::catalog::Catalog;
use crate::output::table::Table;

pub fn run(args: &GpusArgs) -> Result<()> {
    let catalog = Catalog::load(&args.catalog)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&catalog.gpus)?);
        return Ok(());
    }
    let mut t = Table::new([
        "GPU",
        "label GB",
        "total GiB (driver)",
        "GB/s",
        "BF16 TFLOP/s",
        "TDP W",
    ]);
    for g in &catalog.gpus {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
        t.row([
            g.name.clone(),
            format!("{}", g.memory_gb),
            format!("{:.2}", g.total_mib as f64 / 1024.0),
            format!("{}", g.bandwidth_gbs),
            opt(g.bf16_tflops),
            opt(g.tdp_w),
        ]);
    }
    println!("{}", t.terminal());
    println!("Sources: gemma-fit gpus --json (fields source, total_source); add cards with --catalog FILE.");
    Ok(())
}
