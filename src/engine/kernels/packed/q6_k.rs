//! Q6_K weights repacked at load for AVX-512 VNNI, as `q4_k.rs` does for Q4_K: sixteen weight
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
use candle_core::Result;

use crate::engine::kernels::kquant::Q8K_BYTES;
use crate::engine::kernels::packed::q4_k::Acts;
use crate::engine::kernels::packed::{checked, ROWS};
use crate::engine::kernels::qmatmul::{f16_at, SendPtr};

/// Bytes of a Q6_K block: 128 low-bit bytes, 64 high-bit bytes, 16 scales, f16 d.
const Q6K_BYTES: usize = 210;

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
    /// Repacks a Q6_K weight [n, k].
    pub fn pack(weight: &QTensor) -> Result<Self> {
        let (n, k, data) = checked(weight, GgmlDType::Q6K, 256, Q6K_BYTES)?;
        let kb = k / 256;
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
}

packed_weight_by_group!(PackedQ6K);

impl PackedQ6K {
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
                                let xq = a.q().as_ptr().add(((r0 + r) * kb + b) * Q8K_BYTES + 4);
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
                            let xb = a.q().as_ptr().add(((r0 + r) * kb + b) * Q8K_BYTES);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit for bit the reference arithmetic, close to candle's product.
    #[test]
    fn equals_the_reference_bit_for_bit() {
        crate::engine::kernels::packed::tests::check(GgmlDType::Q6K, (32, 512, 6), 0.1, |w, x| {
            reference(w, Acts::new(x, 1, x.len() / 256).q())
        });
    }
}
