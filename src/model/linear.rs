//! A weight matrix applied as `x @ Wᵀ`, its weight kept in the stored format.
//!
//! On the CPU, Q8_0, Q4_K, Q6_K (llama.cpp's 8-bit arithmetic) and f32/f16/bf16 (kept in their
//! own width) go through `qmatmul.rs` for every row count, decode and prefill alike, with
//! row-independent results. Other formats and devices use candle's `QMatMul`.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

use crate::model::qmatmul;

pub struct Linear {
    weight: Arc<QTensor>,
    /// candle's product, for formats and devices our kernels do not cover. (Built only then:
    /// for f32/f16/bf16 weights candle's `QMatMul` makes a widened f32 copy of the weight.)
    candle: Option<QMatMul>,
}

impl Linear {
    pub fn new(weight: Arc<QTensor>) -> Result<Self> {
        let ours = weight.device().is_cpu() && qmatmul::supports(weight.dtype());
        Ok(Linear {
            candle: if ours {
                None
            } else {
                Some(QMatMul::from_arc(weight.clone())?)
            },
            weight,
        })
    }

    /// For a product that only ever sees one row (the output projection of the last position):
    /// candle's single-row kernel where it is plain (the same 8-bit arithmetic as ours, faster at
    /// one row), ours elsewhere. candle 0.11.1 on x86 builds a second, packed copy of Q4_K and
    /// (with VNNI) Q8_0 weights whose rows are a multiple of 256 wide the first time it multiplies
    /// them, and keeps it next to the original: for a 27B embedding that is gigabytes the memory
    /// figures would silently include. Dense weights would be widened to f32.
    pub fn single_row(weight: Arc<QTensor>) -> Result<Self> {
        use candle_core::quantized::GgmlDType as G;
        let (_, k) = weight.shape().dims2()?;
        let candle_packs = matches!(weight.dtype(), G::Q4K | G::Q8_0) && k.is_multiple_of(256);
        let dense = matches!(weight.dtype(), G::F32 | G::F16 | G::BF16);
        if candle_packs || dense || !weight.device().is_cpu() {
            return Self::new(weight);
        }
        Ok(Linear {
            candle: Some(QMatMul::from_arc(weight.clone())?),
            weight,
        })
    }

    /// `x`: [rows, in] → [rows, out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.candle {
            Some(m) => m.forward(x),
            None => x
                .to_dtype(candle_core::DType::F32)?
                .contiguous()?
                .apply_op1_no_bwd(&qmatmul::QMatmul {
                    weight: &self.weight,
                }),
        }
    }
}
