//! Q6_K weights repacked at load for AVX-512 VNNI, as `q4kpack.rs` does for Q4_K: sixteen weight
//! rows side by side, so one `vpdpbusd` advances sixteen outputs by four products each.
//!
//! Layout, per group of 16 rows and per 256-value block (ggml's block: 128 bytes of low 4 bits,
//! 64 of high 2 bits, 16 signed 8-bit scales, f16 d): the low-bit bytes as 32 vectors and the
//! high-bit bytes as 16 vectors of 64 bytes (vector `v`: row `j`'s bytes `4v..4v+4` at bytes
//! `4j..4j+4`), the scales transposed (scale `s` of the 16 rows as 16 bytes) and the 16 rows' d.
//! Exactly the file's bytes, rearranged: repacking holds no more memory (the loaded tensor is
//! freed).
//!
//! Arithmetic per output and block: the exact integer Σ_s sc_s·(Σ q·x − 32·Σ x) over the 16
//! sub-blocks of 16 values (q the unsigned 6-bit value; Σ x from the Q8_K activation's sums),
//! widened to f32 and fused into the accumulator with d·d_x. The same for any number of
//! activation rows, so decode and prefill agree bit for bit ([`reference`] spells it out; the
//! tests compare).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use crate::model::kquant::Q8K_BYTES;
use crate::model::q4kpack::Acts;
use crate::model::qmatmul::{f16_at, has_vnni, SendPtr};

/// Bytes of a Q6_K block: 128 low-bit bytes, 64 high-bit bytes, 16 scales, f16 d.
const Q6K_BYTES: usize = 210;
/// Weight rows per group.
const ROWS: usize = 16;

/// A Q6_K weight [n, k] in the interleaved layout.
pub struct PackedQ6K {
    n: usize,
    kb: usize,
    /// Per (group, block): 32 low-bit vectors, then 16 high-bit vectors.
    quants: Vec<u8>,
    /// Per (group, block): the 16 scales of the 16 rows, scale-major.
    scales: Vec<i8>,
    /// Per (group, block): the 16 rows' d (f16 bits).
    d: Vec<u16>,
}

/// Quant bytes of one group's block.
const GROUP_BLOCK: usize = ROWS * 192;

impl PackedQ6K {
    /// Whether a weight of `dtype` [n, _] is repacked here: Q6_K on a CPU with AVX-512 VNNI, rows
    /// a multiple of 16.
    pub fn applies(dtype: GgmlDType, n: usize, on_cpu: bool) -> bool {
        on_cpu && dtype == GgmlDType::Q6K && n.is_multiple_of(ROWS) && has_vnni()
    }

    pub fn pack(weight: &QTensor) -> Result<Self> {
        let (n, k) = weight.shape().dims2()?;
        if weight.dtype() != GgmlDType::Q6K || !n.is_multiple_of(ROWS) || !k.is_multiple_of(256) {
            candle_core::bail!("q6k-pack: {:?} [{n}, {k}] is not packable", weight.dtype());
        }
        let data = weight.data()?;
        let kb = k / 256;
        if data.len() != n * kb * Q6K_BYTES {
            candle_core::bail!("q6k-pack: {} bytes are not Q6_K [{n}, {k}]", data.len());
        }
        let mut quants = vec![0u8; n * kb * 192];
        let mut scales = vec![0i8; n * kb * 16];
        let mut d = vec![0u16; n * kb];
        for g in 0..n / ROWS {
            for b in 0..kb {
                let gb = g * kb + b;
                let dst = &mut quants[gb * GROUP_BLOCK..(gb + 1) * GROUP_BLOCK];
                for j in 0..ROWS {
                    let src = &data[((g * ROWS + j) * kb + b) * Q6K_BYTES..][..Q6K_BYTES];
                    // Low bits, then high bits: 48 vectors of 4 bytes per row.
                    for (q, &v) in src[..192].iter().enumerate() {
                        dst[(q / 4) * 64 + j * 4 + q % 4] = v;
                    }
                    for s in 0..16 {
                        scales[(gb * 16 + s) * ROWS + j] = src[192 + s] as i8;
                    }
                    d[gb * ROWS + j] = u16::from_le_bytes([src[208], src[209]]);
                }
            }
        }
        Ok(Self {
            n,
            kb,
            quants,
            scales,
            d,
        })
    }

    /// `x @ Wᵀ` for `x` [m, k] (row-major) into `out` [m, n].
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let k = self.kb * 256;
        if x.len() != m * k || out.len() != m * self.n {
            candle_core::bail!(
                "q6k-pack: [{m}, {}] x [{}, {k}]ᵀ",
                x.len() / m.max(1),
                self.n
            );
        }
        if !has_vnni() {
            candle_core::bail!("q6k-pack: this CPU lacks AVX-512 VNNI");
        }
        let acts = Acts::new(x, m, self.kb);
        let out = SendPtr(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(self.n / ROWS, |groups| {
            for g in groups {
                // SAFETY: VNNI checked above; each work item writes only its own groups' columns.
                unsafe { self.columns(&acts, g, &out) }
            }
        });
        Ok(())
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn columns(&self, a: &Acts, g: usize, out: &SendPtr) {
        let mut r = 0;
        while r + 4 <= a.m {
            self.tile::<4>(a, r, g, out);
            r += 4;
        }
        while r < a.m {
            self.tile::<1>(a, r, g, out);
            r += 1;
        }
    }

    // Indexed loops over the tile's registers read plainest here.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize>(&self, a: &Acts, r0: usize, g: usize, out: &SendPtr) {
        use std::arch::x86_64::*;
        let kb = self.kb;
        let (m4, m2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x03));
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..kb {
            let gb = g * kb + b;
            let q = self.quants.as_ptr().add(gb * GROUP_BLOCK);
            let vec = |v: usize| _mm512_loadu_si512(q.add(64 * v) as *const __m512i);
            let mut sumi = [_mm512_setzero_si512(); R];
            let mut sumx = [_mm512_setzero_si512(); R];
            // Value v = 128n + 32t + l (l < 32): low bits in nibble t / 2 of low-bit byte
            // 64n + 32(t % 2) + l, high bits at 2t of high-bit byte 32n + l; sub-block v / 16.
            for n in 0..2 {
                for t in 0..4 {
                    for half in 0..2 {
                        let sub = 8 * n + 2 * t + half;
                        let mut isum = [_mm512_setzero_si512(); R];
                        for i in 4 * half..4 * half + 4 {
                            let lo = vec(16 * n + 8 * (t % 2) + i);
                            let lo = if t < 2 {
                                _mm512_and_si512(lo, m4)
                            } else {
                                _mm512_and_si512(_mm512_srli_epi16::<4>(lo), m4)
                            };
                            let hi = _mm512_and_si512(
                                _mm512_srlv_epi16(
                                    vec(32 + 8 * n + i),
                                    _mm512_set1_epi16(2 * t as i16),
                                ),
                                m2,
                            );
                            let w = _mm512_or_si512(lo, _mm512_slli_epi16::<4>(hi));
                            for r in 0..R {
                                let xq = a.q.as_ptr().add(((r0 + r) * kb + b) * Q8K_BYTES + 4);
                                let xv = _mm512_set1_epi32(std::ptr::read_unaligned(
                                    xq.add(128 * n + 32 * t + 4 * i) as *const i32,
                                ));
                                isum[r] = _mm512_dpbusd_epi32(isum[r], w, xv);
                            }
                        }
                        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(
                            self.scales.as_ptr().add((gb * 16 + sub) * ROWS) as *const __m128i,
                        ));
                        for r in 0..R {
                            let xb = a.q.as_ptr().add(((r0 + r) * kb + b) * Q8K_BYTES);
                            let bs = std::ptr::read_unaligned(xb.add(260 + 2 * sub) as *const i16);
                            sumi[r] = _mm512_add_epi32(sumi[r], _mm512_mullo_epi32(isum[r], sc));
                            sumx[r] = _mm512_add_epi32(
                                sumx[r],
                                _mm512_mullo_epi32(sc, _mm512_set1_epi32(bs as i32)),
                            );
                        }
                    }
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(
                self.d.as_ptr().add(gb * ROWS) as *const __m256i
            ));
            for r in 0..R {
                let total = _mm512_sub_epi32(sumi[r], _mm512_slli_epi32::<5>(sumx[r]));
                let dx = _mm512_set1_ps(a.d[(r0 + r) * kb + b]);
                acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(total), acc[r]);
            }
        }
        for r in 0..R {
            // SAFETY: row r0+r, columns g*16.. are this tile's alone, inside [m, n].
            _mm512_storeu_ps(out.get().add((r0 + r) * self.n + g * ROWS), acc[r]);
        }
    }
}

/// The kernel's arithmetic for one output, in plain Rust: a Q6_K weight row (`w`, its bytes)
/// against one Q8_K activation row (`x`, its bytes).
pub fn reference(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(Q6K_BYTES).zip(x.chunks_exact(Q8K_BYTES)) {
        let mut total = 0i32;
        for sub in 0..16 {
            let (mut isum, mut xsum) = (0i32, 0i32);
            for v in 16 * sub..16 * sub + 16 {
                let (n, t, l) = (v / 128, (v % 128) / 32, v % 32);
                let lo = wb[64 * n + 32 * (t % 2) + l] >> (4 * (t / 2)) & 0xF;
                let hi = (wb[128 + 32 * n + l] >> (2 * t)) & 3;
                let xv = xb[4 + v] as i8 as i32;
                isum += (lo | hi << 4) as i32 * xv;
                xsum += xv;
            }
            total += wb[192 + sub] as i8 as i32 * (isum - 32 * xsum);
        }
        let dx = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        acc = (f16_at(wb, 208) * dx).mul_add(total as f32, acc);
    }
    acc
}

/// [`PackedQ6K::matmul`] as a candle op.
pub struct PackedMatmul<'a>(pub &'a PackedQ6K);

impl CustomOp1 for PackedMatmul<'_> {
    fn name(&self) -> &'static str {
        "q6k-packed-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = storage else {
            candle_core::bail!("q6k-pack: f32 activations only");
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("q6k-pack: activations must be contiguous");
        };
        let (m, k) = layout.shape().dims2()?;
        if k != self.0.kb * 256 {
            candle_core::bail!(
                "q6k-pack: [{m}, {k}] x [{}, {}]ᵀ",
                self.0.n,
                self.0.kb * 256
            );
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

    /// Every output equals the reference arithmetic bit for bit, whatever the row count, and is
    /// close to candle's product.
    #[test]
    fn equals_the_reference_bit_for_bit() {
        if !has_vnni() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let (n, k, m) = (32, 512, 6);
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q6K).unwrap();
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let packed = PackedQ6K::pack(&q).unwrap();
        let mut out = vec![0f32; m * n];
        packed.matmul(&x, m, &mut out).unwrap();
        let wb = q.data().unwrap();
        let acts = Acts::new(&x, m, k / 256);
        let (wr, xr) = (k / 256 * Q6K_BYTES, k / 256 * Q8K_BYTES);
        for r in 0..m {
            let mut alone = vec![0f32; n];
            packed
                .matmul(&x[r * k..(r + 1) * k], 1, &mut alone)
                .unwrap();
            for j in 0..n {
                let want = reference(&wb[j * wr..(j + 1) * wr], &acts.q[r * xr..(r + 1) * xr]);
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
            assert!((a - b).abs() < 0.1, "{a} vs {b}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_pack() {
        let w = Tensor::zeros((40, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q6K).unwrap();
        assert!(PackedQ6K::pack(&q).is_err(), "40 rows are not groups of 16");
        assert!(!PackedQ6K::applies(GgmlDType::Q4K, 64, true));
        assert!(!PackedQ6K::applies(GgmlDType::Q6K, 64, false));
    }
}
