//! The Gemma 3 engine and what it reads: GGUF files, model specs, the tokenizer.

pub mod gguf;
pub mod spec;
pub mod tokenizer;
