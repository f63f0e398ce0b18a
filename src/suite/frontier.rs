//! The fit frontier (`gemma-fit frontier`): for each model × format × KV dtype, the largest
//! context that runs on the device or under a memory limit — or, with a batch search, the most
//! sequences of a given context that run together — by bisection that starts at the
//! estimator's prediction. Every probe is a case like any other, run by the same executor with
//! the KV cache filled synthetically, and recorded in the results file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::device::DeviceSpec;
use crate::engine::kv_cache::KvPair;
use crate::engine::load::format::Format;
use crate::engine::load::spec::ModelSpec;
use crate::error::{Error, Result};
use crate::result::case::{CaseSpec, FillKv};
use crate::result::store;
use crate::result::{CaseResult, Outcome};
use crate::suite::child::Executor;

/// What to search: every (model, quant, KV dtype) for its largest context.
#[derive(Debug, Clone)]
pub struct FrontierOptions {
    pub models: Vec<String>,
    pub quants: Vec<Format>,
    pub kv_dtypes: Vec<KvPair>,
    pub device: DeviceSpec,
    pub memory_limit: Option<u64>,
    pub min_ctx: usize,
    /// None: the model's maximum (its preset's, else 131,072).
    pub max_ctx: Option<usize>,
    /// The search stops when the bracket is this narrow.
    pub step: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub timeout: Duration,
    pub out: Option<PathBuf>,
    pub threads: usize,
    pub progress: bool,
    /// Search the batch instead of the context: the most sequences of this many positions each
    /// that run together (1 ..= `max_batch`).
    pub batch_search: Option<usize>,
    pub max_batch: usize,
}

/// The measured frontier of one (model, quant, KV dtype).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierRow {
    pub model: String,
    pub quant: Option<Format>,
    pub kv_dtype: KvPair,
    pub memory_limit_bytes: Option<u64>,
    /// The largest context that ran (None: not even `min_ctx`).
    pub largest_ok_ctx: Option<usize>,
    /// Peak memory of that case: resident memory on the CPU, the process's device memory (NVML,
    /// less any ballast) on a GPU.
    #[serde(alias = "largest_ok_peak_rss_bytes")]
    pub largest_ok_peak_bytes: Option<u64>,
    /// The smallest context that did not (None: `max_ctx` ran).
    pub smallest_failing_ctx: Option<usize>,
    /// How it failed.
    pub failure: Option<Outcome>,
    /// The estimator's largest context for this memory (`gemma-fit fit`'s prediction at 100%),
    /// where it predicts the case; the search starts there.
    #[serde(default)]
    pub predicted_ctx: Option<usize>,
    /// A batch search: the context of each sequence (the context fields are then None and the
    /// batch fields hold the frontier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_ctx: Option<usize>,
    /// The most sequences that ran together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_ok_batch: Option<usize>,
    /// The fewest that did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallest_failing_batch: Option<usize>,
    /// The estimator's most sequences for this memory (at 100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_batch: Option<usize>,
    pub probes: usize,
}

/// The longest context a model spec allows (a file's own limit is not read: 131,072).
fn model_max_ctx(model: &str) -> usize {
    match model.parse::<ModelSpec>() {
        Ok(ModelSpec::Synthetic(s)) => {
            crate::engine::presets::find(&s).map_or(131_072, |p| p.config.max_position_embeddings)
        }
        Ok(ModelSpec::Default) => 32_768,
        _ => 131_072,
    }
}

/// Bisection for the largest value in `lo..=hi` for which `runs` holds, assuming it holds up to
/// some point and not after. With a `guess` (the estimator's frontier), the guess and its
/// neighbour one `step` away are tried first, so a right guess is confirmed in two probes;
/// otherwise the unknown ends, then halving the bracket on multiples of `step` until it is at
/// most `step` wide. Returns (largest that ran, smallest that did not, probes).
pub fn bisect(
    lo: usize,
    hi: usize,
    step: usize,
    guess: Option<usize>,
    mut runs: impl FnMut(usize) -> Result<bool>,
) -> Result<(Option<usize>, Option<usize>, usize)> {
    let step = step.max(1);
    let hi = hi.max(lo);
    let mut probes = 0;
    let mut probe = |c: usize| {
        probes += 1;
        runs(c)
    };
    // The largest value known to run and the smallest known not to.
    let (mut ok, mut fail): (Option<usize>, Option<usize>) = (None, None);
    if let Some(g) = guess.map(|g| g.clamp(lo, hi)) {
        if probe(g)? {
            ok = Some(g);
            let next = (g + step).min(hi);
            if next > g {
                *(if probe(next)? { &mut ok } else { &mut fail }) = Some(next);
            }
        } else {
            fail = Some(g);
            let prev = g.saturating_sub(step).max(lo);
            if prev < g {
                *(if probe(prev)? { &mut ok } else { &mut fail }) = Some(prev);
            }
        }
    }
    let mut ok = match ok {
        Some(ok) => ok,
        None if fail == Some(lo) => return Ok((None, Some(lo), probes)),
        None if probe(lo)? => lo,
        None => return Ok((None, Some(lo), probes)),
    };
    let mut fail = match fail {
        Some(f) => f,
        None if ok == hi || probe(hi)? => return Ok((Some(hi), None, probes)),
        None => hi,
    };
    while fail - ok > step {
        let mid = ((ok + (fail - ok) / 2) / step * step).clamp(ok + 1, fail - 1);
        if probe(mid)? {
            ok = mid;
        } else {
            fail = mid;
        }
    }
    Ok((Some(ok), Some(fail), probes))
}

/// The estimator's largest context for the probes of `base` (whose model, quant and KV dtype
/// it takes) in `capacity` bytes, for the cases it predicts (synthetic presets and the default
/// model); None otherwise.
fn predicted_frontier(base: &CaseSpec, capacity: u64) -> Option<usize> {
    let query = crate::estimate::Query::for_spec(base).ok()?;
    crate::estimate::fit::largest_ctx(&query, model_max_ctx(&base.model), |total| {
        total <= capacity
    })
    .ok()
    .flatten()
}

/// The estimator's most sequences of `base`'s context in `capacity` bytes, where it predicts
/// the case.
fn predicted_batch(base: &CaseSpec, capacity: u64) -> Option<usize> {
    let query = crate::estimate::Query::for_spec(base).ok()?;
    crate::estimate::fit::largest_batch(&query, |total| total <= capacity)
        .ok()
        .flatten()
}

/// What a search found.
#[derive(Debug)]
pub struct Frontier {
    /// One row per (model, quant, KV dtype) searched to the end.
    pub rows: Vec<FrontierRow>,
    /// The results file the probes went to.
    pub results: PathBuf,
    /// Combinations not searched (or not to the end) because the run was interrupted.
    pub not_searched: usize,
}

/// Finds, by bisection over the context size, the largest context each case runs at (on the
/// device, or under the memory limit); with `batch_search`, over the batch, the most sequences
/// of that context. An interrupted search keeps the rows it finished.
pub fn frontier(opts: &FrontierOptions, executor: &dyn Executor) -> Result<Frontier> {
    let results = opts
        .out
        .clone()
        .unwrap_or_else(|| crate::suite::runner::default_results_path(opts.device));
    store::create_parent(&results)?;
    let mut combos = Vec::new();
    for model in &opts.models {
        let quants: Vec<Option<Format>> =
            if opts.quants.is_empty() || !crate::suite::takes_quant(model) {
                vec![None]
            } else {
                opts.quants.iter().copied().map(Some).collect()
            };
        for quant in quants {
            for &kv_dtype in &opts.kv_dtypes {
                combos.push((model.clone(), quant, kv_dtype));
            }
        }
    }
    let bar = crate::output::progress::spinner(opts.progress);
    let floor = opts.prompt_tokens + opts.gen_tokens;
    // The memory the estimator's guess is for: the limit, or a whole GPU.
    let capacity = opts.memory_limit.or_else(|| {
        opts.device
            .gpu_index()
            .and_then(|n| crate::probe::nvml::total_memory_bytes(n).ok())
    });
    let mut rows = Vec::new();
    let total = combos.len();
    for (model, quant, kv_dtype) in combos {
        let base = CaseSpec {
            model: model.clone(),
            quant,
            seed: 0,
            device: opts.device,
            threads: opts.threads,
            prompt_tokens: opts.prompt_tokens,
            gen_tokens: opts.gen_tokens,
            ctx: None,
            prefill_chunk: 512,
            kv_dtype,
            image: None,
            fill_kv: FillKv::None,
            repeats: 1,
            warmup: 0,
            sample_ms: 10.0,
            memory_limit_bytes: opts.memory_limit,
            batch: 1,
            engine: Default::default(),
        };
        // A probe at x: the context, or in a batch search the number of sequences.
        let probe = |x: usize| -> Result<CaseResult> {
            let (ctx, batch) = match opts.batch_search {
                Some(ctx) => (ctx, x),
                None => (x, 1),
            };
            bar.set_message(format!(
                "{model} {} {kv_dtype}: ctx {ctx}{}",
                quant.map_or(String::new(), |q| q.to_string()),
                if opts.batch_search.is_some() {
                    format!(" × {batch} sequences")
                } else {
                    String::new()
                }
            ));
            bar.tick();
            let spec = CaseSpec {
                ctx: Some(ctx),
                fill_kv: if ctx > floor {
                    FillKv::Synthetic
                } else {
                    FillKv::None
                },
                batch,
                ..base.clone()
            };
            let record = executor
                .run(&spec, opts.timeout)?
                .ok_or(Error::Interrupted)?;
            store::append(&results, &record)?;
            Ok(record)
        };
        let (lo, hi, step, guess) = match opts.batch_search {
            Some(ctx) => {
                let at = CaseSpec {
                    ctx: Some(ctx),
                    ..base.clone()
                };
                let guess = capacity.and_then(|cap| predicted_batch(&at, cap));
                (1, opts.max_batch.max(1), 1, guess)
            }
            None => {
                let lo_ctx = opts.min_ctx.max(floor);
                let hi_ctx = opts
                    .max_ctx
                    .unwrap_or_else(|| model_max_ctx(&model))
                    .max(lo_ctx);
                let guess = capacity.and_then(|cap| predicted_frontier(&base, cap));
                (lo_ctx, hi_ctx, opts.step, guess)
            }
        };
        let mut details = BTreeMap::new();
        let searched = bisect(lo, hi, step, guess, |x| {
            let r = probe(x)?;
            let ok = r.outcome.is_ok();
            details.insert(x, r);
            Ok(ok)
        });
        let (ok, failing, probes) = match searched {
            Err(Error::Interrupted) => break,
            other => other?,
        };
        let by_batch = opts.batch_search.is_some();
        let ctx_axis = |v: Option<usize>| if by_batch { None } else { v };
        let batch_axis = |v: Option<usize>| if by_batch { v } else { None };
        rows.push(FrontierRow {
            predicted_ctx: ctx_axis(guess),
            model: model.clone(),
            quant,
            kv_dtype,
            memory_limit_bytes: opts.memory_limit,
            largest_ok_ctx: ctx_axis(ok),
            largest_ok_peak_bytes: ok
                .and_then(|c| details.get(&c))
                .and_then(CaseResult::peak_bytes),
            smallest_failing_ctx: ctx_axis(failing),
            failure: failing
                .and_then(|c| details.get(&c))
                .map(|r| r.outcome.clone()),
            batch_ctx: opts.batch_search,
            largest_ok_batch: batch_axis(ok),
            smallest_failing_batch: batch_axis(failing),
            predicted_batch: batch_axis(guess),
            probes,
        });
    }
    bar.finish_and_clear();
    Ok(Frontier {
        not_searched: total - rows.len(),
        rows,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::child::tests::Scripted;

    #[test]
    fn bisection_finds_the_frontier_to_within_a_step() {
        // Without a guess, and with guesses right, near, far off, and out of range.
        for frontier in [300, 1000, 5000, 32_000, 32_768] {
            for guess in [
                None,
                Some(frontier),
                Some(frontier + 100),
                Some(frontier / 3),
                Some(1),
                Some(99_999),
            ] {
                let mut seen = Vec::new();
                let (ok, fail, probes) = bisect(256, 32_768, 256, guess, |c| {
                    seen.push(c);
                    Ok(c <= frontier)
                })
                .unwrap();
                assert_eq!(probes, seen.len());
                let mut unique = seen.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    seen.len(),
                    "{frontier} {guess:?}: probed twice {seen:?}"
                );
                let ok = ok.unwrap();
                assert!(ok <= frontier, "{frontier} {guess:?}: {ok}");
                match fail {
                    Some(f) => assert!(
                        f > frontier && f - ok <= 256,
                        "{frontier} {guess:?}: {ok}..{f}"
                    ),
                    None => assert_eq!(ok, 32_768),
                }
                assert!(probes <= 12, "{frontier} {guess:?}: {probes} probes");
                if guess == Some(frontier) {
                    assert!(
                        probes <= 2,
                        "{frontier}: a right guess took {probes} probes"
                    );
                }
            }
        }
        for guess in [None, Some(256), Some(600)] {
            assert_eq!(
                bisect(256, 1024, 256, guess, |_| Ok(false)).unwrap().0,
                None
            );
            let (ok, fail, _) = bisect(256, 1024, 256, guess, |_| Ok(true)).unwrap();
            assert_eq!((ok, fail), (Some(1024), None));
        }
        assert_eq!(
            bisect(256, 1024, 256, None, |_| Ok(false)).unwrap(),
            (None, Some(256), 1)
        );
    }

    /// A search through the executor: every probe is recorded, filled past the prompt, and
    /// the row holds the frontier and how the first failing context failed.
    #[test]
    fn a_search_records_its_probes_and_finds_the_frontier() {
        let dir = tempfile::tempdir().unwrap();
        let fits = Scripted::new(|s| {
            Some(if s.ctx.unwrap() <= 5000 {
                Outcome::Ok
            } else {
                Outcome::Oom {
                    message: "over".into(),
                }
            })
        });
        let opts = FrontierOptions {
            models: vec!["synthetic:270m".into(), "default".into()],
            quants: vec!["q8_0".parse().unwrap()],
            kv_dtypes: vec![KvPair::both(crate::engine::kv_cache::KvDtype::F32)],
            device: DeviceSpec::Cpu,
            memory_limit: None,
            min_ctx: 256,
            max_ctx: Some(32_768),
            step: 256,
            prompt_tokens: 64,
            gen_tokens: 4,
            timeout: Duration::from_secs(1),
            out: Some(dir.path().join("f.jsonl")),
            threads: 2,
            progress: false,
            batch_search: None,
            max_batch: 256,
        };
        let Frontier {
            rows,
            results,
            not_searched,
        } = frontier(&opts, &fits).unwrap();
        assert_eq!(not_searched, 0);
        assert_eq!(rows.len(), 2);
        for r in &rows {
            let (ok, fail) = (r.largest_ok_ctx.unwrap(), r.smallest_failing_ctx.unwrap());
            assert!(ok <= 5000 && fail > 5000 && fail - ok <= 256, "{r:?}");
            assert!(matches!(r.failure, Some(Outcome::Oom { .. })));
        }
        // The default model takes no --quant.
        assert_eq!((rows[0].quant.is_some(), rows[1].quant), (true, None));
        let seen = fits.seen.borrow();
        assert_eq!(store::read_records(&results).unwrap().0.len(), seen.len());
        assert!(seen
            .iter()
            .all(|s| (s.fill_kv == FillKv::Synthetic) == (s.ctx.unwrap() > 68)));
        // Interrupted in the second search: the first one's row is kept.
        let second_stops = Scripted::new(|s| (s.model == "synthetic:270m").then_some(Outcome::Ok));
        let cut = frontier(&opts, &second_stops).unwrap();
        assert_eq!((cut.rows.len(), cut.not_searched), (1, 1));
        assert_eq!(cut.rows[0].largest_ok_ctx, Some(32_768));

        // A batch search at 8K: the probes hold the context and vary the batch.
        let room = Scripted::new(|s| {
            Some(if s.batch <= 11 {
                Outcome::Ok
            } else {
                Outcome::Oom {
                    message: "over".into(),
                }
            })
        });
        let by_batch = FrontierOptions {
            batch_search: Some(8192),
            max_batch: 64,
            models: vec!["synthetic:270m".into()],
            memory_limit: Some(1 << 30),
            ..opts.clone()
        };
        let found = frontier(&by_batch, &room).unwrap();
        let r = &found.rows[0];
        assert_eq!(
            (r.largest_ok_batch, r.smallest_failing_batch),
            (Some(11), Some(12))
        );
        assert_eq!((r.largest_ok_ctx, r.batch_ctx), (None, Some(8192)));
        assert!(r.predicted_batch.is_some_and(|b| b > 1), "{r:?}");
        let seen = room.seen.borrow();
        assert!(seen
            .iter()
            .all(|s| s.ctx == Some(8192) && s.fill_kv == FillKv::Synthetic));
        assert_eq!(seen.len(), r.probes);
    }
}
