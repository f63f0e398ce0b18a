//! Attention with candle's tensor operations, for devices without a kernel of our own (the CPU
//! uses `cpu.rs`). Same inputs, same result up to float summation order; the test
//! below holds the two against each other.

use candle_core::{Result, Tensor};

use crate::engine::attention::cpu::Dims;
use crate::engine::config::{Gemma3Config, LayerKind};
use crate::engine::kv_cache::{KvDtype, KvPair, LayerCache, Store};

/// Most f32 elements in one block of attention scores (1 Mi = 4 MiB).
const SCORE_BLOCK_ELEMS: usize = 1 << 20;

/// The f32 transients of attending with candle's operations over a cache that is not f32: the
/// widest span (a global layer's whole context) widened for keys and for values, and while a
/// block-format side is dequantized, two more of its size (the bytes as f32, and the values
/// before their scales). Derived from the operations of [`Store::to_f32`]; not measured on a
/// GPU yet.
pub fn transient_bytes(cfg: &Gemma3Config, ctx: usize, kv: KvPair) -> u64 {
    let unit = (cfg.num_kv_heads * ctx * cfg.head_dim * 4) as u64;
    let widened = |t: KvDtype| if t == KvDtype::F32 { 0 } else { unit };
    let dequantizing = if kv.k.block().is_some() || kv.v.block().is_some() {
        2 * unit
    } else {
        0
    };
    widened(kv.k) + widened(kv.v) + dequantizing
}

/// `q` [heads, n, hd], `k`/`v` the chunk's keys and values at positions d.pos.. encoded for the
/// cache ([`Store::encode`]); writes the chunk into the cache and returns [n, heads × hd]. A
/// quantized cache is dequantized span by span into f32 transients ([`Store::to_f32`]): the
/// largest, a global layer's whole context for keys and values, is what
/// [`crate::engine::decoder::forward_workspace_bytes`] counts for it.
pub fn attend_and_write(
    q: &Tensor,
    k: &Store,
    v: &Store,
    cache: &LayerCache,
    d: &Dims,
) -> Result<Tensor> {
    let (heads, kv_heads, hd, pos, n) = (d.heads, d.kv_heads, d.head_dim, d.pos, d.n);
    let group = heads / kv_heads;
    // Keys/values to attend over, with the position each key holds (None: an unwritten slot).
    let f32_view = |t: &Store, len: usize| t.narrow(0, len)?.to_f32();
    let (keys, values, key_pos) =
        if cache.kind == LayerKind::Global || n == 1 || pos + n <= cache.capacity {
            // Write first, then attend over the cache: slot j holds position j (no wrap yet), or
            // for a single token the ring holds exactly the window ending at it.
            cache.write_encoded(k, v, pos)?;
            let len = (pos + n).min(cache.capacity);
            let key_pos = (0..len).map(|s| cache.slot_position(s, pos + n)).collect();
            (f32_view(&cache.k, len)?, f32_view(&cache.v, len)?, key_pos)
        } else {
            // A chunk on a sliding layer that wraps the ring: attend over the ring as it was plus
            // the chunk itself, then write the chunk in.
            let ring = pos.min(cache.capacity);
            let keys = Tensor::cat(&[&f32_view(&cache.k, ring)?, &k.to_f32()?], 1)?;
            let values = Tensor::cat(&[&f32_view(&cache.v, ring)?, &v.to_f32()?], 1)?;
            let key_pos: Vec<Option<usize>> = (0..ring)
                .map(|s| cache.slot_position(s, pos))
                .chain((pos..pos + n).map(Some))
                .collect();
            cache.write_encoded(k, v, pos)?;
            (keys, values, key_pos)
        };
    let mask = Mask { key_pos, dims: d };
    let t = keys.dim(1)?;
    let keys_t = keys.t()?;
    let q = q.reshape((kv_heads, group, n, hd))?;
    // Queries in blocks, so the [group × block × keys] score matrix stays small even for a
    // 512-token chunk over a long context (it is the largest transient of a prefill).
    let block = (SCORE_BLOCK_ELEMS / (kv_heads * group * t).max(1)).clamp(1, n);
    let mut outs = Vec::with_capacity(n.div_ceil(block));
    for start in (0..n).step_by(block) {
        let b = block.min(n - start);
        let qb = q.narrow(2, start, b)?.reshape((kv_heads, group * b, hd))?;
        let scores = qb.matmul(&keys_t)?;
        let scores = match mask.rows(start, b) {
            Some(m) => {
                let m = Tensor::from_vec(m, (b, t), q.device())?;
                scores
                    .reshape((kv_heads, group, b, t))?
                    .broadcast_add(&m)?
                    .reshape((kv_heads, group * b, t))?
            }
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(&values)?.reshape((kv_heads, group, b, hd))?);
    }
    let out = if outs.len() == 1 {
        outs.pop().expect("one block")
    } else {
        Tensor::cat(&outs, 2)?
    }; // [kv_heads, group, n, hd]
    out.reshape((heads, n, hd))?
        .transpose(0, 1)?
        .reshape((n, heads * hd))
}

/// Which keys each query of a chunk may see ([`Dims::visible`]), as additive mask rows.
struct Mask<'a, 'b> {
    key_pos: Vec<Option<usize>>,
    dims: &'a Dims<'b>,
}

impl Mask<'_, '_> {
    /// Mask rows for queries `start..start + b`, or None when every key is visible to all.
    fn rows(&self, start: usize, b: usize) -> Option<Vec<f32>> {
        let t = self.key_pos.len();
        let mut m = vec![f32::NEG_INFINITY; b * t];
        let mut any_hidden = false;
        for r in 0..b {
            let seen = self.dims.visible(self.dims.pos + start + r);
            for (cell, p) in m[r * t..(r + 1) * t].iter_mut().zip(&self.key_pos) {
                if p.is_some_and(|p| seen.contains(&p)) {
                    *cell = 0.0;
                } else {
                    any_hidden = true;
                }
            }
        }
        any_hidden.then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::attention::cpu as attention_cpu;
    use crate::engine::config::Gemma3Config;
    use crate::engine::kv_cache::KvCache;
    use candle_core::Device;

    fn cfg(head_dim: usize) -> Gemma3Config {
        Gemma3Config {
            vocab_size: 16,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 6,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim,
            sliding_window: 8,
            sliding_window_pattern: 6,
            rope_global_base: 1e6,
            rope_local_base: 1e4,
            rope_global_scale: 1.0,
            query_pre_attn_scalar: 16.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 64,
        }
    }

    /// Chunks of assorted sizes through a sliding layer (window 8, ring of 8) and a global one:
    /// candle's operations with masks and our position-ordered kernel agree at every step,
    /// including chunks that wrap the ring, single tokens past the window, and image runs
    /// (bidirectional inside the run; one longer than the window). Head width 16 takes the plain
    /// loops, 64 the AVX-512 ones where the CPU has them.
    #[test]
    fn candle_ops_and_cpu_kernel_agree() {
        for hd in [16, 64] {
            agree(hd, KvPair::both(KvDtype::F32), 1e-5);
        }
        agree(64, KvPair::both(KvDtype::F16), 1e-5);
    }

    /// With a cache in a block format, the CPU kernel (integer products against the query in
    /// 8 bits) equals candle's path (the cache dequantized to f32, then f32 products: the
    /// reference, and what other devices run) to within float summation order, 1e-4, when the
    /// query's 8 bits are exact (queries of whole multiples of 2^-8 with ±127 × 2^-8 in every
    /// block). With arbitrary queries the query's rounding adds to that: up to 0.11 on this
    /// test's sharp softmax (score spread 4); its cost on the real model is `quality`'s to
    /// measure (README).
    #[test]
    fn block_format_caches_agree_with_their_dequantized_reference() {
        for kv in [
            "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0/f16", "f32/q4_0",
        ] {
            agree(64, kv.parse().unwrap(), 1e-4);
        }
    }

    /// [heads, n, hd] queries whose q8_0 rounding is exact: k × 2^-8 for integers |k| ≤ 127,
    /// with ±127 in every block of 32, so the block's scale is 2^-8 itself.
    fn exact_8_bit_queries(heads: usize, n: usize, hd: usize) -> Tensor {
        let r = Tensor::rand(-127f32, 127f32, (heads, n, hd), &Device::Cpu)
            .unwrap()
            .round()
            .unwrap();
        let mut v = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, b) in v.chunks_exact_mut(32).enumerate() {
            b[i % 32] = if i % 2 == 0 { 127.0 } else { -127.0 };
        }
        (Tensor::from_vec(v, (heads, n, hd), &Device::Cpu).unwrap() / 256.0).unwrap()
    }

    fn agree(hd: usize, kv: KvPair, tolerance: f32) {
        let c = cfg(hd);
        let dev = Device::Cpu;
        let ctx = 60;
        let generic = KvCache::new(&c, ctx, kv, &dev).unwrap();
        let ours = KvCache::new(&c, ctx, kv, &dev).unwrap();
        let (sliding, global) = (0, 5);
        assert_eq!(
            (c.layer_kind(sliding), c.layer_kind(global)),
            (LayerKind::Sliding, LayerKind::Global)
        );
        let mut pos = 0;
        // (chunk length, image runs as offsets in the chunk)
        let chunks: [(usize, &[(usize, usize)]); 11] = [
            (5, &[(1, 4)]),
            (3, &[]),
            (1, &[]),
            (1, &[]),
            (7, &[]),
            (12, &[]),
            (1, &[]),
            (9, &[(2, 6), (6, 8)]),
            (11, &[(0, 11)]),
            (2, &[]),
            (1, &[]),
        ];
        for (n, runs) in chunks {
            let spans: Vec<(usize, usize)> = runs.iter().map(|(s, e)| (pos + s, pos + e)).collect();
            for layer in [sliding, global] {
                // Queries come scaled: scores of the same spread at every head width.
                let q = if kv.k.block().is_some() {
                    exact_8_bit_queries(4, n, hd)
                } else {
                    Tensor::randn(0f32, (16.0 / hd as f32).sqrt(), (4, n, hd), &dev).unwrap()
                };
                let k = Tensor::randn(0f32, 1.0, (2, n, hd), &dev).unwrap();
                let v = Tensor::randn(0f32, 1.0, (2, n, hd), &dev).unwrap();
                let d = Dims {
                    heads: 4,
                    kv_heads: 2,
                    head_dim: hd,
                    pos,
                    n,
                    window: (layer == sliding).then_some(8),
                    spans: &spans,
                };
                let (g, o) = (&generic.layers[layer], &ours.layers[layer]);
                // candle's path quantizes with its operations, as on a GPU.
                let (gk, gv) = (ops_encode(&g.k, &k), ops_encode(&g.v, &v));
                let a = attend_and_write(&q, &gk, &gv, g, &d).unwrap();
                let (ok, ov) = (o.k.encode(&k).unwrap(), o.v.encode(&v).unwrap());
                let b = attention_cpu::attend(&q, &ok, &ov, o, &d).unwrap();
                o.write_encoded(&ok, &ov, pos).unwrap();
                let err = (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap();
                let err = err.to_scalar::<f32>().unwrap();
                assert!(
                    err < tolerance,
                    "{kv} hd {hd}, layer {layer}, chunk of {n} at {pos}: {err}"
                );
            }
            pos += n;
        }
    }

    /// What `Store::encode` does off the CPU.
    fn ops_encode(side: &Store, x: &Tensor) -> Store {
        match side {
            Store::Quant(p) => {
                Store::Quant(crate::engine::kv_quant::Planes::quantize_ops(p.block, x).unwrap())
            }
            dense => dense.encode(x).unwrap(),
        }
    }

    #[test]
    fn visible_ranges() {
        let spans = [(10, 14)];
        let d = |window| Dims {
            heads: 1,
            kv_heads: 1,
            head_dim: 8,
            pos: 8,
            n: 8,
            window,
            spans: &spans,
        };
        assert_eq!(d(None).visible(9), 0..10);
        assert_eq!(
            d(None).visible(10),
            0..14,
            "first image token sees the whole run"
        );
        assert_eq!(d(None).visible(14), 0..15);
        assert_eq!(d(Some(3)).visible(9), 7..10);
        assert_eq!(
            d(Some(3)).visible(13),
            10..14,
            "the window, widened to the run"
        );
        assert_eq!(d(Some(2)).visible(11), 10..14);
    }
}
