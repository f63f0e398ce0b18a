//! Q8_0 weights × Q8_0 activations, eight weight rows at a time, on the weights as loaded: the
//! product of every Q8_0 weight on CPUs without AVX-512 VNNI (the tied output projection
//! included, whose bytes the token embedding's lookup also reads, so they cannot be repacked).
//!
//! ggml's Q8_0 dot product spends a conversion, a scale multiply and a fused add per (output,
//! block) next to each 32-product integer dot; with AVX2 that is about seven vector instructions
//! per 32 products, and once several activation rows share the weights (a batch, a prefill
//! chunk) the product is bound by that arithmetic, not by memory. Here each block of eight
//! weight rows is transposed in registers into eight vectors of (row 0..8) × four bytes, the
//! layout the AVX-512 VNNI kernels repack to at load (`packed/q8_0.rs`), so one sign / multiply-
//! add / widen / add sequence advances eight outputs by four products each and the per-block
//! scaling is shared by eight outputs: about four instructions per 32 products, plus the
//! transposition, which the activation rows of a tile share.
//!
//! Arithmetic per output ([`reference`]): for each block, the exact integer Σ w·x, widened to
//! f32 and fused into one accumulator with `d_w·d_x`, blocks in order. It is the same whatever
//! the number of activation rows, so decode, batches and prefill agree bit for bit, and the same
//! as the repacked kernels'.

use crate::engine::kernels::qmatmul::{f16_at, q8_0_scales, SendPtr, Q8_0_BYTES};

/// Weight rows per column unit.
const ROWS: usize = 8;

/// How many groups ahead the weights are prefetched.
const PREFETCH: usize = 2;

/// `out[r·n + j] = Σ_b d_w·d_x·Σ(q_w·q_x)` for the Q8_0 weight `w` ([n, kb blocks]) and the
/// Q8_0 activation rows `xq` ([m, kb blocks]), split across candle's worker pool by groups of
/// eight weight rows; each group's transposed blocks serve four activation rows per tile.
pub(crate) fn matmul(w: &[u8], xq: &[u8], m: usize, kb: usize, n: usize, out: &mut [f32]) {
    let row_bytes = kb * Q8_0_BYTES;
    debug_assert!(w.len() == n * row_bytes && xq.len() == m * row_bytes && out.len() == m * n);
    let xd = q8_0_scales(xq);
    let out = SendPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(ROWS), |units| {
        // The last group when n is not a multiple of eight: its rows, then zero blocks (their
        // outputs are computed and dropped; the real rows' arithmetic is unchanged).
        let mut padded = Vec::new();
        for u in units {
            let j0 = u * ROWS;
            let rows = (n - j0).min(ROWS);
            let group = if rows == ROWS {
                &w[j0 * row_bytes..(j0 + ROWS) * row_bytes]
            } else {
                padded.clear();
                padded.extend_from_slice(&w[j0 * row_bytes..]);
                padded.resize(ROWS * row_bytes, 0);
                &padded[..]
            };
            let put = |r0: usize, sums: &[[f32; ROWS]]| {
                for (r, s) in sums.iter().enumerate() {
                    // SAFETY: row r0+r, columns j0..j0+rows belong to this group alone, inside
                    // the [m, n] output.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            s.as_ptr(),
                            out.get().add((r0 + r) * n + j0),
                            rows,
                        )
                    };
                }
            };
            // The first tile of a group fetches the group after next into the cache as it goes.
            let ahead = w.as_ptr().wrapping_add((j0 + PREFETCH * ROWS) * row_bytes);
            let mut r = 0;
            while r + 4 <= m {
                put(
                    r,
                    &tile::<4>(group, xq, &xd, r, kb, (r == 0).then_some(ahead)),
                );
                r += 4;
            }
            while r < m {
                put(
                    r,
                    &tile::<1>(group, xq, &xd, r, kb, (r == 0).then_some(ahead)),
                );
                r += 1;
            }
        }
    });
}

/// Eight weight rows (`w`, contiguous) × activation rows `r0..r0+R` of `x` (`xd`: their block
/// scales, widened).
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
#[inline(always)]
fn tile<const R: usize>(
    w: &[u8],
    x: &[u8],
    xd: &[f32],
    r0: usize,
    kb: usize,
    ahead: Option<*const u8>,
) -> [[f32; ROWS]; R] {
    use std::arch::x86_64::*;
    let row_bytes = kb * Q8_0_BYTES;
    assert!(w.len() >= ROWS * row_bytes && x.len() >= (r0 + R) * row_bytes);
    assert!(xd.len() >= (r0 + R) * kb);
    // SAFETY: the build enables AVX2/FMA/F16C; every load reads inside a block of a row checked
    // above (32 bytes at offset 2 of 34, 4 bytes at offset 2 + 4i, or the 2-byte scale).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let scale = |j: usize, o: usize| {
            let p = w.as_ptr().add(j * row_bytes + o);
            i16::from_le_bytes([*p, *p.add(1)])
        };
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let o = b * Q8_0_BYTES;
            if let Some(p) = ahead {
                // A prefetch never faults, wherever it points.
                for l in 0..(ROWS * Q8_0_BYTES).div_ceil(64) {
                    _mm_prefetch::<_MM_HINT_T0>(
                        p.wrapping_add(b * ROWS * Q8_0_BYTES + 64 * l) as *const i8
                    );
                }
            }
            let rw: [__m256i; ROWS] = std::array::from_fn(|j| {
                _mm256_loadu_si256(w.as_ptr().add(j * row_bytes + o + 2) as *const __m256i)
            });
            let t = transpose(rw);
            let dw = _mm256_cvtph_ps(_mm_set_epi16(
                scale(7, o),
                scale(6, o),
                scale(5, o),
                scale(4, o),
                scale(3, o),
                scale(2, o),
                scale(1, o),
                scale(0, o),
            ));
            let mut sum = [_mm256_setzero_si256(); R];
            for (i, &ti) in t.iter().enumerate() {
                let wabs = _mm256_sign_epi8(ti, ti);
                for (r, s) in sum.iter_mut().enumerate() {
                    let at = x.as_ptr().add((r0 + r) * row_bytes + o + 2 + 4 * i);
                    let xb = _mm256_set1_epi32(std::ptr::read_unaligned(at as *const i32));
                    let p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xb, ti));
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
                }
            }
            for r in 0..R {
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(*xd.get_unchecked((r0 + r) * kb + b)));
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum[r]), acc[r]);
            }
        }
        let mut out = [[0f32; ROWS]; R];
        for r in 0..R {
            _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
        out
    }
}

/// Eight rows of eight 4-byte groups → eight vectors, vector `i` holding group `i` of rows 0..8.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline(always)]
unsafe fn transpose(r: [std::arch::x86_64::__m256i; ROWS]) -> [std::arch::x86_64::__m256i; ROWS] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved by 4 bytes, then by 8, then the 128-bit halves exchanged.
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[0..4]: rows 0..4, groups (0|4), (1|5), (2|6), (3|7); u[4..8]: the same for rows 4..8.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let base = i / 4 * 4;
        let (lo, hi) = (t[base + (i % 4) / 2], t[base + 2 + (i % 4) / 2]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi64(lo, hi)
        } else {
            _mm256_unpackhi_epi64(lo, hi)
        }
    });
    std::array::from_fn(|i| {
        if i < 4 {
            _mm256_permute2x128_si256::<0x20>(u[i], u[i + 4])
        } else {
            _mm256_permute2x128_si256::<0x31>(u[i - 4], u[i])
        }
    })
}

/// Portable version: [`reference`] per output.
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
fn tile<const R: usize>(
    w: &[u8],
    x: &[u8],
    _xd: &[f32],
    r0: usize,
    kb: usize,
    _ahead: Option<*const u8>,
) -> [[f32; ROWS]; R] {
    let row_bytes = kb * Q8_0_BYTES;
    std::array::from_fn(|r| {
        let xr = &x[(r0 + r) * row_bytes..(r0 + r + 1) * row_bytes];
        std::array::from_fn(|j| reference(&w[j * row_bytes..(j + 1) * row_bytes], xr))
    })
}

/// The arithmetic of every kernel here and of the repacked ones, for one output, in plain Rust:
/// row `w` of a Q8_0 weight (its bytes) against one Q8_0 activation row `x` (its bytes).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::qmatmul::{as_bytes, quantize_rows};
    use candle_core::quantized::k_quants::BlockQ8_0;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Every output is [`reference`] bit for bit, for row counts that take the 4-row tiles, the
    /// single rows after them, and both; with a last group of fewer than eight weight rows; and
    /// each activation row's outputs are the same alone as among the others.
    #[test]
    fn equals_the_reference_alone_or_together() {
        for (n, k, m) in [(40, 320, 9), (13, 64, 4), (8, 32, 1), (21, 96, 6)] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let wb = q.data().unwrap();
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let kb = k / 32;
            let row = kb * Q8_0_BYTES;
            let xq = quantize_rows::<BlockQ8_0>(&x, m, k);
            let xq = as_bytes(&xq);
            let mut out = vec![f32::NAN; m * n];
            matmul(&wb, xq, m, kb, n, &mut out);
            for r in 0..m {
                let xr = &xq[r * row..(r + 1) * row];
                let mut alone = vec![f32::NAN; n];
                matmul(&wb, xr, 1, kb, n, &mut alone);
                for j in 0..n {
                    let want = reference(&wb[j * row..(j + 1) * row], xr);
                    let got = out[r * n + j];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "[{n}, {k}] m {m}: row {r} col {j}"
                    );
                    assert_eq!(alone[j].to_bits(), want.to_bits(), "row {r} alone, col {j}");
                }
            }
        }
    }

    /// The reference is the product it claims to be: Σ d_w·d_x·Σ q_w·q_x against the weights
    /// and activations dequantized, in f64.
    #[test]
    fn reference_is_the_dequantized_product() {
        let (n, k) = (3, 128);
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let wd: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let xq = quantize_rows::<BlockQ8_0>(&x, 1, k);
        let xd: Vec<f32> = {
            let t = QTensor::quantize(
                &Tensor::from_vec(x.clone(), (1, k), &Device::Cpu).unwrap(),
                GgmlDType::Q8_0,
            )
            .unwrap();
            t.dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let wb = q.data().unwrap();
        let row = k / 32 * Q8_0_BYTES;
        for j in 0..n {
            let want: f64 = (0..k).map(|i| wd[j * k + i] as f64 * xd[i] as f64).sum();
            let got = reference(&wb[j * row..(j + 1) * row], as_bytes(&xq)) as f64;
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }
}
