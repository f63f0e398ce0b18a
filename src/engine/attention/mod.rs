//! Attention over the KV cache: our CPU kernel (`cpu.rs`) and candle's tensor operations for
//! other devices (`generic.rs`).

pub mod cpu;
pub mod generic;
