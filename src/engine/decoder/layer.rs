//! One decoder layer, as candle-transformers writes its model files: each part a type with its
//! loader (`load`, from GGUF tensor names) and a plain `forward`.
//!
//! Per layer: RMSNorm → self-attention (q/k RMSNorm, RoPE, sliding or global span) → RMSNorm →
//! residual; RMSNorm → GELU-tanh gated feed-forward → RMSNorm → residual.

use std::sync::Arc;

use candle_core::Tensor;

use crate::engine::attention::{cpu, generic};
use crate::engine::config::{Gemma3Config, LayerKind};
use crate::engine::kernels::linear::Linear;
use crate::engine::kernels::ops;
use crate::engine::kv_cache::LayerCache;
use crate::engine::kv_rotation::Rotations;
use crate::engine::load::weights::WeightSource;
use crate::engine::rope::RopeTable;
use crate::error::Result;

use super::rms_norm;

/// Where one sequence's rows of a forward pass meet a layer: its first position, how many rows,
/// its image runs (absolute positions, end exclusive), the layer's cache, its RoPE table and the
/// cache's rotations. A pass over a batch has a step per sequence, their rows stacked in order.
pub struct Step<'a> {
    pub pos: usize,
    pub n: usize,
    pub spans: &'a [(usize, usize)],
    pub cache: &'a LayerCache,
    pub rope: &'a RopeTable,
    pub rotations: &'a Rotations,
}

/// A weight matrix of layer `i` (`blk.{i}.{name}.weight`) as a product.
fn matrix(w: &mut dyn WeightSource, i: usize, name: &str, shape: &[usize]) -> Result<Linear> {
    let t = w.qtensor(&format!("blk.{i}.{name}.weight"), shape)?;
    Ok(Linear::new(Arc::new(t))?)
}

/// A norm weight of layer `i`.
fn norm(w: &mut dyn WeightSource, i: usize, name: &str, width: usize) -> Result<Tensor> {
    w.f32_tensor(&format!("blk.{i}.{name}.weight"), &[width])
}

pub struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
}

impl SelfAttention {
    fn load(cfg: &Gemma3Config, i: usize, w: &mut dyn WeightSource) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        Ok(SelfAttention {
            q: matrix(w, i, "attn_q", &[q_out, h])?,
            k: matrix(w, i, "attn_k", &[kv_out, h])?,
            v: matrix(w, i, "attn_v", &[kv_out, h])?,
            o: matrix(w, i, "attn_output", &[h, q_out])?,
            q_norm: norm(w, i, "attn_q_norm", hd)?,
            k_norm: norm(w, i, "attn_k_norm", hd)?,
        })
    }

    /// `x`: the stacked rows of `steps` ([Σ n, hidden]). The products run once over all rows;
    /// attention runs per step, each sequence over its own cache, into which it writes its keys
    /// and values.
    fn forward(
        &self,
        x: &Tensor,
        steps: &[Step],
        cfg: &Gemma3Config,
    ) -> candle_core::Result<Tensor> {
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        let mut outs = Vec::with_capacity(steps.len());
        let mut row = 0;
        for step in steps {
            let rows = |t: &Tensor| t.narrow(0, row, step.n);
            outs.push(self.attend(&rows(&q)?, &rows(&k)?, &rows(&v)?, step, cfg)?);
            row += step.n;
        }
        let out = match outs.len() {
            1 => outs.pop().expect("one output"),
            _ => Tensor::cat(&outs, 0)?,
        };
        self.o.forward(&out)
    }

    /// One sequence's attention: its projected rows `q`, `k`, `v` ([n, heads × hd] and
    /// [n, kv_heads × hd]) at positions step.pos..step.pos+n → [n, heads × hd].
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        step: &Step,
        cfg: &Gemma3Config,
    ) -> candle_core::Result<Tensor> {
        let (heads, kv_heads, hd, n) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, step.n);
        let eps = cfg.rms_norm_eps;
        let (pos, cache) = (step.pos, step.cache);
        let q = q.reshape((n, heads, hd))?;
        let q = rms_norm(&q, &self.q_norm, eps)?
            .transpose(0, 1)?
            .contiguous()?;
        let q = (step.rope.apply(&q, pos)? * cfg.query_pre_attn_scalar.powf(-0.5))?;
        let k = k.reshape((n, kv_heads, hd))?;
        let k = rms_norm(&k, &self.k_norm, eps)?
            .transpose(0, 1)?
            .contiguous()?;
        let k = step.rope.apply(&k, pos)?;
        let v = v
            .reshape((n, kv_heads, hd))?
            .transpose(0, 1)?
            .contiguous()?;
        // A block-format side is rotated before it is quantized (`kv_rotation.rs`): keys with
        // the queries, values now and the output back after the mix.
        let rot = step.rotations;
        let (q, k) = match &rot.keys {
            Some(h) => (h.apply(&q)?, h.apply(&k)?),
            None => (q, k),
        };
        let v = match &rot.values {
            Some(h) => h.apply(&v)?,
            None => v,
        };

        let dims = cpu::Dims {
            heads,
            kv_heads,
            head_dim: hd,
            pos,
            n,
            window: (cache.kind == LayerKind::Sliding).then_some(cfg.sliding_window),
            spans: step.spans,
        };
        // Each new position is encoded for the cache (rounded or quantized) once: attention
        // reads the chunk as the cache will hold it, and the same rows are written.
        let (k, v) = (cache.k.encode(&k)?, cache.v.encode(&v)?);
        let out = if cpu::supported(cache) {
            let out = cpu::attend(&q, &k, &v, cache, &dims)?;
            cache.write_encoded(&k, &v, pos)?;
            out
        } else {
            generic::attend_and_write(&q, &k, &v, cache, &dims)?
        };
        match &rot.values {
            Some(h) => h.apply(&out),
            None => Ok(out),
        }
    }
}

/// The GELU-tanh gated feed-forward: down(gelu(gate(x)) × up(x)).
pub struct FeedForward {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn load(cfg: &Gemma3Config, i: usize, w: &mut dyn WeightSource) -> Result<Self> {
        let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(FeedForward {
            gate: matrix(w, i, "ffn_gate", &[ff, h])?,
            up: matrix(w, i, "ffn_up", &[ff, h])?,
            down: matrix(w, i, "ffn_down", &[h, ff])?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = ops::gelu_tanh_mul(&self.gate.forward(x)?, &self.up.forward(x)?)?;
        self.down.forward(&h)
    }
}

pub struct DecoderLayer {
    pub kind: LayerKind,
    attn_norm: Tensor,
    attn: SelfAttention,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    ffn: FeedForward,
    post_ffn_norm: Tensor,
}

impl DecoderLayer {
    /// Layer `i`, its tensors read in the order a GGUF file lists them.
    pub fn load(cfg: &Gemma3Config, i: usize, w: &mut dyn WeightSource) -> Result<Self> {
        let h = cfg.hidden_size;
        let attn = SelfAttention::load(cfg, i, w)?;
        let ffn = FeedForward::load(cfg, i, w)?;
        Ok(DecoderLayer {
            kind: cfg.layer_kind(i),
            attn_norm: norm(w, i, "attn_norm", h)?,
            attn,
            post_attn_norm: norm(w, i, "post_attention_norm", h)?,
            ffn_norm: norm(w, i, "ffn_norm", h)?,
            ffn,
            post_ffn_norm: norm(w, i, "post_ffw_norm", h)?,
        })
    }

    /// `x`: the stacked rows of `steps` (one per sequence of the pass).
    pub fn forward(
        &self,
        x: &Tensor,
        steps: &[Step],
        cfg: &Gemma3Config,
    ) -> candle_core::Result<Tensor> {
        let eps = cfg.rms_norm_eps;
        let h = rms_norm(x, &self.attn_norm, eps)?;
        let h = self.attn.forward(&h, steps, cfg)?;
        let x = (x + rms_norm(&h, &self.post_attn_norm, eps)?)?;
        let h = rms_norm(&x, &self.ffn_norm, eps)?;
        let h = self.ffn.forward(&h)?;
        x + rms_norm(&h, &self.post_ffn_norm, eps)
    }
}
