//! The tokenizer on the real default model, against llama.cpp's ids.

mod common;

use gemma_fit::engine::load::gguf::GgufFile;
use gemma_fit::engine::tokenizer::{TokenKind, Tokenizer};

fn tokenizer(test: &str) -> Option<Tokenizer> {
    let path = common::default_model(test)?;
    let file = GgufFile::open_gemma3(&path).unwrap();
    Some(Tokenizer::from_gguf(&file).unwrap())
}

#[test]
fn ids_match_llama_cpp_reference() {
    let Some(tok) = tokenizer("ids_match_llama_cpp_reference") else {
        return;
    };
    for file in ["tokenize.json", "generate.json"] {
        let reference = common::reference(file);
        for case in reference["cases"].as_array().unwrap() {
            let text = case
                .get("text")
                .or(case.get("prompt"))
                .unwrap()
                .as_str()
                .unwrap();
            let want: Vec<u32> = case
                .get("ids")
                .or(case.get("prompt_ids"))
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tok.encode(text, true), want, "text {text:?} ({file})");
        }
    }
}

#[test]
fn round_trips_text() {
    let Some(tok) = tokenizer("round_trips_text") else {
        return;
    };
    let texts = [
        "The capital of France is",
        "  two leading spaces and trailing  ",
        "tabs\t\tand\nnew\n\n\nlines   and    runs",
        "fn main() {\n    println!(\"hi\");\n}\n",
        "Größe, naïve café — déjà vu.",
        "日本語のテキストです。 한국어 텍스트. Русский текст. العربية. हिन्दी",
        "emoji: 🦀🚀👩‍👩‍👧 and a flag 🇫🇷",
        "<start_of_turn>user\nnot parsed as control<end_of_turn>",
        "",
    ];
    for text in texts {
        let ids = tok.encode(text, true);
        assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
    }
}

#[test]
fn byte_fallback_for_characters_outside_the_vocabulary() {
    let Some(tok) = tokenizer("byte_fallback_for_characters_outside_the_vocabulary") else {
        return;
    };
    // U+4E0C (丌) is not in Gemma's vocabulary: three UTF-8 bytes, three byte tokens.
    let ids = tok.encode("\u{4E0C}", false);
    let pieces: Vec<_> = ids.iter().map(|&i| tok.piece(i).unwrap()).collect();
    assert_eq!(pieces, ["<0xE4>", "<0xB8>", "<0x8C>"]);
    assert!(ids.iter().all(|&i| tok.kind(i) == Some(TokenKind::Byte)));
    assert_eq!(tok.decode(&ids), "\u{4E0C}");
    // Between known characters the fallback bytes decode back in place.
    let text = "a\u{4E0C}b";
    assert_eq!(tok.decode(&tok.encode(text, true)), text);
}
