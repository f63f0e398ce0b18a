//! The CPU weight-product kernels (`engine::kernels::qmatmul`) against candle's own, at the shapes Gemma 3
//! 270M decodes and prefills with: one activation row (decode) and 64 rows (a prefill chunk), for
//! the tied output projection (262,144 × 640, Q8_0) and a feed-forward matrix (2,048 × 640, Q8_0
//! as the Q5_0 weights are held, and Q4_K / Q6_K at 640 × 2,048).
//!
//! Q8_0, Q4_K and Q6_K matrices also run through the repacked kernels (`engine::kernels::packed`:
//! `packed_m*`) where the CPU has AVX-512 VNNI: what the engine uses for the layers' weights there.
//!
//! The attention kernel too (`attention_270m`).
//!
//! `cargo bench --bench kernels`. Each kernel's agreement with candle's result is a unit test in
//! `src/engine/kernels/qmatmul.rs`, `kquant.rs` and `packed/` (`q8_0.rs`, `q4_k.rs`, `q6_k.rs`).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemma_fit::engine::kernels::packed::{self, PackedMatmul};
use gemma_fit::engine::kernels::qmatmul::QMatmul;

fn bench(c: &mut Criterion) {
    gemma_fit::report::charts::register_font();
    let dev = Device::Cpu;
    for (name, dtype, n, k) in [
        ("output_q8_0", GgmlDType::Q8_0, 262_144, 640),
        ("ffn_q8_0", GgmlDType::Q8_0, 2048, 640),
        ("ffn_down_q4k", GgmlDType::Q4K, 640, 2048),
        ("ffn_down_q6k", GgmlDType::Q6K, 640, 2048),
    ] {
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let packed = packed::applies(dtype, n, true).then(|| packed::pack(&q).unwrap());
        drop(w);
        let mut group = c.benchmark_group(format!("kernels/{name}"));
        group.sample_size(20);
        group.throughput(Throughput::Bytes(q.storage_size_in_bytes() as u64));
        for m in [1usize, 8, 64] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            group.bench_function(format!("ours_m{m}"), |b| {
                b.iter(|| x.apply_op1_no_bwd(&QMatmul { weight: &q }).unwrap())
            });
            group.bench_function(format!("candle_m{m}"), |b| {
                b.iter(|| theirs.forward(&x).unwrap())
            });
            if let Some(p) = &packed {
                group.bench_function(format!("packed_m{m}"), |b| {
                    b.iter(|| x.apply_op1_no_bwd(&PackedMatmul(p.as_ref())).unwrap())
                });
            }
        }
        group.finish();
    }
}

/// The CPU attention kernel (`engine::attention::cpu`) at 270M's shapes (4 query heads on one KV
/// head of 256) on a global layer: a 512-position prefill chunk, and one decoded token after
/// 8,191 random cached positions, for each cache type whose speed the README compares (f32,
/// f16, q8_0, q4_0). Its agreement with candle's operations is a unit test in
/// `src/engine/attention/generic.rs`, its SIMD paths' (AVX-512, AVX2) with the plain loops one
/// in `cpu.rs`.
fn attention(c: &mut Criterion) {
    use gemma_fit::engine::attention::cpu::{attend, Dims};
    use gemma_fit::engine::kv_cache::{KvCache, KvPair};
    let dev = Device::Cpu;
    let cfg = gemma_fit::engine::presets::find("270m").unwrap().config;
    let (heads, kv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let global = (0..cfg.num_layers)
        .find(|&i| cfg.layer_kind(i) == gemma_fit::engine::config::LayerKind::Global)
        .unwrap();
    let mut group = c.benchmark_group("kernels/attention_270m");
    group.sample_size(20);
    for types in ["f32", "f16", "q8_0", "q4_0"] {
        let mut cache = KvCache::new(&cfg, 8192, types.parse::<KvPair>().unwrap(), &dev).unwrap();
        cache.fill_synthetic(8191).unwrap();
        let layer = &cache.layers[global];
        for (name, pos, n) in [("prefill_512", 0, 512), ("decode_at_8191", 8191, 1)] {
            let q = (Tensor::randn(0f32, 1.0, (heads, n, hd), &dev).unwrap() / 16.0).unwrap();
            let k = Tensor::randn(0f32, 1.0, (kv, n, hd), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (kv, n, hd), &dev).unwrap();
            let (k, v) = (layer.k.encode(&k).unwrap(), layer.v.encode(&v).unwrap());
            let d = Dims {
                heads,
                kv_heads: kv,
                head_dim: hd,
                pos,
                n,
                window: None,
                spans: &[],
            };
            group.bench_function(format!("{name}/{types}"), |b| {
                b.iter(|| attend(&q, &k, &v, layer, &d).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, attention);
criterion_main!(benches);
