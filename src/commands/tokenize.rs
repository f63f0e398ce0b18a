//! `gemma-fit tokenize`: token ids and pieces from the model's own tokenizer.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use crate::cli::TokenizeArgs;
use crate::engine::load::gguf::GgufFile;
use crate::engine::load::spec::ModelSpec;
use crate::engine::tokenizer::Tokenizer;

pub fn run(args: &TokenizeArgs) -> Result<()> {
    let spec: ModelSpec = args.model.parse()?;
    let path = spec.resolve(super::show_progress())?;
    let file = GgufFile::open_gemma3(&path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let ids = tokenizer.encode(&args.text, !args.no_bos);
    let pieces: Vec<&str> = ids
        .iter()
        .map(|&id| tokenizer.piece(id).unwrap_or(""))
        .collect();
    if args.json {
        println!("{}", json!({"ids": ids, "pieces": pieces}));
    } else {
        let mut out = std::io::stdout().lock();
        for (id, piece) in ids.iter().zip(&pieces) {
            writeln!(out, "{id:>7}  {piece:?}")?;
        }
    }
    Ok(())
}
