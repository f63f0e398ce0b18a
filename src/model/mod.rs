//! The Gemma 3 engine and what it reads.
//!
//! Sources: `spec.rs` (what `--model` names), `gguf.rs` + `weights.rs` (GGUF files),
//! `hf_config.rs` + `safetensors.rs` (Hugging Face folders), `presets.rs` + `synthetic.rs` (every
//! size without a download), `tokenizer.rs`. Engine: `config.rs`, `text.rs` (the decoder),
//! `kv_cache.rs`, `rope.rs`, `attention_cpu.rs` / `attention.rs`, `linear.rs` + `qmatmul.rs` +
//! `kquant.rs` + `packed.rs` (weight products; `q8pack.rs`, `q4kpack.rs`, `q6kpack.rs`: the
//! repacked layouts), `ops.rs` (fused GELU); `vision.rs` (SigLIP tower, projector, images).
//! `plan.rs`: what a run holds in memory, from the same rules (the estimator's input).

pub mod attention;
pub mod attention_cpu;
pub mod config;
pub mod gguf;
pub mod hf_config;
pub mod kquant;
pub mod kv_cache;
pub mod linear;
pub mod ops;
pub mod packed;
pub mod plan;
pub mod presets;
#[cfg(target_arch = "x86_64")]
pub mod q4kpack;
#[cfg(target_arch = "x86_64")]
pub mod q6kpack;
#[cfg(target_arch = "x86_64")]
pub mod q8pack;
pub mod qmatmul;
pub mod rope;
pub mod safetensors;
pub mod spec;
pub mod synthetic;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;
