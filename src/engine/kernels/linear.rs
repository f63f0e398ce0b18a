//! A weight matrix applied as `x @ Wᵀ`, its weight kept in the stored format.
//!
//! On the CPU, Q8_0, Q4_K, Q6_K (llama.cpp's 8-bit arithmetic) and f32/f16/bf16 (kept in their
//! own width) go through `qmatmul.rs` for every row count, decode and prefill alike, with
//! row-independent results; where the CPU has AVX-512 VNNI, Q8_0, Q4_K and Q6_K weights (rows a
//! multiple of 16) are repacked at load into sixteen-row groups instead (`packed.rs`). Elsewhere
//! dense weights are held in their own width and multiplied by candle's matmul (candle's
//! `QMatMul` would hold them widened to f32), and quantized ones go through candle's `QMatMul`.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, GgmlDType as G, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};

use crate::engine::kernels::packed::{self, PackedMatmul, PackedWeight};
use crate::engine::kernels::qmatmul;

pub enum Linear {
    /// Our kernels (`qmatmul.rs`), on the weight as loaded.
    Ours(Arc<QTensor>),
    /// A Q8_0, Q4_K or Q6_K weight repacked for AVX-512 VNNI (`packed.rs`), the loaded tensor
    /// freed.
    Packed(Box<dyn PackedWeight>),
    /// A dense weight off the CPU, as a plain tensor of its own width (the loaded tensor is
    /// freed unless something else, such as the tied embedding's lookup, holds it).
    Dense(Tensor),
    /// candle's product, for quantized formats our kernels do not cover.
    Candle(QMatMul),
}

fn dense_dtype(dtype: GgmlDType) -> Option<DType> {
    match dtype {
        G::F32 => Some(DType::F32),
        G::F16 => Some(DType::F16),
        G::BF16 => Some(DType::BF16),
        _ => None,
    }
}

impl Linear {
    pub fn new(weight: Arc<QTensor>) -> Result<Self> {
        let on_cpu = weight.device().is_cpu();
        let (n, _) = weight.shape().dims2()?;
        // Only a weight nothing else holds (a tied embedding's lookup reads the loaded one).
        if Arc::strong_count(&weight) == 1 && packed::applies(weight.dtype(), n, on_cpu) {
            Ok(Linear::Packed(packed::pack(&weight)?))
        } else if Self::ours(weight.dtype(), on_cpu) {
            Ok(Linear::Ours(weight))
        } else if dense_dtype(weight.dtype()).is_some() {
            Self::dense(&weight)
        } else {
            Ok(Linear::Candle(QMatMul::from_arc(weight)?))
        }
    }

    /// The [`Linear::Dense`] product of a dense weight (any device). The weight is widened to
    /// f32 once while converting: one tensor's f32 copy is the transient of a load.
    pub fn dense(weight: &QTensor) -> Result<Self> {
        let Some(dtype) = dense_dtype(weight.dtype()) else {
            candle_core::bail!("Linear::dense: {:?} is not a dense type", weight.dtype());
        };
        Ok(Linear::Dense(
            weight.dequantize(&weight.device())?.to_dtype(dtype)?,
        ))
    }

    fn ours(dtype: GgmlDType, on_cpu: bool) -> bool {
        on_cpu && qmatmul::supports(dtype)
    }

    /// Bytes a product over a weight held by something else (the tied output projection over
    /// the embedding) adds beside it: a dense weight's own copy off the CPU. (On the CPU,
    /// [`Self::single_row`] never takes a path that copies.)
    pub fn derived_copy_bytes(dtype: GgmlDType, elems: usize, on_cpu: bool) -> u64 {
        match dense_dtype(dtype) {
            Some(d) if !Self::ours(dtype, on_cpu) => (elems * d.size_in_bytes()) as u64,
            _ => 0,
        }
    }

    /// Bytes a load holds at once, beyond what stays, while building the product of a weight
    /// of `elems` values: the f32 widening a dense weight goes through off the CPU.
    pub fn load_transient_bytes(dtype: GgmlDType, elems: usize, on_cpu: bool) -> u64 {
        match dense_dtype(dtype) {
            Some(_) if !Self::ours(dtype, on_cpu) => 4 * elems as u64,
            _ => 0,
        }
    }

    /// Bytes held for a weight of `bytes` bytes in `dtype` that only this product uses.
    pub fn resident_bytes(dtype: GgmlDType, elems: usize, bytes: u64, on_cpu: bool) -> u64 {
        match Self::derived_copy_bytes(dtype, elems, on_cpu) {
            0 => bytes,
            copy => copy,
        }
    }

    /// For a product that only ever sees one row (the output projection of the last position):
    /// ours for Q8_0 (its one-row kernel reads faster than candle's, `benches/kernels.rs`) and
    /// dense weights (candle would widen them to f32), and for Q4_K rows a multiple of 256 wide
    /// (candle 0.11.1 on x86 builds a second, packed copy of those the first time it multiplies
    /// them and keeps it next to the original: gigabytes for a 27B embedding, which the memory
    /// figures would silently include); candle's single-row kernel for the other formats.
    pub fn single_row(weight: Arc<QTensor>) -> Result<Self> {
        let (_, k) = weight.shape().dims2()?;
        let candle_packs = weight.dtype() == G::Q4K && k.is_multiple_of(256);
        let ours_faster = matches!(weight.dtype(), G::Q8_0 | G::F32 | G::F16 | G::BF16);
        if candle_packs || ours_faster || !weight.device().is_cpu() {
            return Self::new(weight);
        }
        Ok(Linear::Candle(QMatMul::from_arc(weight)?))
    }

    /// `x`: [rows, in] → [rows, out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(m) => m.forward(x),
            Linear::Dense(w) => x
                .to_dtype(w.dtype())?
                .matmul(&w.t()?)?
                .to_dtype(candle_core::DType::F32),
            Linear::Ours(weight) => on_f32(x, &qmatmul::QMatmul { weight }),
            Linear::Packed(w) => on_f32(x, &PackedMatmul(w.as_ref())),
        }
    }

    /// [`Self::forward`] where each row's result is the one it gets alone. Ours are so for any
    /// row count; candle's CPU product is not: from two rows on it tiles differently, and on x86
    /// it repacks Q4_K/Q6_K weights into a second, wider copy that it keeps (the size of a
    /// model's whole embedding, for a tied output projection). On the CPU its rows go one at a
    /// time here.
    pub fn forward_rows_alike(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        match self {
            Linear::Candle(_) if rows > 1 && x.device().is_cpu() => {
                let each = (0..rows)
                    .map(|r| self.forward(&x.narrow(0, r, 1)?))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&each, 0)
            }
            _ => self.forward(x),
        }
    }
}

/// One of our product ops on `x` as contiguous f32 (what their kernels take).
fn on_f32(x: &Tensor, op: &impl candle_core::CustomOp1) -> Result<Tensor> {
    x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::Device;

    /// The product off the CPU (a dense weight in its own width through candle's matmul) agrees
    /// with ours on the CPU, up to the bf16 rounding of the activations.
    #[test]
    fn dense_product_matches_ours() {
        let w = Tensor::randn(0f32, 0.05, (48, 64), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (5, 64), &Device::Cpu).unwrap();
        let q = Arc::new(QTensor::quantize(&w, G::BF16).unwrap());
        let ours = Linear::new(q.clone()).unwrap();
        assert!(matches!(ours, Linear::Ours(_)));
        let dense = Linear::dense(&q).unwrap();
        let Linear::Dense(held) = &dense else {
            panic!("not dense")
        };
        assert_eq!(held.dtype(), DType::BF16, "held in its own width");
        let a = ours.forward(&x).unwrap();
        let b = dense.forward(&x).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 0.05, "{diff}");
        assert!(Linear::dense(&QTensor::quantize(&w, G::Q8_0).unwrap()).is_err());
    }
}
