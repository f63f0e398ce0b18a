//! The Hadamard rotation of a block-format KV cache, as llama.cpp applies it (since its PR
//! #21038, in every release from April 2026 on; `src/llama-kv-cache.cpp`, `llama-graph.cpp`).
//!
//! A few channels of Gemma 3's keys are much larger than the rest, so the scale of a 32-value
//! block follows its outlier and the other values of the block get a handful of 4-bit steps. An
//! orthonormal Walsh-Hadamard matrix H (entries ±1/√n, H·H = I) spreads every channel over all
//! n: the rotated rows have no outliers and quantize with far less error. Since H is orthonormal,
//! (Hq)·(Hk) = q·k: rotating the queries with the keys leaves the exact scores unchanged, and
//! rotating the values before the cache and the attention's output after it (H·H = I) leaves
//! the exact output unchanged. Only the rounding changes.
//!
//! llama.cpp's rule, which this follows: keys in a block format are rotated, with the queries, by
//! the largest power-of-two H that divides the head width (256 for Gemma 3's 256-wide heads,
//! 128 for 27B's), applied to each n-value piece of a row; values in a block format by H of 64,
//! the attention's output by the same. Either only where the head width is a multiple of 64;
//! dense caches are never rotated.
//!
//! On the CPU the rotation is a fast Walsh-Hadamard transform on each row (n log n additions, the
//! same for a row however many rows come with it, so chunked and one-shot prefill stay bit for
//! bit the same); elsewhere it is a product with the matrix, which the session holds on the
//! device ([`rotation_matrix_bytes`]).

use candle_core::{DType, Device, Result, Tensor};

use crate::engine::kv_cache::{KvDtype, KvPair};

/// The rotations a cache of `types` gets: of the queries and keys, and of the values and the
/// attention's output.
#[derive(Debug)]
pub struct Rotations {
    pub keys: Option<Hadamard>,
    pub values: Option<Hadamard>,
}

impl Rotations {
    pub fn new(types: KvPair, head_dim: usize, device: &Device) -> Result<Self> {
        let make = |n: Option<usize>| n.map(|n| Hadamard::new(n, device)).transpose();
        Ok(Rotations {
            keys: make(key_rotation(types.k, head_dim))?,
            values: make(value_rotation(types.v, head_dim))?,
        })
    }

    /// No rotation (a dense cache).
    pub fn none() -> Self {
        Rotations {
            keys: None,
            values: None,
        }
    }
}

/// Whether a side of type `t` is rotated at all: a block format over heads of whole 64s.
fn rotated(t: KvDtype, head_dim: usize) -> bool {
    t.block().is_some() && head_dim > 0 && head_dim.is_multiple_of(64)
}

/// The width of the rotation of keys of type `t` (and of the queries with them): the largest
/// power of two that divides the head width.
pub fn key_rotation(t: KvDtype, head_dim: usize) -> Option<usize> {
    rotated(t, head_dim).then(|| 1 << head_dim.trailing_zeros())
}

/// The width of the rotation of values of type `t` (and of the attention's output): 64, which
/// llama.cpp found better than wider ones for values.
pub fn value_rotation(t: KvDtype, head_dim: usize) -> Option<usize> {
    rotated(t, head_dim).then_some(64)
}

/// Bytes the rotation matrices of a cache of `types` take on a device other than the CPU (the
/// CPU transforms rows in place and holds none).
pub fn rotation_matrix_bytes(types: KvPair, head_dim: usize, on_cpu: bool) -> u64 {
    if on_cpu {
        return 0;
    }
    let square = |n: Option<usize>| n.map_or(0, |n| (n * n * 4) as u64);
    square(key_rotation(types.k, head_dim)) + square(value_rotation(types.v, head_dim))
}

/// The orthonormal Walsh-Hadamard matrix of width `n` (a power of two) in Sylvester's order,
/// applied to each `n`-value piece of a tensor's rows.
#[derive(Debug)]
pub struct Hadamard {
    n: usize,
    /// The matrix on a device other than the CPU (there, the rotation is a product with it).
    matrix: Option<Tensor>,
}

impl Hadamard {
    pub fn new(n: usize, device: &Device) -> Result<Self> {
        if !n.is_power_of_two() {
            candle_core::bail!("a Hadamard rotation needs a power-of-two width, not {n}");
        }
        let matrix = if device.is_cpu() {
            None
        } else {
            Some(Tensor::from_vec(matrix(n), (n, n), device)?)
        };
        Ok(Hadamard { n, matrix })
    }

    pub fn width(&self) -> usize {
        self.n
    }

    /// `x` (its last dimension a multiple of the width) with each `n`-value piece of its rows
    /// rotated: H·x, computed in f32 and returned in `x`'s type. H is its own inverse, so
    /// applying it twice gives `x` back (up to rounding).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (n, dims) = (self.n, x.dims().to_vec());
        if dims.last().is_none_or(|&w| !w.is_multiple_of(n)) {
            candle_core::bail!("a rotation of width {n} cannot take rows of {dims:?}");
        }
        if x.dtype() != DType::F32 {
            return self.apply(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
        }
        match &self.matrix {
            // H is symmetric: the rows times H are H times each row.
            Some(h) => x
                .contiguous()?
                .reshape((x.elem_count() / n, n))?
                .matmul(h)?
                .reshape(dims),
            None => {
                let mut v = x.flatten_all()?.to_vec1::<f32>()?;
                v.chunks_exact_mut(n).for_each(transform);
                Tensor::from_vec(v, dims, x.device())
            }
        }
    }
}

/// The orthonormal Walsh-Hadamard transform of `x` in place (its length a power of two): the
/// butterflies of Sylvester's construction, H(2s) = [[H(s), H(s)], [H(s), −H(s)]], then the
/// scale 1/√n (exact for even powers of two).
pub fn transform(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (a, b) = pair.split_at_mut(h);
            for (a, b) in a.iter_mut().zip(b.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= scale);
}

/// The matrix itself, row-major, built as llama.cpp builds it (`ggml_gen_hadamard`).
fn matrix(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    m[0] = 1.0 / (n as f32).sqrt();
    let mut s = 1;
    while s < n {
        for i in 0..s {
            for j in 0..s {
                let v = m[i * n + j];
                m[(i + s) * n + j] = v;
                m[i * n + j + s] = v;
                m[(i + s) * n + j + s] = -v;
            }
        }
        s *= 2;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transform is the product with llama.cpp's matrix, and its own inverse.
    #[test]
    fn the_transform_is_the_matrix_and_undoes_itself() {
        for n in [2, 64, 128, 256] {
            let m = matrix(n);
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
            let mut y = x.clone();
            transform(&mut y);
            for (i, &yi) in y.iter().enumerate() {
                let want: f32 = (0..n).map(|j| m[i * n + j] * x[j]).sum();
                assert!((yi - want).abs() < 1e-5, "n {n}, row {i}: {yi} vs {want}");
            }
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            assert!((norm(&y) - norm(&x)).abs() < 1e-3 * norm(&x), "orthonormal");
            transform(&mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-5, "n {n}: H·H·x = x");
            }
        }
    }

    /// llama.cpp's rule: block formats over heads of whole 64s; keys as wide as the largest
    /// power of two in the head width, values 64; dense caches never.
    #[test]
    fn which_sides_rotate_and_how_wide() {
        let t = |s: &str| s.parse::<KvDtype>().unwrap();
        assert_eq!(key_rotation(t("q4_0"), 256), Some(256));
        assert_eq!(key_rotation(t("q8_0"), 128), Some(128));
        assert_eq!(key_rotation(t("q8_0"), 192), Some(64));
        assert_eq!(value_rotation(t("q5_1"), 256), Some(64));
        assert_eq!(key_rotation(t("q4_0"), 96), None, "not whole 64s");
        assert_eq!(key_rotation(t("f16"), 256), None);
        assert_eq!(value_rotation(t("bf16"), 256), None);
        let kv: KvPair = "q8_0/f16".parse().unwrap();
        assert_eq!(rotation_matrix_bytes(kv, 256, false), 256 * 256 * 4);
        assert_eq!(rotation_matrix_bytes(kv, 256, true), 0);
        assert!(Hadamard::new(96, &Device::Cpu).is_err());
    }

    /// The product path (what other devices run), forced on the CPU, equals the transform.
    #[test]
    fn the_product_path_equals_the_transform() {
        let x = Tensor::randn(0f32, 1.0, (3, 5, 256), &Device::Cpu).unwrap();
        let fast = Hadamard::new(64, &Device::Cpu).unwrap();
        let product = Hadamard {
            n: 64,
            matrix: Some(Tensor::from_vec(matrix(64), (64, 64), &Device::Cpu).unwrap()),
        };
        let a = fast.apply(&x).unwrap();
        let b = product.apply(&x).unwrap();
        let err = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        let err = err.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(err < 1e-5, "{err}");
        assert!(fast.apply(&x.narrow(2, 0, 100).unwrap()).is_err());
    }

    /// Why the rotation is there: keys with two channels (a RoPE pair) 12 times the rest, as
    /// Gemma 3's keys have (docs/kv-cache.md), attended through a block-format key cache by the
    /// CPU kernel, come out nearer the f32 cache's output when queries and keys are rotated than
    /// when they are not; and in exact arithmetic (an f32 cache) rotating everything, the output
    /// back included, changes nothing.
    #[test]
    fn rotation_shrinks_the_error_of_a_4_bit_cache_with_outlier_channels() {
        use crate::engine::attention::cpu::{attend, Dims};
        use crate::engine::config::Gemma3Config;
        use crate::engine::kv_cache::KvCache;

        let (heads, kv_heads, hd, n) = (2, 1, 256, 96);
        let cfg = Gemma3Config {
            vocab_size: 16,
            hidden_size: 64,
            intermediate_size: 64,
            num_layers: 1,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: hd,
            sliding_window: 512,
            sliding_window_pattern: 1,
            rope_global_base: 1e6,
            rope_local_base: 1e4,
            rope_global_scale: 1.0,
            query_pre_attn_scalar: hd as f64,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 128,
        };
        // Deterministic values in [-1, 1) (a linear congruential generator).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values = |count: usize| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        let tensor = |v: Vec<f32>, h: usize| Tensor::from_vec(v, (h, n, hd), &Device::Cpu).unwrap();
        let q = (tensor(values(heads * n * hd), heads) * 0.5).unwrap();
        let mut k = values(kv_heads * n * hd);
        for row in k.chunks_exact_mut(hd) {
            row[75] *= 12.0;
            row[75 + 128] *= 12.0;
        }
        let (k, v) = (
            tensor(k, kv_heads),
            tensor(values(kv_heads * n * hd), kv_heads),
        );
        let dims = Dims {
            heads,
            kv_heads,
            head_dim: hd,
            pos: 0,
            n,
            window: None,
            spans: &[],
        };
        let out = |kv: &str, rotate: bool| -> Tensor {
            let c = KvCache::new(&cfg, n, kv.parse().unwrap(), &Device::Cpu).unwrap();
            let layer = &c.layers[0];
            let (kh, vh) = (
                Hadamard::new(hd, &Device::Cpu).unwrap(),
                Hadamard::new(64, &Device::Cpu).unwrap(),
            );
            let (q, k, v) = if rotate {
                (
                    kh.apply(&q).unwrap(),
                    kh.apply(&k).unwrap(),
                    vh.apply(&v).unwrap(),
                )
            } else {
                (q.clone(), k.clone(), v.clone())
            };
            let (ek, ev) = (layer.k.encode(&k).unwrap(), layer.v.encode(&v).unwrap());
            let o = attend(&q, &ek, &ev, layer, &dims).unwrap();
            if rotate {
                vh.apply(&o).unwrap()
            } else {
                o
            }
        };
        let reference = out("f32", false);
        let rms = |t: Tensor| -> f32 {
            let d = (t - &reference).unwrap().sqr().unwrap().mean_all().unwrap();
            d.to_scalar::<f32>().unwrap().sqrt()
        };
        assert!(
            rms(out("f32", true)) < 1e-5,
            "exact arithmetic: the rotation changes nothing"
        );
        // RMS error measured on this data: q4_0 0.053 rotated against 0.126 not, q5_0 0.028 /
        // 0.053, q8_0 0.0046 / 0.0081 (q4_1, whose blocks span min…max, gains less: 0.052 /
        // 0.064).
        for kv in ["q4_0/f32", "q5_0/f32", "q8_0/f32"] {
            let (plain, rotated) = (rms(out(kv, false)), rms(out(kv, true)));
            assert!(
                rotated * 1.5 < plain,
                "{kv}: rotated {rotated}, not rotated {plain}"
            );
        }
    }
}
