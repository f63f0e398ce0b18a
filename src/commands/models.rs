//! `gemma-fit models`: every Gemma 3 size with its shape and parameter counts, and the model
//! files found locally.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use crate::cli::ModelsArgs;
use crate::engine::load::fetch;
use crate::units::{group_digits, mib};

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

pub fn run(args: &ModelsArgs) -> Result<()> {
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
            writeln!(out, "  {} ({:.1} MiB)", p.display(), mib(b))?;
        }
    }
    Ok(())
}
