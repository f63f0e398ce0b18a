//! The KV cache, allocated once for the requested context.
//!
//! Global layers hold `ctx` positions. Sliding layers hold a ring of exactly
//! `min(ctx, window)` positions: position p lives in slot p % window. Size in bytes:
//! (global_layers × ctx + sliding_layers × min(ctx, window)) × 2 × kv_heads × head_dim × dtype.

use candle_core::{DType, Device, Result, Tensor};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::engine::config::{Gemma3Config, LayerKind};
use crate::engine::kv_quant::{Block, Planes, QK};
use crate::engine::kv_rotation::Rotations;

/// The element types one side (keys or values) of the KV cache can hold: dense floats, or
/// llama.cpp's block formats ([`crate::engine::kv_quant`]). Records hold the name ("q8_0"), and
/// any case is read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, SerializeDisplay, DeserializeFromStr,
)]
pub enum KvDtype {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

impl KvDtype {
    pub const ALL: [KvDtype; 8] = [
        KvDtype::F32,
        KvDtype::F16,
        KvDtype::Bf16,
        KvDtype::Q8_0,
        KvDtype::Q4_0,
        KvDtype::Q4_1,
        KvDtype::Q5_0,
        KvDtype::Q5_1,
    ];

    /// The float type of a dense cache; None for a block format.
    pub fn dense(self) -> Option<DType> {
        match self {
            KvDtype::F32 => Some(DType::F32),
            KvDtype::F16 => Some(DType::F16),
            KvDtype::Bf16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The block format; None for a dense type.
    pub fn block(self) -> Option<Block> {
        match self {
            KvDtype::Q8_0 => Some(Block::Q8_0),
            KvDtype::Q4_0 => Some(Block::Q4_0),
            KvDtype::Q4_1 => Some(Block::Q4_1),
            KvDtype::Q5_0 => Some(Block::Q5_0),
            KvDtype::Q5_1 => Some(Block::Q5_1),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Bf16 => "bf16",
            KvDtype::Q8_0 => "q8_0",
            KvDtype::Q4_0 => "q4_0",
            KvDtype::Q4_1 => "q4_1",
            KvDtype::Q5_0 => "q5_0",
            KvDtype::Q5_1 => "q5_1",
        }
    }

    /// Bytes of one position's row of `head_dim` values (one KV head).
    pub fn row_bytes(self, head_dim: usize) -> usize {
        match (self.dense(), self.block()) {
            (Some(t), _) => head_dim * t.size_in_bytes(),
            (_, Some(b)) => head_dim.div_ceil(QK) * b.bytes(),
            _ => unreachable!("every KV dtype is dense or a block format"),
        }
    }

    /// Whether rows of `head_dim` values can be held: a block format needs whole blocks.
    pub fn check(self, head_dim: usize) -> std::result::Result<(), String> {
        match self.block() {
            Some(_) if !head_dim.is_multiple_of(QK) => Err(format!(
                "a {self} KV cache stores blocks of {QK} values, and this model's head width {head_dim} \
                 is not a multiple of {QK} (use f32, f16 or bf16)"
            )),
            _ => Ok(()),
        }
    }
}

/// The names `--kv-dtype` and the rest accept, for messages.
const CHOICES: &str = "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1";

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == t)
            .ok_or_else(|| format!("unknown KV-cache dtype '{}' (choose {CHOICES})", s.trim()))
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The types of the keys and the values (llama.cpp's `-ctk`/`-ctv`), written `K/V`
/// ("q8_0/f16"), or one name when they are the same ("q8_0" means both).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, SerializeDisplay, DeserializeFromStr,
)]
pub struct KvPair {
    pub k: KvDtype,
    pub v: KvDtype,
}

impl KvPair {
    /// The same type for keys and values.
    pub const fn both(t: KvDtype) -> Self {
        KvPair { k: t, v: t }
    }

    /// Bytes of one position of one KV head, keys and values together.
    pub fn row_bytes(self, head_dim: usize) -> usize {
        self.k.row_bytes(head_dim) + self.v.row_bytes(head_dim)
    }

    pub fn check(self, head_dim: usize) -> std::result::Result<(), String> {
        self.k.check(head_dim).and(self.v.check(head_dim))
    }

    /// The value type when it differs from the key type (what case keys record beside `kv_dtype`).
    pub fn v_if_different(self) -> Option<KvDtype> {
        (self.v != self.k).then_some(self.v)
    }
}

impl From<KvDtype> for KvPair {
    fn from(t: KvDtype) -> Self {
        KvPair::both(t)
    }
}

impl std::str::FromStr for KvPair {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('/') {
            Some((k, v)) => Ok(KvPair {
                k: k.parse()?,
                v: v.parse()?,
            }),
            None => Ok(KvPair::both(s.parse()?)),
        }
    }
}

impl std::fmt::Display for KvPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.v_if_different() {
            None => write!(f, "{}", self.k),
            Some(v) => write!(f, "{}/{v}", self.k),
        }
    }
}

/// What one side (keys or values) of a layer holds: [kv_heads, capacity, head_dim] floats, or
/// the same positions in a block format.
#[derive(Debug)]
pub enum Store {
    Dense(Tensor),
    Quant(Planes),
}

impl Store {
    fn new(t: KvDtype, shape: (usize, usize, usize), device: &Device) -> Result<Self> {
        let (heads, capacity, hd) = shape;
        match (t.dense(), t.block()) {
            (Some(dtype), _) => Ok(Store::Dense(committed_zeros(shape, dtype, device)?)),
            (_, Some(b)) => Ok(Store::Quant(Planes::zeros(b, heads, capacity, hd, device)?)),
            _ => unreachable!("every KV dtype is dense or a block format"),
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Store::Dense(t) => t.device(),
            Store::Quant(p) => p.low.device(),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Store::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Store::Quant(p) => p.bytes(),
        }
    }

    /// `x` [kv_heads, n, hd] as this store will hold it, ready for [`Self::set`]: rounded to the
    /// dense type, or quantized (once: on the CPU by the host code, elsewhere by candle's
    /// operations, which give the same bytes).
    pub fn encode(&self, x: &Tensor) -> Result<Store> {
        Ok(match self {
            Store::Dense(t) => Store::Dense(x.to_dtype(t.dtype())?.contiguous()?),
            Store::Quant(p) if x.device().is_cpu() => {
                Store::Quant(Planes::quantize_host(p.block, x)?)
            }
            Store::Quant(p) => Store::Quant(Planes::quantize_ops(p.block, x)?),
        })
    }

    /// Positions `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Store> {
        Ok(match self {
            Store::Dense(t) => Store::Dense(t.narrow(1, start, len)?),
            Store::Quant(p) => Store::Quant(p.narrow(start, len)?),
        })
    }

    /// Positions held (dimension 1).
    pub fn positions(&self) -> Result<usize> {
        match self {
            Store::Dense(t) => t.dim(1),
            Store::Quant(p) => p.d.dim(1),
        }
    }

    /// Writes encoded positions `src` from slot `at`.
    fn set(&self, src: &Store, at: usize) -> Result<()> {
        match (self, src) {
            (Store::Dense(d), Store::Dense(s)) => d.slice_set(&s.contiguous()?, 1, at),
            (Store::Quant(d), Store::Quant(s)) => d.slice_set(s, at),
            _ => candle_core::bail!("KV cache: writing rows of another type"),
        }
    }

    /// The values as f32 [kv_heads, positions, hd] (a transient copy unless the store is f32).
    pub fn to_f32(&self) -> Result<Tensor> {
        match self {
            Store::Dense(t) => t.to_dtype(DType::F32),
            Store::Quant(p) => p.dequantize_ops(),
        }
    }
}

/// One layer's keys and values, each for [kv_heads, capacity, head_dim].
#[derive(Debug)]
pub struct LayerCache {
    pub kind: LayerKind,
    pub k: Store,
    pub v: Store,
    pub capacity: usize,
}

#[derive(Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    pub ctx: usize,
    pub types: KvPair,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions written so far (the next token's position).
    pub len: usize,
    /// The Hadamard rotations of a block-format side ([`crate::engine::kv_rotation`]).
    pub rotations: Rotations,
}

impl KvCache {
    /// Number of positions a layer of this kind keeps for a context of `ctx`.
    pub fn capacity(cfg: &Gemma3Config, kind: LayerKind, ctx: usize) -> usize {
        match kind {
            LayerKind::Global => ctx,
            LayerKind::Sliding => ctx.min(cfg.sliding_window),
        }
    }

    /// The cache's size in bytes, without allocating it: exact block bytes for block formats.
    pub fn size_in_bytes(cfg: &Gemma3Config, ctx: usize, types: KvPair) -> usize {
        (0..cfg.num_layers)
            .map(|i| Self::capacity(cfg, cfg.layer_kind(i), ctx))
            .sum::<usize>()
            * cfg.num_kv_heads
            * types.row_bytes(cfg.head_dim)
    }

    pub fn new(cfg: &Gemma3Config, ctx: usize, types: KvPair, device: &Device) -> Result<Self> {
        types.check(cfg.head_dim).map_err(candle_core::Error::msg)?;
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let kind = cfg.layer_kind(i);
                let capacity = Self::capacity(cfg, kind, ctx);
                let shape = (cfg.num_kv_heads, capacity, cfg.head_dim);
                Ok(LayerCache {
                    kind,
                    k: Store::new(types.k, shape, device)?,
                    v: Store::new(types.v, shape, device)?,
                    capacity,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            ctx,
            types,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            len: 0,
            rotations: Rotations::new(types, cfg.head_dim, device)?,
        })
    }

    /// Fills positions `len..depth` with random keys and values in [-1, 1) (seeded by candle's
    /// generator) instead of computing them: the cache then holds what a `depth`-token prefill
    /// would leave in it as far as memory and the cost of attending are concerned, without that
    /// prefill's compute. Written in blocks, so the transient stays small.
    pub fn fill_synthetic(&mut self, depth: usize) -> Result<()> {
        if depth > self.ctx {
            candle_core::bail!(
                "cannot fill the KV cache to {depth} positions: it holds {}",
                self.ctx
            );
        }
        const BLOCK: usize = 1024;
        for layer in &self.layers {
            // A ring keeps only its last `capacity` positions: write just those.
            let first = match layer.kind {
                LayerKind::Global => self.len,
                LayerKind::Sliding => self.len.max(depth.saturating_sub(layer.capacity)),
            };
            let mut pos = first;
            while pos < depth {
                let n = BLOCK.min(depth - pos);
                let device = layer.k.device();
                let shape = (self.kv_heads, n, self.head_dim);
                let k = Tensor::rand(-1f32, 1f32, shape, device)?;
                let v = Tensor::rand(-1f32, 1f32, shape, device)?;
                layer.write(&k, &v, pos)?;
                pos += n;
            }
        }
        self.len = self.len.max(depth);
        Ok(())
    }

    pub fn allocated_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.k.bytes() + l.v.bytes()).sum()
    }
}

/// Zeros whose memory is really there. On the CPU, `Tensor::zeros` gets lazily zeroed pages
/// that count toward resident memory only once written, so a cache for 32K positions would look
/// free until the 32K-th token; a GPU allocation is committed at once. Writing the zeros makes
/// the CPU's figures mean the same as the GPU's.
fn committed_zeros(shape: (usize, usize, usize), dtype: DType, device: &Device) -> Result<Tensor> {
    if !device.is_cpu() {
        return Tensor::zeros(shape, dtype, device);
    }
    let n = shape.0 * shape.1 * shape.2;
    fn written<T: candle_core::WithDType>(
        n: usize,
        zero: T,
        shape: (usize, usize, usize),
    ) -> Result<Tensor> {
        let mut v = Vec::with_capacity(n);
        v.resize(n, zero);
        Tensor::from_vec(v, shape, &Device::Cpu)
    }
    match dtype {
        DType::F32 => written(n, 0f32, shape),
        DType::F16 => written(n, half::f16::ZERO, shape),
        DType::BF16 => written(n, half::bf16::ZERO, shape),
        other => Tensor::zeros(shape, other, device),
    }
}

impl LayerCache {
    /// Writes `k`, `v` ([kv_heads, n, head_dim]) for positions `start..start + n`.
    pub fn write(&self, k: &Tensor, v: &Tensor, start: usize) -> Result<()> {
        self.write_encoded(&self.k.encode(k)?, &self.v.encode(v)?, start)
    }

    /// Writes positions `start..` already encoded for this cache ([`Store::encode`]). A ring
    /// keeps only the last `capacity` of them, wrapping around.
    pub fn write_encoded(&self, k: &Store, v: &Store, start: usize) -> Result<()> {
        let n = k.positions()?;
        match self.kind {
            LayerKind::Global => {
                if start + n > self.capacity {
                    candle_core::bail!(
                        "the KV cache holds {} positions; writing {n} at {start} overflows it (raise --ctx)",
                        self.capacity
                    );
                }
                self.k.set(k, start)?;
                self.v.set(v, start)?;
            }
            LayerKind::Sliding => {
                // Only the last `capacity` positions survive.
                let skip = n.saturating_sub(self.capacity);
                let total = n - skip;
                let mut src = skip;
                let mut pos = start + skip;
                while src < n {
                    let slot = pos % self.capacity;
                    let len = (self.capacity - slot).min(n - src);
                    self.k.set(&k.narrow(src, len)?, slot)?;
                    self.v.set(&v.narrow(src, len)?, slot)?;
                    src += len;
                    pos += len;
                }
                debug_assert!(total <= self.capacity);
            }
        }
        Ok(())
    }

    /// The position held in `slot` when `written` positions have been written, if any.
    pub fn slot_position(&self, slot: usize, written: usize) -> Option<usize> {
        match self.kind {
            LayerKind::Global => (slot < written).then_some(slot),
            LayerKind::Sliding => {
                if slot >= written {
                    return None;
                }
                let last = written - 1;
                Some(last - (last - slot) % self.capacity)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filling to a depth past the window: global layers hold exactly the filled positions, the
    /// ring is full, and the next write lands after them.
    #[test]
    fn synthetic_fill_reaches_the_depth() {
        let cfg = Gemma3Config {
            vocab_size: 16,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 6,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 8,
            sliding_window: 8,
            sliding_window_pattern: 6,
            rope_global_base: 1e6,
            rope_local_base: 1e4,
            rope_global_scale: 1.0,
            query_pre_attn_scalar: 8.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 64,
        };
        let mut c = KvCache::new(&cfg, 40, KvPair::both(KvDtype::F16), &Device::Cpu).unwrap();
        assert!(c.fill_synthetic(41).is_err());
        c.fill_synthetic(30).unwrap();
        assert_eq!(c.len, 30);
        let nonzero_rows = |t: &Store| -> Vec<bool> {
            let v: Vec<Vec<f32>> = t.to_f32().unwrap().squeeze(0).unwrap().to_vec2().unwrap();
            v.iter().map(|r| r.iter().any(|x| *x != 0.0)).collect()
        };
        let global = nonzero_rows(&c.layers[5].k);
        assert!(global[..30].iter().all(|&b| b) && global[30..].iter().all(|&b| !b));
        assert!(
            nonzero_rows(&c.layers[0].v).iter().all(|&b| b),
            "the ring is full"
        );
    }
}

#[cfg(test)]
mod types {
    use super::*;

    #[test]
    fn pairs_read_and_print_as_k_slash_v() {
        let p: KvPair = "q8_0/F16".parse().unwrap();
        assert_eq!((p.k, p.v), (KvDtype::Q8_0, KvDtype::F16));
        assert_eq!(p.to_string(), "q8_0/f16");
        let both: KvPair = "q4_0".parse().unwrap();
        assert_eq!(both, KvPair::both(KvDtype::Q4_0));
        assert_eq!(both.to_string(), "q4_0");
        assert_eq!("q4_0/q4_0".parse::<KvPair>().unwrap().to_string(), "q4_0");
        let e = "q8_0/q3_k".parse::<KvPair>().unwrap_err();
        assert!(e.contains("'q3_k'") && e.contains("q5_1"), "{e}");
    }

    /// A head width that is not a whole number of blocks is refused with a message, not a panic.
    #[test]
    fn block_formats_need_whole_blocks() {
        assert!(KvPair::both(KvDtype::Q8_0).check(256).is_ok());
        assert!(KvPair::both(KvDtype::F16).check(40).is_ok());
        let e = "f16/q4_0".parse::<KvPair>().unwrap().check(40).unwrap_err();
        assert!(
            e.contains("q4_0") && e.contains("40") && e.contains("32"),
            "{e}"
        );
    }
}
