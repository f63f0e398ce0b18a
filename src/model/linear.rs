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
    /// candle's single-row kernel for quantized weights (the same 8-bit arithmetic, and faster
    /// than our tiled one at one row), ours for dense ones (no widened copy).
    pub fn single_row(weight: Arc<QTensor>) -> Result<Self> {
        let dense = matches!(
            weight.dtype(),
            candle_core::quantized::GgmlDType::F32
                | candle_core::quantized::GgmlDType::F16
                | candle_core::quantized::GgmlDType::BF16
        );
        if dense {
            return Self::new(weight);
        }
        Ok(Linear {
            candle: Some(QMatMul::from_arc(weight.clone())?),
            weight,
        })
    }

    pub fn weight(&self) -> &Arc<QTensor> {
        &self.weight
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
