//! Quality: teacher-forced evaluation over a text as `llama-perplexity` does it, the perplexity
//! with its uncertainty, and against a reference (`logits_file.rs`) the KL divergence, top-1
//! agreement and the change of the target token's probability.
//!
//! The chunking is llama-perplexity's: the text is tokenized once with BOS first and cut into
//! consecutive chunks of `ctx` tokens (the remainder dropped); each chunk starts a fresh
//! sequence with its first token replaced by BOS; offsets ctx/2 … ctx−2 are scored, each
//! predicting the next token. So figures compare with llama.cpp's at the same `ctx`.

pub mod logits_file;

use crate::engine::kv_cache::KvPair;

use crate::engine::decoder::Gemma3;
use crate::error::{Error, Result};

use self::logits_file::{first_scored, scored_per_chunk, LogitsFile, Record};

pub use crate::result::quality::{Comparison, Est, Quality, TopKCheck, Worst};

/// The evaluation text shipped with gemma-fit: the GNU GPL version 3, GPL version 2 and LGPL
/// version 2.1 as Debian ships them (`src/quality/EVAL-TEXT.md`: source and licence).
pub const DEFAULT_TEXT: &str = include_str!("eval-text.txt");

/// What one evaluation keeps besides the figures: the top-K records and full rows to save.
pub struct Save {
    pub top_k: usize,
    pub full_rows: usize,
}

/// Per scored position.
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub target: u32,
    /// −log p(target) under our model.
    pub nll: f64,
    pub argmax: u32,
    /// Against a reference: KL(reference ‖ ours) from the reference's top-K, the same over
    /// the full vocabulary where the reference has the full row, −log p_ref(target), whether
    /// the top tokens agree, and the reference's top token.
    pub kl: Option<f64>,
    pub kl_full: Option<f64>,
    pub ref_nll: Option<f64>,
    pub ref_argmax: Option<u32>,
}

/// The result of [`evaluate`]: every scored position, and what `save` asked to keep.
pub struct Evaluation {
    pub positions: Vec<Position>,
    pub records: Vec<Record>,
    pub full: Vec<Vec<f32>>,
}

/// Runs `tokens` (BOS first) through `model` in chunks of `ctx` (at most `chunks` of them),
/// `prefill_chunk` positions per forward pass, scoring each chunk's second half; against
/// `reference` when given (its records align with the scored positions). `tick` is called
/// after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Gemma3,
    kv: KvPair,
    tokens: &[u32],
    ctx: usize,
    chunks: usize,
    prefill_chunk: usize,
    reference: Option<&LogitsFile>,
    save: Option<&Save>,
    mut tick: impl FnMut(usize),
) -> Result<Evaluation> {
    let bos = tokens[0];
    let per = scored_per_chunk(ctx);
    let first = first_scored(ctx);
    let mut out = Evaluation {
        positions: Vec::with_capacity(chunks * per),
        records: Vec::new(),
        full: Vec::new(),
    };
    let threads = candle_core::utils::get_num_threads().max(1);
    let mut work: Vec<RowWork> = (0..threads).map(|_| RowWork::default()).collect();
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        chunk[0] = bos;
        let mut session = model.session(ctx, kv)?;
        let mut start = 0;
        while start < ctx {
            let end = (start + prefill_chunk).min(ctx);
            let from = first.saturating_sub(start).min(end - start);
            model.forward_all(&chunk[start..end], from, &mut session, |offset, rows| {
                // Rows at offsets up to ctx − 2 are scored (the last has no next token).
                let rows = &rows[..rows.len().min((ctx - 1).saturating_sub(start + offset))];
                let row = |i: usize| {
                    let at = start + offset + i;
                    let index = c * per + (at - first);
                    Row {
                        target: chunk[at + 1],
                        reference: reference.map(|f| (&f.records[index], f.full.get(index))),
                        keep_full: save.is_some_and(|s| index < s.full_rows),
                    }
                };
                let scored = score_rows(rows, &row, save, &mut work);
                for (pos, record, full) in scored {
                    out.positions.push(pos);
                    out.records.extend(record);
                    out.full.extend(full);
                }
                Ok(())
            })?;
            start = end;
        }
        tick(c + 1);
    }
    Ok(out)
}

/// What a row of logits is scored against.
struct Row<'a> {
    target: u32,
    reference: Option<(&'a Record, Option<&'a Vec<f32>>)>,
    keep_full: bool,
}

type Scored = (Position, Option<Record>, Option<Vec<f32>>);

/// Scores `rows` (row i against `row(i)`), split across the threads of `work` (one buffer set
/// each), in order. Each row's figures depend on that row alone.
fn score_rows<'a>(
    rows: &[Vec<f32>],
    row: &(dyn Fn(usize) -> Row<'a> + Sync),
    save: Option<&Save>,
    work: &mut [RowWork],
) -> Vec<Scored> {
    let per_thread = rows.len().div_ceil(work.len()).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(per_thread)
            .zip(work.iter_mut())
            .enumerate()
            .map(|(t, (part, w))| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, logits)| w.score(logits, &row(t * per_thread + i), save))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scoring thread panicked"))
            .collect()
    })
}

/// Buffers reused across rows.
#[derive(Default)]
struct RowWork {
    order: Vec<u32>,
}

/// The log-sum-exp of `logits` (each term's exponential in f32, summed in f64).
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    f64::from(max) + sum.ln()
}

impl RowWork {
    /// The figures of one row of logits against what `r` names.
    fn score(&mut self, logits: &[f32], r: &Row, save: Option<&Save>) -> Scored {
        let lse = log_sum_exp(logits);
        let lq = |i: u32| f64::from(logits[i as usize]) - lse;
        let target = r.target;
        let argmax = crate::engine::generate::argmax(logits);
        let mut pos = Position {
            target,
            nll: -lq(target),
            argmax,
            ..Position::default()
        };
        if let Some((rec, full)) = r.reference {
            pos.kl = Some(top_k_kl(&rec.top, &lq));
            pos.kl_full = full.map(|row| {
                row.iter()
                    .zip(logits)
                    .map(|(&p, &l)| {
                        let p = f64::from(p);
                        p.exp() * (p - (f64::from(l) - lse))
                    })
                    .sum()
            });
            pos.ref_nll = Some(-f64::from(rec.target_logprob));
            pos.ref_argmax = rec.top.first().map(|t| t.0);
        }
        let record = save.map(|s| {
            let k = s.top_k.min(logits.len());
            self.order.clear();
            self.order.extend(0..logits.len() as u32);
            let by_logit = |a: &u32, b: &u32| {
                logits[*b as usize]
                    .total_cmp(&logits[*a as usize])
                    .then(a.cmp(b))
            };
            if k < self.order.len() {
                self.order.select_nth_unstable_by(k - 1, by_logit);
            }
            self.order.truncate(k);
            self.order.sort_by(by_logit);
            Record {
                target,
                target_logprob: lq(target) as f32,
                lse: lse as f32,
                top: self.order.iter().map(|&i| (i, lq(i) as f32)).collect(),
            }
        });
        let full = r.keep_full.then(|| {
            logits
                .iter()
                .map(|&l| (f64::from(l) - lse) as f32)
                .collect()
        });
        (pos, record, full)
    }
}

/// KL(p ‖ q) where p is known only on its top-K tokens (log-probabilities `top`) and q on the
/// whole vocabulary (`lq`: a token's log-probability): the top-K terms plus one term for the rest of the vocabulary, taken
/// as one outcome (mass 1 − Σ top-K on each side). Never more than the full-vocabulary KL (it
/// merges outcomes), and equal to it when the rest's tokens keep their relative odds.
pub fn top_k_kl(top: &[(u32, f32)], lq: &dyn Fn(u32) -> f64) -> f64 {
    let (mut kl, mut mass_p, mut mass_q) = (0.0, 0.0, 0.0);
    for &(id, lp) in top {
        let (lp, q) = (lp as f64, lq(id));
        let p = lp.exp();
        kl += p * (lp - q);
        mass_p += p;
        mass_q += q.exp();
    }
    let (rest_p, rest_q) = ((1.0 - mass_p).max(0.0), (1.0 - mass_q).max(1e-300));
    if rest_p > 1e-12 {
        kl += rest_p * (rest_p / rest_q).ln();
    }
    kl.max(0.0)
}

/// The mean of `v` and its standard error.
fn mean_est(v: &[f64]) -> Est {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Est {
        value: mean,
        unc: (var / n).sqrt(),
    }
}

/// The `q`-quantile of sorted `s` with a distribution-free standard error: half the distance
/// between the order statistics one binomial standard deviation (√(n q (1−q)) ranks) either side.
fn quantile_est(s: &[f64], q: f64) -> Est {
    let n = s.len() as f64;
    let at = |rank: f64| s[(rank.round().max(0.0) as usize).min(s.len() - 1)];
    let rank = q * (n - 1.0);
    let spread = (n * q * (1.0 - q)).sqrt();
    Est {
        value: at(rank),
        unc: (at(rank + spread) - at(rank - spread)) / 2.0,
    }
}

/// The figures of an evaluation's positions (`ctx` for the positions' places in the stream),
/// against `reference` (the file and the name to record for it) when the positions were scored
/// against one; the `worst` positions by KL.
pub fn summarize(
    positions: &[Position],
    ctx: usize,
    reference: Option<(&LogitsFile, &str)>,
    worst: usize,
) -> Result<(Est, Option<Comparison>)> {
    if positions.is_empty() {
        return Err(Error::BadInput("no position was scored".into()));
    }
    let nll: Vec<f64> = positions.iter().map(|p| p.nll).collect();
    let mean_nll = mean_est(&nll);
    let ppl = Est {
        value: mean_nll.value.exp(),
        unc: mean_nll.value.exp() * mean_nll.unc,
    };
    let Some((reference, file)) = reference else {
        return Ok((ppl, None));
    };
    let kl: Vec<f64> = positions.iter().map(|p| p.kl.unwrap_or(0.0)).collect();
    let ref_nll: Vec<f64> = positions.iter().map(|p| p.ref_nll.unwrap_or(0.0)).collect();
    let diff: Vec<f64> = nll.iter().zip(&ref_nll).map(|(a, b)| a - b).collect();
    let agree: Vec<f64> = positions
        .iter()
        .map(|p| f64::from(u8::from(Some(p.argmax) == p.ref_argmax)) * 100.0)
        .collect();
    let dp: Vec<f64> = nll
        .iter()
        .zip(&ref_nll)
        .map(|(a, b)| ((-a).exp() - (-b).exp()) * 100.0)
        .collect();
    let dp2: Vec<f64> = dp.iter().map(|d| d * d).collect();
    let mean_ref = mean_est(&ref_nll);
    let ln_ratio = mean_est(&diff);
    let ms = mean_est(&dp2);
    let rms = ms.value.sqrt();
    let mut sorted = kl.clone();
    sorted.sort_by(f64::total_cmp);
    let mut order: Vec<usize> = (0..kl.len()).collect();
    order.sort_by(|&a, &b| kl[b].total_cmp(&kl[a]).then(a.cmp(&b)));
    let per = scored_per_chunk(ctx);
    let worst = order
        .iter()
        .take(worst)
        .map(|&i| Worst {
            token_index: (i / per) * ctx + first_scored(ctx) + i % per,
            chunk: i / per,
            kl: kl[i],
            target: positions[i].target,
            ours: positions[i].argmax,
            reference: positions[i].ref_argmax.unwrap_or(0),
        })
        .collect();
    let checked: Vec<f64> = positions
        .iter()
        .filter_map(|p| Some((p.kl_full? - p.kl?).abs()))
        .collect();
    Ok((
        ppl,
        Some(Comparison {
            file: file.to_string(),
            producer: reference.header.producer.clone(),
            model: reference.header.model.clone(),
            kv: reference.header.kv.clone(),
            top_k: reference.header.top_k,
            ref_ppl: Est {
                value: mean_ref.value.exp(),
                unc: mean_ref.value.exp() * mean_ref.unc,
            },
            ppl_ratio: Est {
                value: ln_ratio.value.exp(),
                unc: ln_ratio.value.exp() * ln_ratio.unc,
            },
            kl_mean: mean_est(&kl),
            kl_median: quantile_est(&sorted, 0.5),
            kl_p99: quantile_est(&sorted, 0.99),
            kl_max: sorted[sorted.len() - 1],
            top1_pct: mean_est(&agree),
            dp_mean_pct: mean_est(&dp),
            dp_rms_pct: Est {
                value: rms,
                unc: if rms > 0.0 { ms.unc / (2.0 * rms) } else { 0.0 },
            },
            worst,
            top_k_check: (!checked.is_empty()).then(|| TopKCheck {
                positions: checked.len(),
                max_abs_diff: checked.iter().copied().fold(0.0, f64::max),
                mean_abs_diff: checked.iter().sum::<f64>() / checked.len() as f64,
            }),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(l: &[f64]) -> Vec<f64> {
        let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + l.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        l.iter().map(|x| x - lse).collect()
    }

    fn full_kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(a, b)| a.exp() * (a - b)).sum()
    }

    #[test]
    fn top_k_kl_bounds_the_full_kl_and_meets_it_when_k_covers_the_vocabulary() {
        let p = log_softmax(&(0..100).map(|i| -(i as f64) * 0.15).collect::<Vec<_>>());
        let q = log_softmax(
            &(0..100)
                .map(|i| -(i as f64) * 0.15 + ((i * 37 % 11) as f64 - 5.0) * 0.05)
                .collect::<Vec<_>>(),
        );
        let full = full_kl(&p, &q);
        let top =
            |k: usize| -> Vec<(u32, f32)> { (0..k).map(|i| (i as u32, p[i] as f32)).collect() };
        let (lq, lp) = (|i: u32| q[i as usize], |i: u32| p[i as usize]);
        assert!((top_k_kl(&top(100), &lq) - full).abs() < 1e-6);
        let k10 = top_k_kl(&top(10), &lq);
        assert!(k10 <= full + 1e-9 && k10 > 0.0, "{k10} vs {full}");
        assert!(
            top_k_kl(&top(10), &lp) < 1e-6,
            "a distribution against itself"
        );
    }

    #[test]
    fn summary_figures() {
        let positions: Vec<Position> = (0..200)
            .map(|i| Position {
                target: 7,
                nll: 1.0 + (i % 4) as f64 * 0.1,
                argmax: (i % 10) as u32,
                kl: Some(i as f64 * 1e-4),
                kl_full: (i < 20).then_some(i as f64 * 1e-4 + 1e-6),
                ref_nll: Some(1.0 + (i % 4) as f64 * 0.1 - 0.01),
                ref_argmax: Some(if i % 20 == 0 { 99 } else { (i % 10) as u32 }),
            })
            .collect();
        let reference = LogitsFile {
            header: logits_file::Header {
                producer: "p".into(),
                model: "m".into(),
                shape: logits_file::ModelShape {
                    vocab: 100,
                    layers: 1,
                    hidden: 4,
                },
                kv: "f16".into(),
                text: "default".into(),
                text_sha256: String::new(),
                ctx: 8,
                top_k: 1,
                n_tokens: 0,
                positions: 0,
                full_rows: 0,
            },
            tokens: vec![],
            records: vec![],
            full: vec![],
        };
        let (ppl, c) = summarize(&positions, 8, Some((&reference, "r")), 3).unwrap();
        assert!((ppl.value - (1.15f64).exp()).abs() < 1e-9);
        let c = c.unwrap();
        assert!((c.ppl_ratio.value - 0.01f64.exp()).abs() < 1e-9);
        assert!((c.top1_pct.value - 95.0).abs() < 1e-9);
        assert!((c.kl_max - 0.0199).abs() < 1e-12);
        assert!((c.kl_mean.value - 0.00995).abs() < 1e-9);
        assert!(c.dp_mean_pct.value < 0.0, "ours gives the target less");
        // Scored position 199 is chunk 199 / 3 = 66, offset 4 + 199 % 3 = 5.
        assert_eq!((c.worst[0].chunk, c.worst[0].token_index), (66, 66 * 8 + 5));
        assert_eq!(c.worst.len(), 3);
        let check = c.top_k_check.unwrap();
        assert_eq!(check.positions, 20);
        assert!((check.max_abs_diff - 1e-6).abs() < 1e-12);
        assert!(summarize(&[], 8, None, 3).is_err());
        let (_, none) = summarize(&positions, 8, None, 3).unwrap();
        assert!(none.is_none());
    }
}
