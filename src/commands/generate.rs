//! `gemma-fit generate`: greedy generation, streamed.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use crate::cli::GenerateArgs;
use crate::engine::generate::generate;

pub fn run(args: &GenerateArgs) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read prompt file {}: {e}", f.display()))?,
        (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
    };
    let kv = args.engine.kv();
    let device = args.engine.device.device()?;
    let m = super::load_model(&args.engine, false, &device)?;
    let Some(tokenizer) = &m.tokenizer else {
        anyhow::bail!(
            "{} has no tokenizer (synthetic weights produce no text); use `run` to measure it",
            m.source
        );
    };
    let prompt_ids = tokenizer.encode(&text, true);
    let chunk = args.engine.prefill_chunk as usize;
    if args.json {
        let out = generate(&m, &prompt_ids, args.max_tokens, chunk, kv, |_| {})?;
        println!(
            "{}",
            json!({"prompt_ids": prompt_ids, "output_ids": out, "text": tokenizer.decode(&out)})
        );
    } else {
        // Stream: print the text decoded so far, only the part not yet printed.
        let mut ids = Vec::new();
        let mut printed = 0;
        let mut stdout = std::io::stdout();
        generate(&m, &prompt_ids, args.max_tokens, chunk, kv, |id| {
            ids.push(id);
            let text = tokenizer.decode(&ids);
            if !text.ends_with('\u{FFFD}') && text.len() > printed {
                let _ = write!(stdout, "{}", &text[printed..]);
                let _ = stdout.flush();
                printed = text.len();
            }
        })?;
        println!();
    }
    Ok(())
}
