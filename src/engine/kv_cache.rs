//! The KV cache, allocated once for the requested context.
//!
//! Global layers hold `ctx` positions. Sliding layers hold a ring of exactly
//! `min(ctx, window)` positions: position p lives in slot p % window. Size in bytes:
//! (global_layers × ctx + sliding_layers × min(ctx, window)) × 2 × kv_heads × head_dim × dtype.

use candle_core::{DType, Device, Result, Tensor};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::engine::config::{Gemma3Config, LayerKind};

/// The element types the KV cache can hold (`--kv-dtype`); records hold the name ("bf16"), and
/// any case is read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, SerializeDisplay, DeserializeFromStr,
)]
pub enum KvDtype {
    F32,
    F16,
    Bf16,
}

impl KvDtype {
    pub const ALL: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::Bf16];

    pub fn dtype(self) -> DType {
        match self {
            KvDtype::F32 => DType::F32,
            KvDtype::F16 => DType::F16,
            KvDtype::Bf16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == t)
            .ok_or_else(|| {
                format!(
                    "unknown KV-cache dtype '{}' (choose f32, f16 or bf16)",
                    s.trim()
                )
            })
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer's keys and values, each [kv_heads, capacity, head_dim].
#[derive(Debug)]
pub struct LayerCache {
    pub kind: LayerKind,
    pub k: Tensor,
    pub v: Tensor,
    pub capacity: usize,
}

#[derive(Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    pub ctx: usize,
    pub dtype: DType,
    /// Positions written so far (the next token's position).
    pub len: usize,
}

impl KvCache {
    /// Number of positions a layer of this kind keeps for a context of `ctx`.
    pub fn capacity(cfg: &Gemma3Config, kind: LayerKind, ctx: usize) -> usize {
        match kind {
            LayerKind::Global => ctx,
            LayerKind::Sliding => ctx.min(cfg.sliding_window),
        }
    }

    /// The cache's size in bytes, without allocating it.
    pub fn size_in_bytes(cfg: &Gemma3Config, ctx: usize, dtype: DType) -> usize {
        (0..cfg.num_layers)
            .map(|i| Self::capacity(cfg, cfg.layer_kind(i), ctx))
            .sum::<usize>()
            * 2
            * cfg.num_kv_heads
            * cfg.head_dim
            * dtype.size_in_bytes()
    }

    pub fn new(cfg: &Gemma3Config, ctx: usize, dtype: DType, device: &Device) -> Result<Self> {
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let kind = cfg.layer_kind(i);
                let capacity = Self::capacity(cfg, kind, ctx);
                let shape = (cfg.num_kv_heads, capacity, cfg.head_dim);
                Ok(LayerCache {
                    kind,
                    k: committed_zeros(shape, dtype, device)?,
                    v: committed_zeros(shape, dtype, device)?,
                    capacity,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            ctx,
            dtype,
            len: 0,
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
            let (heads, _, hd) = layer.k.dims3()?;
            // A ring keeps only its last `capacity` positions: write just those.
            let first = match layer.kind {
                LayerKind::Global => self.len,
                LayerKind::Sliding => self.len.max(depth.saturating_sub(layer.capacity)),
            };
            let mut pos = first;
            while pos < depth {
                let n = BLOCK.min(depth - pos);
                let device = layer.k.device();
                let k = Tensor::rand(-1f32, 1f32, (heads, n, hd), device)?;
                let v = Tensor::rand(-1f32, 1f32, (heads, n, hd), device)?;
                layer.write(&k, &v, pos)?;
                pos += n;
            }
        }
        self.len = self.len.max(depth);
        Ok(())
    }

    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * self.dtype.size_in_bytes())
            .sum()
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
    /// Writes `k`, `v` ([kv_heads, n, head_dim]) for positions `start..start + n`. A ring keeps
    /// only the last `capacity` of them, wrapping around.
    pub fn write(&self, k: &Tensor, v: &Tensor, start: usize) -> Result<()> {
        let (_, n, _) = k.dims3()?;
        let k = k.to_dtype(self.k.dtype())?.contiguous()?;
        let v = v.to_dtype(self.v.dtype())?.contiguous()?;
        match self.kind {
            LayerKind::Global => {
                if start + n > self.capacity {
                    candle_core::bail!(
                        "the KV cache holds {} positions; writing {n} at {start} overflows it (raise --ctx)",
                        self.capacity
                    );
                }
                self.k.slice_set(&k, 1, start)?;
                self.v.slice_set(&v, 1, start)?;
            }
            LayerKind::Sliding => {
                // Only the last `capacity` positions survive.
                let skip = n.saturating_sub(self.capacity);
                let (k, v) = (k.narrow(1, skip, n - skip)?, v.narrow(1, skip, n - skip)?);
                let mut src = 0;
                let mut pos = start + skip;
                let total = n - skip;
                while src < total {
                    let slot = pos % self.capacity;
                    let len = (self.capacity - slot).min(total - src);
                    self.k
                        .slice_set(&k.narrow(1, src, len)?.contiguous()?, 1, slot)?;
                    self.v
                        .slice_set(&v.narrow(1, src, len)?.contiguous()?, 1, slot)?;
                    src += len;
                    pos += len;
                }
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
        let mut c = KvCache::new(&cfg, 40, DType::F16, &Device::Cpu).unwrap();
        assert!(c.fill_synthetic(41).is_err());
        c.fill_synthetic(30).unwrap();
        assert_eq!(c.len, 30);
        let nonzero_rows = |t: &Tensor| -> Vec<bool> {
            let v: Vec<Vec<f32>> = t
                .to_dtype(DType::F32)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2()
                .unwrap();
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
