//! The Gemma 3 engine and what it reads: GGUF files, model specs, the tokenizer.

pub mod attention;
pub mod attention_cpu;
pub mod config;
pub mod gguf;
pub mod hf_config;
pub mod kv_cache;
pub mod linear;
pub mod ops;
pub mod presets;
pub mod qmatmul;
pub mod rope;
pub mod safetensors;
pub mod spec;
pub mod synthetic;
pub mod text;
pub mod tokenizer;
pub mod weights;
