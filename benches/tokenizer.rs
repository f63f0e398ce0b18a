//! Tokenizer throughput on the default model's vocabulary (fetched on first use).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemma_fit::engine::load::gguf::GgufFile;
use gemma_fit::engine::tokenizer::Tokenizer;

fn bench(c: &mut Criterion) {
    // criterion draws its plots with plotters, which here has only our bundled font.
    gemma_fit::report::charts::register_font();
    let path = gemma_fit::engine::load::fetch::default_model_path(true).expect("default model");
    let file = GgufFile::open_gemma3(&path).expect("open");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let text = "The quick brown fox jumps over the lazy dog. Größe, naïve café — 日本語のテキスト 🦀\n    fn main() {}\n"
        .repeat(40);
    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("encode_4k_chars", |b| b.iter(|| tok.encode(&text, true)));
    let ids = tok.encode(&text, true);
    group.bench_function("decode", |b| b.iter(|| tok.decode(&ids)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
