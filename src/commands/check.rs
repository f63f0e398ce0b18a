//! `gemma-fit check`: a model file or folder checked without loading its weights.

use anyhow::Result;
use serde_json::json;

use crate::cli::CheckArgs;
use crate::engine::load;
use crate::units::mib;

pub fn run(args: &CheckArgs) -> Result<()> {
    let c = load::check(&args.model, super::show_progress())?;
    let cfg = &c.config;
    let tensors: usize = c.types.values().map(|(n, _)| n).sum();
    let bytes: u64 = c.types.values().map(|(_, b)| b).sum();
    if args.json {
        let types: serde_json::Map<String, serde_json::Value> = c
            .types
            .iter()
            .map(|(t, (n, b))| (t.clone(), json!({"tensors": n, "bytes": b})))
            .collect();
        println!(
            "{}",
            json!({
                "model": c.source, "ok": true, "layers": cfg.num_layers,
                "hidden_size": cfg.hidden_size, "heads": cfg.num_heads,
                "kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
                "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
                "tokenizer_pieces": c.vocabulary, "context": cfg.max_position_embeddings,
                "vision": c.vision.is_some(), "tensors": tensors, "weight_bytes": bytes,
                "types": types,
            })
        );
        return Ok(());
    }
    println!("ok: {}", c.source);
    println!(
        "  Gemma 3: {} layers, hidden {}, {} heads ({} KV) of {}, feed-forward {}, vocabulary {}, context {}{}",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.max_position_embeddings,
        if c.vision.is_some() { ", vision tower" } else { "" }
    );
    if let Some(n) = c.vocabulary {
        println!("  tokenizer: {n} pieces");
    }
    let by_type: Vec<String> = c
        .types
        .iter()
        .map(|(t, (n, b))| format!("{t} {n} ({:.1} MiB)", mib(*b)))
        .collect();
    println!(
        "  tensors: {tensors}, {:.1} MiB: {}",
        mib(bytes),
        by_type.join(", ")
    );
    Ok(())
}
