//! The Gemma 3 engine on candle, and what it reads. It knows nothing of the harness.

pub mod attention;
pub mod config;
pub mod decoder;
pub mod device;
pub mod generate;
pub mod kernels;
pub mod kv_cache;
pub mod kv_quant;
pub mod kv_rotation;
pub mod load;
pub mod plan;
pub mod presets;
pub mod rope;
pub mod tokenizer;
pub mod vision;
