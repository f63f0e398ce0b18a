//! A weight matrix applied as `x @ Wᵀ`, its weight kept in the stored format.
//!
//! On the CPU, Q8_0 and the K-quants go through `qmatmul.rs` for every row count (decode and
//! prefill alike, llama.cpp's 8-bit arithmetic, row-independent results). Other formats use
//! candle's `QMatMul`.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

use crate::model::qmatmul;

pub struct Linear {
    weight: Arc<QTensor>,
    matmul: QMatMul,
    /// Through our kernels (`qmatmul.rs`) rather than candle's.
    ours: bool,
}

impl Linear {
    pub fn new(weight: Arc<QTensor>) -> Result<Self> {
        Ok(Linear {
            ours: weight.device().is_cpu() && qmatmul::supports(weight.dtype()),
            matmul: QMatMul::from_arc(weight.clone())?,
            weight,
        })
    }

    pub fn weight(&self) -> &Arc<QTensor> {
        &self.weight
    }

    /// `x`: [rows, in] → [rows, out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.ours && x.dtype() == candle_core::DType::F32 {
            return x.contiguous()?.apply_op1_no_bwd(&qmatmul::QMatmul {
                weight: &self.weight,
            });
        }
        self.matmul.forward(x)
    }
}
