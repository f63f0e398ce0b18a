//! The estimator: one prediction, and the default `fit` table (5 sizes × 3 formats × 4 contexts
//! with each row's largest fitting context by bisection), which must stay well under 100 ms.

use criterion::{criterion_group, criterion_main, Criterion};
use gemma_fit::engine::kv_cache::{KvDtype, KvPair};
use gemma_fit::estimate::fit::{table, Capacity, Request};
use gemma_fit::estimate::{predict, Query, Target};

fn bench(c: &mut Criterion) {
    // criterion draws its plots with plotters, which here has only our bundled font.
    gemma_fit::report::charts::register_font();
    let q = Query {
        size: "27b".into(),
        quant: "q4_k_m".parse().unwrap(),
        kv_dtype: KvPair::both(KvDtype::Bf16),
        ctx: 131_072,
        rows: 512,
        batch: 1,
        image: true,
        target: Target::Cuda,
        tokenizer: false,
        file: None,
    };
    c.bench_function("estimator/predict_27b_128k", |b| {
        b.iter(|| predict(&q).unwrap())
    });

    let req = Request {
        models: ["270m", "1b", "4b", "12b", "27b"]
            .map(String::from)
            .to_vec(),
        quants: ["bf16", "q8_0", "q4_k_m"]
            .map(|q| q.parse().unwrap())
            .to_vec(),
        kv_dtypes: vec![KvPair::both(KvDtype::Bf16)],
        ctxs: vec![4096, 8192, 32_768, 131_072],
        rows: 512,
        batch: 1,
        image: false,
        breakdown: false,
    };
    let cap = Capacity {
        name: "24 GiB".into(),
        total_bytes: 24 << 30,
        bandwidth_gbs: Some(1008.0),
        target: Target::Cuda,
    };
    c.bench_function("estimator/fit_table_default", |b| {
        b.iter(|| table(&req, &cap).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
