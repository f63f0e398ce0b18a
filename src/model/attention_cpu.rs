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

use crate::model::config::LayerKind;
use crate::model::kv_cache::LayerCache;
use crate::model::qmatmul::SendPtr;

/// An element type the cache may hold.
trait CacheElem: Copy + Send + Sync {
    /// The row as f32: borrowed when it already is, else converted into `buf`.
    fn row<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
}
impl CacheElem for f32 {
    #[inline(always)]
    fn row<'a>(src: &'a [f32], _: &'a mut [f32]) -> &'a [f32] {
        src
    }
}
impl CacheElem for f16 {
    #[inline(always)]
    fn row<'a>(src: &'a [f16], buf: &'a mut [f32]) -> &'a [f32] {
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.to_f32();
        }
        buf
    }
}
impl CacheElem for bf16 {
    #[inline(always)]
    fn row<'a>(src: &'a [bf16], buf: &'a mut [f32]) -> &'a [f32] {
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.to_f32();
        }
        buf
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
        let mut buf = vec![0f32; hd];
        for item in items {
            let (kvh, i) = (item / d.n, item % d.n);
            let heads = kvh * group..(kvh + 1) * group;
            let qpos = d.pos + i;
            let seen = d.visible(qpos);
            let q = |h: usize| &c.q[(h * d.n + i) * hd..(h * d.n + i + 1) * hd];
            let cached = seen.start..d.pos.min(seen.end); // positions before the chunk, from the cache
            let fresh = seen.start.max(d.pos)..seen.end; // positions in the chunk
            let cache_row = |p: usize| (kvh * cap + slot(p)) * hd;
            let chunk_row = |p: usize| (kvh * d.n + p - d.pos) * hd;
            scores.iter_mut().for_each(Vec::clear);
            let mut score = |k: &[f32]| {
                for (s, h) in scores.iter_mut().zip(heads.clone()) {
                    s.push(dot(q(h), k));
                }
            };
            for p in cached.clone() {
                let o = cache_row(p);
                score(T::row(&ck[o..o + hd], &mut buf));
            }
            for p in fresh.clone() {
                let o = chunk_row(p);
                score(&c.k[o..o + hd]);
            }
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
            acc.fill(0.0);
            let mut mix = |j: usize, v: &[f32]| {
                for (g, a) in acc.chunks_exact_mut(hd).enumerate() {
                    axpy(scores[g][j], v, a);
                }
            };
            let mut j = 0;
            for p in cached {
                let o = cache_row(p);
                mix(j, T::row(&cv[o..o + hd], &mut buf));
                j += 1;
            }
            for p in fresh {
                let o = chunk_row(p);
                mix(j, &c.v[o..o + hd]);
                j += 1;
            }
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

/// Dot product in a fixed order (vectorizes; the same result for the same inputs).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 32 lanes: four independent chains of fused multiply-adds, so the loop is not bound by
    // their latency (head_dim is a multiple of 32 in every Gemma 3 size).
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

#[inline(always)]
fn axpy(w: f32, x: &[f32], acc: &mut [f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = w.mul_add(v, *a);
    }
}

/// Whether the CPU kernel handles this cache.
pub fn supported(cache: &LayerCache) -> bool {
    cache.k.device().is_cpu() && matches!(cache.k.dtype(), DType::F32 | DType::F16 | DType::BF16)
}
