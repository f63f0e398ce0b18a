//! A weight matrix applied as `x @ Wᵀ`, in the weight's stored format.
//!
//! candle's quantized kernels are tuned for decode (one row) and, for K-quants whose rows are a
//! multiple of 256 wide, for prefill too (packed tiles). Other formats at prefill fall back to a
//! dot product per (row, column), which is far slower than a dense GEMM. For those, a prefill
//! chunk dequantizes the weight to f32 for the duration of one product (a few MiB, freed at
//! once) and uses the dense kernel; decode always reads the compact weights.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

/// Rows at or above which a batch goes through the dense kernel.
const DENSE_MIN_ROWS: usize = 16;

pub struct Linear {
    weight: Arc<QTensor>,
    matmul: QMatMul,
    dense_for_batches: bool,
}

impl Linear {
    pub fn new(weight: Arc<QTensor>) -> Result<Self> {
        let (_, k) = weight.shape().dims2()?;
        let dense_for_batches = weight.device().is_cpu()
            && match weight.dtype() {
                GgmlDType::Q4_0
                | GgmlDType::Q4_1
                | GgmlDType::Q5_0
                | GgmlDType::Q5_1
                | GgmlDType::Q8_0 => true,
                // K-quants with packed prefill kernels need rows that are a multiple of 256.
                GgmlDType::Q2K
                | GgmlDType::Q3K
                | GgmlDType::Q4K
                | GgmlDType::Q5K
                | GgmlDType::Q6K => k % 256 != 0,
                _ => false,
            };
        Ok(Linear {
            matmul: QMatMul::from_arc(weight.clone())?,
            weight,
            dense_for_batches,
        })
    }

    pub fn weight(&self) -> &Arc<QTensor> {
        &self.weight
    }

    /// `x`: [rows, in] → [rows, out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.dense_for_batches && x.dim(0)? >= DENSE_MIN_ROWS {
            let w = self.weight.dequantize(x.device())?;
            return x.matmul(&w.t()?);
        }
        self.matmul.forward(x)
    }
}
