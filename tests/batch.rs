//! Many sequences at once: a sequence's logits in a batch are the ones it gets alone, bit for bit
//! on the CPU, at every step — whatever the batch size, the other sequences' lengths, how the
//! prompts were packed into prefill chunks, and past the sliding window.

use candle_core::Device;
use gemma_fit::engine::generate::argmax;
use gemma_fit::engine::kv_cache::{KvDtype, KvPair};
use gemma_fit::engine::load::LoadedModel;

/// The logits after the prompt and after each of `gen` greedy tokens, the sequence alone
/// (prefilled in chunks of 512, decoded one token per pass).
fn alone(m: &LoadedModel, prompt: &[u32], gen: usize, ctx: usize, kv: KvPair) -> Vec<Vec<f32>> {
    let mut s = m.model.session(ctx, kv).unwrap();
    let mut out = vec![m.model.prefill(prompt, 512, &mut s).unwrap()];
    for _ in 0..gen {
        let next = argmax(out.last().unwrap());
        out.push(m.model.forward(&[next], &mut s).unwrap());
    }
    out
}

/// The same for every prompt, run as one batch: prompts packed into chunks of `chunk`, then one
/// pass per step for all sequences. Returns [sequence][step] logits.
fn batched(
    m: &LoadedModel,
    prompts: &[Vec<u32>],
    gen: usize,
    ctx: usize,
    kv: KvPair,
    chunk: usize,
) -> Vec<Vec<Vec<f32>>> {
    let mut sessions = m.model.sessions(ctx, kv, prompts.len()).unwrap();
    let views: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut out = vec![Vec::new(); prompts.len()];
    let mut order = Vec::new();
    m.model
        .prefill_batch(&views, chunk, &mut sessions, |i, logits| {
            order.push(i);
            out[i].push(logits);
        })
        .unwrap();
    assert_eq!(
        order,
        (0..prompts.len()).collect::<Vec<_>>(),
        "first tokens in order"
    );
    for _ in 0..gen {
        let next: Vec<u32> = out.iter().map(|o| argmax(o.last().unwrap())).collect();
        let logits = m.model.decode_batch(&next, &mut sessions).unwrap();
        for (o, l) in out.iter_mut().zip(logits) {
            o.push(l);
        }
    }
    for (s, p) in sessions.iter().zip(prompts) {
        assert_eq!(s.position(), p.len() + gen);
    }
    out
}

fn prompts(m: &LoadedModel, lengths: &[usize]) -> Vec<Vec<u32>> {
    let longest = *lengths.iter().max().unwrap();
    let all = gemma_fit::measure::pass::prompts(m, longest, lengths.len());
    all.into_iter()
        .zip(lengths)
        .map(|(p, &n)| p[..n].to_vec())
        .collect()
}

fn check(m: &LoadedModel, lengths: &[usize], gen: usize, kv: KvPair, chunk: usize) {
    let ctx = lengths.iter().max().unwrap() + gen;
    let prompts = prompts(m, lengths);
    let together = batched(m, &prompts, gen, ctx, kv, chunk);
    for (i, p) in prompts.iter().enumerate() {
        let single = alone(m, p, gen, ctx, kv);
        assert_eq!(single.len(), together[i].len());
        for (step, (a, b)) in single.iter().zip(&together[i]).enumerate() {
            let differing = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
            assert_eq!(
                differing.count(),
                0,
                "batch {}, kv {kv}, chunk {chunk}: sequence {i} ({} tokens), step {step}",
                lengths.len(),
                p.len()
            );
        }
    }
}

/// Synthetic 270M in two formats: Q6_K (its tied output projection goes through candle's
/// product, taken a row at a time) and llama.cpp's Q4_K_M mix (our kernels). The 270M's window is
/// 512 positions: the 600-token sequence is past it, decoding through the sliding layers' ring
/// while its neighbours are short.
#[test]
fn a_sequence_in_a_batch_gets_the_logits_it_gets_alone() {
    let f32_kv = KvPair::both(KvDtype::F32);
    let m =
        LoadedModel::synthetic("270m", "q6_k".parse().unwrap(), 7, false, &Device::Cpu).unwrap();
    check(&m, &[600, 40], 3, f32_kv, 512);
    check(&m, &[9, 3, 70, 1], 3, f32_kv, 16);
    let m =
        LoadedModel::synthetic("270m", "q4_k_m".parse().unwrap(), 7, false, &Device::Cpu).unwrap();
    check(&m, &[33, 12, 5], 4, KvPair::both(KvDtype::Q8_0), 20);
    check(
        &m,
        &[17, 5, 40, 2, 8, 3],
        2,
        KvPair {
            k: KvDtype::Q4_0,
            v: KvDtype::F16,
        },
        512,
    );
}

/// The distinct prompts of a batch: same length, BOS first, no two alike.
#[test]
fn batch_prompts_are_distinct() {
    let m =
        LoadedModel::synthetic("270m", "q8_0".parse().unwrap(), 1, false, &Device::Cpu).unwrap();
    let p = gemma_fit::measure::pass::prompts(&m, 16, 4);
    assert_eq!(p.len(), 4);
    for (i, a) in p.iter().enumerate() {
        assert_eq!(a.len(), 16);
        assert_eq!(a[0], p[0][0], "BOS first");
        for b in &p[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(p[0], gemma_fit::measure::pass::prompt(&m, 16));
}

/// A decode step takes one token per sequence; a batch prefill one non-empty prompt per sequence.
#[test]
fn a_batch_checks_its_inputs() {
    let m =
        LoadedModel::synthetic("270m", "q8_0".parse().unwrap(), 1, false, &Device::Cpu).unwrap();
    let kv = KvPair::both(KvDtype::F16);
    let mut s = m.model.sessions(64, kv, 3).unwrap();
    assert_eq!(s.len(), 3);
    assert!(m.model.decode_batch(&[1, 2], &mut s).is_err());
    assert!(m
        .model
        .prefill_batch(&[&[2, 5], &[]], 8, &mut s[..2], |_, _| {})
        .is_err());
}
