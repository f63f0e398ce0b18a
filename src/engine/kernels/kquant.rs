//! Q4_K weights × Q8_K activations for several activation rows: ggml's (and candle's)
//! per-block arithmetic, with one weight row's unpacking (scales, mins, 4-bit halves) shared by a
//! tile of activation rows. (The same for Q6_K measured no faster than candle's per-element dot
//! product, `benches/kernels.rs`, so Q6_K keeps that.) Every output is computed by the same operations in the same order
//! as candle's `vec_dot` for that pair of rows, so decode and prefill agree bit for bit and
//! agree with candle exactly.
//!
//! Weight rows are taken one at a time per worker (one sequential stream each: several rows read
//! at once lose DRAM throughput here, see `qmatmul.rs`).

use candle_core::Result;

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
use crate::engine::kernels::qmatmul::hsum;
use crate::engine::kernels::qmatmul::{f16_at, SendPtr};

/// Bytes of a Q4_K block (256 values): d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 of
/// 4-bit values.
pub const Q4K_BYTES: usize = 144;
/// Bytes of a Q8_K block: d (f32), 256 i8 values, 16 i16 sums of 16 values each.
pub const Q8K_BYTES: usize = 292;

/// `out[r, j] = x[r] · w[j]` for `xq`: `m` rows of Q8_K blocks (as bytes), `w`: `n` rows of `kb`
/// Q4_K blocks.
pub fn matmul_q4k(
    w: &[u8],
    xq: &[u8],
    m: usize,
    kb: usize,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let one = |wr: &[u8], x: &[u8]| tile::<1, false>(wr, [x], kb)[0];
    #[cfg(target_arch = "x86_64")]
    if crate::engine::kernels::qmatmul::has_vnni() {
        let four = |wr: &[u8], x: [&[u8]; 4]| {
            // SAFETY: the CPU has these features (checked at run time).
            unsafe { tile_vnni::<4>(wr, x, kb) }
        };
        return matmul(w, Q4K_BYTES, xq, m, kb, n, out, four, one);
    }
    let four = |wr: &[u8], x: [&[u8]; 4]| {
        let [a, b] = tile::<2, false>(wr, [x[0], x[1]], kb);
        let [c, d] = tile::<2, false>(wr, [x[2], x[3]], kb);
        [a, b, c, d]
    };
    matmul(w, Q4K_BYTES, xq, m, kb, n, out, four, one)
}

/// Every output column in turn (a worker's weight rows are one sequential stream), four
/// activation rows at a time (`four`), then one at a time (`one`).
#[allow(clippy::too_many_arguments)]
fn matmul(
    w: &[u8],
    block_bytes: usize,
    xq: &[u8],
    m: usize,
    kb: usize,
    n: usize,
    out: &mut [f32],
    four: impl Fn(&[u8], [&[u8]; 4]) -> [f32; 4] + Sync,
    one: impl Fn(&[u8], &[u8]) -> f32 + Sync,
) -> Result<()> {
    if w.len() != n * kb * block_bytes || xq.len() != m * kb * Q8K_BYTES || out.len() != m * n {
        candle_core::bail!(
            "k-quant matmul: buffers do not match [{m}, {}] x [{n}, {}]ᵀ",
            kb * 256,
            kb * 256
        );
    }
    let out = SendPtr(out.as_mut_ptr());
    let w_row = kb * block_bytes;
    let x_row = kb * Q8K_BYTES;
    candle_core::utils::barrier_pool().execute_chunked(n, |cols| {
        for j in cols {
            let wr = &w[j * w_row..(j + 1) * w_row];
            let xr = |r: usize| &xq[r * x_row..(r + 1) * x_row];
            // SAFETY (both writes): output column j is written by this work item only.
            let mut r = 0;
            while r + 4 <= m {
                let sums = four(wr, std::array::from_fn(|i| xr(r + i)));
                for (i, v) in sums.into_iter().enumerate() {
                    unsafe { *out.get().add((r + i) * n + j) = v };
                }
                r += 4;
            }
            while r < m {
                unsafe { *out.get().add(r * n + j) = one(wr, xr(r)) };
                r += 1;
            }
        }
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_vnni<const R: usize>(w: &[u8], x: [&[u8]; R], kb: usize) -> [f32; R] {
    tile::<R, true>(w, x, kb)
}

/// The 6-bit scales and mins of a Q4_K block as 8 + 8 bytes (ggml's `utmp` shuffle).
pub(crate) fn scales_and_mins(sc: &[u8]) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let word =
        |i: usize| u32::from_le_bytes([sc[4 * i], sc[4 * i + 1], sc[4 * i + 2], sc[4 * i + 3]]);
    let mut u = [word(0), word(1), word(2), 0];
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let uaux = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = uaux;
    u[0] &= KMASK1;
    u
}

/// One weight row against R activation rows.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
fn tile<const R: usize, const VNNI: bool>(w: &[u8], x: [&[u8]; R], kb: usize) -> [f32; R] {
    use std::arch::x86_64::*;
    // SAFETY: the build enables AVX2/FMA; every load reads inside a block (sizes checked by the
    // caller: w is kb Q4_K blocks, each x row kb Q8_K blocks).
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut acc_m = [_mm_setzero_ps(); R];
        for b in 0..kb {
            let wb = &w[b * Q4K_BYTES..(b + 1) * Q4K_BYTES];
            let (wd, wmin) = (f16_at(wb, 0), f16_at(wb, 2));
            let u = scales_and_mins(&wb[4..16]);
            let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
                u[3] as i32,
                u[2] as i32,
                u[1] as i32,
                u[0] as i32,
            ));
            let mins = _mm256_extracti128_si256(mins_and_scales, 1);
            let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
            let scales = _mm256_set_m128i(sc128, sc128);
            let mut sumi = [_mm256_setzero_si256(); R];
            for j in 0..4 {
                // Scale 2j (then 2j + 1) in every 16-bit lane.
                let pick = |i: i16| _mm256_set1_epi16(((2 * i + 1) << 8) | (2 * i));
                let scale_l = _mm256_shuffle_epi8(scales, pick(2 * j as i16));
                let scale_h = _mm256_shuffle_epi8(scales, pick(2 * j as i16 + 1));
                let q4bits = _mm256_loadu_si256(wb.as_ptr().add(16 + 32 * j) as *const __m256i);
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                for r in 0..R {
                    let q8 = x[r].as_ptr().add(b * Q8K_BYTES + 4 + 64 * j);
                    let p16l = _mm256_maddubs_epi16(q4l, _mm256_loadu_si256(q8 as *const __m256i));
                    let p16h =
                        _mm256_maddubs_epi16(q4h, _mm256_loadu_si256(q8.add(32) as *const __m256i));
                    // The same exact integer sums either way: VNNI fuses multiply-add and add.
                    if VNNI {
                        sumi[r] = _mm256_dpwssd_epi32(sumi[r], scale_l, p16l);
                        sumi[r] = _mm256_dpwssd_epi32(sumi[r], scale_h, p16h);
                    } else {
                        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(scale_l, p16l));
                        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(scale_h, p16h));
                    }
                }
            }
            for r in 0..R {
                let xb = x[r].as_ptr().add(b * Q8K_BYTES);
                let yd = f32::from_le_bytes(std::ptr::read_unaligned(xb as *const [u8; 4]));
                let d = yd * wd;
                let dmin = -yd * wmin;
                let q8sums = _mm256_loadu_si256(xb.add(4 + 256) as *const __m256i);
                let q8s = _mm_hadd_epi16(
                    _mm256_extracti128_si256(q8sums, 0),
                    _mm256_extracti128_si256(q8sums, 1),
                );
                let prod = _mm_madd_epi16(mins, q8s);
                acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            }
        }
        std::array::from_fn(|r| {
            let m = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
            let m = _mm_add_ss(m, _mm_movehdup_ps(m));
            hsum(acc[r]) + _mm_cvtss_f32(m)
        })
    }
}

/// Portable version: ggml's scalar arithmetic (the same integer sums; float order may differ
/// from the SIMD build, so this build's results are its own).
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
fn tile<const R: usize, const VNNI: bool>(w: &[u8], x: [&[u8]; R], kb: usize) -> [f32; R] {
    std::array::from_fn(|r| {
        let mut sum = 0f32;
        for b in 0..kb {
            let wb = &w[b * Q4K_BYTES..(b + 1) * Q4K_BYTES];
            let xb = &x[r][b * Q8K_BYTES..(b + 1) * Q8K_BYTES];
            let (wd, wmin) = (f16_at(wb, 0), f16_at(wb, 2));
            let yd = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
            let u = scales_and_mins(&wb[4..16]);
            let bytes: Vec<u8> = u.iter().flat_map(|v| v.to_le_bytes()).collect();
            let (scales, mins) = (&bytes[..8], &bytes[8..]);
            let (mut sumi, mut summ) = (0i32, 0i32);
            for g in 0..8 {
                let bsum = |i: usize| i16::from_le_bytes([xb[260 + 2 * i], xb[261 + 2 * i]]) as i32;
                summ += mins[g] as i32 * (bsum(2 * g) + bsum(2 * g + 1));
                let mut s = 0i32;
                for i in 0..32 {
                    let byte = wb[16 + 32 * (g / 2) + i];
                    let q = if g % 2 == 0 { byte & 0xF } else { byte >> 4 };
                    s += q as i32 * (xb[4 + 32 * g + i] as i8) as i32;
                }
                sumi += scales[g] as i32 * s;
            }
            sum += yd * wd * sumi as f32 - yd * wmin * summ as f32;
        }
        sum
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4K, BlockQ8K, GgmlType};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    type Kernel = fn(&[u8], &[u8], usize, usize, usize, &mut [f32]) -> candle_core::Result<()>;

    /// Exactly candle's `vec_dot` for every (activation row, weight row), whatever the number of
    /// rows in the tile.
    #[test]
    fn tiles_equal_candles_vec_dot() {
        check::<BlockQ4K>(GgmlDType::Q4K, matmul_q4k);
    }

    fn check<T: GgmlType<VecDotType = BlockQ8K>>(dtype: GgmlDType, kernel: Kernel) {
        for (m, k, n) in [(1, 256, 7), (5, 2048, 9), (8, 512, 3)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let data = q.data().unwrap();
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m * k,), &Device::Cpu)
                .unwrap()
                .to_vec1()
                .unwrap();
            let kb = k / 256;
            let mut xq = vec![BlockQ8K::zeros(); m * kb];
            for r in 0..m {
                BlockQ8K::from_float(&x[r * k..(r + 1) * k], &mut xq[r * kb..(r + 1) * kb]);
            }
            // SAFETY: ggml blocks are plain repr(C) data of these sizes.
            let (wb, xb) = unsafe {
                (
                    std::slice::from_raw_parts(data.as_ptr() as *const T, n * kb),
                    std::slice::from_raw_parts(xq.as_ptr() as *const u8, m * kb * Q8K_BYTES),
                )
            };
            let mut out = vec![0f32; m * n];
            kernel(&data, xb, m, kb, n, &mut out).unwrap();
            for r in 0..m {
                for j in 0..n {
                    let want = T::vec_dot(k, &wb[j * kb..(j + 1) * kb], &xq[r * kb..(r + 1) * kb]);
                    assert_eq!(out[r * n + j], want, "{dtype:?} m {m} k {k}: ({r}, {j})");
                }
            }
        }
    }

    #[test]
    fn mismatched_buffers_are_errors() {
        let mut out = vec![0f32; 2];
        assert!(matmul_q4k(&[0u8; Q4K_BYTES], &[0u8; Q8K_BYTES], 1, 1, 2, &mut out).is_err());
    }
}
