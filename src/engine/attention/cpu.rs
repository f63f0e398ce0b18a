//! Attention on the CPU, one query at a time, keys visited in position order.
//!
//! The result for a query depends only on its position and the keys it may see, never on how
//! the prompt was chunked, whether the token is being decoded, or where the sliding ring
//! currently starts: scores, the softmax sum and the weighted sum of values are accumulated in
//! the same order in every case. (Through general matrix products the summation order follows
//! the key count and ring layout; with 8-bit activations downstream, those last-bit differences
//! flip quantization steps and grow into visible logit differences.)

use candle_core::{CpuStorage, Result, Storage, StorageRef, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::engine::config::LayerKind;
use crate::engine::kernels::qmatmul::SendPtr;
use crate::engine::kv_cache::{LayerCache, Store};
use crate::engine::kv_quant::{Block, QK};

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

/// A tensor's CPU storage, held for reading.
struct Held<'t> {
    guard: StorageRef<'t>,
    range: (usize, usize),
}

impl<'t> Held<'t> {
    fn new(t: &'t Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some(range) = layout.contiguous_offsets() else {
            candle_core::bail!("attention: the cache must be contiguous");
        };
        if !matches!(&*guard, Storage::Cpu(_)) {
            candle_core::bail!("attention: the CPU kernel needs a CPU cache");
        }
        Ok(Held { guard, range })
    }

    fn cpu(&self) -> &CpuStorage {
        match &*self.guard {
            Storage::Cpu(c) => c,
            _ => unreachable!("checked in Held::new"),
        }
    }
}

/// A side of the cache held for reading.
enum HeldStore<'t> {
    Dense(Held<'t>),
    Quant(Block, [Option<Held<'t>>; 4]),
}

fn u8s<'a>(h: &'a Option<Held<'_>>) -> Result<&'a [u8]> {
    match h {
        None => Ok(&[]),
        Some(h) => match h.cpu() {
            CpuStorage::U8(v) => Ok(&v[h.range.0..h.range.1]),
            _ => candle_core::bail!("attention: a quantized plane is not bytes"),
        },
    }
}

fn f16s<'a>(h: &'a Option<Held<'_>>) -> Result<&'a [f16]> {
    match h {
        None => Ok(&[]),
        Some(h) => match h.cpu() {
            CpuStorage::F16(v) => Ok(&v[h.range.0..h.range.1]),
            _ => candle_core::bail!("attention: a scale plane is not f16"),
        },
    }
}

impl<'t> HeldStore<'t> {
    fn new(s: &'t Store) -> Result<Self> {
        Ok(match s {
            Store::Dense(t) => HeldStore::Dense(Held::new(t)?),
            Store::Quant(p) => HeldStore::Quant(
                p.block,
                [
                    Some(Held::new(&p.low)?),
                    Some(Held::new(&p.d)?),
                    p.m.as_ref().map(Held::new).transpose()?,
                    p.high.as_ref().map(Held::new).transpose()?,
                ],
            ),
        })
    }

    fn src(&self, hd: usize) -> Result<Src<'_>> {
        Ok(match self {
            HeldStore::Dense(h) => {
                let (a, b) = h.range;
                match h.cpu() {
                    CpuStorage::F32(v) => Src::F32(&v[a..b]),
                    CpuStorage::F16(v) => Src::F16(&v[a..b]),
                    CpuStorage::BF16(v) => Src::Bf16(&v[a..b]),
                    _ => candle_core::bail!("attention: unsupported cache dtype"),
                }
            }
            HeldStore::Quant(block, [low, d, m, high]) => Src::Quant(QSrc {
                block: *block,
                nb: hd / QK,
                low: u8s(low)?,
                d: f16s(d)?,
                m: f16s(m)?,
                high: u8s(high)?,
            }),
        })
    }
}

/// Rows of one side (keys or values) as the kernel reads them: row r holds `hd` values.
enum Src<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    Quant(QSrc<'a>),
}

/// Rows in a block format, plane by plane ([`crate::engine::kv_quant::Planes`]).
#[derive(Clone, Copy)]
struct QSrc<'a> {
    block: Block,
    /// Blocks per row.
    nb: usize,
    low: &'a [u8],
    d: &'a [f16],
    m: &'a [f16],
    high: &'a [u8],
}

impl QSrc<'_> {
    /// Row r's integer values and per-block scales and minima (0 without).
    fn unpack(&self, r: usize, vals: &mut [i8], d: &mut [f32], m: &mut [f32]) {
        let (lb, hb) = (self.block.low_bytes(), self.block.high_bytes());
        for b in 0..self.nb {
            let i = r * self.nb + b;
            let low = &self.low[i * lb..(i + 1) * lb];
            let vals = &mut vals[b * QK..(b + 1) * QK];
            if self.block == Block::Q8_0 {
                // SAFETY: i8 and u8 have one layout; the bytes are two's complement values.
                vals.copy_from_slice(unsafe { &*(low as *const [u8] as *const [i8]) });
            } else {
                self.block
                    .unpack(low, &self.high[i * hb..(i + 1) * hb], vals);
            }
            d[b] = self.d[i].to_f32();
            m[b] = if self.block.has_min() {
                self.m[i].to_f32()
            } else {
                0.0
            };
        }
    }

    /// Row r as f32 values (d × v + m) into `out` (hd values).
    fn dequantize(&self, r: usize, out: &mut [f32]) {
        let mut vals = [0i8; QK];
        let (lb, hb) = (self.block.low_bytes(), self.block.high_bytes());
        for (b, out) in out.chunks_exact_mut(QK).enumerate() {
            let i = r * self.nb + b;
            self.block.unpack(
                &self.low[i * lb..(i + 1) * lb],
                &self.high[i * hb..(i + 1) * hb],
                &mut vals,
            );
            let d = self.d[i].to_f32();
            let m = if self.block.has_min() {
                self.m[i].to_f32()
            } else {
                0.0
            };
            for (o, &v) in out.iter_mut().zip(&vals) {
                *o = d * v as f32 + m;
            }
        }
    }
}

impl Src<'_> {
    /// Row r, when held as f32.
    fn borrow(&self, r: usize, hd: usize) -> Option<&[f32]> {
        match self {
            Src::F32(v) => Some(&v[r * hd..(r + 1) * hd]),
            _ => None,
        }
    }

    /// Row r widened (or dequantized: d × v + m) to f32 into `out` (hd values). Exact for the
    /// dense types (F16C where the CPU has it).
    fn write_f32(&self, r: usize, out: &mut [f32]) {
        let hd = out.len();
        match self {
            Src::F32(v) => out.copy_from_slice(&v[r * hd..(r + 1) * hd]),
            Src::F16(v) => v[r * hd..(r + 1) * hd].convert_to_f32_slice(out),
            Src::Bf16(v) => v[r * hd..(r + 1) * hd].convert_to_f32_slice(out),
            Src::Quant(q) => q.dequantize(r, out),
        }
    }
}

/// One sequence's attention in a layer: `q` [heads, n, hd] (scaled, rotated), `k`/`v` the
/// chunk's keys and values encoded for the cache ([`Store::encode`]), `cache` holding the
/// positions before it.
pub struct Job<'a> {
    pub q: &'a Tensor,
    pub k: &'a Store,
    pub v: &'a Store,
    pub cache: &'a LayerCache,
    pub dims: Dims<'a>,
}

/// [`attend_many`] for one sequence. Returns [n, heads × hd]. The chunk is not written into the
/// cache.
///
/// The chunk's own keys and values are read as the cache will hold them (rounded to its type, or
/// quantized), so a position looks the same to the chunk that wrote it as to every later token.
pub fn attend(q: &Tensor, k: &Store, v: &Store, cache: &LayerCache, d: &Dims) -> Result<Tensor> {
    let job = Job {
        q,
        k,
        v,
        cache,
        dims: Dims { ..*d },
    };
    Ok(attend_many(&[job])?.remove(0))
}

/// The attention of several sequences (a batch's, in one layer), each over its own cache: their
/// work items (KV head × query position) share one pass over the worker pool, so a decode step
/// of B sequences keeps every core busy even where one sequence has a single item. Each item's
/// operations are those it gets alone. Returns each job's [n, heads × hd].
pub fn attend_many(jobs: &[Job]) -> Result<Vec<Tensor>> {
    let mut qs = Vec::with_capacity(jobs.len());
    let mut held = Vec::with_capacity(jobs.len());
    for j in jobs {
        j.dims.check_spans()?;
        qs.push(f32_slice(j.q)?);
        let [hk, fk, hv, fv] = [&j.cache.k, j.k, &j.cache.v, j.v].map(HeldStore::new);
        held.push([hk?, fk?, hv?, fv?]);
    }
    let mut sides = Vec::with_capacity(jobs.len());
    for ((j, q), [hk, fk, hv, fv]) in jobs.iter().zip(&qs).zip(&held) {
        let hd = j.dims.head_dim;
        let s = Sides {
            q,
            k: [hk.src(hd)?, fk.src(hd)?],
            v: [hv.src(hd)?, fv.src(hd)?],
        };
        if matches!(s.k[0], Src::Quant(_)) != matches!(s.k[1], Src::Quant(_)) {
            candle_core::bail!("attention: the chunk's keys are not encoded for the cache");
        }
        sides.push(s);
    }
    let parts: Vec<(&Sides, &LayerCache, &Dims)> = sides
        .iter()
        .zip(jobs)
        .map(|(s, j)| (s, j.cache, &j.dims))
        .collect();
    run(&parts)
        .into_iter()
        .zip(jobs)
        .map(|(out, j)| {
            Tensor::from_vec(
                out,
                (j.dims.n, j.dims.heads * j.dims.head_dim),
                &candle_core::Device::Cpu,
            )
        })
        .collect()
}

/// The queries, and keys and values: [the cache's rows, the chunk's rows].
struct Sides<'a> {
    q: &'a [f32],
    k: [Src<'a>; 2],
    v: [Src<'a>; 2],
}

/// Rows gathered (widened or dequantized) at a time: bounds the kernel's per-thread buffers
/// (256 rows of 256 f32 values: 256 KiB) however deep the context.
const ROWS: usize = 256;

thread_local! {
    /// A thread's gather buffer, kept between passes: a fresh one per layer would be mapped
    /// and zeroed by the kernel every time (it is larger than malloc's mapping threshold).
    static GATHER: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A worker's buffers, reused across its items.
struct Scratch {
    scores: Vec<Vec<f32>>,
    acc: Vec<f32>,
    buf: Vec<f32>,
    kq: QuantKeys,
}

/// The outputs of every part, computed by work items spread over the pool: one item per
/// (part, KV head, query position).
fn run(parts: &[(&Sides, &LayerCache, &Dims)]) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = parts
        .iter()
        .map(|(_, _, d)| vec![0f32; d.n * d.heads * d.head_dim])
        .collect();
    let ptrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    // Where each part's items start, and the work they amount to.
    let mut first = Vec::with_capacity(parts.len() + 1);
    let (mut items, mut cost) = (0, 0);
    for (_, _, d) in parts {
        first.push(items);
        let n = d.kv_heads * d.n;
        items += n;
        cost += n * (d.heads / d.kv_heads) * (d.pos + d.n);
    }
    first.push(items);
    let work = |range: std::ops::Range<usize>| {
        let mut scratch: Option<Scratch> = None;
        for item in range {
            let p = first.partition_point(|&f| f <= item) - 1;
            let (c, cache, d) = parts[p];
            let group = d.heads / d.kv_heads;
            let s = scratch.get_or_insert_with(|| Scratch {
                scores: vec![Vec::new(); group],
                acc: vec![0f32; group * d.head_dim],
                buf: GATHER.take(),
                kq: QuantKeys::new(group, d.head_dim),
            });
            one_item(c, cache, d, item - first[p], s, &ptrs[p]);
        }
        if let Some(s) = scratch {
            GATHER.set(s.buf);
        }
    };
    if cost < 4096 {
        work(0..items);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(items, work);
    }
    outs
}

/// One (KV head, query position) item of a part: the query heads that share a KV head are
/// scored together, so each key and value row is read (and widened) once for all of them. Per
/// head the operations and their order are those of one head alone, and the same whatever block
/// of rows a key falls in.
fn one_item(c: &Sides, cache: &LayerCache, d: &Dims, item: usize, s: &mut Scratch, out: &SendPtr) {
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
    let (kvh, i) = (item / d.n, item % d.n);
    let heads = kvh * group..(kvh + 1) * group;
    let qpos = d.pos + i;
    let seen = d.visible(qpos);
    // Where position p's row is: the cache before the chunk, the chunk's own after.
    let at = |p: usize| -> (usize, usize) {
        if p < d.pos {
            (0, kvh * cap + slot(p))
        } else {
            (1, kvh * d.n + p - d.pos)
        }
    };
    let qs: Vec<&[f32]> = heads
        .clone()
        .map(|h| &c.q[(h * d.n + i) * hd..(h * d.n + i + 1) * hd])
        .collect();
    let Scratch {
        scores,
        acc,
        buf,
        kq,
    } = s;
    for s in scores.iter_mut() {
        s.clear();
        s.resize(seen.len(), 0.0);
    }
    let f16_sides = |x: &[Src; 2]| matches!(x, [Src::F16(_), Src::F16(_)]);
    let direct = direct_f16(hd) && f16_sides(&c.k) && f16_sides(&c.v);
    if let Src::Quant(_) = c.k[0] {
        kq.score(&qs, &c.k, seen.clone(), at, scores);
    } else if direct {
        for b0 in seen.clone().step_by(ROWS) {
            let block = b0..(b0 + ROWS).min(seen.end);
            score_f16(&qs, &f16_rows(&c.k, block, at, hd), scores, b0 - seen.start);
        }
    } else {
        for b0 in seen.clone().step_by(ROWS) {
            let block = b0..(b0 + ROWS).min(seen.end);
            let keys = gather(&c.k, block, at, hd, buf);
            score(&qs, &keys, scores, b0 - seen.start);
        }
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
    for b0 in seen.clone().step_by(ROWS) {
        let block = b0..(b0 + ROWS).min(seen.end);
        if direct {
            mix_f16(scores, b0 - seen.start, &f16_rows(&c.v, block, at, hd), acc);
        } else {
            let values = gather(&c.v, block, at, hd, buf);
            mix(scores, b0 - seen.start, &values, acc);
        }
    }
    for (g, h) in heads.enumerate() {
        let dst = (i * d.heads + h) * hd;
        for (e, &a) in acc[g * hd..(g + 1) * hd].iter().enumerate() {
            // SAFETY: each (position, head) row of a part is written by exactly one work item.
            unsafe { *out.get().add(dst + e) = a };
        }
    }
}

/// The rows of positions `ps` as f32 slices, in order: borrowed where the side holds f32, else
/// widened or dequantized into `buf`.
fn gather<'a>(
    sides: &'a [Src<'a>; 2],
    ps: std::ops::Range<usize>,
    at: impl Fn(usize) -> (usize, usize),
    hd: usize,
    buf: &'a mut Vec<f32>,
) -> Vec<&'a [f32]> {
    // The rows to widen; the buffer only grows to hold them (an f32 cache needs none), and is
    // zeroed only then: rows are written over.
    let widened = ps
        .clone()
        .filter(|&p| {
            let (s, r) = at(p);
            sides[s].borrow(r, hd).is_none()
        })
        .count();
    if buf.len() < widened * hd {
        buf.resize(widened * hd, 0.0);
    }
    let mut next = 0;
    for p in ps.clone() {
        let (s, r) = at(p);
        if sides[s].borrow(r, hd).is_none() {
            sides[s].write_f32(r, &mut buf[next..next + hd]);
            next += hd;
        }
    }
    let buf: &'a Vec<f32> = buf;
    let mut next = 0;
    ps.map(|p| {
        let (s, r) = at(p);
        sides[s].borrow(r, hd).unwrap_or_else(|| {
            next += hd;
            &buf[next - hd..next]
        })
    })
    .collect()
}

/// Scoring against keys in a block format, as llama.cpp's CPU flash attention does: each query
/// quantized to 8 bits per value (a scale per 32), and per block of a key an integer dot
/// product: q·k = Σ_blocks d_k × d_q × Σ k_i q_i (+ m_k × d_q × Σ q_i for formats with a minimum).
struct QuantKeys {
    /// Per head: the query's integer values, and per block its scale and scale × Σ values.
    qv: Vec<Vec<i8>>,
    qd: Vec<Vec<f32>>,
    qm: Vec<Vec<f32>>,
    /// One key row, unpacked.
    kv: Vec<i8>,
    kd: Vec<f32>,
    km: Vec<f32>,
}

impl QuantKeys {
    fn new(group: usize, hd: usize) -> Self {
        let nb = hd / QK;
        QuantKeys {
            qv: vec![vec![0; hd]; group],
            qd: vec![vec![0.0; nb]; group],
            qm: vec![vec![0.0; nb]; group],
            kv: vec![0; hd],
            kd: vec![0.0; nb],
            km: vec![0.0; nb],
        }
    }

    fn score(
        &mut self,
        qs: &[&[f32]],
        k: &[Src; 2],
        ps: std::ops::Range<usize>,
        at: impl Fn(usize) -> (usize, usize),
        out: &mut [Vec<f32>],
    ) {
        for (h, q) in qs.iter().enumerate() {
            quantize_query(q, &mut self.qv[h], &mut self.qd[h], &mut self.qm[h]);
        }
        let with_min = matches!(&k[0], Src::Quant(b) if b.block.has_min());
        let start = ps.start;
        for p in ps {
            let (s, r) = at(p);
            let Src::Quant(src) = &k[s] else {
                unreachable!("both sides of quantized keys are quantized")
            };
            src.unpack(r, &mut self.kv, &mut self.kd, &mut self.km);
            for (h, o) in out.iter_mut().enumerate() {
                let mut sum = block_dots(&self.kv, &self.qv[h], &self.kd, &self.qd[h]);
                if with_min {
                    for (km, qm) in self.km.iter().zip(&self.qm[h]) {
                        sum += km * qm;
                    }
                }
                o[p - start] = sum;
            }
        }
    }
}

/// Σ_blocks (kd_b × qd_b) × Σ_i k_i q_i over rows of whole blocks. With AVX2 (this build's
/// baseline) 32 products per block in one `vpmaddubsw` (|k| × sign-adjusted q, as llama.cpp
/// does), the block sums scaled and accumulated in 8 lanes, then the lanes summed; one order of
/// operations for every call.
fn block_dots(k: &[i8], q: &[i8], kd: &[f32], qd: &[f32]) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    // SAFETY: AVX2 is enabled at compile time; the rows hold kd.len() whole blocks.
    return unsafe { x86::block_dots(k, q, kd, qd) };
    #[allow(unreachable_code)]
    k.chunks_exact(QK)
        .zip(q.chunks_exact(QK))
        .zip(kd.iter().zip(qd))
        .map(|((kb, qb), (a, b))| (a * b) * idot(kb, qb) as f32)
        .sum()
}

/// A query row in 8 bits per value (llama.cpp's q8_0 rounding; the scale kept in f32), with per
/// block its scale and scale × Σ values.
fn quantize_query(q: &[f32], v: &mut [i8], d: &mut [f32], m: &mut [f32]) {
    for (b, x) in q.chunks_exact(QK).enumerate() {
        let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let scale = amax / 127.0;
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (o, &x) in v[b * QK..(b + 1) * QK].iter_mut().zip(x) {
            *o = (x * id).round() as i8;
            sum += *o as i32;
        }
        d[b] = scale;
        m[b] = scale * sum as f32;
    }
}

/// Σ a_i b_i over one block, exactly.
fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[h][at + j]` = q_h · key_j, each by [`dot`]'s arithmetic. (Kept out of line: inlined
/// into its caller it compiles to slower code, measured at twice the decode step at 4K depth.)
#[inline(never)]
fn score(qs: &[&[f32]], keys: &[&[f32]], out: &mut [Vec<f32>], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if qs[0].len().is_multiple_of(32) {
        if avx512() {
            // SAFETY: AVX-512F checked; rows are whole multiples of 32.
            return unsafe { x86::score(qs, keys, out, at) };
        }
        #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
        // SAFETY: AVX2/FMA are enabled at compile time; rows are whole multiples of 32.
        return unsafe { x86::score_avx2(qs, keys, out, at) };
    }
    for (q, o) in qs.iter().zip(out.iter_mut()) {
        for (k, s) in keys.iter().zip(o[at..].iter_mut()) {
            *s = dot(q, k);
        }
    }
}

/// `acc[h]` += Σ_j w[h][at + j] · value_j, j in order, element by element (one fused
/// multiply-add each): the same bits however the work is tiled, and whatever blocks of rows the
/// values come in.
#[inline(never)]
fn mix(w: &[Vec<f32>], at: usize, values: &[&[f32]], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if acc.len().is_multiple_of(32 * w.len()) {
        if avx512() {
            // SAFETY: AVX-512F checked; rows are whole multiples of 32.
            return unsafe { x86::mix(w, at, values, acc) };
        }
        #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
        // SAFETY: AVX2/FMA are enabled at compile time; rows are whole multiples of 32.
        return unsafe { x86::mix_avx2(w, at, values, acc) };
    }
    let hd = acc.len() / w.len();
    for (j, v) in values.iter().enumerate() {
        for (wh, a) in w.iter().zip(acc.chunks_exact_mut(hd)) {
            for (a, &x) in a.iter_mut().zip(v.iter()) {
                *a = wh[at + j].mul_add(x, *a);
            }
        }
    }
}

/// Whether f16 rows are scored and mixed as they are (widened in registers by the AVX2 kernels)
/// instead of widened into a buffer first: with AVX2 and F16C, without AVX-512 (whose kernels
/// take f32 rows), for head widths the kernels take.
fn direct_f16(hd: usize) -> bool {
    cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "f16c"
    )) && !avx512()
        && hd.is_multiple_of(32)
}

/// [`score`] over f16 rows, each value widened as it is loaded: the same bits as [`score`] on
/// the widened rows. Only where [`direct_f16`] holds.
#[inline(never)]
fn score_f16(qs: &[&[f32]], keys: &[&[f16]], out: &mut [Vec<f32>], at: usize) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "f16c"
    ))]
    // SAFETY: AVX2/FMA/F16C are enabled at compile time; the caller checked the row width.
    unsafe {
        x86::score_avx2(qs, keys, out, at)
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "f16c"
    )))]
    unreachable!(
        "direct_f16 is false without AVX2 and F16C: {:?}",
        (qs.len(), keys.len(), out.len(), at)
    )
}

/// [`mix`] over f16 rows, widened as they are loaded: the same bits as [`mix`] on the widened
/// rows. Only where [`direct_f16`] holds.
#[inline(never)]
fn mix_f16(w: &[Vec<f32>], at: usize, values: &[&[f16]], acc: &mut [f32]) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "f16c"
    ))]
    // SAFETY: AVX2/FMA/F16C are enabled at compile time; the caller checked the row width.
    unsafe {
        x86::mix_avx2(w, at, values, acc)
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "f16c"
    )))]
    unreachable!(
        "direct_f16 is false without AVX2 and F16C: {:?}",
        (w.len(), at, values.len(), acc.len())
    )
}

/// The f16 rows of positions `ps` from sides both held in f16.
fn f16_rows<'a>(
    sides: &'a [Src<'a>; 2],
    ps: std::ops::Range<usize>,
    at: impl Fn(usize) -> (usize, usize),
    hd: usize,
) -> Vec<&'a [f16]> {
    ps.map(|p| {
        let (s, r) = at(p);
        match &sides[s] {
            Src::F16(v) => &v[r * hd..(r + 1) * hd],
            _ => unreachable!("the caller checked that both sides hold f16"),
        }
    })
    .collect()
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

    /// [`super::block_dots`] with AVX2.
    #[cfg(target_feature = "avx2")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_dots(k: &[i8], q: &[i8], kd: &[f32], qd: &[f32]) -> f32 {
        debug_assert!(k.len() >= kd.len() * 32 && q.len() >= kd.len() * 32);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..kd.len() {
            let x = _mm256_loadu_si256(k.as_ptr().add(b * 32) as *const __m256i);
            let y = _mm256_loadu_si256(q.as_ptr().add(b * 32) as *const __m256i);
            // |k| (unsigned) × q with k's sign: the products k_i q_i, summed in pairs, then 4s.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            let scale = _mm256_set1_ps(*kd.get_unchecked(b) * *qd.get_unchecked(b));
            acc = _mm256_fmadd_ps(scale, sums, acc);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes.iter().sum()
    }

    /// [`super::score`] with up to 4 heads × 2 keys per step, each (head, key) in two registers
    /// (lanes 0–15 and 16–31 of [`super::dot`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn score(qs: &[&[f32]], keys: &[&[f32]], out: &mut [Vec<f32>], at: usize) {
        for h0 in (0..qs.len()).step_by(4) {
            match qs.len() - h0 {
                1 => heads::<1>(qs, keys, out, h0, at),
                2 => heads::<2>(qs, keys, out, h0, at),
                3 => heads::<3>(qs, keys, out, h0, at),
                _ => heads::<4>(qs, keys, out, h0, at),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn heads<const H: usize>(
        qs: &[&[f32]],
        keys: &[&[f32]],
        out: &mut [Vec<f32>],
        h0: usize,
        at: usize,
    ) {
        let mut j = 0;
        while j + 2 <= keys.len() {
            tile::<H, 2>(qs, keys, out, h0, j, at);
            j += 2;
        }
        if j < keys.len() {
            tile::<H, 1>(qs, keys, out, h0, j, at);
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
        at: usize,
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
                out[h0 + h][at + j0 + t] = reduce(acc[h][t]);
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

    /// Eight values of a row widened to f32 lanes (exactly: f16 → f32 loses nothing).
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    pub(super) trait Lanes: Copy {
        /// # Safety
        /// `p` must point at eight readable values.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    impl Lanes for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }

    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    impl Lanes for half::f16 {
        #[inline(always)]
        unsafe fn load8(p: *const half::f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }

    /// [`super::score`] with AVX2 (16 registers): per key, two heads' 32 lanes of [`super::dot`]
    /// at a time, kept in a buffer for eight keys; then each head's eight keys reduced together
    /// (the lanes transposed so that one vector addition adds lane i of eight keys, in lane
    /// order from the empty sum, as the plain loop's sum does).
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn score_avx2<T: Lanes>(
        qs: &[&[f32]],
        keys: &[&[T]],
        out: &mut [Vec<f32>],
        at: usize,
    ) {
        let hd = qs.first().map_or(0, |q| q.len());
        for j0 in (0..keys.len()).step_by(8) {
            let tile = &keys[j0..(j0 + 8).min(keys.len())];
            prefetch_rows(keys.get(j0 + 8..).unwrap_or(&[]), 8, hd);
            for h0 in (0..qs.len()).step_by(2) {
                if h0 + 2 <= qs.len() {
                    score_tile_avx2::<2, T>(&qs[h0..h0 + 2], tile, &mut out[h0..h0 + 2], at + j0);
                } else {
                    score_tile_avx2::<1, T>(&qs[h0..h0 + 1], tile, &mut out[h0..h0 + 1], at + j0);
                }
            }
        }
    }

    /// `H` heads against up to eight keys, into `out[h][at..]`.
    #[allow(clippy::needless_range_loop)]
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn score_tile_avx2<const H: usize, T: Lanes>(
        qs: &[&[f32]],
        tile: &[&[T]],
        out: &mut [Vec<f32>],
        at: usize,
    ) {
        let hd = qs[0].len();
        // The plain loop's starting value (and its empty tail's sum).
        let empty = _mm256_set1_ps(std::iter::empty::<f32>().sum());
        let mut lanes = [[[0f32; 32]; 8]; H];
        for (t, k) in tile.iter().enumerate() {
            let mut acc = [[_mm256_setzero_ps(); 4]; H];
            for o in (0..hd).step_by(32) {
                let kv: [__m256; 4] = std::array::from_fn(|l| T::load8(k.as_ptr().add(o + 8 * l)));
                for h in 0..H {
                    let q = qs[h].as_ptr().add(o);
                    for l in 0..4 {
                        let qv = _mm256_loadu_ps(q.add(8 * l));
                        acc[h][l] = _mm256_fmadd_ps(qv, kv[l], acc[h][l]);
                    }
                }
            }
            for h in 0..H {
                for l in 0..4 {
                    _mm256_storeu_ps(lanes[h][t].as_mut_ptr().add(8 * l), acc[h][l]);
                }
            }
        }
        for h in 0..H {
            let mut sum = empty;
            for l in 0..4 {
                let r: [__m256; 8] =
                    std::array::from_fn(|t| _mm256_loadu_ps(lanes[h][t].as_ptr().add(8 * l)));
                for c in transpose8(r) {
                    sum = _mm256_add_ps(sum, c);
                }
            }
            let mut s = [0f32; 8];
            _mm256_storeu_ps(s.as_mut_ptr(), _mm256_add_ps(sum, empty));
            out[h][at..at + tile.len()].copy_from_slice(&s[..tile.len()]);
        }
    }

    /// Columns of an 8 × 8 block given as its rows: `c[i][t] = r[t][i]`.
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        // t[0] = lo(r0, r1), t[1] = hi(r0, r1), t[2] = lo(r2, r3), t[3] = hi(r2, r3), …
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        [
            _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
            _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
        ]
    }

    /// [`super::mix`] with AVX2: up to 4 heads × 16 elements held in registers across every
    /// value row.
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix_avx2<T: Lanes>(
        w: &[Vec<f32>],
        at: usize,
        values: &[&[T]],
        acc: &mut [f32],
    ) {
        for h0 in (0..w.len()).step_by(4) {
            match w.len() - h0 {
                1 => mix_heads_avx2::<1, T>(w, at, values, acc, h0),
                2 => mix_heads_avx2::<2, T>(w, at, values, acc, h0),
                3 => mix_heads_avx2::<3, T>(w, at, values, acc, h0),
                _ => mix_heads_avx2::<4, T>(w, at, values, acc, h0),
            }
        }
    }

    #[allow(clippy::needless_range_loop)]
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix_heads_avx2<const H: usize, T: Lanes>(
        w: &[Vec<f32>],
        at: usize,
        values: &[&[T]],
        acc: &mut [f32],
        h0: usize,
    ) {
        let hd = acc.len() / w.len();
        // Rows a few at a time, so that the sixteen-element passes over them read the cache
        // (the next few rows are fetched meanwhile), not memory sixteen times with a row's stride.
        for j0 in (0..values.len()).step_by(MIX_ROWS) {
            let tile = &values[j0..(j0 + MIX_ROWS).min(values.len())];
            prefetch_rows(values.get(j0 + MIX_ROWS..).unwrap_or(&[]), MIX_ROWS, hd);
            for o in (0..hd).step_by(16) {
                let mut a = [[_mm256_setzero_ps(); 2]; H];
                for h in 0..H {
                    let p = acc.as_ptr().add((h0 + h) * hd + o);
                    a[h] = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
                }
                for (j, v) in tile.iter().enumerate() {
                    let p = v.as_ptr().add(o);
                    let x = [T::load8(p), T::load8(p.add(8))];
                    for h in 0..H {
                        let s = _mm256_set1_ps(*w[h0 + h].get_unchecked(at + j0 + j));
                        a[h][0] = _mm256_fmadd_ps(s, x[0], a[h][0]);
                        a[h][1] = _mm256_fmadd_ps(s, x[1], a[h][1]);
                    }
                }
                for h in 0..H {
                    let p = acc.as_mut_ptr().add((h0 + h) * hd + o);
                    _mm256_storeu_ps(p, a[h][0]);
                    _mm256_storeu_ps(p.add(8), a[h][1]);
                }
            }
        }
    }

    /// Rows per tile of [`mix_heads_avx2`].
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    const MIX_ROWS: usize = 16;

    /// Asks the cache for the first `count` of `rows` (each `hd` values).
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn prefetch_rows<T>(rows: &[&[T]], count: usize, hd: usize) {
        let bytes = hd * std::mem::size_of::<T>();
        for r in rows.iter().take(count) {
            for l in (0..bytes).step_by(64) {
                // A prefetch never faults; the addresses are inside the row anyway.
                _mm_prefetch::<_MM_HINT_T0>((r.as_ptr() as *const i8).wrapping_add(l));
            }
        }
    }

    /// [`super::mix`] with up to 4 heads × 32 elements held in registers across every value row.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mix(w: &[Vec<f32>], at: usize, values: &[&[f32]], acc: &mut [f32]) {
        for h0 in (0..w.len()).step_by(4) {
            match w.len() - h0 {
                1 => mix_heads::<1>(w, at, values, acc, h0),
                2 => mix_heads::<2>(w, at, values, acc, h0),
                3 => mix_heads::<3>(w, at, values, acc, h0),
                _ => mix_heads::<4>(w, at, values, acc, h0),
            }
        }
    }

    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_heads<const H: usize>(
        w: &[Vec<f32>],
        at: usize,
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
                    let s = _mm512_set1_ps(*w[h0 + h].get_unchecked(at + j));
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

/// Whether the CPU kernel handles this cache (every type, on the CPU).
pub fn supported(cache: &LayerCache) -> bool {
    cache.k.device().is_cpu()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD scoring and mixing (AVX-512 where the CPU has it, else AVX2) give exactly the
    /// plain loops' bits (heads 1 to 5, so every head block size, and key counts on both sides of
    /// the AVX2 tile of eight).
    #[test]
    fn simd_paths_equal_the_plain_loops() {
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
            let kv: Vec<Vec<f32>> = (0..13 + heads)
                .map(|_| (0..hd).map(|_| rnd()).collect())
                .collect();
            let qs: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
            let keys: Vec<&[f32]> = kv.iter().map(Vec::as_slice).collect();
            let mut fast = vec![vec![0f32; keys.len()]; heads];
            score(&qs, &keys, &mut fast, 0);
            let mut acc_fast = vec![0f32; heads * hd];
            mix(&fast, 0, &keys, &mut acc_fast);
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
            // f16 rows read as they are: the bits of the same rows widened first.
            if cfg!(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "f16c"
            )) {
                let kv16: Vec<Vec<f16>> = kv
                    .iter()
                    .map(|r| r.iter().map(|&x| f16::from_f32(x)).collect())
                    .collect();
                let wide: Vec<Vec<f32>> = kv16
                    .iter()
                    .map(|r| r.iter().map(|x| x.to_f32()).collect())
                    .collect();
                let rows16: Vec<&[f16]> = kv16.iter().map(Vec::as_slice).collect();
                let rows32: Vec<&[f32]> = wide.iter().map(Vec::as_slice).collect();
                let mut a = vec![vec![0f32; keys.len()]; heads];
                let mut b = a.clone();
                score_f16(&qs, &rows16, &mut a, 0);
                score(&qs, &rows32, &mut b, 0);
                assert_eq!(a, b, "{heads} heads: f16 scores");
                let (mut ma, mut mb) = (vec![0.5f32; heads * hd], vec![0.5f32; heads * hd]);
                mix_f16(&a, 0, &rows16, &mut ma);
                mix(&b, 0, &rows32, &mut mb);
                assert!(
                    ma.iter().zip(&mb).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{heads} heads: f16 mix"
                );
            }
        }
    }
}
