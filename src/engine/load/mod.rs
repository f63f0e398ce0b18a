//! Where models come from: model specs, GGUF files, Hugging Face folders, synthetic weights, the
//! default model's fetch and the Hugging Face Hub.

pub mod fetch;
pub mod gguf;
pub mod hf_config;
pub mod hub;
pub mod safetensors;
pub mod spec;
pub mod synthetic;
pub mod weights;
