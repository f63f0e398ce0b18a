//! One file per subcommand, each thin: its arguments in, the library's work, the result out
//! through `output/`. `main.rs` parses and dispatches; errors travel up as `anyhow`.

pub mod bandwidth;
pub mod bench;
pub mod case;
pub mod check;
pub mod compare;
pub mod dequantize;
pub mod fetch;
pub mod fit;
pub mod frontier;
pub mod fuzz;
pub mod generate;
pub mod gpus;
pub mod info;
pub mod models;
pub mod quality;
pub mod report;
pub mod run;
pub mod tokenize;

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;

use crate::cli::EngineArgs;
use crate::engine::load::LoadedModel;
use crate::probe::bandwidth::Bandwidth;

/// Whether progress bars are shown (stderr is a terminal).
fn show_progress() -> bool {
    crate::output::progress::enabled()
}

/// `--threads`, or every core.
fn threads(requested: Option<usize>) -> usize {
    requested.unwrap_or_else(candle_core::utils::get_num_threads)
}

/// Loads the model `args` name on `device`; with its vision tower when `vision`.
fn load_model(args: &EngineArgs, vision: bool, device: &Device) -> crate::Result<LoadedModel> {
    LoadedModel::from_spec(
        &args.model,
        args.quant,
        args.seed,
        vision,
        device,
        show_progress(),
    )
}

/// Bandwidth records in `bandwidth.json` files in `dirs`, where there are any.
fn beside_bandwidth(dirs: &[&Path]) -> Result<Vec<Bandwidth>> {
    let files: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join("bandwidth.json"))
        .filter(|p| p.is_file())
        .collect();
    Ok(crate::probe::bandwidth::read(&files)?)
}
