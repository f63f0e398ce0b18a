//! The project's own fuzz run: structure-aware mutations of a model (`mutate.rs`), each given to
//! `gemma-fit check` (the header-only path) or `gemma-fit run` (a whole load and a few tokens)
//! in a child process under an address-space limit and a timeout (`child.rs`); or of a logits
//! file, each given to `gemma-fit quality --against` with the model that made it. Each worker
//! mutates its own copy of the target in place (on a RAM-backed folder when there is one) and
//! restores it after the case, so a 250 MB model costs no copy per case.
//!
//! Outcomes: accepted, a clean error (exit 1 or 2, for `quality` 2 only, and one short `error:`
//! line), and the failures: a panic, a signal, a hang (killed at the timeout), over the memory
//! bound (an allocation refused under the limit, or a peak resident memory above
//! `memory_factor` times the clean run's), and a bad message (more than one error line, longer
//! than [`MESSAGE_MAX`] characters, control characters in it, or for `quality` exit status 1).

pub mod child;
pub mod mutate;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::output::table::Table;

use self::mutate::{Edit, Mutation, Target};

/// The longest error line that counts as clean.
pub const MESSAGE_MAX: usize = 400;

/// Which command a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    Check,
    Run,
    /// `gemma-fit quality --model M --against <the mutated logits file>` (a logits target).
    Quality,
    /// `gemma-fit fit --engine all -m <the mutated model>` (its headers alone).
    Fit,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Via::Check => "check",
            Via::Run => "run",
            Via::Quality => "quality",
            Via::Fit => "fit",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Accepted,
    CleanError,
    Panic,
    Signal,
    Hang,
    OverMemory,
    BadMessage,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::CleanError,
        Outcome::Panic,
        Outcome::Signal,
        Outcome::Hang,
        Outcome::OverMemory,
        Outcome::BadMessage,
    ];

    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Accepted | Outcome::CleanError)
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::CleanError => "clean error",
            Outcome::Panic => "panic",
            Outcome::Signal => "signal",
            Outcome::Hang => "hang",
            Outcome::OverMemory => "over memory",
            Outcome::BadMessage => "bad message",
        }
    }
}

pub struct Config {
    /// The gemma-fit binary the cases run.
    pub bin: PathBuf,
    /// A GGUF file, a folder with config.json and a *.safetensors file, or a logits file
    /// (`quality --save-logits`; then `with_model` is needed).
    pub target: PathBuf,
    /// For a logits target: the model that made it (`quality --model`).
    pub with_model: Option<PathBuf>,
    /// For a logits target made from a `--text FILE`: that text (`quality --text`).
    pub with_text: Option<PathBuf>,
    pub cases: u64,
    pub seed: u64,
    pub workers: usize,
    /// The share of cases run through `run` (the rest half through `check`, half through `fit`,
    /// which reads the headers alone; a logits target's all go through `quality`).
    pub run_share: f64,
    /// Where the workers' copies go (a RAM-backed folder is best).
    pub work_dir: PathBuf,
    /// A case over this many times the clean run's peak resident memory is a failure.
    pub memory_factor: f64,
    /// Only this case (to reproduce a failure); its mutated copy is kept.
    pub only: Option<u64>,
}

/// A failed case (or, with `only`, the one case), with what reproduces it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub case: u64,
    pub path: Via,
    pub outcome: Outcome,
    pub mutation: String,
    pub detail: String,
}

/// The clean run of a path: the unmutated model's peak memory and time.
#[derive(Debug, Clone, Copy)]
pub struct Clean {
    pub path: Via,
    pub max_rss_bytes: u64,
    pub wall: Duration,
}

pub struct Report {
    pub cases: u64,
    pub counts: BTreeMap<(Via, Outcome), u64>,
    pub failures: Vec<Failure>,
    pub clean: Vec<Clean>,
    pub wall: Duration,
    /// The largest peak resident memory of any case, against its path's clean run.
    pub worst_memory_ratio: f64,
    /// With `only`: the kept mutated copy, and the case's outcome whatever it was.
    pub kept: Option<PathBuf>,
    pub only: Option<Failure>,
}

impl Report {
    pub fn failed(&self) -> u64 {
        self.failures.len() as u64
    }

    /// Counts per path and outcome, as a table (a row for each path the target runs).
    pub fn table(&self) -> Table {
        let mut t = Table::new(
            std::iter::once("path".to_string())
                .chain(Outcome::ALL.iter().map(|o| o.name().to_string())),
        );
        for path in self.clean.iter().map(|c| c.path) {
            t.row(
                std::iter::once(path.to_string()).chain(Outcome::ALL.iter().map(|o| {
                    self.counts
                        .get(&(path, *o))
                        .copied()
                        .unwrap_or(0)
                        .to_string()
                })),
            );
        }
        t
    }
}

/// The paths a target's cases run.
fn paths(target: &Target) -> &'static [Via] {
    if target.is_logits() {
        &[Via::Quality]
    } else {
        &[Via::Check, Via::Run, Via::Fit]
    }
}

/// The command line of a case on `copy` (the model, or for `quality` the logits file).
fn args(cfg: &Config, path: Via, copy: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = match path {
        Via::Check => vec!["check".into()],
        Via::Run => [
            "run",
            "--prompt-tokens",
            "8",
            "--gen",
            "2",
            "--threads",
            "1",
        ]
        .map(OsString::from)
        .to_vec(),
        Via::Fit => ["fit", "--engine", "all", "--ctx", "64", "--memory", "1GiB"]
            .map(OsString::from)
            .to_vec(),
        Via::Quality => {
            let mut a: Vec<OsString> = ["quality", "--threads", "1", "--against"]
                .map(OsString::from)
                .to_vec();
            a.push(copy.into());
            if let Some(text) = &cfg.with_text {
                a.push("--text".into());
                a.push(text.into());
            }
            a.push("--model".into());
            a.push(cfg.with_model.clone().unwrap_or_default().into());
            return a;
        }
    };
    a.push("--model".into());
    a.push(copy.into());
    a
}

/// A worker's copy of the target.
struct WorkCopy {
    dir: PathBuf,
    /// The path the cases name (the file, or the folder).
    model: PathBuf,
}

fn make_copy(target: &Target, work_dir: &Path, worker: usize) -> Result<WorkCopy> {
    let dir = work_dir.join(format!("gemma-fit-fuzz-{}-{worker}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for f in &target.files {
        let from = if target.is_dir {
            target.root.join(f)
        } else {
            target.root.clone()
        };
        std::fs::copy(&from, dir.join(f)).map_err(|e| Error::io(&from, e))?;
    }
    let model = if target.is_dir {
        dir.clone()
    } else {
        dir.join(&target.files[0])
    };
    Ok(WorkCopy { dir, model })
}

fn original(target: &Target, file: usize) -> PathBuf {
    if target.is_dir {
        target.root.join(&target.files[file])
    } else {
        target.root.clone()
    }
}

/// Copies `from[start..]` to `to` at `at`, and sets `to`'s length to where that ends.
fn copy_tail(from: &Path, start: u64, to: &mut std::fs::File, at: u64) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let len = src.metadata()?.len();
    to.seek(SeekFrom::Start(at))?;
    if start < len {
        src.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut src, to)?;
    }
    to.set_len(at + len.saturating_sub(start))
}

fn apply(target: &Target, copy: &WorkCopy, m: &Mutation) -> std::io::Result<()> {
    let path = copy.dir.join(&target.files[m.file]);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
    match &m.edit {
        Edit::Bytes { offset, bytes } => {
            // An edit past the end would grow the file: keep it inside.
            let len = f.metadata()?.len();
            if *offset < len {
                let n = bytes.len().min((len - offset) as usize);
                f.seek(SeekFrom::Start(*offset))?;
                f.write_all(&bytes[..n])?;
            }
        }
        Edit::Truncate(len) => f.set_len(*len)?,
        Edit::Splice { head, rest_from } => {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(head)?;
            copy_tail(
                &original(target, m.file),
                *rest_from,
                &mut f,
                head.len() as u64,
            )?;
        }
    }
    f.sync_data().or(Ok(()))
}

fn restore(target: &Target, copy: &WorkCopy, m: &Mutation) -> std::io::Result<()> {
    let path = copy.dir.join(&target.files[m.file]);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
    let src = original(target, m.file);
    match &m.edit {
        Edit::Bytes { offset, bytes } => {
            let mut old = vec![0u8; bytes.len()];
            let mut o = std::fs::File::open(&src)?;
            let len = o.metadata()?.len();
            if *offset < len {
                let n = bytes.len().min((len - offset) as usize);
                o.seek(SeekFrom::Start(*offset))?;
                o.read_exact(&mut old[..n])?;
                f.seek(SeekFrom::Start(*offset))?;
                f.write_all(&old[..n])?;
            }
        }
        Edit::Truncate(len) => copy_tail(&src, *len, &mut f, *len)?,
        Edit::Splice { .. } => copy_tail(&src, 0, &mut f, 0)?,
    }
    Ok(())
}

/// The case's random source: the same (seed, case) gives the same mutation and path.
fn case_rng(seed: u64, case: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ case.rotate_left(17))
}

fn judge(exit: &child::Exit, clean: &Clean, factor: f64) -> (Outcome, String) {
    let error_lines = exit
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>();
    let tail: String = exit
        .stderr
        .lines()
        .last()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    if exit.timed_out {
        return (
            Outcome::Hang,
            format!("killed after {:.1} s", exit.wall.as_secs_f64()),
        );
    }
    if exit.stderr.contains("memory allocation of") {
        return (Outcome::OverMemory, tail);
    }
    if let Some(sig) = exit.signal {
        return (Outcome::Signal, format!("signal {sig}: {tail}"));
    }
    if exit.code == Some(101) || exit.stderr.contains("panicked at") {
        let at = exit
            .stderr
            .lines()
            .find(|l| l.contains("panicked at"))
            .unwrap_or(&tail);
        let msg = exit
            .stderr
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .nth(1)
            .unwrap_or("");
        return (Outcome::Panic, format!("{at} {msg}"));
    }
    if let Some(peak) = exit
        .own_peak_bytes()
        .filter(|&p| p as f64 > factor * clean.max_rss_bytes as f64)
    {
        return (
            Outcome::OverMemory,
            format!(
                "peak RSS {:.1} MiB, the clean run's {:.1} MiB",
                crate::units::mib(peak),
                crate::units::mib(clean.max_rss_bytes)
            ),
        );
    }
    match exit.code {
        Some(0) => (Outcome::Accepted, String::new()),
        // `quality` exits 2 for bad input and 1 for a run that failed: a damaged reference is bad
        // input, so 1 there is a message that blames the wrong thing.
        Some(1) if clean.path == Via::Quality => (
            Outcome::BadMessage,
            format!(
                "exit code 1, not 2 (bad input): {}",
                crate::error::quote(&tail)
            ),
        ),
        Some(1 | 2) => {
            let bad = match error_lines.as_slice() {
                [one] if one.chars().count() > MESSAGE_MAX => {
                    Some(format!("{} characters", one.chars().count()))
                }
                [one] if one.chars().any(|c| c.is_control() || c == '\u{fffd}') => {
                    Some("control characters or raw bytes".into())
                }
                [_] => None,
                [] => Some("no error line".into()),
                more => Some(format!("{} error lines", more.len())),
            };
            match bad {
                None => (Outcome::CleanError, error_lines[0].to_string()),
                Some(why) => (
                    Outcome::BadMessage,
                    format!("{why}: {}", crate::error::quote(&tail)),
                ),
            }
        }
        Some(c) => (Outcome::BadMessage, format!("exit code {c}: {tail}")),
        None => (Outcome::Signal, tail),
    }
}

/// Address space a case may take: generous (the bound that matters is the resident memory),
/// but finite, so a runaway allocation fails fast instead of swapping the machine.
fn address_space(clean: &[Clean]) -> u64 {
    let rss = clean.iter().map(|c| c.max_rss_bytes).max().unwrap_or(0);
    (rss * 8).max(4 << 30)
}

fn timeout(clean: &Clean) -> Duration {
    (clean.wall * 20).max(Duration::from_secs(10))
}

/// Runs the fuzz cases; `progress` ticks once per case.
pub fn run(cfg: &Config, progress: &indicatif::ProgressBar, stop: &AtomicBool) -> Result<Report> {
    let start = Instant::now();
    let target = Target::open(&cfg.target)?;
    match (target.is_logits(), &cfg.with_model, &cfg.with_text) {
        (true, None, _) => {
            return Err(Error::BadInput(format!(
                "{} is a logits file, fuzzed through `gemma-fit quality --against`: give --with-model, the model that made it",
                cfg.target.display()
            )))
        }
        (false, Some(_), _) | (false, _, Some(_)) => {
            return Err(Error::BadInput(format!(
                "{} is a model, not a logits file: --with-model and --with-text are for a logits file",
                cfg.target.display()
            )))
        }
        _ => {}
    }
    let workers = cfg.workers.max(1);
    let copies: Vec<WorkCopy> = (0..workers)
        .map(|w| make_copy(&target, &cfg.work_dir, w))
        .collect::<Result<_>>()?;
    let result = run_cases(cfg, &target, &copies, progress, stop);
    if cfg.only.is_none() {
        for c in &copies {
            let _ = std::fs::remove_dir_all(&c.dir);
        }
    }
    let mut report = result?;
    report.wall = start.elapsed();
    Ok(report)
}

fn run_cases(
    cfg: &Config,
    target: &Target,
    copies: &[WorkCopy],
    progress: &indicatif::ProgressBar,
    stop: &AtomicBool,
) -> Result<Report> {
    // The clean runs: the unmutated target must pass each of its paths; their memory and time
    // set the bounds.
    let mut clean = Vec::new();
    for &path in paths(target) {
        let exit = child::run(
            &cfg.bin,
            &args(cfg, path, &copies[0].model),
            u64::MAX,
            Duration::from_secs(600),
        )
        .map_err(|e| Error::io(&cfg.bin, e))?;
        if exit.code != Some(0) {
            return Err(Error::BadInput(format!(
                "the unmutated {} fails `{path}`: {}",
                if target.is_logits() {
                    "logits file"
                } else {
                    "model"
                },
                crate::error::one_line(&exit.stderr)
            )));
        }
        clean.push(Clean {
            path,
            max_rss_bytes: exit.max_rss_bytes,
            wall: exit.wall,
        });
    }
    let space = address_space(&clean);
    let cases: Vec<u64> = match cfg.only {
        Some(n) => vec![n],
        None => (0..cfg.cases).collect(),
    };
    progress.set_length(cases.len() as u64);
    let state = Mutex::new((BTreeMap::new(), Vec::new(), 0f64));
    let io_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for (w, copy) in copies.iter().enumerate() {
            let (cases, clean, state, io_error) = (&cases, &clean, &state, &io_error);
            s.spawn(move || {
                for &case in cases.iter().skip(w).step_by(copies.len()) {
                    if stop.load(Ordering::Relaxed) || io_error.lock().unwrap().is_some() {
                        return;
                    }
                    let mut rng = case_rng(cfg.seed, case);
                    let path = if target.is_logits() {
                        Via::Quality
                    } else if rng.random_bool(cfg.run_share.clamp(0.0, 1.0)) {
                        Via::Run
                    } else if rng.random_bool(0.5) {
                        Via::Fit
                    } else {
                        Via::Check
                    };
                    let m = target.mutate(&mut rng);
                    let clean = clean
                        .iter()
                        .find(|c| c.path == path)
                        .expect("every path ran clean");
                    let done = apply(target, copy, &m)
                        .and_then(|_| {
                            child::run(
                                &cfg.bin,
                                &args(cfg, path, &copy.model),
                                space,
                                timeout(clean),
                            )
                        })
                        .and_then(|exit| {
                            if cfg.only.is_none() {
                                restore(target, copy, &m)?;
                            }
                            Ok(exit)
                        });
                    let exit = match done {
                        Ok(e) => e,
                        Err(e) => {
                            *io_error.lock().unwrap() = Some(Error::io(&copy.dir, e));
                            return;
                        }
                    };
                    let (outcome, detail) = judge(&exit, clean, cfg.memory_factor);
                    let mut st = state.lock().unwrap();
                    *st.0.entry((path, outcome)).or_insert(0u64) += 1;
                    // A reading that is the parent's says only that the case took no more
                    // than that: at most the clean run's.
                    let peak = exit
                        .own_peak_bytes()
                        .unwrap_or(exit.max_rss_bytes.min(clean.max_rss_bytes));
                    st.2 = f64::max(st.2, peak as f64 / clean.max_rss_bytes.max(1) as f64);
                    if outcome.is_failure() || cfg.only.is_some() {
                        st.1.push(Failure {
                            case,
                            path,
                            outcome,
                            mutation: m.what.clone(),
                            detail,
                        });
                    }
                    drop(st);
                    progress.inc(1);
                }
            });
        }
    });
    if let Some(e) = io_error.into_inner().unwrap() {
        return Err(e);
    }
    let (counts, mut failures, worst) = state.into_inner().unwrap();
    failures.sort_by_key(|f| f.case);
    let kept = cfg.only.map(|_| copies[0].model.clone());
    let done: u64 = counts.values().sum();
    let only = cfg.only.and_then(|_| failures.first().cloned());
    failures.retain(|f| f.outcome.is_failure());
    Ok(Report {
        cases: done,
        counts,
        failures,
        clean,
        wall: Duration::ZERO,
        worst_memory_ratio: worst,
        kept,
        only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>, stderr: &str) -> child::Exit {
        child::Exit {
            code,
            signal,
            stderr: stderr.into(),
            max_rss_bytes: 10 << 20,
            inherited_rss_bytes: 4 << 20,
            wall: Duration::from_millis(10),
            timed_out: false,
        }
    }

    fn judged_on(path: Via, e: &child::Exit) -> Outcome {
        let clean = Clean {
            path,
            max_rss_bytes: 8 << 20,
            wall: Duration::from_millis(10),
        };
        judge(e, &clean, 2.0).0
    }

    fn judged(e: &child::Exit) -> Outcome {
        judged_on(Via::Check, e)
    }

    /// `quality` says bad input with exit status 2: a damaged logits file that exits 1 blames
    /// the run instead.
    #[test]
    fn quality_errors_are_clean_only_with_exit_status_2() {
        let msg = "error: x.logits: logits file is damaged or truncated: token 3 (make it again)\n";
        let on = |code| judged_on(Via::Quality, &exit(Some(code), None, msg));
        assert_eq!(on(2), Outcome::CleanError);
        assert_eq!(on(1), Outcome::BadMessage);
        assert_eq!(on(0), Outcome::Accepted);
        assert_eq!(judged(&exit(Some(1), None, msg)), Outcome::CleanError);
    }

    #[test]
    fn each_way_a_case_can_end_is_judged() {
        assert_eq!(judged(&exit(Some(0), None, "")), Outcome::Accepted);
        assert_eq!(
            judged(&exit(Some(1), None, "note: x\nerror: m.gguf: bad header\n")),
            Outcome::CleanError
        );
        let panic = "\nthread 'main' panicked at src/x.rs:1:2:\nindex out of bounds\n";
        assert_eq!(judged(&exit(Some(101), None, panic)), Outcome::Panic);
        assert_eq!(judged(&exit(None, Some(11), "")), Outcome::Signal);
        let refused = "memory allocation of 1099511627776 bytes failed\n";
        assert_eq!(judged(&exit(None, Some(6), refused)), Outcome::OverMemory);
        let mut big = exit(Some(0), None, "");
        big.max_rss_bytes = 17 << 20;
        assert_eq!(judged(&big), Outcome::OverMemory);
        // A reading no more than the parent's resident memory at the fork is the parent's.
        let mut inherited = exit(Some(0), None, "");
        inherited.max_rss_bytes = 200 << 20;
        inherited.inherited_rss_bytes = 199 << 20;
        assert_eq!(judged(&inherited), Outcome::Accepted);
        inherited.max_rss_bytes = 300 << 20;
        assert_eq!(judged(&inherited), Outcome::OverMemory);
        let mut hung = exit(None, Some(9), "");
        hung.timed_out = true;
        assert_eq!(judged(&hung), Outcome::Hang);
    }

    #[test]
    fn an_error_is_clean_only_when_short_printable_and_alone() {
        let long = format!("error: {}\n", "x".repeat(MESSAGE_MAX));
        assert_eq!(judged(&exit(Some(1), None, &long)), Outcome::BadMessage);
        let raw = "error: tensor 'a\u{1}\u{fffd}' is bad\n";
        assert_eq!(judged(&exit(Some(1), None, raw)), Outcome::BadMessage);
        let two = "error: one\nerror: two\n";
        assert_eq!(judged(&exit(Some(1), None, two)), Outcome::BadMessage);
        assert_eq!(
            judged(&exit(Some(1), None, "failed\n")),
            Outcome::BadMessage
        );
        assert_eq!(
            judged(&exit(Some(3), None, "error: x\n")),
            Outcome::BadMessage
        );
    }

    /// Every mutation is undone exactly: after apply and restore the copy equals the original,
    /// byte for byte (or the fuzz would go on mutating a damaged model).
    #[test]
    fn restore_undoes_every_mutation() {
        use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::arange(0f32, 256., &Device::Cpu)
            .unwrap()
            .reshape((4, 64))
            .unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let n = QTensor::quantize(&t.flatten_all().unwrap(), GgmlDType::F32).unwrap();
        let gguf = dir.path().join("m.gguf");
        let v = gguf_file::Value::String("gemma3".into());
        let mut f = std::fs::File::create(&gguf).unwrap();
        gguf_file::write(
            &mut f,
            &[("general.architecture", &v)],
            &[("a", &q), ("b", &n)],
        )
        .unwrap();
        let folder = dir.path().join("hf");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(
            folder.join("config.json"),
            r#"{"hidden_size": 64, "x": [1, 2]}"#,
        )
        .unwrap();
        let map =
            std::collections::HashMap::from([("w".to_string(), t.clone()), ("v".to_string(), t)]);
        candle_core::safetensors::save(&map, folder.join("model.safetensors")).unwrap();
        let logits = dir.path().join("ref.logits");
        crate::quality::logits_file::sample()
            .write(&logits)
            .unwrap();
        let work = tempfile::tempdir().unwrap();
        for root in [gguf, folder, logits] {
            let target = Target::open(&root).unwrap();
            let copy = make_copy(&target, work.path(), 0).unwrap();
            let read = |p: &Path| std::fs::read(p).unwrap();
            let mut changed = 0;
            for case in 0..300 {
                let m = target.mutate(&mut case_rng(5, case));
                let path = copy.dir.join(&target.files[m.file]);
                apply(&target, &copy, &m).unwrap();
                changed += usize::from(read(&path) != read(&original(&target, m.file)));
                restore(&target, &copy, &m).unwrap();
                assert!(
                    read(&path) == read(&original(&target, m.file)),
                    "{}",
                    m.what
                );
            }
            assert!(changed > 250, "{changed} of 300 mutations changed the file");
        }
    }
}
