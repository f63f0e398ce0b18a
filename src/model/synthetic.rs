//! Synthetic weights: every tensor of a Gemma 3 size, in the target format, from a seeded
//! generator. Block bytes are random with finite, sensible scales; nothing is quantized on the
//! CPU, so building 27B takes seconds and no more memory than the model. Outputs are meaningless;
//! memory and speed are real. Weight bytes equal what a GGUF file of that format holds.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::error::{Error, Result};
use crate::model::weights::{cpu_storage, WeightBytes, WeightSource};

/// Weight formats synthetic models can be built in.
pub const FORMATS: &[&str] = &[
    "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
];

/// Parses a `--quant` name for synthetic weights.
pub fn parse_format(name: &str) -> Result<GgmlDType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => {
            return Err(Error::Unsupported(format!(
                "synthetic weights in '{other}' are not supported yet; choose one of {}",
                FORMATS.join(", ")
            )))
        }
    })
}

/// llama.cpp's fallback for rows whose length is not a multiple of the K-quant super-block (256).
pub fn row_format(format: GgmlDType, row_len: usize) -> GgmlDType {
    if row_len.is_multiple_of(format.block_size()) {
        return format;
    }
    match format {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        _ => GgmlDType::Q8_0,
    }
}

pub struct SyntheticWeights {
    format: GgmlDType,
    rng: SmallRng,
    device: Device,
    bytes: WeightBytes,
    repacked: Vec<(String, GgmlDType, GgmlDType)>,
}

impl SyntheticWeights {
    pub fn new(format: GgmlDType, seed: u64, device: &Device) -> Result<Self> {
        if !device.is_cpu() {
            return Err(Error::Unsupported(
                "synthetic weights are built on the CPU only (for now)".into(),
            ));
        }
        Ok(SyntheticWeights {
            format,
            rng: SmallRng::seed_from_u64(seed),
            device: device.clone(),
            bytes: WeightBytes::default(),
            repacked: Vec::new(),
        })
    }
}

/// Per-format block layout: bytes per block and where its f16 scales sit, with the scale that
/// gives weights of roughly ±0.02.
fn scale_fields(dtype: GgmlDType) -> (usize, &'static [(usize, f32)]) {
    match dtype {
        GgmlDType::Q8_0 => (34, &[(0, 3e-4)]),
        GgmlDType::Q4_0 => (18, &[(0, 4e-3)]),
        GgmlDType::Q4_1 => (20, &[(0, 3e-3), (2, -2e-2)]),
        GgmlDType::Q5_0 => (22, &[(0, 2e-3)]),
        GgmlDType::Q5_1 => (24, &[(0, 1.5e-3), (2, -2e-2)]),
        GgmlDType::Q4K => (144, &[(0, 1e-4), (2, 1e-4)]),
        GgmlDType::Q5K => (176, &[(0, 5e-5), (2, 1e-4)]),
        GgmlDType::Q6K => (210, &[(208, 2e-5)]),
        _ => (0, &[]),
    }
}

impl WeightSource for SyntheticWeights {
    fn has(&self, name: &str) -> bool {
        name != "output.weight"
    }

    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let row_len = *shape.last().unwrap_or(&0);
        let dtype = row_format(self.format, row_len);
        let elems: usize = shape.iter().product();
        let (block_bytes, fields) = scale_fields(dtype);
        let size = elems / dtype.block_size() * dtype.type_size();
        debug_assert_eq!(block_bytes, dtype.type_size());
        if dtype == GgmlDType::Q5_0 {
            self.repacked
                .push((name.into(), GgmlDType::Q5_0, GgmlDType::Q8_0));
        }
        let rng = &mut self.rng;
        let storage = cpu_storage(dtype, size, |buf: &mut [u8]| -> Result<()> {
            rng.fill_bytes(buf);
            for block in buf.chunks_exact_mut(block_bytes) {
                for &(offset, base) in fields {
                    let d = f16::from_f32(base * rng.random_range(0.5f32..1.5));
                    block[offset..offset + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
            Ok(())
        })?;
        let t = QTensor::new(storage, shape)?;
        self.bytes.file_weight_bytes += size as u64;
        self.bytes.resident_weight_bytes += t.storage_size_in_bytes() as u64;
        Ok(t)
    }

    fn f32_tensor(&mut self, _name: &str, shape: &[usize]) -> Result<Tensor> {
        // Norm weights as a GGUF file holds them (Gemma's 1 + w already added), near 1.
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.rng.random_range(0.9f32..1.1)).collect();
        let t = Tensor::from_vec(values, shape, &self.device)?;
        self.bytes.file_weight_bytes += 4 * n as u64;
        self.bytes.resident_weight_bytes += 4 * n as u64;
        Ok(t)
    }

    fn bytes(&self) -> WeightBytes {
        self.bytes
    }

    fn repacked(&self) -> &[(String, GgmlDType, GgmlDType)] {
        &self.repacked
    }
}
