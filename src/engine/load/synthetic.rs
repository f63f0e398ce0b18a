//! Synthetic weights: every tensor of a Gemma 3 size, in the target format, from a seeded
//! generator. Block bytes are random with finite, sensible scales; nothing is quantized on the
//! CPU, so building 27B takes seconds and no more memory than the model. Outputs are meaningless;
//! memory and speed are real. Weight bytes equal what a GGUF file of that format holds.

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::engine::load::format::Format;
use crate::engine::load::weights::{cpu_storage, WeightBytes, WeightSource};
use crate::error::Result;

/// Bytes of the weights of a GGUF file of this format for `cfg` (matrices in their types, norm
/// weights in f32), from the same tensor list the loader reads.
pub fn file_weight_bytes(cfg: &crate::engine::config::Gemma3Config, format: Format) -> u64 {
    crate::engine::plan::text_tensors(cfg, format, true)
        .iter()
        .map(|t| t.file_bytes)
        .sum()
}

/// The same for a vision tower and its projector into `text_hidden` (an `mmproj` file's weights).
pub fn vision_weight_bytes(
    vision: &crate::engine::vision::VisionConfig,
    text_hidden: usize,
    format: Format,
) -> u64 {
    crate::engine::plan::vision_tensors(vision, text_hidden, format, true)
        .iter()
        .map(|t| t.file_bytes)
        .sum()
}

pub struct SyntheticWeights {
    format: Format,
    layers: usize,
    rng: SmallRng,
    device: Device,
    bytes: WeightBytes,
    repacked: Vec<(String, GgmlDType, GgmlDType)>,
}

impl SyntheticWeights {
    pub fn new(format: Format, layers: usize, seed: u64, device: &Device) -> Result<Self> {
        Ok(SyntheticWeights {
            format,
            layers,
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
        // Dense types are filled value by value (see `qtensor`).
        _ => (dtype.type_size(), &[]),
    }
}

impl WeightSource for SyntheticWeights {
    fn has(&self, name: &str) -> bool {
        name != "output.weight"
    }

    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let dtype = self.format.tensor_type(name, shape, self.layers);
        let elems: usize = shape.iter().product();
        let (block_bytes, fields) = scale_fields(dtype);
        let size = elems / dtype.block_size() * dtype.type_size();
        let on_cpu = self.device.is_cpu();
        let held = crate::engine::load::weights::resident_type(dtype, on_cpu);
        if held != dtype {
            self.repacked.push((name.into(), dtype, held));
        }
        let tensor_seed = self.rng.next_u64();
        let fill = |buf: &mut [u8]| -> Result<()> {
            fill_parallel(buf, block_bytes, tensor_seed, |part, rng| {
                fill_blocks(dtype, part, block_bytes, fields, rng)
            });
            Ok(())
        };
        let storage = if on_cpu {
            cpu_storage(dtype, size, fill)?
        } else {
            // The same bytes, made on the host one tensor at a time and copied to the device (the
            // host holds at most one tensor: 2.7 GB for 27B bf16's embedding).
            let mut buf = vec![0u8; size];
            fill(&mut buf)?;
            QStorage::from_data(std::borrow::Cow::Owned(buf), &self.device, dtype)?
        };
        let t = QTensor::new(storage, shape)?;
        self.bytes.file_weight_bytes += size as u64;
        self.bytes.resident_weight_bytes += t.storage_size_in_bytes() as u64;
        Ok(t)
    }

    fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        // Norm weights as a GGUF file holds them (Gemma's 1 + w already added), near 1; biases
        // (vision tower) near 0.
        let n: usize = shape.iter().product();
        let range = if name.ends_with(".bias") {
            -0.02f32..0.02
        } else {
            0.9f32..1.1
        };
        let values: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(range.clone()))
            .collect();
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

    fn check(&self, name: &str, shape: &[usize]) -> Result<(String, u64)> {
        let dtype = self.format.tensor_type(name, shape, self.layers);
        let elems: usize = shape.iter().product();
        Ok((
            format!("{dtype:?}"),
            (elems / dtype.block_size() * dtype.type_size()) as u64,
        ))
    }
}

/// Fills `buf` on every core, each part from its own generator seeded from (`seed`, part), so the
/// bytes depend on the seed only. Parts are whole blocks.
fn fill_parallel(
    buf: &mut [u8],
    block_bytes: usize,
    seed: u64,
    fill: impl Fn(&mut [u8], &mut SmallRng) + Sync,
) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    const PART: usize = 64 << 20;
    let part = (PART / block_bytes).max(1) * block_bytes;
    if buf.len() <= part || threads == 1 {
        fill(buf, &mut SmallRng::seed_from_u64(seed));
        return;
    }
    let parts: Vec<(usize, &mut [u8])> = buf.chunks_mut(part).enumerate().collect();
    let next = std::sync::Mutex::new(parts.into_iter());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let item = next.lock().map(|mut it| it.next()).unwrap_or(None);
                let Some((i, chunk)) = item else { break };
                fill(
                    chunk,
                    &mut SmallRng::seed_from_u64(
                        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ),
                );
            });
        }
    });
}

/// Random block bytes with the scale fields set to sane values; dense types value by value.
fn fill_blocks(
    dtype: GgmlDType,
    buf: &mut [u8],
    block_bytes: usize,
    fields: &[(usize, f32)],
    rng: &mut SmallRng,
) {
    match dtype {
        // Dense values straight from random bits: sign, one of two exponents, random mantissa,
        // i.e. ±[2⁻⁷, 2⁻⁵) ≈ ±[0.008, 0.031] (a float per value through `random_range` made the
        // 800 MiB vision tower take seconds).
        GgmlDType::F32 => {
            for v in buf.chunks_exact_mut(4) {
                let r = rng.next_u32();
                let bits = (r & 0x8000_0000) | ((120 + (r >> 30 & 1)) << 23) | (r & 0x7F_FFFF);
                v.copy_from_slice(&bits.to_le_bytes());
            }
        }
        GgmlDType::F16 | GgmlDType::BF16 => {
            // f16: exponent field 8 or 9 of 5 bits (bias 15); bf16: 120 or 121 of 8 (bias 127).
            let (exp_shift, exp_base, mantissa) = if dtype == GgmlDType::F16 {
                (10, 8u16, 0x3FFu16)
            } else {
                (7, 120u16, 0x7Fu16)
            };
            for v in buf.chunks_mut(8) {
                let r = rng.next_u64();
                for (i, half) in v.chunks_exact_mut(2).enumerate() {
                    let x = (r >> (16 * i)) as u16;
                    let exp = exp_base + (x >> 14 & 1);
                    let bits = (x & 0x8000) | (exp << exp_shift) | (x & mantissa);
                    half.copy_from_slice(&bits.to_le_bytes());
                }
            }
        }
        _ => {
            // Eight random bytes per step (rand's byte filler goes through a slower generic path;
            // 27B is 16 GB of blocks).
            let mut words = buf.chunks_exact_mut(8);
            for w in &mut words {
                w.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let tail = words.into_remainder();
            rng.fill_bytes(tail);
            // Scales: the base times a factor in [0.5, 1.5), from the block's own bits.
            for block in buf.chunks_exact_mut(block_bytes) {
                for &(offset, base) in fields {
                    let bits = u16::from_le_bytes([block[offset], block[offset + 1]]);
                    let d = f16::from_f32(base * (0.5 + bits as f32 / 65536.0));
                    block[offset..offset + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
}
