//! llama.cpp's block formats for a quantized KV cache: 32 values per block, each block a scale
//! `d` (f16), for q4_1/q5_1 a minimum `m` (f16), for q5_0/q5_1 32 high bits, and the low bits
//! (8 per value for q8_0, 4 otherwise). A value is `d × v + m` for its integer `v`. Bytes per
//! block, as in llama.cpp: q8_0 34, q4_0 18, q4_1 20, q5_0 22, q5_1 24.
//!
//! The cache holds each part in a plane of its own ([`Planes`]: low bits, scales, minima, high
//! bits, each [kv_heads, positions, …]) rather than llama.cpp's array of blocks: the same bytes,
//! laid out so candle's tensor operations can slice, write and dequantize them on any device.
//! Quantization follows llama.cpp's reference rounding (`quantize_row_*_ref`). On the CPU it runs
//! here ([`quantize_cpu`]); elsewhere through candle operations ([`Planes::quantize_ops`]) that
//! compute the same numbers, which a test holds to the same bytes.

use candle_core::{DType, Device, Result, Tensor, D};
use half::f16;

/// Values per block.
pub const QK: usize = 32;

/// A block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Block {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

impl Block {
    /// Bytes per block of 32 values.
    pub fn bytes(self) -> usize {
        2 + self.low_bytes() + if self.has_min() { 2 } else { 0 } + self.high_bytes()
    }

    /// Bytes of low bits per block.
    pub fn low_bytes(self) -> usize {
        match self {
            Block::Q8_0 => QK,
            _ => QK / 2,
        }
    }

    /// Bytes of high bits per block (the fifth bit of q5_0/q5_1).
    pub fn high_bytes(self) -> usize {
        match self {
            Block::Q5_0 | Block::Q5_1 => 4,
            _ => 0,
        }
    }

    /// Whether blocks carry a minimum (`d × v + m`, v ≥ 0) rather than a signed `v`.
    pub fn has_min(self) -> bool {
        matches!(self, Block::Q4_1 | Block::Q5_1)
    }

    /// The largest integer value and, for the symmetric formats, the offset stored values carry.
    fn levels(self) -> (f32, f32) {
        match self {
            Block::Q8_0 => (127.0, 0.0),
            Block::Q4_0 => (15.0, 8.0),
            Block::Q4_1 => (15.0, 0.0),
            Block::Q5_0 => (31.0, 16.0),
            Block::Q5_1 => (31.0, 0.0),
        }
    }

    /// Quantizes one block: `x` 32 values; writes `low` ([`Self::low_bytes`]) and `high`
    /// ([`Self::high_bytes`]), returns (d, m) (m = 0 without a minimum).
    pub fn quantize(self, x: &[f32], low: &mut [u8], high: &mut [u8]) -> (f16, f16) {
        debug_assert_eq!(x.len(), QK);
        let (mn, mx) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let recip = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
        match self {
            Block::Q8_0 => {
                let d = mx.max(-mn) / 127.0;
                let id = recip(d);
                for (o, &v) in low.iter_mut().zip(x) {
                    *o = ((v * id).round() as i8) as u8;
                }
                (f16::from_f32(d), f16::ZERO)
            }
            Block::Q4_0 | Block::Q5_0 => {
                let (top, off) = self.levels();
                // The value of largest magnitude, with its sign (on a tie, the positive).
                let max = if -mn > mx { mn } else { mx };
                let d = max / -(off);
                let id = recip(d);
                let q: Vec<u8> = x
                    .iter()
                    .map(|&v| (v * id + (off + 0.5)).floor().min(top) as u8)
                    .collect();
                pack(&q, low, high);
                (f16::from_f32(d), f16::ZERO)
            }
            Block::Q4_1 | Block::Q5_1 => {
                let (top, _) = self.levels();
                let d = (mx - mn) / top;
                let id = recip(d);
                let q: Vec<u8> = x
                    .iter()
                    .map(|&v| ((v - mn) * id + 0.5).floor().min(top) as u8)
                    .collect();
                pack(&q, low, high);
                (f16::from_f32(d), f16::from_f32(mn))
            }
        }
    }

    /// The integer values of one block (value = d × v + m).
    pub fn unpack(self, low: &[u8], high: &[u8], out: &mut [i8]) {
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
        if self != Block::Q8_0 {
            assert!(low.len() >= QK / 2 && out.len() >= QK && high.len() >= self.high_bytes());
            // SAFETY: AVX2 is enabled at compile time; the lengths are checked above.
            return unsafe { x86::unpack(self, low, high, out) };
        }
        self.unpack_plain(low, high, out)
    }

    fn unpack_plain(self, low: &[u8], high: &[u8], out: &mut [i8]) {
        match self {
            Block::Q8_0 => {
                for (o, &b) in out.iter_mut().zip(low) {
                    *o = b as i8;
                }
            }
            Block::Q4_0 | Block::Q4_1 => {
                let off = self.levels().1 as i8;
                let (lo, hi) = out.split_at_mut(QK / 2);
                for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(&low[..QK / 2]) {
                    *l = (b & 0x0f) as i8 - off;
                    *h = (b >> 4) as i8 - off;
                }
            }
            Block::Q5_0 | Block::Q5_1 => {
                let off = self.levels().1 as i8;
                let bits = if high.is_empty() {
                    0
                } else {
                    u32::from_le_bytes([high[0], high[1], high[2], high[3]])
                };
                let (lo, hi) = out.split_at_mut(QK / 2);
                for j in 0..QK / 2 {
                    let h0 = ((bits >> j) & 1) as i8;
                    let h1 = ((bits >> (j + QK / 2)) & 1) as i8;
                    lo[j] = ((low[j] & 0x0f) as i8 | (h0 << 4)) - off;
                    hi[j] = ((low[j] >> 4) as i8 | (h1 << 4)) - off;
                }
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
mod x86 {
    use super::Block;
    use std::arch::x86_64::*;

    /// [`Block::unpack`] for the 4- and 5-bit formats: the 16 bytes' low nibbles (values 0–15)
    /// and high nibbles (16–31) side by side, the fifth bits spread to bytes, the offset taken.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn unpack(b: Block, low: &[u8], high: &[u8], out: &mut [i8]) {
        let bytes = _mm_loadu_si128(low.as_ptr() as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes);
        let mut v = _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
        if !high.is_empty() {
            // Byte j gets 0x10 where bit j of the little-endian u32 is set.
            let bits = u32::from_le_bytes([high[0], high[1], high[2], high[3]]);
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(bits as i32),
                _mm256_set_epi64x(
                    0x0303030303030303,
                    0x0202020202020202,
                    0x0101010101010101,
                    0,
                ),
            );
            let select = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
            v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
        }
        let off = b.levels().1 as i8;
        if off != 0 {
            v = _mm256_sub_epi8(v, _mm256_set1_epi8(off));
        }
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v);
    }
}

/// llama.cpp's packing: value j (of 32) in the low nibble of byte j (j < 16) or the high nibble
/// of byte j − 16; its fifth bit, if any, is bit j of the little-endian u32 `high`.
fn pack(q: &[u8], low: &mut [u8], high: &mut [u8]) {
    for j in 0..QK / 2 {
        low[j] = (q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4);
    }
    if !high.is_empty() {
        let bits = q
            .iter()
            .enumerate()
            .fold(0u32, |acc, (j, &v)| acc | (((v >> 4) as u32 & 1) << j));
        high.copy_from_slice(&bits.to_le_bytes());
    }
}

/// Quantized rows on the host: `rows` rows of `hd` values each, plane by plane.
#[derive(Debug, Clone, Default)]
pub struct HostPlanes {
    pub low: Vec<u8>,
    pub d: Vec<f16>,
    pub m: Vec<f16>,
    pub high: Vec<u8>,
}

/// Quantizes `x` (rows of `hd` values, hd a multiple of 32) on the host.
pub fn quantize_cpu(block: Block, x: &[f32], hd: usize) -> HostPlanes {
    let blocks = x.len() / QK;
    debug_assert!(hd.is_multiple_of(QK) && x.len().is_multiple_of(hd));
    let mut p = HostPlanes {
        low: vec![0; blocks * block.low_bytes()],
        d: Vec::with_capacity(blocks),
        m: Vec::with_capacity(if block.has_min() { blocks } else { 0 }),
        high: vec![0; blocks * block.high_bytes()],
    };
    let (lb, hb) = (block.low_bytes(), block.high_bytes());
    for (b, v) in x.chunks_exact(QK).enumerate() {
        let (d, m) = block.quantize(
            v,
            &mut p.low[b * lb..(b + 1) * lb],
            &mut p.high[b * hb..(b + 1) * hb],
        );
        p.d.push(d);
        if block.has_min() {
            p.m.push(m);
        }
    }
    p
}

/// One side (keys or values) of a layer's quantized cache, or of rows about to enter it:
/// `low` U8 [kv_heads, positions, hd / 32 × low bytes], `d` F16 [kv_heads, positions, hd / 32],
/// `m` like `d` (formats with a minimum), `high` U8 [kv_heads, positions, hd / 32 × 4] (q5_*).
#[derive(Debug)]
pub struct Planes {
    pub block: Block,
    pub low: Tensor,
    pub d: Tensor,
    pub m: Option<Tensor>,
    pub high: Option<Tensor>,
}

impl Planes {
    /// Committed zeros for `heads` × `positions` rows of `hd` values.
    pub fn zeros(
        block: Block,
        heads: usize,
        positions: usize,
        hd: usize,
        dev: &Device,
    ) -> Result<Self> {
        let nb = hd / QK;
        let zeros = |width: usize, dtype: DType| -> Result<Tensor> {
            if dev.is_cpu() {
                // Written, so the pages count as resident from the start (see `KvCache::new`).
                let n = heads * positions * width;
                match dtype {
                    DType::U8 => Tensor::from_vec(vec![0u8; n], (heads, positions, width), dev),
                    _ => Tensor::from_vec(vec![f16::ZERO; n], (heads, positions, width), dev),
                }
            } else {
                Tensor::zeros((heads, positions, width), dtype, dev)
            }
        };
        Ok(Planes {
            block,
            low: zeros(nb * block.low_bytes(), DType::U8)?,
            d: zeros(nb, DType::F16)?,
            m: block.has_min().then(|| zeros(nb, DType::F16)).transpose()?,
            high: (block.high_bytes() > 0)
                .then(|| zeros(nb * block.high_bytes(), DType::U8))
                .transpose()?,
        })
    }

    fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Planes> {
        Ok(Planes {
            block: self.block,
            low: f(&self.low)?,
            d: f(&self.d)?,
            m: self.m.as_ref().map(&f).transpose()?,
            high: self.high.as_ref().map(&f).transpose()?,
        })
    }

    fn parts(&self) -> impl Iterator<Item = &Tensor> {
        [
            Some(&self.low),
            Some(&self.d),
            self.m.as_ref(),
            self.high.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    pub fn bytes(&self) -> usize {
        self.parts()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Positions `start..start + len` (dimension 1).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Planes> {
        self.map(|t| t.narrow(1, start, len))
    }

    /// Writes `src`'s positions into these planes from position `at`.
    pub fn slice_set(&self, src: &Planes, at: usize) -> Result<()> {
        for (dst, src) in self.parts().zip(src.parts()) {
            dst.slice_set(&src.contiguous()?, 1, at)?;
        }
        Ok(())
    }

    /// `x` [heads, n, hd] quantized on the host (x on the CPU).
    pub fn quantize_host(block: Block, x: &Tensor) -> Result<Planes> {
        let (heads, n, hd) = x.dims3()?;
        let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let p = quantize_cpu(block, &v, hd);
        Planes::from_host(block, p, heads, n, hd, x.device())
    }

    /// Host planes as tensors on `dev`.
    pub fn from_host(
        block: Block,
        p: HostPlanes,
        heads: usize,
        n: usize,
        hd: usize,
        dev: &Device,
    ) -> Result<Planes> {
        let nb = hd / QK;
        Ok(Planes {
            block,
            low: Tensor::from_vec(p.low, (heads, n, nb * block.low_bytes()), dev)?,
            d: Tensor::from_vec(p.d, (heads, n, nb), dev)?,
            m: block
                .has_min()
                .then(|| Tensor::from_vec(p.m, (heads, n, nb), dev))
                .transpose()?,
            high: (block.high_bytes() > 0)
                .then(|| Tensor::from_vec(p.high, (heads, n, nb * 4), dev))
                .transpose()?,
        })
    }

    /// `x` [heads, n, hd] quantized with candle's operations, on x's device: the numbers of
    /// [`Block::quantize`].
    pub fn quantize_ops(block: Block, x: &Tensor) -> Result<Planes> {
        let (heads, n, hd) = x.dims3()?;
        let nb = hd / QK;
        let x = x.to_dtype(DType::F32)?.reshape((heads, n, nb, QK))?;
        let mx = x.max_keepdim(D::Minus1)?;
        let mn = x.min_keepdim(D::Minus1)?;
        let recip = |d: &Tensor| -> Result<Tensor> {
            let nonzero = d.ne(0f32)?;
            nonzero.where_cond(&d.recip()?, &d.zeros_like()?)
        };
        let (top, off) = block.levels();
        // True division (`Tensor / f64` multiplies by the reciprocal, a different last bit).
        let div = |t: &Tensor, c: f32| t.broadcast_div(&Tensor::new(c, t.device())?);
        let (q, d, m) = match block {
            Block::Q8_0 => {
                let d = div(&mx.maximum(&mn.neg()?)?, 127.0)?;
                let q = x.broadcast_mul(&recip(&d)?)?.round()?;
                // Two's complement in a byte.
                let q = (&q + q.lt(0f32)?.to_dtype(DType::F32)? * 256.0)?;
                (q, d, None)
            }
            Block::Q4_0 | Block::Q5_0 => {
                let max = mn.neg()?.gt(&mx)?.where_cond(&mn, &mx)?;
                let d = div(&max, -off)?;
                let q = (x.broadcast_mul(&recip(&d)?)? + (off as f64 + 0.5))?
                    .floor()?
                    .minimum(top)?;
                (q, d, None)
            }
            Block::Q4_1 | Block::Q5_1 => {
                let d = div(&(&mx - &mn)?, top)?;
                let q = (x.broadcast_sub(&mn)?.broadcast_mul(&recip(&d)?)? + 0.5)?
                    .floor()?
                    .minimum(top)?;
                (q, d, Some(mn))
            }
        };
        let to_f16 = |t: Tensor| t.squeeze(D::Minus1)?.to_dtype(DType::F16);
        let (low, high) = match block {
            Block::Q8_0 => (q.to_dtype(DType::U8)?.reshape((heads, n, nb * QK))?, None),
            _ => {
                let high_bit = (&q / 16.0)?.floor()?; // 0 or 1 (5-bit formats)
                let nibble = (&q - (&high_bit * 16.0)?)?;
                let low = (nibble.narrow(3, 0, QK / 2)?
                    + (nibble.narrow(3, QK / 2, QK / 2)? * 16.0)?)?
                    .to_dtype(DType::U8)?
                    .reshape((heads, n, nb * QK / 2))?;
                let high = (block.high_bytes() > 0)
                    .then(|| -> Result<Tensor> {
                        let weights = Tensor::new(&BIT_WEIGHTS, x.device())?;
                        high_bit
                            .reshape((heads, n, nb, 4, 8))?
                            .broadcast_mul(&weights)?
                            .sum(D::Minus1)?
                            .to_dtype(DType::U8)?
                            .reshape((heads, n, nb * 4))
                    })
                    .transpose()?;
                (low, high)
            }
        };
        Ok(Planes {
            block,
            low,
            d: to_f16(d)?,
            m: m.map(to_f16).transpose()?,
            high,
        })
    }

    /// The values, f32 [heads, positions, hd], with candle's operations (any device).
    pub fn dequantize_ops(&self) -> Result<Tensor> {
        let (heads, n, nb) = self.d.dims3()?;
        let low = self.low.to_dtype(DType::F32)?;
        let v = match self.block {
            Block::Q8_0 => {
                let signed = (&low - (low.ge(128f32)?.to_dtype(DType::F32)? * 256.0)?)?;
                signed.reshape((heads, n, nb, QK))?
            }
            _ => {
                let low = low.reshape((heads, n, nb, QK / 2))?;
                let hi = (&low / 16.0)?.floor()?;
                let lo = (&low - (&hi * 16.0)?)?;
                let mut v = Tensor::cat(&[&lo, &hi], 3)?;
                if let Some(high) = &self.high {
                    let weights = Tensor::new(&BIT_WEIGHTS, high.device())?;
                    let bytes = high.to_dtype(DType::F32)?.reshape((heads, n, nb, 4, 1))?;
                    let shifted = bytes.broadcast_div(&weights)?.floor()?;
                    let bits = (&shifted - ((&shifted / 2.0)?.floor()? * 2.0)?)?;
                    v = (v + (bits.reshape((heads, n, nb, QK))? * 16.0)?)?;
                }
                let off = self.block.levels().1;
                if off != 0.0 {
                    v = (v - off as f64)?;
                }
                v
            }
        };
        let d = self.d.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
        let mut x = v.broadcast_mul(&d)?;
        if let Some(m) = &self.m {
            x = x.broadcast_add(&m.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?)?;
        }
        x.reshape((heads, n, nb * QK))
    }
}

/// 2^0 … 2^7: a byte's bits, lowest first.
const BIT_WEIGHTS: [f32; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Block; 5] = [
        Block::Q8_0,
        Block::Q4_0,
        Block::Q4_1,
        Block::Q5_0,
        Block::Q5_1,
    ];

    fn sample(n: usize) -> Vec<f32> {
        let mut seed = 11u64;
        (0..n)
            .map(|i| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // Blocks of assorted spreads, one all zero, one all negative.
                match i / QK {
                    3 => 0.0,
                    4 => -1.0 - u.abs(),
                    b => u * (1 + b % 5) as f32,
                }
            })
            .collect()
    }

    /// llama.cpp's byte counts, and a round trip within half a step of each value.
    #[test]
    fn blocks_have_llama_cpp_sizes_and_round_trip_within_half_a_step() {
        let sizes: Vec<usize> = ALL.iter().map(|b| b.bytes()).collect();
        assert_eq!(sizes, [34, 18, 20, 22, 24]);
        let x = sample(8 * QK);
        for b in ALL {
            let p = quantize_cpu(b, &x, 64);
            let mut v = [0i8; QK];
            for (i, blk) in x.chunks_exact(QK).enumerate() {
                let lb = b.low_bytes();
                let hb = b.high_bytes();
                b.unpack(&p.low[i * lb..][..lb], &p.high[i * hb..][..hb], &mut v);
                let d = p.d[i].to_f32();
                let m = if b.has_min() { p.m[i].to_f32() } else { 0.0 };
                let step = d.abs();
                for (j, (&want, &q)) in blk.iter().zip(&v).enumerate() {
                    let got = d * q as f32 + m;
                    // Half a step, plus the scale's own f16 rounding across the range; a full
                    // step at the clamped top of q4_0/q5_0 (llama.cpp's scale maps the largest
                    // magnitude to −8 (−16) steps, so the other sign ends at +7 (+15)).
                    let clamped = q as f32 == b.levels().0 - b.levels().1;
                    let half = if clamped { 1.0 } else { 0.5 };
                    let tol = half * step + 1e-3 * (want.abs() + m.abs()) + 1e-6;
                    assert!(
                        (got - want).abs() <= tol,
                        "{b:?} block {i} value {j}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The AVX2 unpacking gives the plain loop's values, for every format.
    #[test]
    fn fast_unpacking_equals_the_plain_loop() {
        let x = sample(8 * QK);
        for b in ALL {
            let p = quantize_cpu(b, &x, 64);
            let (lb, hb) = (b.low_bytes(), b.high_bytes());
            for i in 0..8 {
                let (low, high) = (&p.low[i * lb..][..lb], &p.high[i * hb..][..hb]);
                let (mut fast, mut plain) = ([0i8; QK], [0i8; QK]);
                b.unpack(low, high, &mut fast);
                b.unpack_plain(low, high, &mut plain);
                assert_eq!(fast, plain, "{b:?} block {i}");
            }
        }
    }

    /// candle's operations quantize to the very bytes of the host code, and dequantize to the
    /// values the host's unpacking gives.
    #[test]
    fn candle_ops_match_the_host_code() {
        let (heads, n, hd) = (2, 3, 64);
        let x = sample(heads * n * hd);
        let t = Tensor::from_vec(x.clone(), (heads, n, hd), &Device::Cpu).unwrap();
        for b in ALL {
            let host = Planes::quantize_host(b, &t).unwrap();
            let ops = Planes::quantize_ops(b, &t).unwrap();
            for (a, o) in host.parts().zip(ops.parts()) {
                let (a, o) = (
                    a.to_dtype(DType::F32)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                    o.to_dtype(DType::F32)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                );
                assert_eq!(a, o, "{b:?}");
            }
            let deq = host
                .dequantize_ops()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let p = quantize_cpu(b, &x, hd);
            let mut v = [0i8; QK];
            for i in 0..x.len() / QK {
                let (lb, hb) = (b.low_bytes(), b.high_bytes());
                b.unpack(&p.low[i * lb..][..lb], &p.high[i * hb..][..hb], &mut v);
                let m = if b.has_min() { p.m[i].to_f32() } else { 0.0 };
                for j in 0..QK {
                    let want = p.d[i].to_f32() * v[j] as f32 + m;
                    assert_eq!(deq[i * QK + j], want, "{b:?} block {i} value {j}");
                }
            }
        }
    }
}
