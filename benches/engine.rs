//! The engine's hot paths: one decode step at a fixed depth and one prefill chunk, on the real
//! default model (270M Q4_K_M, fetched on first use) and on a tiny synthetic Gemma 3 (Q8_0),
//! which isolates per-layer overhead from weight bandwidth.
//!
//! `cargo bench --bench engine`. Each iteration rewinds the KV cache to the same depth, so every
//! step measures the same work.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemma_fit::engine::config::Gemma3Config;
use gemma_fit::engine::decoder::Gemma3;
use gemma_fit::engine::kv_cache::{KvDtype, KvPair};
use gemma_fit::engine::load::synthetic::SyntheticWeights;
use gemma_fit::engine::load::LoadedModel;

const DEPTH: usize = 512;
const CHUNK: usize = 64;

fn tiny() -> Gemma3 {
    let cfg = Gemma3Config {
        vocab_size: 4096,
        hidden_size: 256,
        intermediate_size: 1024,
        num_layers: 6,
        num_heads: 4,
        num_kv_heads: 1,
        head_dim: 64,
        sliding_window: 128,
        sliding_window_pattern: 6,
        rope_global_base: 1e6,
        rope_local_base: 1e4,
        rope_global_scale: 1.0,
        query_pre_attn_scalar: 64.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 4096,
    };
    let mut w = SyntheticWeights::new(
        "q8_0"
            .parse::<gemma_fit::engine::load::format::Format>()
            .unwrap(),
        cfg.num_layers,
        7,
        &Device::Cpu,
    )
    .expect("synthetic weights");
    Gemma3::load(cfg, &mut w, &Device::Cpu).expect("tiny model")
}

fn bench_model(c: &mut Criterion, name: &str, model: &Gemma3, prompt: &[u32]) {
    let mut group = c.benchmark_group(format!("engine/{name}"));
    group.sample_size(20);

    // Decode: one token at depth DEPTH.
    let mut s = model
        .session(DEPTH + 8, KvPair::both(KvDtype::F32))
        .unwrap();
    model.prefill(&prompt[..DEPTH], 512, &mut s).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("decode_step_at_{DEPTH}"), |b| {
        b.iter(|| {
            s.cache.len = DEPTH;
            model.forward(&[prompt[DEPTH]], &mut s).unwrap()
        })
    });

    // Prefill: one chunk of CHUNK positions from the start.
    let mut s = model.session(CHUNK, KvPair::both(KvDtype::F32)).unwrap();
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function(format!("prefill_chunk_{CHUNK}"), |b| {
        b.iter(|| {
            s.cache.len = 0;
            model.forward(&prompt[..CHUNK], &mut s).unwrap()
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    // criterion draws its plots with plotters, which here has only our bundled font.
    gemma_fit::report::charts::register_font();
    let path = gemma_fit::engine::load::fetch::default_model_path(true).expect("default model");
    let real = LoadedModel::load(&path, &Device::Cpu).expect("load the default model");
    let prompt = gemma_fit::measure::pass::prompt(&real, DEPTH + 1);
    bench_model(c, "270m-q4_k_m", &real.model, &prompt);

    let tiny = tiny();
    let prompt: Vec<u32> = (0..=DEPTH as u32).map(|i| 2 + i * 7 % 4000).collect();
    bench_model(c, "tiny-synthetic-q8_0", &tiny, &prompt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
