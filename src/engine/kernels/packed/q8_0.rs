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
//! decode and prefill agree bit for bit, and equal to the unpacked kernel's (`q8_0.rs`, whose
//! [`reference`](crate::engine::kernels::q8_0::reference) spells it out; the tests compare).

use candle_core::quantized::k_quants::BlockQ8_0;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Result;

use crate::engine::kernels::packed::{check_product, checked, tiles, PackedWeight, ROWS};
use crate::engine::kernels::qmatmul::{as_bytes, q8_0_scales, quantize_rows, SendPtr, Q8_0_BYTES};

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
    /// Repacks a Q8_0 weight [n, k].
    pub fn pack(weight: &QTensor) -> Result<Self> {
        let (n, k, data) = checked(weight, GgmlDType::Q8_0, 32, Q8_0_BYTES)?;
        let kb = k / 32;
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
}

impl PackedWeight for PackedQ8 {
    fn rows(&self) -> usize {
        self.n
    }

    fn cols(&self) -> usize {
        self.kb * 32
    }

    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        check_product(self, x, m, out)?;
        let acts = Acts::new(x, m, self.kb);
        let out = SendPtr(out.as_mut_ptr());
        let groups = self.n / ROWS;
        tiles(groups.div_ceil(2), m, |p, r0, four| {
            let g0 = 2 * p;
            // SAFETY: VNNI checked by check_product; a tile writes only its own outputs.
            unsafe {
                match (four, g0 + 2 <= groups) {
                    (true, true) => self.tile::<4, 2>(&acts, r0, g0, &out),
                    (true, false) => self.tile::<4, 1>(&acts, r0, g0, &out),
                    (false, true) => self.tile::<1, 2>(&acts, r0, g0, &out),
                    (false, false) => self.tile::<1, 1>(&acts, r0, g0, &out),
                }
            }
        });
        Ok(())
    }
}

impl PackedQ8 {
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
                        a.q()
                            .as_ptr()
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
    blocks: Vec<BlockQ8_0>,
    d: Vec<f32>,
    base: Vec<i32>,
}

impl Acts {
    fn new(x: &[f32], m: usize, kb: usize) -> Self {
        let blocks = quantize_rows::<BlockQ8_0>(x, m, kb * 32);
        let q = as_bytes(&blocks);
        let d = q8_0_scales(q);
        let base = q
            .chunks_exact(Q8_0_BYTES)
            .map(|blk| -128 * blk[2..].iter().map(|&v| v as i8 as i32).sum::<i32>())
            .collect();
        Self { blocks, d, base }
    }

    /// The blocks' bytes.
    fn q(&self) -> &[u8] {
        as_bytes(&self.blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::q8_0::reference;

    /// Bit for bit the reference arithmetic (row tails of the 4-row tiles and an odd group count
    /// for the 2-group pairs included), close to candle's product.
    #[test]
    fn equals_the_reference_bit_for_bit() {
        crate::engine::kernels::packed::tests::check(
            GgmlDType::Q8_0,
            (48, 320, 7),
            0.05,
            |w, x| reference(w, Acts::new(x, 1, x.len() / 32).q()),
        );
    }
}
