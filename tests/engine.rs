//! The engine on the real default model: its next-token distributions against llama.cpp's over a
//! long text (the main check), llama.cpp's greedy tokens, decode past the window, chunked
//! prefill, KV-cache size.

mod common;

use candle_core::Device;
use gemma_fit::engine::generate::argmax;
use gemma_fit::engine::kv_cache::{KvCache, KvDtype, KvPair};
use gemma_fit::engine::load::LoadedModel;

fn model(test: &str) -> Option<LoadedModel> {
    let path = common::default_model(test)?;
    Some(LoadedModel::load(&path, &Device::Cpu).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// llama.cpp's reference outputs (tests/data/llamacpp/). Engines with 8-bit activations round
/// differently, and Gemma 3 amplifies last-bit differences through those roundings: the top-20
/// logits at the end of a prompt differ from llama.cpp's by a shift plus up to 0.45, and a
/// teacher-forced reference token sits up to 0.65 below our best (both measured on these cases).
const LOGIT_SPREAD: f32 = 0.75;
/// Greedy steps are compared up to the first reference margin below this (at most 10 steps).
const NEAR_TIE: f64 = 0.2;

/// Thresholds of the statistical check against llama.cpp (scored positions 0 … 5,114 of
/// `default-ctx2048.logits`: 5 chunks of 2,048 tokens of the shipped text, KV f16 on both
/// sides). Measured by this test (2-core AMD EPYC VM, 2026-12-02): mean KL 0.00592 ± 0.00012
/// nats, p99 0.0320, top-1 agreement 95.48 ± 0.29 %, PPL ratio 0.9961 ± 0.0018. Each threshold
/// is the measurement plus a margin: 18% on the mean KL (9 standard errors), 25% on the p99,
/// 1 point of agreement (3.4 standard errors), 1% on the PPL ratio (the goal): a change
/// that moves the engine away from the model fails, noise does not.
/// (Both engines are as far from exact arithmetic on these weights, KL ≈ 0.0044 each: the gap is
/// two independent sets of 8-bit activation roundings, not an error of one side.)
const MAX_MEAN_KL: f64 = 0.0070;
const MAX_P99_KL: f64 = 0.040;
const MIN_TOP1_PCT: f64 = 94.5;
const MAX_PPL_RATIO_OFF: f64 = 0.01;

#[test]
fn next_token_distributions_match_llama_cpp_over_a_long_text() {
    use gemma_fit::quality::{evaluate, logits_file::LogitsFile, summarize};
    let Some(m) = model("next_token_distributions_match_llama_cpp_over_a_long_text") else {
        return;
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/llamacpp/default-ctx2048.logits");
    let reference = LogitsFile::read(&path).unwrap();
    let ctx = reference.header.ctx;
    assert_eq!((ctx, reference.header.kv.as_str()), (2048, "f16"));
    // The reference holds the shipped text's ids, as our tokenizer makes them.
    let ours = m
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(gemma_fit::quality::DEFAULT_TEXT, true);
    assert_eq!(ours[..reference.tokens.len()], reference.tokens[..]);
    let chunks = 5;
    let eval = evaluate(
        &m.model,
        KvPair::both(KvDtype::F16),
        &reference.tokens,
        ctx,
        chunks,
        512,
        Some(&reference),
        None,
        |_| {},
    )
    .unwrap();
    assert_eq!(eval.positions.len(), 5 * 1023);
    let (_, c) = summarize(&eval.positions, ctx, Some((&reference, "reference")), 5).unwrap();
    let c = c.unwrap();
    eprintln!(
        "against llama.cpp: mean KL {:.5} ± {:.5}, p99 {:.4}, max {:.3}, top-1 {:.2} ± {:.2} %, PPL ratio {:.4} ± {:.4}",
        c.kl_mean.value,
        c.kl_mean.unc,
        c.kl_p99.value,
        c.kl_max,
        c.top1_pct.value,
        c.top1_pct.unc,
        c.ppl_ratio.value,
        c.ppl_ratio.unc
    );
    assert!(c.kl_mean.value <= MAX_MEAN_KL, "mean KL {:?}", c.kl_mean);
    assert!(c.kl_p99.value <= MAX_P99_KL, "p99 KL {:?}", c.kl_p99);
    assert!(c.top1_pct.value >= MIN_TOP1_PCT, "top-1 {:?}", c.top1_pct);
    assert!(
        (c.ppl_ratio.value - 1.0).abs() <= MAX_PPL_RATIO_OFF,
        "PPL ratio {:?}",
        c.ppl_ratio
    );
}

/// A short check of greedy decoding itself (the statistical check above is the main one).
#[test]
fn greedy_tokens_match_llama_cpp_until_a_near_tie() {
    let Some(m) = model("greedy_tokens_match_llama_cpp_until_a_near_tie") else {
        return;
    };
    let (mut checked_long, mut compared) = (false, 0);
    for file in ["generate.json", "generate-long.json"] {
        for case in common::reference(file)["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let prompt = ids(&case["prompt_ids"]);
            assert_eq!(
                m.tokenizer
                    .as_ref()
                    .unwrap()
                    .encode(case["prompt"].as_str().unwrap(), true),
                prompt,
                "{name}: prompt ids"
            );
            let want = ids(&case["greedy_ids"]);
            let margins: Vec<f64> = case["margins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            // Free-running greedy decoding, compared up to the first step whose reference margin
            // is within the engines' rounding spread, at most 10 tokens.
            let n = margins
                .iter()
                .position(|&m| m < NEAR_TIE)
                .unwrap_or(margins.len())
                .min(10);
            let mut session = m
                .model
                .session(prompt.len() + want.len() + 1, KvPair::both(KvDtype::F32))
                .unwrap();
            let mut logits = m.model.prefill(&prompt, 512, &mut session).unwrap();
            // The top-20 logits at the last prompt position, up to a common shift.
            let top: Vec<(usize, f32)> = case["top20"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_f64().unwrap() as f32,
                    )
                })
                .collect();
            let shift = top.iter().map(|&(id, l)| logits[id] - l).sum::<f32>() / top.len() as f32;
            for &(id, l) in &top {
                let d = (logits[id] - shift - l).abs();
                assert!(
                    d < LOGIT_SPREAD,
                    "{name}: logit of {id} off by {d} after a shift of {shift}"
                );
            }
            let mut got = Vec::new();
            for _ in 0..n {
                let next = argmax(&logits);
                got.push(next);
                logits = m.model.forward(&[next], &mut session).unwrap();
            }
            assert_eq!(got, want[..n], "{name}: greedy tokens (first {n})");
            checked_long |= prompt.len() + n > 512 && n > 0;
            compared += n;
        }
    }
    assert!(
        checked_long,
        "no reference case crosses the 512-token window"
    );
    assert!(compared >= 25, "only {compared} greedy steps compared");
}

#[test]
fn llama_cpp_tokens_are_near_the_top_when_teacher_forced() {
    let Some(m) = model("llama_cpp_tokens_are_near_the_top_when_teacher_forced") else {
        return;
    };
    for file in ["generate.json", "generate-long.json"] {
        for case in common::reference(file)["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let prompt = ids(&case["prompt_ids"]);
            let want = ids(&case["greedy_ids"]);
            let mut session = m
                .model
                .session(prompt.len() + want.len(), KvPair::both(KvDtype::F32))
                .unwrap();
            let mut logits = m.model.prefill(&prompt, 512, &mut session).unwrap();
            for (step, &token) in want.iter().enumerate() {
                let best = logits[argmax(&logits) as usize];
                let gap = best - logits[token as usize];
                assert!(
                    gap < LOGIT_SPREAD,
                    "{name} step {step}: llama.cpp's token {token} is {gap} below our best"
                );
                logits = m.model.forward(&[token], &mut session).unwrap();
            }
        }
    }
}

fn prompt(m: &LoadedModel, n: usize) -> Vec<u32> {
    gemma_fit::measure::pass::prompt(m, n)
}

#[test]
fn decode_past_the_window_agrees_with_prefill() {
    let Some(m) = model("decode_past_the_window_agrees_with_prefill") else {
        return;
    };
    for n in [600, 1024] {
        let p = prompt(&m, n);
        let mut one = m.model.session(n, KvPair::both(KvDtype::F32)).unwrap();
        let whole = m.model.prefill(&p, 512, &mut one).unwrap();
        let mut two = m.model.session(n, KvPair::both(KvDtype::F32)).unwrap();
        m.model.prefill(&p[..n - 1], 512, &mut two).unwrap();
        let stepped = m.model.forward(&p[n - 1..], &mut two).unwrap();
        assert_eq!(argmax(&whole), argmax(&stepped), "N = {n}: top-1");
        let d = max_abs_diff(&whole, &stepped);
        assert!(d < 0.01, "N = {n}: max |Δlogit| = {d}");
    }
}

#[test]
fn chunked_prefill_matches_one_shot() {
    let Some(m) = model("chunked_prefill_matches_one_shot") else {
        return;
    };
    let n = 1100;
    let p = prompt(&m, n);
    let mut s = m.model.session(n, KvPair::both(KvDtype::F32)).unwrap();
    let one_shot = m.model.prefill(&p, n, &mut s).unwrap();
    for chunk in [100, 256, 512] {
        let mut s = m.model.session(n, KvPair::both(KvDtype::F32)).unwrap();
        let chunked = m.model.prefill(&p, chunk, &mut s).unwrap();
        assert_eq!(argmax(&one_shot), argmax(&chunked), "chunk {chunk}: top-1");
        let d = max_abs_diff(&one_shot, &chunked);
        assert!(d < 1e-3, "chunk {chunk}: max |Δlogit| = {d}");
    }
}

#[test]
fn kv_cache_size_follows_the_formula() {
    let Some(m) = model("kv_cache_size_follows_the_formula") else {
        return;
    };
    let c = &m.model.cfg;
    assert_eq!(
        (
            c.num_global_layers(),
            c.num_sliding_layers(),
            c.sliding_window,
            c.num_kv_heads,
            c.head_dim
        ),
        (3, 15, 512, 1, 256)
    );
    // Bytes per position of one head, keys and values: dense, or llama.cpp's blocks of 32.
    for (ctx, kv, per_position) in [
        (100, "f32", 2 * 256 * 4),
        (2048, "f32", 2 * 256 * 4),
        (4096, "f16", 2 * 256 * 2),
        (32768, "bf16", 2 * 256 * 2),
        (32768, "q8_0", 2 * 256 / 32 * 34),
        (8192, "q4_0", 2 * 256 / 32 * 18),
        (1000, "q4_1", 2 * 256 / 32 * 20),
        (1000, "q5_0/q5_1", 256 / 32 * (22 + 24)),
        (4096, "q8_0/f16", 256 / 32 * 34 + 256 * 2),
    ] {
        let kv: KvPair = kv.parse().unwrap();
        let s = m.model.session(ctx, kv).unwrap();
        let formula = (3 * ctx + 15 * ctx.min(512)) * per_position;
        assert_eq!(s.cache.allocated_bytes(), formula, "ctx {ctx} {kv}");
        assert_eq!(KvCache::size_in_bytes(c, ctx, kv), formula);
    }
    // The figure: q8_0 keys and values at 32,768 positions hold 51 MiB in the 3 global
    // layers, beside the 15 rings of 512.
    let q8 = KvPair::both(KvDtype::Q8_0);
    let global = 3 * 32768 * 256 * 2 * 34 / 32;
    assert_eq!(global, 51 << 20);
    assert_eq!(
        KvCache::size_in_bytes(c, 32768, q8),
        global + 15 * 512 * 256 * 2 * 34 / 32
    );
}

/// Every cache type against the f32 cache on a 700-token prompt (past the 512 window): the same
/// top token and logits within what its rounding explains; and each type self-consistent bit for
/// bit: a prefill in chunks of 100 or one token at a time (decode) gives the one-shot logits.
#[test]
fn kv_dtypes_agree() {
    let Some(m) = model("kv_dtypes_agree") else {
        return;
    };
    let p = prompt(&m, 700);
    let mut base = m
        .model
        .session(p.len(), KvPair::both(KvDtype::F32))
        .unwrap();
    let reference = m.model.prefill(&p, 512, &mut base).unwrap();
    // Largest |Δlogit| measured, AVX2 kernels (2-core AMD EPYC without AVX-512, 2026-12-06),
    // block formats rotated (`kv_rotation.rs`): f16 1.41, bf16 1.74, q8_0 1.20, q5_1 2.25,
    // q5_0 2.89, q4_1 5.16, q4_0 7.48, q8_0/f16 1.72, f16/q4_0 1.34 (before the rotation: q8_0
    // 1.66, q5_1 7.30, q5_0 1.90, q4_1 9.76, q4_0 9.57, q8_0/f16 1.54, f16/q4_0 2.07). The
    // AVX-512 kernels round differently (f16 1.19, bf16 1.04 there; rotated caches not measured
    // on them), so the bounds are about twice these. Rounding the cache perturbs the
    // activations' 8-bit quantization, 4-bit keys the most; a broken block format is off by tens
    // and changes the top token.
    for (kv, bound) in [
        ("f16", 2.8),
        ("bf16", 3.5),
        ("q8_0", 2.5),
        ("q5_1", 4.5),
        ("q5_0", 6.0),
        ("q4_1", 10.5),
        ("q4_0", 15.0),
        ("q8_0/f16", 3.5),
        ("f16/q4_0", 3.0),
    ] {
        let kv: KvPair = kv.parse().unwrap();
        let mut s = m.model.session(p.len(), kv).unwrap();
        let logits = m.model.prefill(&p, 512, &mut s).unwrap();
        assert_eq!(argmax(&reference), argmax(&logits), "{kv}");
        let d = max_abs_diff(&reference, &logits);
        assert!(d < bound, "{kv}: max |Δlogit| = {d}");
        for chunk in [100, 1] {
            let mut s = m.model.session(p.len(), kv).unwrap();
            let chunked = if chunk == 1 {
                // The prompt's first 680 positions in one pass, the rest decoded one by one.
                m.model.prefill(&p[..680], 512, &mut s).unwrap();
                let mut last = Vec::new();
                for &t in &p[680..] {
                    last = m.model.forward(&[t], &mut s).unwrap();
                }
                last
            } else {
                m.model.prefill(&p, chunk, &mut s).unwrap()
            };
            assert_eq!(
                max_abs_diff(&logits, &chunked),
                0.0,
                "{kv}: prefill in chunks of {chunk}"
            );
        }
    }
}

#[test]
fn the_context_is_enforced() {
    let Some(m) = model("the_context_is_enforced") else {
        return;
    };
    let mut s = m.model.session(8, KvPair::both(KvDtype::F32)).unwrap();
    let err = m.model.prefill(&prompt(&m, 9), 512, &mut s).err().unwrap();
    assert!(
        matches!(
            err,
            gemma_fit::Error::ContextFull {
                used: 0,
                requested: 9,
                capacity: 8
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("context full"), "{err}");
}

/// The synthetic Q4_K_M mix of the 270M preset holds exactly the real file's tensors: same types,
/// same bytes in the file and in memory.
#[test]
fn synthetic_q4_k_m_equals_the_real_file() {
    let Some(real) = model("synthetic_q4_k_m_equals_the_real_file") else {
        return;
    };
    let synthetic =
        LoadedModel::synthetic("270m", "q4_k_m".parse().unwrap(), 0, false, &Device::Cpu).unwrap();
    // The file stores eps as f32 (1e-6 → 9.99999997e-7); everything else is identical.
    let mut cfg = synthetic.model.cfg.clone();
    cfg.rms_norm_eps = real.model.cfg.rms_norm_eps;
    assert_eq!(cfg, real.model.cfg);
    assert_eq!(synthetic.model.weight_bytes, real.model.weight_bytes);
    assert_eq!(synthetic.model.repacked, real.model.repacked);
}
