//! Quantized matrix products with 8-bit activations, llama.cpp's (ggml's) arithmetic, for any
//! number of rows.
//!
//! Each activation row is quantized to the weight's dot-product type (Q8_0 for Q8_0 weights,
//! Q8_K for K-quants) with candle's ports of ggml's quantizers, and every output element is an
//! exact integer dot product per block, scaled and summed in a fixed order. An output element
//! is therefore computed by the same instructions whether its row is decoded alone or sits in a
//! 512-row prefill chunk: decode, one-shot and chunked prefill agree bit for bit, and the
//! numbers follow llama.cpp's closely enough to reproduce its greedy tokens.
//!
//! Q8_0 (most of Gemma 3 270M's Q4_K_M weights once Q5_0 is repacked, and its tied output
//! projection) goes through `q8_0.rs` (eight weight rows at a time, one arithmetic for any number
//! of rows; on CPUs with AVX-512 VNNI, the tiles of `vnni` below, ggml's order, for the tied
//! projection only). Q4_K has tiles of its own for several rows (`kquant.rs`: a weight row's
//! unpacking shared by four activation rows, each output equal to candle's dot product, which
//! single rows use); Q6_K uses candle's dot product. Work is split across candle's worker pool.
//! (On CPUs with AVX-512 VNNI the layers' Q8_0, Q4_K and Q6_K weights are repacked and use
//! `packed/` instead.)

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use crate::engine::kernels::kquant;

/// Weight formats these kernels handle.
pub fn supports(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q8_0
            | GgmlDType::Q4K
            | GgmlDType::Q6K
            | GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::BF16
    )
}

/// `x @ Wᵀ` for `x` [m, k] as a candle op.
pub struct QMatmul<'a> {
    pub weight: &'a QTensor,
}

impl CustomOp1 for QMatmul<'_> {
    fn name(&self) -> &'static str {
        "q-matmul-q8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, m, k) = activations(storage, layout)?;
        let (n, wk) = self.weight.shape().dims2()?;
        if wk != k {
            candle_core::bail!("q-matmul: [{m}, {k}] x [{n}, {wk}]ᵀ");
        }
        let data = self.weight.data()?;
        let mut out = vec![0f32; m * n];
        match self.weight.dtype() {
            GgmlDType::Q8_0 => matmul_q8_0(&data, x, m, k, n, &mut out)?,
            // One row: candle's dot product, which the tiles reproduce exactly (`kquant.rs`).
            GgmlDType::Q4K if m == 1 => {
                matmul_vec_dot::<k_quants::BlockQ4K>(&data, x, m, k, n, &mut out)?
            }
            GgmlDType::Q4K => matmul_kquant::<k_quants::BlockQ4K>(
                &data,
                x,
                m,
                k,
                n,
                &mut out,
                kquant::matmul_q4k,
            )?,
            GgmlDType::Q6K => matmul_vec_dot::<k_quants::BlockQ6K>(&data, x, m, k, n, &mut out)?,
            GgmlDType::F32 => matmul_dense::<f32>(&data, x, m, k, n, &mut out)?,
            GgmlDType::F16 => matmul_dense::<half::f16>(&data, x, m, k, n, &mut out)?,
            GgmlDType::BF16 => matmul_dense::<half::bf16>(&data, x, m, k, n, &mut out)?,
            other => candle_core::bail!("q-matmul: {other:?} not supported"),
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// The activations a product op receives: contiguous f32 [m, k], as (values, m, k).
pub(crate) fn activations<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<(&'a [f32], usize, usize)> {
    let CpuStorage::F32(xs) = storage else {
        candle_core::bail!("weight product: f32 activations only");
    };
    let Some((o1, o2)) = layout.contiguous_offsets() else {
        candle_core::bail!("weight product: activations must be contiguous");
    };
    let (m, k) = layout.shape().dims2()?;
    Ok((&xs[o1..o2], m, k))
}

/// An output buffer shared by the workers of candle's pool, each writing its own elements (the
/// callers' SAFETY comments say why they are disjoint).
pub(crate) struct SendPtr<T = f32>(pub(crate) *mut T);
// SAFETY: the pointer is only written through at disjoint indices while the buffer outlives the
// pool call that uses it.
unsafe impl<T> Sync for SendPtr<T> {}
unsafe impl<T> Send for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

/// Views a weight tensor's bytes as its blocks.
fn blocks<T: GgmlType>(bytes: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        candle_core::bail!("q-matmul: weight bytes do not form {:?} blocks", T::DTYPE);
    }
    // SAFETY: length and alignment checked; ggml block types are plain data.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) })
}

/// Quantizes each activation row to the dot-product type of `T`, rows in parallel.
pub(crate) fn quantize_rows<T: GgmlType>(x: &[f32], m: usize, k: usize) -> Vec<T::VecDotType> {
    let kb = k / T::BLCK_SIZE;
    let mut xq = vec![T::VecDotType::zeros(); m * kb];
    if m == 1 {
        T::VecDotType::from_float(x, &mut xq);
        return xq;
    }
    // Rows in parallel: at a 512-row prefill chunk this is a few percent of the time.
    let dst = SendPtr(xq.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
        for r in rows {
            // SAFETY: row r's blocks are written by this work item only, inside `xq`.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * kb), kb) };
            T::VecDotType::from_float(&x[r * k..(r + 1) * k], out);
        }
    });
    xq
}

/// Quantized activation blocks as their bytes (ggml block types are `repr(C)` plain data: Q8_0
/// 34 bytes, Q8_K 292, sizes asserted by candle).
pub(crate) fn as_bytes<T: GgmlType>(blocks: &[T]) -> &[u8] {
    // SAFETY: plain data without padding, viewed for no longer than the borrow.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(blocks))
    }
}

fn check(k: usize, block: usize, w_blocks: usize, n: usize) -> Result<()> {
    if !k.is_multiple_of(block) || w_blocks != n * (k / block) {
        candle_core::bail!("q-matmul: weight of {w_blocks} blocks is not [{n}, {k}]");
    }
    Ok(())
}

/// Any ggml type: candle's dot product per (row, column).
fn matmul_vec_dot<T: GgmlType>(
    w: &[u8],
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let w = blocks::<T>(w)?;
    check(k, T::BLCK_SIZE, w.len(), n)?;
    let kb = k / T::BLCK_SIZE;
    let xq = quantize_rows::<T>(x, m, k);
    let out = SendPtr(out.as_mut_ptr());
    let work = |cols: std::ops::Range<usize>| {
        for j in cols {
            let wr = &w[j * kb..(j + 1) * kb];
            for r in 0..m {
                let v = T::vec_dot(k, wr, &xq[r * kb..(r + 1) * kb]);
                // SAFETY: each output column is written by exactly one work item.
                unsafe { *out.get().add(r * n + j) = v };
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(n, work);
    Ok(())
}

/// Dense weights (f32, f16, bf16) kept in their own width, f32 activations: each weight row is
/// widened once into a buffer and dotted with every activation row (eight lanes, fixed order).
fn matmul_dense<T: GgmlType>(
    w: &[u8],
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let w = blocks::<T>(w)?;
    check(k, 1, w.len(), n)?;
    let out = SendPtr(out.as_mut_ptr());
    let work = |cols: std::ops::Range<usize>| {
        let mut row = vec![0f32; k];
        for j in cols {
            T::to_float(&w[j * k..(j + 1) * k], &mut row);
            for r in 0..m {
                let xr = &x[r * k..(r + 1) * k];
                let mut lanes = [0f32; 8];
                for (cw, cx) in row.chunks_exact(8).zip(xr.chunks_exact(8)) {
                    for i in 0..8 {
                        lanes[i] = cw[i].mul_add(cx[i], lanes[i]);
                    }
                }
                let tail: f32 = row[k / 8 * 8..]
                    .iter()
                    .zip(&xr[k / 8 * 8..])
                    .map(|(a, b)| a * b)
                    .sum();
                // SAFETY: each output column is written by exactly one work item.
                unsafe { *out.get().add(r * n + j) = lanes.iter().sum::<f32>() + tail };
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(n, work);
    Ok(())
}

/// K-quant weights × Q8_K activations through a `kquant.rs` kernel.
fn matmul_kquant<T: GgmlType<VecDotType = k_quants::BlockQ8K>>(
    w: &[u8],
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
    kernel: impl Fn(&[u8], &[u8], usize, usize, usize, &mut [f32]) -> Result<()>,
) -> Result<()> {
    let w_blocks = blocks::<T>(w)?.len();
    check(k, T::BLCK_SIZE, w_blocks, n)?;
    let xq = quantize_rows::<T>(x, m, k);
    kernel(w, as_bytes(&xq), m, k / T::BLCK_SIZE, n, out)
}

pub(crate) const Q8_0_BYTES: usize = 34;

/// Q8_0 weights × Q8_0 activations: `q8_0.rs` (eight weight rows at a time, one arithmetic for
/// every row count), or on CPUs with AVX-512 VNNI the kernels below.
fn matmul_q8_0(w: &[u8], x: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) -> Result<()> {
    check(k, 32, w.len() / Q8_0_BYTES, n)?;
    if !w.len().is_multiple_of(Q8_0_BYTES) {
        candle_core::bail!("q-matmul: Q8_0 weight of {} bytes", w.len());
    }
    let xq = quantize_rows::<k_quants::BlockQ8_0>(x, m, k);
    let xq = as_bytes(&xq);
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if has_vnni() {
        vnni::matmul(w, xq, m, k / 32, n, out);
        return Ok(());
    }
    crate::engine::kernels::q8_0::matmul(w, xq, m, k / 32, n, out);
    Ok(())
}

/// AVX-512 VNNI, detected once.
pub(crate) fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            std::env::var_os("GEMMA_FIT_NO_VNNI").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The f16 scales of Q8_0 blocks (`q`, whole 34-byte blocks), widened: what every Q8_0 kernel
/// multiplies an activation block's integer sums by.
pub(crate) fn q8_0_scales(q: &[u8]) -> Vec<f32> {
    q.chunks_exact(Q8_0_BYTES).map(|b| f16_at(b, 0)).collect()
}

/// The Q8_0 product on CPUs with AVX-512 VNNI, where only the tied output projection takes it
/// (the layers' Q8_0 weights are repacked, `packed/q8_0.rs`): ggml's order per output (integer
/// sums in eight lanes per block, one fused multiply-add per block into an accumulator for the
/// even blocks or one for the odd ones, then their sum, summed across lanes), in 4 × 4 tiles of
/// two blocks per register for several rows, and one stream per worker for a single row. (Not
/// run on machines without VNNI; `GEMMA_FIT_NO_VNNI` turns it off where it would be.)
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod vnni {
    use super::{hsum, q8_0_scales, SendPtr, Q8_0_BYTES};

    pub(super) fn matmul(w: &[u8], xq: &[u8], m: usize, kb: usize, n: usize, out: &mut [f32]) {
        if m == 1 {
            return gemv(w, xq, kb, n, out);
        }
        let job = Job {
            w,
            x: xq,
            m,
            kb,
            n,
            out: SendPtr(out.as_mut_ptr()),
        };
        job.run::<4>();
    }

    /// One activation row (decode): each weight row in turn, so each worker reads one
    /// sequential stream.
    fn gemv(w: &[u8], xq: &[u8], kb: usize, n: usize, out: &mut [f32]) {
        let xd = q8_0_scales(&xq[..kb * Q8_0_BYTES]);
        let row_bytes = kb * Q8_0_BYTES;
        let out = SendPtr(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(n, |range| {
            for j in range {
                let row = &w[j * row_bytes..(j + 1) * row_bytes];
                // SAFETY: only called where VNNI was detected (`has_vnni`).
                let v = unsafe { gemv_row(row, xq, &xd) };
                // SAFETY: each output element is written by exactly one work item.
                unsafe { *out.get().add(j) = v };
            }
        });
    }

    /// Σ over blocks of d_w·d_x·Σ(q_w·q_x) for one weight row, in the order of [`dot_tile`].
    /// `xd`: the activation's block scales, widened.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn gemv_row(w: &[u8], x: &[u8], xd: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        debug_assert!(w.len() >= xd.len() * Q8_0_BYTES && x.len() >= xd.len() * Q8_0_BYTES);
        let mut acc = [_mm256_setzero_ps(); 2];
        for (b, &xdb) in xd.iter().enumerate() {
            let o = b * Q8_0_BYTES;
            let wq = _mm256_loadu_si256(w.as_ptr().add(o + 2) as *const __m256i);
            let xq = _mm256_loadu_si256(x.as_ptr().add(o + 2) as *const __m256i);
            let wabs = _mm256_sign_epi8(wq, wq);
            let signed = _mm256_sign_epi8(xq, wq);
            let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wabs, signed);
            let bits = u16::from_le_bytes([*w.get_unchecked(o), *w.get_unchecked(o + 1)]);
            let wd = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
            let d = _mm256_set1_ps(wd * xdb);
            acc[b & 1] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums), acc[b & 1]);
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }

    struct Job<'a> {
        w: &'a [u8],
        x: &'a [u8],
        m: usize,
        /// Blocks per row.
        kb: usize,
        n: usize,
        out: SendPtr,
    }

    impl Job<'_> {
        /// Every output column, `C` at a time, split across candle's worker pool.
        fn run<const C: usize>(&self) {
            let n = self.n;
            let tiles = n.div_ceil(C);
            candle_core::utils::barrier_pool().execute_chunked(tiles, |range| {
                for t in range {
                    let j0 = t * C;
                    // SAFETY: only called where VNNI was detected (`has_vnni`).
                    unsafe {
                        if j0 + C <= n {
                            self.columns::<C>(j0);
                        } else {
                            for j in j0..n {
                                self.columns::<1>(j);
                            }
                        }
                    }
                }
            });
        }

        /// Output columns j0..j0+C for every activation row, four rows at a time.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn columns<const C: usize>(&self, j0: usize) {
            let mut r = 0;
            while r + 4 <= self.m {
                self.tile::<C, 4>(j0, r);
                r += 4;
            }
            while r < self.m {
                self.tile::<C, 1>(j0, r);
                r += 1;
            }
        }

        /// One C × R tile. Each output element sees exactly the same operations whatever C and R.
        #[inline(always)]
        unsafe fn tile<const C: usize, const R: usize>(&self, j0: usize, r0: usize) {
            let row_bytes = self.kb * Q8_0_BYTES;
            let w =
                std::array::from_fn(|c| &self.w[(j0 + c) * row_bytes..(j0 + c + 1) * row_bytes]);
            let x =
                std::array::from_fn(|r| &self.x[(r0 + r) * row_bytes..(r0 + r + 1) * row_bytes]);
            let sums = dot_tile::<C, R>(w, x, self.kb);
            for (r, row) in sums.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    // SAFETY: each (row, column) is written by exactly one tile of one work item.
                    *self.out.get().add((r0 + r) * self.n + j0 + c) = v;
                }
            }
        }
    }

    /// Σ over blocks of d_w·d_x·Σ(q_w·q_x) for C weight rows × R activation rows, two blocks
    /// per 512-bit register (the even block in the low half, the odd one in the high half, so
    /// the two halves of an accumulator are exactly ggml's even and odd accumulators).
    /// Activations enter as unsigned bytes (x + 128) and the excess 128·Σw is the dot product's
    /// starting value, so one `vpdpbusd` gives the exact signed sums (no sign juggling); scales
    /// are multiplied as vectors. The same operations on the same values as [`gemv_row`],
    /// output for output.
    #[inline(always)]
    unsafe fn dot_tile<const C: usize, const R: usize>(
        w: [&[u8]; C],
        x: [&[u8]; R],
        kb: usize,
    ) -> [[f32; C]; R] {
        use std::arch::x86_64::*;
        // Two blocks' 32 values into one register; `None` (past the last block) is zero.
        unsafe fn pair(row: &[u8], o0: usize, o1: Option<usize>) -> __m512i {
            let lo = _mm256_loadu_si256(row.as_ptr().add(o0 + 2) as *const __m256i);
            match o1 {
                Some(o1) => _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(lo),
                    _mm256_loadu_si256(row.as_ptr().add(o1 + 2) as *const __m256i),
                ),
                None => _mm512_zextsi256_si512(lo),
            }
        }
        // The two blocks' scales, each in its half (0 past the last block).
        unsafe fn scales(row: &[u8], o0: usize, o1: Option<usize>) -> __m512 {
            let h = |o: usize| u16::from_le_bytes([row[o], row[o + 1]]) as i16;
            let two = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, 0, 0, o1.map_or(0, h), h(o0)));
            let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(two))
        }
        let s80 = _mm512_set1_epi8(0x80u8 as i8);
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for b in (0..kb).step_by(2) {
            let o0 = b * Q8_0_BYTES;
            let o1 = (b + 1 < kb).then_some(o0 + Q8_0_BYTES);
            let wq: [__m512i; C] = std::array::from_fn(|c| pair(w[c], o0, o1));
            let base: [__m512i; C] = std::array::from_fn(|c| {
                _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, s80, wq[c]))
            });
            let wd: [__m512; C] = std::array::from_fn(|c| scales(w[c], o0, o1));
            for r in 0..R {
                let xu = _mm512_xor_si512(pair(x[r], o0, o1), s80);
                let xd = scales(x[r], o0, o1);
                for c in 0..C {
                    let sums = _mm512_dpbusd_epi32(base[c], xu, wq[c]);
                    let d = _mm512_mul_ps(wd[c], xd);
                    acc[r][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sums), acc[r][c]);
                }
            }
        }
        let mut out = [[0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let a = acc[r][c];
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
                out[r][c] = hsum(_mm256_add_ps(_mm512_castps512_ps256(a), hi));
            }
        }
        out
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
/// Sum of the eight lanes (candle's `hsum_float_8`: the same operations in the same order).
#[inline(always)]
pub(crate) unsafe fn hsum(x: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let mut res = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module, Tensor};

    fn product(q: &QTensor, x: &Tensor) -> Vec<f32> {
        x.apply_op1_no_bwd(&QMatmul { weight: q })
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Against candle's own quantized product (the same 8-bit arithmetic, its unpacked kernels),
    /// for every row count, and row by row: a row's result must not depend on its neighbours.
    #[test]
    fn matches_candle_and_is_row_independent() {
        let dev = Device::Cpu;
        for dtype in [
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::BF16,
        ] {
            // Q8_0 also with an odd number of blocks per row (the 512-bit kernel pairs them).
            let odd: &[(usize, usize, usize)] = if dtype == GgmlDType::Q8_0 {
                &[(9, 96, 13), (1, 96, 5)]
            } else {
                &[]
            };
            for &(m, k, n) in [(1, 512, 300), (3, 768, 66), (17, 256, 5)]
                .iter()
                .chain(odd)
            {
                let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
                let ours = product(&q, &x);
                let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap())
                    .unwrap()
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                for (a, b) in ours.iter().zip(&theirs) {
                    assert!(
                        (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                        "{dtype:?} m {m}: {a} vs {b}"
                    );
                }
                for r in 0..m {
                    let alone = product(&q, &x.narrow(0, r, 1).unwrap());
                    assert_eq!(
                        alone[..],
                        ours[r * n..(r + 1) * n],
                        "{dtype:?} m {m} row {r}"
                    );
                }
            }
        }
    }
}
