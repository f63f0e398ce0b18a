//! Q4_K weights repacked at load for AVX-512 VNNI, as `q8_0.rs` does for Q8_0: sixteen weight
//! rows side by side, so one `vpdpbusd` advances sixteen outputs by four products each and the
//! per-block scale work is shared by sixteen rows.
//!
//! Layout, per group of 16 rows and per 256-value block: the 128 bytes of 4-bit values as 4 × 8
//! vectors of 64 bytes (vector (h, i): row `j`'s bytes `32h + 4i..+4` at bytes `4j..4j+4`; a
//! byte's low nibble belongs to sub-block 2h, its high nibble to 2h + 1, as in ggml), and the
//! rows' 16-byte block headers transposed: the three words of 6-bit scales and mins, then (d,
//! dmin), each as 16 rows × 4 bytes, so the kernel unpacks sixteen rows' scales with a few
//! vector operations per block. Exactly the file's bytes, rearranged: repacking holds no more
//! memory (the loaded tensor is freed).
//!
//! Arithmetic per output and block: the exact integers Σ_s sc_s·Σ q·x and Σ_s m_s·Σ x (sub-block
//! sums of the Q8_K activation), widened to f32 and fused into two accumulators with d·d_x and
//! dmin·d_x; the output is their difference. The same for any number of activation rows, so
//! decode and prefill agree bit for bit ([`reference`] spells it out; the tests compare).

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ8K};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Result;

use crate::engine::kernels::kquant::{scales_and_mins, Q4K_BYTES, Q8K_BYTES};
use crate::engine::kernels::packed::{checked, ROWS};
use crate::engine::kernels::qmatmul::{as_bytes, f16_at, quantize_rows, SendPtr};

/// Quant bytes of one group's block.
const GROUP_BLOCK: usize = ROWS * 128;

/// A Q4_K weight [n, k] in the interleaved layout.
pub struct PackedQ4K {
    n: usize,
    kb: usize,
    quants: Vec<u8>,
    /// Per (group, block): 4 × 64 bytes, the rows' header words transposed (see the module).
    heads: Vec<u8>,
}

impl PackedQ4K {
    /// Repacks a Q4_K weight [n, k].
    pub fn pack(weight: &QTensor) -> Result<Self> {
        let (n, k, data) = checked(weight, GgmlDType::Q4K, 256, Q4K_BYTES)?;
        let kb = k / 256;
        let mut quants = vec![0u8; n * kb * 128];
        let mut heads = vec![0u8; n * kb * 16];
        for g in 0..n / ROWS {
            for b in 0..kb {
                let gb = g * kb + b;
                let dst = &mut quants[gb * GROUP_BLOCK..(gb + 1) * GROUP_BLOCK];
                for j in 0..ROWS {
                    let src = &data[((g * ROWS + j) * kb + b) * Q4K_BYTES..][..Q4K_BYTES];
                    // Words 1, 2, 3 (scales and mins), then word 0 (d, dmin).
                    for (t, word) in [1, 2, 3, 0].into_iter().enumerate() {
                        heads[gb * 256 + t * 64 + j * 4..][..4]
                            .copy_from_slice(&src[4 * word..4 * word + 4]);
                    }
                    for (q, &v) in src[16..].iter().enumerate() {
                        dst[(q / 4) * 64 + j * 4 + q % 4] = v;
                    }
                }
            }
        }
        Ok(Self {
            n,
            kb,
            quants,
            heads,
        })
    }
}

packed_weight_by_group!(PackedQ4K);

impl PackedQ4K {
    // Indexed loops over the tile's registers read plainest here.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize>(&self, a: &Acts, r0: usize, g: usize, out: &SendPtr) {
        use std::arch::x86_64::*;
        let kb = self.kb;
        let m4 = _mm512_set1_epi8(0x0F);
        let (k1, k2, k3) = (
            _mm512_set1_epi32(0x3f3f3f3f),
            _mm512_set1_epi32(0x0f0f0f0f),
            _mm512_set1_epi32(0x03030303),
        );
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_m = [_mm512_setzero_ps(); R];
        for b in 0..kb {
            let q = self.quants.as_ptr().add((g * kb + b) * GROUP_BLOCK);
            // ggml's 6-bit unpacking, sixteen rows at once: lane j of `sc[h]` holds row j's
            // scales 4h..4h+4 (a byte each), of `mins[h]` its mins.
            let h = self.heads.as_ptr().add((g * kb + b) * 256);
            let word = |t: usize| _mm512_loadu_si512(h.add(64 * t) as *const __m512i);
            let (u0, u1, u2) = (word(0), word(1), word(2));
            let high = |lo: __m512i, hi6: __m512i| {
                _mm512_or_si512(
                    lo,
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(hi6), k3)),
                )
            };
            let sc = [_mm512_and_si512(u0, k1), high(_mm512_and_si512(u2, k2), u0)];
            let mins = [
                _mm512_and_si512(u1, k1),
                high(_mm512_and_si512(_mm512_srli_epi32::<4>(u2), k2), u1),
            ];
            let byte = |v: &[__m512i; 2], s: usize| {
                _mm512_and_si512(
                    _mm512_srlv_epi32(v[s / 4], _mm512_set1_epi32(8 * (s % 4) as i32)),
                    _mm512_set1_epi32(0xFF),
                )
            };
            let dd = word(3);
            let mut sumi = [_mm512_setzero_si512(); R];
            for sub in 0..8 {
                let mut isum = [_mm512_setzero_si512(); R];
                for i in 0..8 {
                    let v = _mm512_loadu_si512(q.add(((sub / 2) * 8 + i) * 64) as *const __m512i);
                    let w = if sub % 2 == 0 {
                        _mm512_and_si512(v, m4)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4)
                    };
                    for r in 0..R {
                        let xq = a.q().as_ptr().add(((r0 + r) * kb + b) * Q8K_BYTES + 4);
                        let xv = _mm512_set1_epi32(std::ptr::read_unaligned(
                            xq.add(32 * sub + 4 * i) as *const i32,
                        ));
                        isum[r] = _mm512_dpbusd_epi32(isum[r], w, xv);
                    }
                }
                let scale = byte(&sc, sub);
                for r in 0..R {
                    sumi[r] = _mm512_add_epi32(sumi[r], _mm512_mullo_epi32(isum[r], scale));
                }
            }
            let mut summ = [_mm512_setzero_si512(); R];
            for sub in 0..8 {
                let mn = byte(&mins, sub);
                for r in 0..R {
                    let bs = _mm512_set1_epi32(a.bsum[((r0 + r) * kb + b) * 8 + sub]);
                    summ[r] = _mm512_add_epi32(summ[r], _mm512_mullo_epi32(mn, bs));
                }
            }
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
            let dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dd)));
            for r in 0..R {
                let dx = _mm512_set1_ps(a.d[(r0 + r) * kb + b]);
                acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sumi[r]), acc[r]);
                acc_m[r] = _mm512_fmadd_ps(
                    _mm512_mul_ps(dmin, dx),
                    _mm512_cvtepi32_ps(summ[r]),
                    acc_m[r],
                );
            }
        }
        for r in 0..R {
            // SAFETY: row r0+r, columns g*16.. are this tile's alone, inside [m, n].
            _mm512_storeu_ps(
                out.get().add((r0 + r) * self.n + g * ROWS),
                _mm512_sub_ps(acc[r], acc_m[r]),
            );
        }
    }
}

/// Activation rows quantized to Q8_K (candle's quantizer, as llama.cpp's), with each block's
/// scale and its 8 sub-block sums.
pub(crate) struct Acts {
    blocks: Vec<BlockQ8K>,
    pub(crate) d: Vec<f32>,
    bsum: Vec<i32>,
}

impl Acts {
    pub(crate) fn new(x: &[f32], m: usize, kb: usize) -> Self {
        let blocks = quantize_rows::<BlockQ4K>(x, m, kb * 256);
        let q = as_bytes(&blocks);
        let d = q
            .chunks_exact(Q8K_BYTES)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bsum = q.chunks_exact(Q8K_BYTES).flat_map(sub_sums).collect();
        Self { blocks, d, bsum }
    }

    /// The Q8_K blocks' bytes.
    pub(crate) fn q(&self) -> &[u8] {
        as_bytes(&self.blocks)
    }
}

/// The 8 sums of 32 values of a Q8_K block (from its 16 sums of 16).
fn sub_sums(block: &[u8]) -> [i32; 8] {
    let half = |i: usize| i16::from_le_bytes([block[260 + 2 * i], block[261 + 2 * i]]) as i32;
    std::array::from_fn(|s| half(2 * s) + half(2 * s + 1))
}

/// The kernel's arithmetic for one output, in plain Rust: a Q4_K weight row (`w`, its bytes)
/// against one Q8_K activation row (`x`, its bytes).
pub fn reference(w: &[u8], x: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for (wb, xb) in w.chunks_exact(Q4K_BYTES).zip(x.chunks_exact(Q8K_BYTES)) {
        let u = scales_and_mins(&wb[4..16]);
        let sm: Vec<i32> = u
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|v| v as i32)
            .collect();
        let mut sumi = 0i32;
        for s in 0..8 {
            let isum: i32 = (0..32)
                .map(|i| {
                    let byte = wb[16 + 32 * (s / 2) + i];
                    let q = if s % 2 == 0 { byte & 0xF } else { byte >> 4 };
                    q as i32 * xb[4 + 32 * s + i] as i8 as i32
                })
                .sum();
            sumi += sm[s] * isum;
        }
        let bsum = sub_sums(xb);
        let summ: i32 = (0..8).map(|s| sm[8 + s] * bsum[s]).sum();
        let dx = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        acc = (f16_at(wb, 0) * dx).mul_add(sumi as f32, acc);
        acc_m = (f16_at(wb, 2) * dx).mul_add(summ as f32, acc_m);
    }
    acc - acc_m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit for bit the reference arithmetic, close to candle's product.
    #[test]
    fn equals_the_reference_bit_for_bit() {
        crate::engine::kernels::packed::tests::check(GgmlDType::Q4K, (32, 512, 6), 0.1, |w, x| {
            reference(w, Acts::new(x, 1, x.len() / 256).q())
        });
    }
}
