//! The suite runner (`gemma-fit bench`): every case through an [`Executor`] (a child process
//! each, `child.rs`), each record appended to a JSON-lines file as the case ends (flushed and
//! synced); `--resume` skips cases already recorded; `--shard i/n` takes a deterministic share
//! of the matrix; an interrupted run keeps what is recorded.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::device::DeviceSpec;
use crate::error::Result;
use crate::result::store;
use crate::result::{CaseResult, Outcome};
use crate::suite::child::Executor;
use crate::suite::{Shard, Suite};
use crate::units::mib;

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub suite: Suite,
    /// Where results go; default `results/<machine>/results.jsonl`.
    pub out: Option<PathBuf>,
    pub resume: bool,
    pub shard: Option<Shard>,
    /// Overrides the suite's `memory_limit`.
    pub memory_limit: Option<u64>,
    /// CPU threads per case.
    pub threads: usize,
    pub progress: bool,
}

/// Counts of outcomes, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub ok: usize,
    pub oom: usize,
    pub timeout: usize,
    pub error: usize,
    /// Already recorded (with `--resume`).
    pub skipped: usize,
    /// Not run because the run was interrupted.
    pub not_run: usize,
    pub results: PathBuf,
}

impl Summary {
    fn count(&mut self, o: &Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Oom { .. } => self.oom += 1,
            Outcome::Timeout { .. } => self.timeout += 1,
            Outcome::Error { .. } => self.error += 1,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} oom, {} timeout, {} error",
            self.ok, self.oom, self.timeout, self.error
        )?;
        if self.skipped > 0 {
            write!(f, ", {} already recorded", self.skipped)?;
        }
        if self.not_run > 0 {
            write!(f, ", {} not run (interrupted)", self.not_run)?;
        }
        write!(f, "; results in {}", self.results.display())
    }
}

/// Where the results of cases on `device` go by default: `results/<machine>/results.jsonl`,
/// the machine being the GPU's name or the CPU model.
pub fn default_results_path(device: DeviceSpec) -> PathBuf {
    store::default_results_path(&crate::measure::environment::machine_name(
        device.gpu_index(),
    ))
}

/// Before 2026-12-02 results went to `reports/<machine>/` by default: a `--resume` that finds
/// nothing in `results/<machine>/` but something there says where it is.
fn warn_of_the_old_folder(results: &std::path::Path) {
    if results.exists() || !results.starts_with(store::RESULTS_DIR) {
        return;
    }
    let old = std::path::Path::new("reports")
        .join(results.strip_prefix(store::RESULTS_DIR).unwrap_or(results));
    if old.is_file() {
        eprintln!(
            "note: {} does not exist yet; earlier versions wrote results to {}: pass --out {} to resume from it",
            results.display(),
            old.display(),
            old.display()
        );
    }
}

/// One line about a finished case.
pub fn brief(r: &CaseResult) -> String {
    match (&r.outcome, &r.metrics) {
        (Outcome::Ok, Some(m)) => format!(
            "ok, prefill {:.1} tok/s, decode {:.1} tok/s, peak RSS {:.0} MiB",
            m.prefill_tok_per_s.median,
            m.decode_tok_per_s.median,
            mib(m.peak_rss_bytes.unwrap_or(0))
        ),
        (o, _) => crate::output::outcome::line(o),
    }
}

/// Runs a suite; returns the summary (also when interrupted).
pub fn run(opts: &BenchOptions, executor: &dyn Executor) -> Result<Summary> {
    let suite = &opts.suite;
    // A shard writes a file of its own by default: shards on several machines append to one
    // shared file only through NFS, where appends from several clients are not atomic.
    let results = opts.out.clone().unwrap_or_else(|| {
        let all = default_results_path(suite.device);
        match opts.shard {
            Some(s) => all.with_file_name(format!("shard-{}-of-{}.jsonl", s.index, s.count)),
            None => all,
        }
    });
    store::create_parent(&results)?;
    let done = if opts.resume {
        warn_of_the_old_folder(&results);
        store::recorded_keys(&results)
    } else {
        HashSet::new()
    };
    let mut summary = Summary {
        results: results.clone(),
        ..Summary::default()
    };
    let mut todo = Vec::new();
    for (i, mut spec) in suite.cases(opts.threads).into_iter().enumerate() {
        if opts.shard.is_some_and(|s| !s.has(i)) {
            continue;
        }
        if opts.memory_limit.is_some() {
            spec.memory_limit_bytes = opts.memory_limit;
        }
        if done.contains(&spec.key().id()) {
            summary.skipped += 1;
        } else {
            todo.push(spec);
        }
    }
    let bar = crate::output::progress::cases(todo.len(), opts.progress);
    let timeout = Duration::from_secs_f64(suite.timeout_s);
    for (n, spec) in todo.iter().enumerate() {
        let id = spec.key().id();
        bar.set_message(id.clone());
        match executor.run(spec, timeout)? {
            Some(record) => {
                summary.count(&record.outcome);
                store::append(&results, &record)?;
                let line = format!("[{}/{}] {id}: {}", n + 1, todo.len(), brief(&record));
                if opts.progress {
                    if !record.outcome.is_ok() {
                        bar.println(line);
                    }
                } else {
                    // No terminal (CI logs, pipes): one line per case instead of a bar.
                    eprintln!("{line}");
                }
            }
            None => {
                summary.not_run = todo.len() - n;
                break;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::child::tests::Scripted;

    fn suite() -> Suite {
        Suite::parse(
            "name = 't'\nrepeats = 3\nmemory_limit = '1GiB'\n[axes]\nmodels = ['synthetic:270m']\nquants = ['q8_0']\n\
             contexts = [64]\nprompt_tokens = [8]\ngen_tokens = [1, 2, 3, 4]\n",
        )
        .unwrap()
    }

    fn options(dir: &std::path::Path) -> BenchOptions {
        BenchOptions {
            suite: suite(),
            out: Some(dir.join("r.jsonl")),
            resume: false,
            shard: None,
            memory_limit: None,
            threads: 3,
            progress: false,
        }
    }

    #[test]
    fn every_case_is_recorded_and_counted_and_resume_skips_them() {
        let dir = tempfile::tempdir().unwrap();
        let fates = Scripted::new(|s| {
            Some(match s.gen_tokens {
                1 => Outcome::Ok,
                2 => Outcome::Oom {
                    message: "x".into(),
                },
                3 => Outcome::Timeout { limit_s: 1.0 },
                _ => Outcome::Error {
                    message: "y".into(),
                },
            })
        });
        let s = run(&options(dir.path()), &fates).unwrap();
        assert_eq!((s.ok, s.oom, s.timeout, s.error), (1, 1, 1, 1));
        let seen = fates.seen.borrow();
        // The runner's settings reach every case.
        assert!(seen
            .iter()
            .all(|c| c.threads == 3 && c.repeats == 3 && c.memory_limit_bytes == Some(1 << 30)));
        let resumed = Scripted::new(|_| Some(Outcome::Ok));
        let again = run(
            &BenchOptions {
                resume: true,
                ..options(dir.path())
            },
            &resumed,
        )
        .unwrap();
        assert_eq!((again.skipped, again.ok), (4, 0));
        assert!(resumed.seen.borrow().is_empty());
    }

    #[test]
    fn an_interrupted_run_keeps_what_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let stop_at_third = Scripted::new(|s| (s.gen_tokens < 3).then_some(Outcome::Ok));
        let s = run(&options(dir.path()), &stop_at_third).unwrap();
        assert_eq!((s.ok, s.not_run), (2, 2));
        assert_eq!(store::recorded_keys(&s.results).len(), 2);
        assert!(s.to_string().contains("2 not run (interrupted)"));
    }

    #[test]
    fn shards_and_the_memory_limit_option() {
        let dir = tempfile::tempdir().unwrap();
        let all = Scripted::new(|_| Some(Outcome::Ok));
        run(
            &BenchOptions {
                shard: Some("2/2".parse().unwrap()),
                memory_limit: Some(512 << 20),
                ..options(dir.path())
            },
            &all,
        )
        .unwrap();
        let gens: Vec<usize> = all.seen.borrow().iter().map(|c| c.gen_tokens).collect();
        assert_eq!(gens, [2, 4]);
        assert!(all
            .seen
            .borrow()
            .iter()
            .all(|c| c.memory_limit_bytes == Some(512 << 20)));
    }
}
