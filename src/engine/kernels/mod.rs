//! Weight products and fused operations.

pub mod kquant;
pub mod linear;
pub mod ops;
pub mod packed;
pub mod q8_0;
pub mod qmatmul;
