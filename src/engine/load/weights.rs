//! Where the engine's weights come from ([`WeightSource`]): a GGUF file in its own formats
//! ([`GgufWeights`]), a Hugging Face folder (`safetensors.rs`), or generated shapes
//! (`synthetic.rs`).
//!
//! Tensors stay in their format (products in `linear.rs` / `qmatmul.rs`); the one exception on
//! the CPU is Q5_0, repacked at load into Q8_0, which holds exactly the same values
//! (q - 16 in [-16, 15]) with the same block scale and has a SIMD kernel (candle's Q5_0 product
//! is a scalar loop).

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::engine::load::gguf::GgufFile;
use crate::error::{Error, Result};

/// Bytes of weights: as the file stores them, and as the engine holds them on its device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightBytes {
    pub file_weight_bytes: u64,
    pub resident_weight_bytes: u64,
}

/// What the model loader asks of a weight source.
pub trait WeightSource {
    /// Whether a tensor is present (for optional tensors such as an untied `output.weight`).
    fn has(&self, name: &str) -> bool;
    /// A weight matrix or embedding, in the source's format.
    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor>;
    /// A small tensor (norm weights) as f32.
    fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// Bytes read so far (file) and held (resident).
    fn bytes(&self) -> WeightBytes;
    /// Tensors whose format was changed at load: (name, from, to).
    fn repacked(&self) -> &[(String, GgmlDType, GgmlDType)];
    /// Checks a tensor as [`qtensor`](Self::qtensor) would (present, this shape, a type the
    /// engine runs) without reading it; returns its stored type and bytes.
    fn check(&self, name: &str, shape: &[usize]) -> Result<(String, u64)>;
}

/// The type the engine holds a weight of `dtype` in: Q5_0 becomes Q8_0 on the CPU (see
/// [`cpu_storage`]); everything else stays as loaded.
pub fn resident_type(dtype: GgmlDType, on_cpu: bool) -> GgmlDType {
    if on_cpu && dtype == GgmlDType::Q5_0 {
        GgmlDType::Q8_0
    } else {
        dtype
    }
}

/// CPU storage of `bytes` bytes of `dtype` blocks, filled in place by `fill` (no second copy).
/// Q5_0 is filled as Q5_0 and repacked into Q8_0 (the same values).
pub fn cpu_storage<E>(
    dtype: GgmlDType,
    bytes: usize,
    fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), E>,
) -> std::result::Result<QStorage, E> {
    fn filled<T: GgmlType + 'static, E>(
        bytes: usize,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<QStorage, E> {
        let mut blocks = zeroed_blocks::<T>(bytes / std::mem::size_of::<T>());
        fill(blocks_as_bytes_mut(&mut blocks))?;
        Ok(QStorage::Cpu(Box::new(blocks)))
    }
    use GgmlDType as G;
    Ok(match dtype {
        G::Q5_0 => {
            let mut data = vec![0u8; bytes];
            fill(&mut data)?;
            let mut blocks = vec![k_quants::BlockQ8_0::zeros(); bytes / Q5_0_BLOCK];
            q5_0_to_q8_0(&data, blocks_as_bytes_mut(&mut blocks));
            QStorage::Cpu(Box::new(blocks))
        }
        G::F32 => filled::<f32, E>(bytes, fill)?,
        G::F16 => filled::<half::f16, E>(bytes, fill)?,
        G::BF16 => filled::<half::bf16, E>(bytes, fill)?,
        G::Q4_0 => filled::<k_quants::BlockQ4_0, E>(bytes, fill)?,
        G::Q4_1 => filled::<k_quants::BlockQ4_1, E>(bytes, fill)?,
        G::Q5_1 => filled::<k_quants::BlockQ5_1, E>(bytes, fill)?,
        G::Q8_0 => filled::<k_quants::BlockQ8_0, E>(bytes, fill)?,
        G::Q8_1 => filled::<k_quants::BlockQ8_1, E>(bytes, fill)?,
        G::Q2K => filled::<k_quants::BlockQ2K, E>(bytes, fill)?,
        G::Q3K => filled::<k_quants::BlockQ3K, E>(bytes, fill)?,
        G::Q4K => filled::<k_quants::BlockQ4K, E>(bytes, fill)?,
        G::Q5K => filled::<k_quants::BlockQ5K, E>(bytes, fill)?,
        G::Q6K => filled::<k_quants::BlockQ6K, E>(bytes, fill)?,
        G::Q8K => filled::<k_quants::BlockQ8K, E>(bytes, fill)?,
    })
}

pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    reader: File,
    device: Device,
    pub bytes: WeightBytes,
    /// Tensors repacked at load (name, from, to), for the record.
    pub repacked: Vec<(String, GgmlDType, GgmlDType)>,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile, device: &Device) -> Result<Self> {
        let reader = File::open(&file.path).map_err(|e| Error::io(&file.path, e))?;
        Ok(GgufWeights {
            file,
            reader,
            device: device.clone(),
            bytes: WeightBytes::default(),
            repacked: Vec::new(),
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.content.tensor_infos.contains_key(name)
    }

    /// Checks the tensor's presence and shape; returns its type, file offset and byte size.
    fn locate(&self, name: &str, expected: &[usize]) -> Result<(GgmlDType, u64, usize)> {
        let info =
            self.file
                .content
                .tensor_infos
                .get(name)
                .ok_or_else(|| Error::MissingTensor {
                    path: self.file.path.clone(),
                    name: name.into(),
                })?;
        if info.shape.dims() != expected {
            return Err(Error::TensorShape {
                path: self.file.path.clone(),
                name: name.into(),
                expected: expected.to_vec(),
                found: info.shape.dims().to_vec(),
            });
        }
        let dtype = info.ggml_dtype;
        let size = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        Ok((
            dtype,
            self.file.content.tensor_data_offset + info.offset,
            size,
        ))
    }

    /// Reads `buf.len()` bytes at `offset`.
    fn read_into(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.reader.read_exact(buf))
            .map_err(|e| Error::CorruptGguf {
                path: self.file.path.clone(),
                reason: format!("reading tensor '{name}': {e}"),
            })?;
        self.bytes.file_weight_bytes += buf.len() as u64;
        Ok(())
    }

    fn read_raw(&mut self, name: &str, shape: &[usize]) -> Result<(GgmlDType, Vec<u8>)> {
        let (dtype, offset, size) = self.locate(name, shape)?;
        let mut data = vec![0u8; size];
        self.read_into(name, offset, &mut data)?;
        Ok((dtype, data))
    }

    /// A weight matrix or embedding, kept in its file format (Q5_0 becomes Q8_0 on the CPU),
    /// read straight into the block vector candle will own: no second copy, so loading needs
    /// no more memory than the loaded model.
    pub fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let (dtype, offset, size) = self.locate(name, shape)?;
        let storage = if self.device.is_cpu() {
            let held = resident_type(dtype, true);
            if held != dtype {
                self.repacked.push((name.into(), dtype, held));
            }
            cpu_storage(dtype, size, |buf| self.read_into(name, offset, buf))?
        } else {
            let (_, data) = self.read_raw(name, shape)?;
            QStorage::from_data(Cow::Owned(data), &self.device, dtype)?
        };
        let t = QTensor::new(storage, shape)?;
        self.bytes.resident_weight_bytes += t.storage_size_in_bytes() as u64;
        Ok(t)
    }

    /// A small tensor (norm weights) as f32.
    pub fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (dtype, data) = self.read_raw(name, shape)?;
        let storage = QStorage::from_data(Cow::Owned(data), &Device::Cpu, dtype)?;
        let t = QTensor::new(storage, shape)?
            .dequantize(&Device::Cpu)?
            .to_device(&self.device)?;
        self.bytes.resident_weight_bytes += (t.elem_count() * DType::F32.size_in_bytes()) as u64;
        Ok(t)
    }
}

impl WeightSource for GgufWeights<'_> {
    fn has(&self, name: &str) -> bool {
        GgufWeights::has(self, name)
    }
    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        GgufWeights::qtensor(self, name, shape)
    }
    fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        GgufWeights::f32_tensor(self, name, shape)
    }
    fn bytes(&self) -> WeightBytes {
        self.bytes
    }
    fn repacked(&self) -> &[(String, GgmlDType, GgmlDType)] {
        &self.repacked
    }
    fn check(&self, name: &str, shape: &[usize]) -> Result<(String, u64)> {
        let (dtype, _, size) = self.locate(name, shape)?;
        Ok((format!("{dtype:?}"), size as u64))
    }
}

pub(crate) const Q5_0_BLOCK: usize = 22;
const Q8_0_BLOCK: usize = 34;

/// `n` all-zero blocks from zeroed memory: the kernel provides zero pages, so unlike
/// `vec![T::zeros(); n]` there is no writing pass over gigabytes before the real fill.
fn zeroed_blocks<T: GgmlType>(n: usize) -> Vec<T> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Vec::new();
    }
    let layout =
        std::alloc::Layout::array::<T>(n).expect("block count overflows the address space");
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid value of every ggml
    // block type (plain floats and integers); the Vec takes ownership with the same layout.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        advise_huge_pages(ptr as *mut u8, layout.size());
        Vec::from_raw_parts(ptr, n, n)
    }
}

/// Asks Linux to back a large, freshly mapped weight buffer with transparent huge pages (where
/// THP is in `madvise` mode, the common default): filling 16 GB of 27B weights through 4 KiB
/// page faults spent about half the build in the kernel. A hint only; failures are ignored.
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if len < 4 * HUGE {
            return;
        }
        // madvise needs a page-aligned start; advise the whole huge pages inside the buffer.
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside the allocation just made; MADV_HUGEPAGE changes no
            // contents, only how the kernel backs the pages.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// The bytes of a block vector. Every ggml block type is plain old data (`repr(C)` floats and
/// integers, sizes asserted by candle), so any byte pattern is a valid value.
fn blocks_as_bytes_mut<T: GgmlType>(blocks: &mut [T]) -> &mut [u8] {
    let len = std::mem::size_of_val(blocks);
    // SAFETY: the slice is valid for `len` bytes, u8 has no alignment requirement, and the
    // block types have no invalid bit patterns and no padding that matters (see above).
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr() as *mut u8, len) }
}

/// Repacks Q5_0 blocks (f16 d, u32 high bits, 16 bytes of nibbles) into Q8_0 blocks (f16 d, 32
/// signed bytes) holding the same values: q8 = q5 - 16. `out` has 34 bytes per source block.
pub fn q5_0_to_q8_0(src: &[u8], out: &mut [u8]) {
    for (b, dst) in src
        .chunks_exact(Q5_0_BLOCK)
        .zip(out.chunks_exact_mut(Q8_0_BLOCK))
    {
        dst[..2].copy_from_slice(&b[..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let lo = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
            let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            dst[2 + j] = (lo as i8 - 16) as u8;
            dst[2 + j + 16] = (hi as i8 - 16) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q5_0_repack_is_lossless() {
        // Random Q5_0 blocks with sane scales; compare candle's own dequantization of both.
        let mut state = 0x1234_5678u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let blocks = 64;
        let mut data = Vec::with_capacity(blocks * Q5_0_BLOCK);
        for _ in 0..blocks {
            let d = half::f16::from_f32((next() % 1000) as f32 / 1e4 + 1e-3);
            data.extend_from_slice(&d.to_le_bytes());
            data.extend((0..20).map(|_| next() as u8));
        }
        let n = blocks * 32;
        let q5 = QTensor::new(
            QStorage::from_data(Cow::Borrowed(&data), &Device::Cpu, GgmlDType::Q5_0).unwrap(),
            (n,),
        )
        .unwrap();
        let mut q8_bytes = vec![0u8; blocks * Q8_0_BLOCK];
        q5_0_to_q8_0(&data, &mut q8_bytes);
        let q8 = QTensor::new(
            QStorage::from_data(Cow::Owned(q8_bytes), &Device::Cpu, GgmlDType::Q8_0).unwrap(),
            (n,),
        )
        .unwrap();
        let a = q5
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = q8
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
    }
}
