//! Weights repacked at load for AVX-512 VNNI: what `q8_0.rs` (Q8_0), `q4_k.rs` (Q4_K) and
//! `q6_k.rs` (Q6_K) share. Each lays sixteen weight rows side by side, so one `vpdpbusd`
//! advances sixteen outputs by four products each and the per-block scaling is shared by sixteen
//! rows; each holds exactly the file's bytes, rearranged.

/// [`PackedWeight`] for a K-quant layout (256 values per block, `n` rows of `kb` blocks) whose
/// `tile::<R>(acts, r0, group, out)` computes one group of 16 rows for 1 or 4 activation rows
/// (Q4_K and Q6_K; Q8_0 tiles two groups at once and writes its own).
#[cfg(target_arch = "x86_64")]
macro_rules! packed_weight_by_group {
    ($layout:ty) => {
        impl $crate::engine::kernels::packed::PackedWeight for $layout {
            fn rows(&self) -> usize {
                self.n
            }

            fn cols(&self) -> usize {
                self.kb * 256
            }

            fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> candle_core::Result<()> {
                $crate::engine::kernels::packed::check_product(self, x, m, out)?;
                let acts = $crate::engine::kernels::packed::q4_k::Acts::new(x, m, self.kb);
                let out = $crate::engine::kernels::qmatmul::SendPtr(out.as_mut_ptr());
                $crate::engine::kernels::packed::tiles(
                    self.n / $crate::engine::kernels::packed::ROWS,
                    m,
                    |g, r0, four| {
                        // SAFETY: VNNI checked by check_product; a tile writes only its own
                        // outputs.
                        unsafe {
                            if four {
                                self.tile::<4>(&acts, r0, g, &out)
                            } else {
                                self.tile::<1>(&acts, r0, g, &out)
                            }
                        }
                    },
                );
                Ok(())
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub mod q4_k;
#[cfg(target_arch = "x86_64")]
pub mod q6_k;
#[cfg(target_arch = "x86_64")]
pub mod q8_0;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

#[cfg(target_arch = "x86_64")]
use self::{q4_k::PackedQ4K, q6_k::PackedQ6K, q8_0::PackedQ8};

/// Weight rows per group.
pub(crate) const ROWS: usize = 16;

/// A weight [n, k] in one of the repacked layouts.
pub trait PackedWeight: Send + Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// `x @ Wᵀ` for `x` [m, k] (row-major) into `out` [m, n].
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()>;
}

/// Whether a weight of `dtype` with `n` rows is repacked on this machine: Q8_0, Q4_K or Q6_K on a
/// CPU with AVX-512 VNNI (the kernels' instructions), rows a multiple of 16.
pub fn applies(dtype: GgmlDType, n: usize, on_cpu: bool) -> bool {
    on_cpu
        && matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K)
        && n.is_multiple_of(ROWS)
        && crate::engine::kernels::qmatmul::has_vnni()
}

/// Repacks `weight` (see [`applies`]; the layouts exist on x86-64 only).
pub fn pack(weight: &QTensor) -> Result<Box<dyn PackedWeight>> {
    #[cfg(target_arch = "x86_64")]
    return Ok(match weight.dtype() {
        GgmlDType::Q8_0 => Box::new(PackedQ8::pack(weight)?),
        GgmlDType::Q4K => Box::new(PackedQ4K::pack(weight)?),
        GgmlDType::Q6K => Box::new(PackedQ6K::pack(weight)?),
        other => candle_core::bail!("repack: {other:?} has no packed layout"),
    });
    #[cfg(not(target_arch = "x86_64"))]
    candle_core::bail!(
        "repack: {:?}: the packed layouts are x86-64 only",
        weight.dtype()
    )
}

/// The checks every packer makes: the format, rows in whole groups, whole blocks per row, and
/// the byte count. Returns (n, k) and the bytes.
pub(crate) fn checked<'a>(
    weight: &'a QTensor,
    dtype: GgmlDType,
    block: usize,
    block_bytes: usize,
) -> Result<(usize, usize, std::borrow::Cow<'a, [u8]>)> {
    let (n, k) = weight.shape().dims2()?;
    if weight.dtype() != dtype || !n.is_multiple_of(ROWS) || !k.is_multiple_of(block) {
        candle_core::bail!(
            "repack: {:?} [{n}, {k}] is not packable as {dtype:?}",
            weight.dtype()
        );
    }
    let data = weight.data()?;
    if data.len() != n * (k / block) * block_bytes {
        candle_core::bail!("repack: {} bytes are not {dtype:?} [{n}, {k}]", data.len());
    }
    Ok((n, k, data))
}

/// The checks every product makes before its kernel runs.
pub(crate) fn check_product(w: &dyn PackedWeight, x: &[f32], m: usize, out: &[f32]) -> Result<()> {
    let (n, k) = (w.rows(), w.cols());
    if x.len() != m * k || out.len() != m * n {
        candle_core::bail!(
            "packed product: [{m}, {}] x [{n}, {k}]ᵀ",
            x.len() / m.max(1)
        );
    }
    if !crate::engine::kernels::qmatmul::has_vnni() {
        candle_core::bail!("packed product: this CPU lacks AVX-512 VNNI");
    }
    Ok(())
}

/// The tiles of a product, in the order every kernel here walks them: `units` column units (a
/// group of 16 weight rows, or a pair) split across candle's worker pool, each against every
/// activation row, four at a time and then one by one: `tile(unit, first row, four)`. A unit's
/// weights stay in cache while the activation rows stream past.
pub(crate) fn tiles(units: usize, m: usize, tile: impl Fn(usize, usize, bool) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(units, |range| {
        for u in range {
            let mut r = 0;
            while r + 4 <= m {
                tile(u, r, true);
                r += 4;
            }
            while r < m {
                tile(u, r, false);
                r += 1;
            }
        }
    });
}

/// [`PackedWeight::matmul`] as a candle op.
pub struct PackedMatmul<'a>(pub &'a dyn PackedWeight);

impl CustomOp1 for PackedMatmul<'_> {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, m, k) = crate::engine::kernels::qmatmul::activations(storage, layout)?;
        let n = self.0.rows();
        if k != self.0.cols() {
            candle_core::bail!("packed product: [{m}, {k}] x [{n}, {}]ᵀ", self.0.cols());
        }
        let mut out = vec![0f32; m * n];
        self.0.matmul(x, m, &mut out)?;
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A random [n, k] weight in `dtype`, packed, against `m` random activation rows: every output
    /// equals `want(weight row bytes, activation row)` bit for bit, whether its row is multiplied
    /// with the others or alone, and is within `tol` of candle's dequantized product.
    pub(crate) fn check(
        dtype: GgmlDType,
        (n, k, m): (usize, usize, usize),
        tol: f32,
        want: impl Fn(&[u8], &[f32]) -> f32,
    ) {
        if !crate::engine::kernels::qmatmul::has_vnni() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(applies(dtype, n, true));
        let packed = pack(&q).unwrap();
        let mut out = vec![0f32; m * n];
        packed.matmul(&x, m, &mut out).unwrap();
        let wb = q.data().unwrap();
        let row = wb.len() / n;
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            let mut alone = vec![0f32; n];
            packed.matmul(xr, 1, &mut alone).unwrap();
            for j in 0..n {
                let want = want(&wb[j * row..(j + 1) * row], xr);
                assert_eq!(out[r * n + j].to_bits(), want.to_bits(), "row {r}, col {j}");
                assert_eq!(alone[j].to_bits(), want.to_bits(), "row {r} alone, col {j}");
            }
        }
        let dense = Tensor::from_vec(x, (m, k), &Device::Cpu)
            .unwrap()
            .matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in out.iter().zip(&dense) {
            assert!((a - b).abs() < tol, "{a} vs {b}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_pack() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let w = Tensor::zeros((40, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            assert!(pack(&q).is_err(), "{dtype:?}: 40 rows are not groups of 16");
            assert!(!applies(dtype, 40, true));
            assert!(!applies(dtype, 64, false), "{dtype:?}: only on the CPU");
        }
        let w = Tensor::zeros((64, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        assert!(pack(&q).is_err() && !applies(GgmlDType::Q4_0, 64, true));
    }
}
