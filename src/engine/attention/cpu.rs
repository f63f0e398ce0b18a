//! Attention on the CPU, one query at a time, keys visited in position order.
//!
//! The result for a query depends only on its position and the keys it may see, never on how
//! the prompt was chunked, whether the token is being decoded, or where the sliding ring
//! currently starts: scores, the softmax sum and the weighted sum of values are accumulated in
//! the same order in every case. (Through general matrix products the summation order follows
//! the key count and ring layout; with 8-bit activations downstream, those last-bit differences
//! flip quantization steps and grow into visible logit differences.)

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use half::{bf16, f16};

use crate::engine::config::LayerKind;
use crate::engine::kernels::qmatmul::SendPtr;
use crate::engine::kv_cache::LayerCache;

/// An element type the cache may hold.
trait CacheElem: Copy + Send + Sync {
    /// The slice itself when it already is f32.
    fn as_f32(src: &[Self]) -> Option<&[f32]>;
    fn widen(self) -> f32;
}
impl CacheElem for f32 {
    fn as_f32(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }
    fn widen(self) -> f32 {
        self
    }
}
impl CacheElem for f16 {
    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }
    fn widen(self) -> f32 {
        self.to_f32()
    }
}
impl CacheElem for bf16 {
    fn as_f32(_: &[bf16]) -> Option<&[f32]> {
        None
    }
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// The shape of the problem.
pub struct Dims<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// First position of the chunk.
    pub pos: usize,
    /// Positions in the chunk.
    pub n: usize,
    /// Sliding window (keys fewer than this many positions back are visible), if any.
    pub window: Option<usize>,
    /// Runs of image soft tokens in the chunk (absolute positions, end exclusive): a token of a
    /// run also sees every other token of its run, later ones included. Runs lie inside the chunk.
    pub spans: &'a [(usize, usize)],
}

impl Dims<'_> {
    /// The positions query `qpos` may see: its window (or everything) up to itself, widened to
    /// the whole image run it belongs to (Gemma 3's bidirectional attention among an image's
    /// tokens, ORed with the causal/sliding mask).
    pub fn visible(&self, qpos: usize) -> std::ops::Range<usize> {
        let lo = match self.window {
            Some(w) => (qpos + 1).saturating_sub(w),
            None => 0,
        };
        match self.spans.iter().find(|(s, e)| (*s..*e).contains(&qpos)) {
            Some(&(s, e)) => lo.min(s)..e,
            None => lo..qpos + 1,
        }
    }

    fn check_spans(&self) -> Result<()> {
        let chunk = self.pos..self.pos + self.n;
        for &(s, e) in self.spans {
            if s >= e || s < chunk.start || e > chunk.end {
                candle_core::bail!(
                    "attention: image run {s}..{e} is not inside the chunk {chunk:?}"
                );
            }
        }
        Ok(())
    }
}

fn f32_slice(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// `q` [heads, n, hd] (scaled, rotated), `k`/`v` [kv_heads, n, hd] for the chunk, `cache` holding
/// the positions before it. Returns [n, heads × hd]. The chunk is not written into the cache.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, cache: &LayerCache, d: &Dims) -> Result<Tensor> {
    d.check_spans()?;
    // The chunk's own keys and values are seen as the cache will hold them, so a position looks
    // the same to the chunk that wrote it as to every later token.
    let dtype = cache.k.dtype();
    let as_cached = |t: &Tensor| -> Result<Vec<f32>> {
        if dtype == DType::F32 {
            f32_slice(t)
        } else {
            f32_slice(&t.to_dtype(dtype)?.to_dtype(DType::F32)?)
        }
    };
    let (q, k, v) = (f32_slice(q)?, as_cached(k)?, as_cached(v)?);
    let (ks, kl) = cache.k.storage_and_layout();
    let (vs, vl) = cache.v.storage_and_layout();
    let (Storage::Cpu(ks), Storage::Cpu(vs)) = (&*ks, &*vs) else {
        candle_core::bail!("attention: the CPU kernel needs a CPU cache");
    };
    let (Some((k0, k1)), Some((v0, v1))) = (kl.contiguous_offsets(), vl.contiguous_offsets())
    else {
        candle_core::bail!("attention: the cache must be contiguous");
    };
    let chunk = Chunk {
        q: &q,
        k: &k,
        v: &v,
    };
    let out = match (ks, vs) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => run(&chunk, &a[k0..k1], &b[v0..v1], cache, d),
        (CpuStorage::F16(a), CpuStorage::F16(b)) => run(&chunk, &a[k0..k1], &b[v0..v1], cache, d),
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => run(&chunk, &a[k0..k1], &b[v0..v1], cache, d),
        _ => candle_core::bail!("attention: unsupported cache dtype {:?}", cache.k.dtype()),
    };
    Tensor::from_vec(out, (d.n, d.heads * d.head_dim), &candle_core::Device::Cpu)
}

struct Chunk<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

fn run<T: CacheElem>(c: &Chunk, ck: &[T], cv: &[T], cache: &LayerCache, d: &Dims) -> Vec<f32> {
    let hd = d.head_dim;
    let group = d.heads / d.kv_heads;
    let cap = cache.capacity;
    let slot = |p: usize| {
        if cache.kind == LayerKind::Sliding {
            p % cap
        } else {
            p
        }
    };
    let mut out = vec![0f32; d.n * d.heads * hd];
    let out_ptr = SendPtr(out.as_mut_ptr());
    // One work item per (KV head, query position): the query heads that share a KV head are
    // scored together, so each key and value row is read (and widened) once for all of them.
    // Per head the operations and their order are those of one head alone.
    let work = |items: std::ops::Range<usize>| {
        let mut scores: Vec<Vec<f32>> = vec![Vec::new(); group];
        let mut acc = vec![0f32; group * hd];
        let (mut kbuf, mut vbuf) = (Vec::new(), Vec::new());
        for item in items {
            let (kvh, i) = (item / d.n, item % d.n);
            let heads = kvh * group..(kvh + 1) * group;
            let qpos = d.pos + i;
            let seen = d.visible(qpos);
            let qs: Vec<&[f32]> = heads
                .clone()
                .map(|h| &c.q[(h * d.n + i) * hd..(h * d.n + i + 1) * hd])
                .collect();
            let rows = Rows {
                cached: seen.start..d.pos.min(seen.end), // positions before the chunk
                fresh: seen.start.max(d.pos)..seen.end,  // positions in the chunk
                cache_row: |p: usize| (kvh * cap + slot(p)) * hd,
                chunk_row: |p: usize| (kvh * d.n + p - d.pos) * hd,
                hd,
            };
            let keys = rows.gather(ck, c.k, &mut kbuf);
            for s in scores.iter_mut() {
                s.clear();
                s.resize(keys.len(), 0.0);
            }
            score(&qs, &keys, &mut scores);
            // Softmax per head: the scores become weights.
            for s in scores.iter_mut() {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut lanes = [0f32; 8];
                for (j, v) in s.iter_mut().enumerate() {
                    *v = (*v - max).exp();
                    lanes[j % 8] += *v;
                }
                let sum: f32 = lanes.iter().sum();
                s.iter_mut().for_each(|v| *v /= sum);
            }
            let values = rows.gather(cv, c.v, &mut vbuf);
            acc.fill(0.0);
            mix(&scores, &values, &mut acc);
            for (g, h) in heads.enumerate() {
                let dst = (i * d.heads + h) * hd;
                for (e, &a) in acc[g * hd..(g + 1) * hd].iter().enumerate() {
                    // SAFETY: each (position, head) row is written by exactly one work item.
                    unsafe { *out_ptr.get().add(dst + e) = a };
                }
            }
        }
    };
    let items = d.kv_heads * d.n;
    if items * group * (d.pos + d.n) < 4096 {
        work(0..items);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(items, work);
    }
    out
}

/// The key (or value) rows one query sees, in position order: those before the chunk from the
/// cache, then the chunk's own.
struct Rows<C, F> {
    cached: std::ops::Range<usize>,
    fresh: std::ops::Range<usize>,
    /// Offset of a cached position's row in the cache.
    cache_row: C,
    /// Offset of a chunk position's row in the chunk.
    chunk_row: F,
    hd: usize,
}

impl<C: Fn(usize) -> usize, F: Fn(usize) -> usize> Rows<C, F> {
    /// The rows as f32 slices: borrowed where the cache holds f32, else widened into `buf`.
    fn gather<'a, T: CacheElem>(
        &self,
        cache: &'a [T],
        chunk: &'a [f32],
        buf: &'a mut Vec<f32>,
    ) -> Vec<&'a [f32]> {
        let hd = self.hd;
        let mut rows = Vec::with_capacity(self.cached.len() + self.fresh.len());
        match T::as_f32(cache) {
            Some(c) => rows.extend(self.cached.clone().map(|p| &c[(self.cache_row)(p)..][..hd])),
            None => {
                buf.clear();
                for p in self.cached.clone() {
                    let o = (self.cache_row)(p);
                    buf.extend(cache[o..o + hd].iter().map(|&v| v.widen()));
                }
                rows.extend(buf.chunks_exact(hd));
            }
        }
        rows.extend(
            self.fresh
                .clone()
                .map(|p| &chunk[(self.chunk_row)(p)..][..hd]),
        );
        rows
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[h][j]` = q_h · key_j, each by [`dot`]'s arithmetic.
fn score(qs: &[&[f32]], keys: &[&[f32]], out: &mut [Vec<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() && qs[0].len().is_multiple_of(32) {
        // SAFETY: AVX-512F checked; rows are whole multiples of 32.
        return unsafe { x86::score(qs, keys, out) };
    }
    for (q, o) in qs.iter().zip(out.iter_mut()) {
        for (k, s) in keys.iter().zip(o.iter_mut()) {
            *s = dot(q, k);
        }
    }
}

/// `acc[h]` += Σ_j w[h][j] · value_j, j in order, element by element (one fused multiply-add
/// each): the same bits however the work is tiled.
fn mix(w: &[Vec<f32>], values: &[&[f32]], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() && acc.len().is_multiple_of(32 * w.len()) {
        // SAFETY: AVX-512F checked; rows are whole multiples of 32.
        return unsafe { x86::mix(w, values, acc) };
    }
    let hd = acc.len() / w.len();
    for (j, v) in values.iter().enumerate() {
        for (wh, a) in w.iter().zip(acc.chunks_exact_mut(hd)) {
            for (a, &x) in a.iter_mut().zip(v.iter()) {
                *a = wh[j].mul_add(x, *a);
            }
        }
    }
}

/// Dot product in a fixed order: 32 lanes of fused multiply-adds (so the loop is not bound by
/// their latency), then the lanes summed in order. (A tree sum of the lanes is cheaper in
/// registers, but moves the last bits enough that the teacher-forced llama.cpp check of
/// `tests/engine.rs` fails by a hair: those bits are what the reference checks validated.)
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 32];
    let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..32 {
            lanes[i] = x[i].mul_add(y[i], lanes[i]);
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::score`] with up to 4 heads × 2 keys per step, each (head, key) in two registers
    /// (lanes 0–15 and 16–31 of [`super::dot`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn score(qs: &[&[f32]], keys: &[&[f32]], out: &mut [Vec<f32>]) {
        for h0 in (0..qs.len()).step_by(4) {
            match qs.len() - h0 {
                1 => heads::<1>(qs, keys, out, h0),
                2 => heads::<2>(qs, keys, out, h0),
                3 => heads::<3>(qs, keys, out, h0),
                _ => heads::<4>(qs, keys, out, h0),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn heads<const H: usize>(
        qs: &[&[f32]],
        keys: &[&[f32]],
        out: &mut [Vec<f32>],
        h0: usize,
    ) {
        let mut j = 0;
        while j + 2 <= keys.len() {
            tile::<H, 2>(qs, keys, out, h0, j);
            j += 2;
        }
        if j < keys.len() {
            tile::<H, 1>(qs, keys, out, h0, j);
        }
    }

    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const H: usize, const K: usize>(
        qs: &[&[f32]],
        keys: &[&[f32]],
        out: &mut [Vec<f32>],
        h0: usize,
        j0: usize,
    ) {
        let hd = qs[h0].len();
        let mut acc = [[[_mm512_setzero_ps(); 2]; K]; H];
        for o in (0..hd).step_by(32) {
            let mut k = [[_mm512_setzero_ps(); 2]; K];
            for t in 0..K {
                let p = keys[j0 + t].as_ptr().add(o);
                k[t] = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
            }
            for h in 0..H {
                let p = qs[h0 + h].as_ptr().add(o);
                let q = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
                for t in 0..K {
                    acc[h][t][0] = _mm512_fmadd_ps(q[0], k[t][0], acc[h][t][0]);
                    acc[h][t][1] = _mm512_fmadd_ps(q[1], k[t][1], acc[h][t][1]);
                }
            }
        }
        for h in 0..H {
            for t in 0..K {
                out[h0 + h][j0 + t] = reduce(acc[h][t]);
            }
        }
    }

    /// The lanes summed in order, as [`super::dot`] does.
    #[target_feature(enable = "avx512f")]
    unsafe fn reduce(a: [__m512; 2]) -> f32 {
        let mut lanes = [0f32; 32];
        _mm512_storeu_ps(lanes.as_mut_ptr(), a[0]);
        _mm512_storeu_ps(lanes.as_mut_ptr().add(16), a[1]);
        lanes.iter().sum()
    }

    /// [`super::mix`] with up to 4 heads × 32 elements held in registers across every value row.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mix(w: &[Vec<f32>], values: &[&[f32]], acc: &mut [f32]) {
        for h0 in (0..w.len()).step_by(4) {
            match w.len() - h0 {
                1 => mix_heads::<1>(w, values, acc, h0),
                2 => mix_heads::<2>(w, values, acc, h0),
                3 => mix_heads::<3>(w, values, acc, h0),
                _ => mix_heads::<4>(w, values, acc, h0),
            }
        }
    }

    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_heads<const H: usize>(
        w: &[Vec<f32>],
        values: &[&[f32]],
        acc: &mut [f32],
        h0: usize,
    ) {
        let hd = acc.len() / w.len();
        for o in (0..hd).step_by(32) {
            let mut a = [[_mm512_setzero_ps(); 2]; H];
            for h in 0..H {
                let p = acc.as_ptr().add((h0 + h) * hd + o);
                a[h] = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
            }
            for (j, v) in values.iter().enumerate() {
                let p = v.as_ptr().add(o);
                let x = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
                for h in 0..H {
                    let s = _mm512_set1_ps(*w[h0 + h].get_unchecked(j));
                    a[h][0] = _mm512_fmadd_ps(s, x[0], a[h][0]);
                    a[h][1] = _mm512_fmadd_ps(s, x[1], a[h][1]);
                }
            }
            for h in 0..H {
                let p = acc.as_mut_ptr().add((h0 + h) * hd + o);
                _mm512_storeu_ps(p, a[h][0]);
                _mm512_storeu_ps(p.add(16), a[h][1]);
            }
        }
    }
}

/// Whether the CPU kernel handles this cache.
pub fn supported(cache: &LayerCache) -> bool {
    cache.k.device().is_cpu() && matches!(cache.k.dtype(), DType::F32 | DType::F16 | DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 scoring and mixing give exactly the plain loops' bits (heads 1 to 5, so every
    /// head block size and an odd key count).
    #[test]
    fn avx512_paths_equal_the_plain_loops() {
        if !avx512() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let hd = 64;
        let mut seed = 7u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for heads in 1..=5 {
            let q: Vec<Vec<f32>> = (0..heads)
                .map(|_| (0..hd).map(|_| rnd()).collect())
                .collect();
            let kv: Vec<Vec<f32>> = (0..13).map(|_| (0..hd).map(|_| rnd()).collect()).collect();
            let qs: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
            let keys: Vec<&[f32]> = kv.iter().map(Vec::as_slice).collect();
            let mut fast = vec![vec![0f32; keys.len()]; heads];
            score(&qs, &keys, &mut fast);
            let mut acc_fast = vec![0f32; heads * hd];
            mix(&fast, &keys, &mut acc_fast);
            let mut acc_plain = vec![0f32; heads * hd];
            for (h, q) in qs.iter().enumerate() {
                for (j, k) in keys.iter().enumerate() {
                    assert_eq!(fast[h][j].to_bits(), dot(q, k).to_bits(), "score {h}, {j}");
                    for (a, &x) in acc_plain[h * hd..(h + 1) * hd].iter_mut().zip(k.iter()) {
                        *a = fast[h][j].mul_add(x, *a);
                    }
                }
            }
            let same = acc_fast
                .iter()
                .zip(&acc_plain)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{heads} heads: mix differs");
        }
    }
}
