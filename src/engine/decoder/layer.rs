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
use crate::engine::kv_cache::{LayerCache, Store};
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

impl<'a> Step<'a> {
    /// The attention problem of this step in a layer of `cfg`.
    fn dims(&self, cfg: &Gemma3Config) -> cpu::Dims<'a> {
        cpu::Dims {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            pos: self.pos,
            n: self.n,
            window: (self.cache.kind == LayerKind::Sliding).then_some(cfg.sliding_window),
            spans: self.spans,
        }
    }
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
    /// and values (on the CPU the steps' attention shares one pass over the worker pool).
    fn forward<'a>(
        &self,
        x: &Tensor,
        steps: &[Step<'a>],
        cfg: &Gemma3Config,
    ) -> candle_core::Result<Tensor> {
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        let mut inputs = Vec::with_capacity(steps.len());
        let mut row = 0;
        for step in steps {
            let rows = |t: &Tensor| t.narrow(0, row, step.n);
            inputs.push(self.prepare(&rows(&q)?, &rows(&k)?, &rows(&v)?, step, cfg)?);
            row += step.n;
        }
        let dims = |step: &Step<'a>| step.dims(cfg);
        let outs = if steps.iter().all(|s| cpu::supported(s.cache)) {
            let jobs: Vec<cpu::Job> = steps
                .iter()
                .zip(&inputs)
                .map(|(step, (q, k, v))| cpu::Job {
                    q,
                    k,
                    v,
                    cache: step.cache,
                    dims: dims(step),
                })
                .collect();
            let outs = cpu::attend_many(&jobs)?;
            for (step, (_, k, v)) in steps.iter().zip(&inputs) {
                step.cache.write_encoded(k, v, step.pos)?;
            }
            outs
        } else {
            steps
                .iter()
                .zip(&inputs)
                .map(|(step, (q, k, v))| {
                    generic::attend_and_write(q, k, v, step.cache, &dims(step))
                })
                .collect::<candle_core::Result<Vec<_>>>()?
        };
        // A rotated value side: the output rotated back.
        let mut outs = steps
            .iter()
            .zip(outs)
            .map(|(step, out)| match &step.rotations.values {
                Some(h) => h.apply(&out),
                None => Ok(out),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let out = match outs.len() {
            1 => outs.pop().expect("one output"),
            _ => Tensor::cat(&outs, 0)?,
        };
        self.o.forward(&out)
    }

    /// One sequence's projected rows `q`, `k`, `v` ([n, heads × hd] and [n, kv_heads × hd]) at
    /// positions step.pos..step.pos+n, made ready to attend: q and k normed, RoPE'd (q scaled),
    /// rotated where the cache side is a block format (`kv_rotation.rs`: keys with the queries,
    /// values now and the output back after the mix), and the new keys and values encoded for
    /// the cache (rounded or quantized) once: attention reads the chunk as the cache will hold
    /// it, and the same rows are written. Returns q [heads, n, hd] and the encoded k, v.
    fn prepare(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        step: &Step,
        cfg: &Gemma3Config,
    ) -> candle_core::Result<(Tensor, Store, Store)> {
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
        let rot = step.rotations;
        let (q, k) = match &rot.keys {
            Some(h) => (h.apply(&q)?, h.apply(&k)?),
            None => (q, k),
        };
        let v = match &rot.values {
            Some(h) => h.apply(&v)?,
            None => v,
        };
        Ok((q, cache.k.encode(&k)?, cache.v.encode(&v)?))
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
