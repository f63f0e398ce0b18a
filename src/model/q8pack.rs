//! Q8_0 weights repacked at load for AVX-512 VNNI: sixteen weight rows side by side, so one
//! `vpdpbusd` advances sixteen outputs by four products each.
//!
//! The plain Q8_0 tiles of `qmatmul.rs` spend a conversion, a scale multiply and a fused add per
//! (output, block pair) next to each 64-product integer dot, which bounds them at ~10 products per
//! cycle. Here sixteen rows share those three instructions per block (llama.cpp repacks its
//! weights for the same reason), and activations enter as broadcast four-byte groups.
//!
//! Layout, per group of 16 rows and per block of 32 columns: 8 × 64 bytes of quants (group `i`:
//! row `j`'s bytes `4i..4i+4` of the block at bytes `4j..4j+4`, each stored as `w + 128`, an
//! unsigned byte for `vpdpbusd`), and the 16 rows' f16 scales apart. Same size as the Q8_0
//! blocks: repacking holds no more memory (the loaded tensor is freed).
//!
//! Arithmetic per output: for each block, the exact integer Σ w·x (the `+128` is taken back by
//! starting the sum at −128·Σx), widened to f32 and fused into the accumulator with
//! `d_w·d_x`, blocks in order. The same per output whatever the number of activation rows, so
//! decode and prefill agree bit for bit ([`reference`] spells it out; the tests compare).

use candle_core::quantized::k_quants::BlockQ8_0;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use crate::model::qmatmul::{f16_at, has_vnni, quantize_rows, SendPtr, Q8_0_BYTES};

/// Weight rows per group.
const ROWS: usize = 16;
/// Quant bytes of one group's block.
const GROUP_BLOCK: usize = ROWS * 32;

/// A Q8_0 weight [n, k] in the interleaved layout.
pub struct PackedQ8 {
    n: usize,
    kb: usize,
    quants: Vec<u8>,
    scales: Vec<u16>,
}

impl PackedQ8 {
    /// Whether a weight of `dtype` [n, k] is repacked here: Q8_0 on a CPU with AVX-512 VNNI (the
    /// kernel's instructions), rows a multiple of 16.
    pub fn applies(dtype: GgmlDType, n: usize, on_cpu: bool) -> bool {
        on_cpu && dtype == GgmlDType::Q8_0 && n.is_multiple_of(ROWS) && has_vnni()
    }

    /// Repacks a Q8_0 weight [n, k].
    pub fn pack(weight: &QTensor) -> Result<Self> {
        let (n, k) = weight.shape().dims2()?;
        if weight.dtype() != GgmlDType::Q8_0 || !n.is_multiple_of(ROWS) || !k.is_multiple_of(32) {
            candle_core::bail!("q8-pack: {:?} [{n}, {k}] is not packable", weight.dtype());
        }
        let data = weight.data()?;
        let kb = k / 32;
        if data.len() != n * kb * Q8_0_BYTES {
            candle_core::bail!("q8-pack: {} bytes are not Q8_0 [{n}, {k}]", data.len());
        }
        let mut quants = vec![0u8; n * k];
        let mut scales = vec![0u16; n * kb];
        for g in 0..n / ROWS {
            for b in 0..kb {
                let gb = g * kb + b;
                let dst = &mut quants[gb * GROUP_BLOCK..(gb + 1) * GROUP_BLOCK];
                for j in 0..ROWS {
                    let src = ((g * ROWS + j) * kb + b) * Q8_0_BYTES;
                    scales[gb * ROWS + j] = u16::from_le_bytes([data[src], data[src + 1]]);
                    for (q, &w) in data[src + 2..src + Q8_0_BYTES].iter().enumerate() {
                        dst[(q / 4) * 64 + j * 4 + q % 4] = w ^ 0x80;
                    }
                }
            }
        }
        Ok(Self {
            n,
            kb,
            quants,
            scales,
        })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    /// `x @ Wᵀ` for `x` [m, k] (row-major) into `out` [m, n].
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let k = self.kb * 32;
        if x.len() != m * k || out.len() != m * self.n {
            candle_core::bail!(
                "q8-pack: [{m}, {}] x [{}, {k}]ᵀ",
                x.len() / m.max(1),
                self.n
            );
        }
        if !has_vnni() {
            candle_core::bail!("q8-pack: this CPU lacks AVX-512 VNNI");
        }
        let acts = Acts::new(x, m, self.kb);
        let out = SendPtr(out.as_mut_ptr());
        let pairs = (self.n / ROWS).div_ceil(2);
        candle_core::utils::barrier_pool().execute_chunked(pairs, |range| {
            for p in range {
                // SAFETY: VNNI checked above; each work item writes only its own groups' columns.
                unsafe {
                    if 2 * p + 2 <= self.n / ROWS {
                        self.columns::<2>(&acts, 2 * p, &out)
                    } else {
                        self.columns::<1>(&acts, 2 * p, &out)
                    }
                }
            }
        });
        Ok(())
    }

    /// Groups g0..g0+G against every activation row, four at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn columns<const G: usize>(&self, a: &Acts, g0: usize, out: &SendPtr) {
        let mut r = 0;
        while r + 4 <= a.m {
            self.tile::<4, G>(a, r, g0, out);
            r += 4;
        }
        while r < a.m {
            self.tile::<1, G>(a, r, g0, out);
            r += 1;
        }
    }

    // Indexed loops over the tile's registers read plainest here.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize, const G: usize>(
        &self,
        a: &Acts,
        r0: usize,
        g0: usize,
        out: &SendPtr,
    ) {
        use std::arch::x86_64::*;
        let kb = self.kb;
        let q = self.quants.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        for b in 0..kb {
            let mut sum = [[_mm512_setzero_si512(); G]; R];
            for r in 0..R {
                let base = _mm512_set1_epi32(a.base[(r0 + r) * kb + b]);
                for g in 0..G {
                    sum[r][g] = base;
                }
            }
            for i in 0..8 {
                let mut w = [_mm512_setzero_si512(); G];
                for g in 0..G {
                    w[g] = _mm512_loadu_si512(
                        q.add(((g0 + g) * kb + b) * GROUP_BLOCK + i * 64) as *const __m512i
                    );
                }
                for r in 0..R {
                    let xv = _mm512_set1_epi32(std::ptr::read_unaligned(
                        a.q.as_ptr()
                            .add(((r0 + r) * kb + b) * Q8_0_BYTES + 2 + 4 * i)
                            as *const i32,
                    ));
                    for g in 0..G {
                        sum[r][g] = _mm512_dpbusd_epi32(sum[r][g], w[g], xv);
                    }
                }
            }
            let mut dw = [_mm512_setzero_ps(); G];
            for g in 0..G {
                dw[g] = _mm512_cvtph_ps(_mm256_loadu_si256(
                    self.scales.as_ptr().add(((g0 + g) * kb + b) * ROWS) as *const __m256i,
                ));
            }
            for r in 0..R {
                let dx = _mm512_set1_ps(a.d[(r0 + r) * kb + b]);
                for g in 0..G {
                    let d = _mm512_mul_ps(dw[g], dx);
                    acc[r][g] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum[r][g]), acc[r][g]);
                }
            }
        }
        for r in 0..R {
            for g in 0..G {
                // SAFETY: row r0+r, columns (g0+g)*16.. are this tile's alone, inside [m, n].
                _mm512_storeu_ps(
                    out.get().add((r0 + r) * self.n + (g0 + g) * ROWS),
                    acc[r][g],
                );
            }
        }
    }
}

/// Activation rows quantized to Q8_0 (candle's quantizer, as llama.cpp's), with each block's
/// scale widened and −128·Σq (the start of its integer sum).
struct Acts {
    m: usize,
    q: Vec<u8>,
    d: Vec<f32>,
    base: Vec<i32>,
}

impl Acts {
    fn new(x: &[f32], m: usize, kb: usize) -> Self {
        let blocks = quantize_rows::<BlockQ8_0>(x, m, kb * 32);
        // SAFETY: BlockQ8_0 is repr(C) { f16, [i8; 32] }, 34 bytes (asserted by candle).
        let q = unsafe {
            std::slice::from_raw_parts(blocks.as_ptr() as *const u8, blocks.len() * Q8_0_BYTES)
        }
        .to_vec();
        let d = (0..m * kb).map(|i| f16_at(&q, i * Q8_0_BYTES)).collect();
        let base = q
            .chunks_exact(Q8_0_BYTES)
            .map(|blk| -128 * blk[2..].iter().map(|&v| v as i8 as i32).sum::<i32>())
            .collect();
        Self { m, q, d, base }
    }
}

/// The kernel's arithmetic for one output, in plain Rust: row `j` of a Q8_0 weight (`w`, its
/// bytes) against one Q8_0 activation row (`x`, its bytes).
pub fn reference(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(Q8_0_BYTES).zip(x.chunks_exact(Q8_0_BYTES)) {
        let sum: i32 = wb[2..]
            .iter()
            .zip(&xb[2..])
            .map(|(&a, &b)| a as i8 as i32 * b as i8 as i32)
            .sum();
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        acc = d.mul_add(sum as f32, acc);
    }
    acc
}

/// [`PackedQ8::matmul`] as a candle op.
pub struct PackedMatmul<'a>(pub &'a PackedQ8);

impl CustomOp1 for PackedMatmul<'_> {
    fn name(&self) -> &'static str {
        "q8-packed-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = storage else {
            candle_core::bail!("q8-pack: f32 activations only");
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("q8-pack: activations must be contiguous");
        };
        let (m, k) = layout.shape().dims2()?;
        if k != self.0.kb * 32 {
            candle_core::bail!("q8-pack: [{m}, {k}] x [{}, {}]ᵀ", self.0.n, self.0.kb * 32);
        }
        let mut out = vec![0f32; m * self.0.n];
        self.0.matmul(&xs[o1..o2], m, &mut out)?;
        Ok((CpuStorage::F32(out), Shape::from((m, self.0.n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn case(n: usize, k: usize, m: usize) -> (QTensor, Vec<f32>) {
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        (q, x.flatten_all().unwrap().to_vec1().unwrap())
    }

    /// Every output equals the reference arithmetic bit for bit, whatever the row count (tails of
    /// the 4-row tiles and of the 2-group pairs included), and is close to candle's product.
    #[test]
    fn equals_the_reference_bit_for_bit() {
        if !has_vnni() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let (n, k, m) = (48, 320, 7);
        let (q, x) = case(n, k, m);
        let packed = PackedQ8::pack(&q).unwrap();
        let mut out = vec![0f32; m * n];
        packed.matmul(&x, m, &mut out).unwrap();
        let w = q.data().unwrap();
        let xq = quantize_rows::<BlockQ8_0>(&x, m, k);
        // SAFETY: as in `Acts::new`.
        let xq =
            unsafe { std::slice::from_raw_parts(xq.as_ptr() as *const u8, xq.len() * Q8_0_BYTES) };
        let rb = k / 32 * Q8_0_BYTES;
        for r in 0..m {
            let mut alone = vec![0f32; n];
            packed
                .matmul(&x[r * k..(r + 1) * k], 1, &mut alone)
                .unwrap();
            for j in 0..n {
                let want = reference(&w[j * rb..(j + 1) * rb], &xq[r * rb..(r + 1) * rb]);
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
            assert!((a - b).abs() < 0.05, "{a} vs {b}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_pack() {
        let (q, _) = case(40, 64, 1);
        assert!(PackedQ8::pack(&q).is_err(), "40 rows are not groups of 16");
        assert!(!PackedQ8::applies(GgmlDType::Q4K, 64, true));
        assert!(!PackedQ8::applies(GgmlDType::Q8_0, 64, false));
    }
}
