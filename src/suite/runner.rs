//! The suite runner (`gemma-fit bench`): every case in a child process of this same binary
//! (`run … --out FILE`), so an out-of-memory, a crash or a hang costs one case and each case's
//! peak memory is its own. Results are appended to a JSON-lines file as each case ends (flushed
//! and synced); `--resume` skips cases already recorded; `--shard i/n` takes a deterministic
//! share of the matrix; Ctrl-C stops after killing the running case and keeps what is recorded.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::measure::{CaseRequest, DeviceSpec};
use crate::result::{CaseResult, Outcome};
use crate::suite::{Shard, Suite, SuiteCase};

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub suite: Suite,
    /// Where results go; default `reports/<machine>/results.jsonl`.
    pub out: Option<PathBuf>,
    pub resume: bool,
    pub shard: Option<Shard>,
    /// Overrides the suite's `memory_limit`.
    pub memory_limit: Option<u64>,
    pub threads: Option<usize>,
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

/// A lowercase slug of a machine's name: "AMD EPYC 7B13" → "amd-epyc-7b13".
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "unknown-machine".into()
    } else {
        out
    }
}

/// `reports/<slug>/results.jsonl`: the GPU's name for GPU suites, the CPU model's otherwise.
fn default_results_path(device: &str) -> PathBuf {
    let env = crate::measure::environment(match crate::measure::DeviceSpec::parse(device) {
        Ok(crate::measure::DeviceSpec::Cuda(n)) => Some(n as u32),
        _ => None,
    });
    let name = env.gpu.map(|g| g.name).unwrap_or(env.cpu_model);
    Path::new("reports").join(slug(&name)).join("results.jsonl")
}

/// The case keys already in a results file (lines that do not parse, such as one cut short by
/// a kill, are skipped).
pub fn recorded_keys(path: &Path) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<CaseResult>(l).ok())
        .map(|r| r.key.id())
        .collect()
}

/// Appends one record as a line, flushed and synced. A file whose last line was cut short gets
/// a newline first, so the new record starts on a line of its own.
fn append(path: &Path, record: &CaseResult) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut line = String::new();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(|e| Error::io(path, e))?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&serde_json::to_string(record).map_err(|e| Error::Unsupported(e.to_string()))?);
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|_| f.flush())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// The request for a suite case.
fn request(suite: &Suite, c: &SuiteCase, memory_limit: Option<u64>) -> CaseRequest {
    CaseRequest {
        repeats: suite.repeats.max(1),
        warmup: suite.warmup,
        ..request_on(&suite.device, c, memory_limit)
    }
}

/// The request for a case on `device`: one pass, no warm-up.
fn request_on(device: &str, c: &SuiteCase, memory_limit: Option<u64>) -> CaseRequest {
    CaseRequest {
        model: c.model.clone(),
        quant: c.quant.clone(),
        seed: 0,
        device: device.to_string(),
        prompt_tokens: c.prompt_tokens,
        gen_tokens: c.gen_tokens,
        ctx: Some(c.ctx),
        prefill_chunk: c.prefill_chunk,
        kv_dtype: c.kv_dtype.clone(),
        image: c.image.clone(),
        repeats: 1,
        warmup: 0,
        sample_interval: Duration::from_millis(10),
        memory_limit_bytes: memory_limit,
        fill_kv: c.fill_kv,
    }
}

/// The child's command line for a request.
fn child_args(req: &CaseRequest, out: &Path, threads: Option<usize>) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--model".into(),
        req.model.clone(),
        "--kv-dtype".into(),
        req.kv_dtype.clone(),
        "--prompt-tokens".into(),
        req.prompt_tokens.to_string(),
        "--gen".into(),
        req.gen_tokens.to_string(),
        "--prefill-chunk".into(),
        req.prefill_chunk.to_string(),
        "--repeats".into(),
        req.repeats.to_string(),
        "--warmup".into(),
        req.warmup.to_string(),
        "--device".into(),
        req.device.clone(),
        "--seed".into(),
        req.seed.to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    let mut opt = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            a.push(flag.into());
            a.push(v);
        }
    };
    opt("--quant", req.quant.clone());
    opt("--ctx", req.ctx.map(|c| c.to_string()));
    opt("--image", req.image.clone());
    opt("--threads", threads.map(|t| t.to_string()));
    opt(
        "--memory-limit-bytes",
        req.memory_limit_bytes.map(|b| b.to_string()),
    );
    opt("--fill-kv", req.fill_kv.then(|| "synthetic".to_string()));
    a
}

/// Why the runner stopped a child, if it did.
enum Stopped {
    Timeout(f64),
    Memory { rss: u64, limit: u64 },
    Interrupted,
}

/// Runs one case in a child process and returns its record (the child's own, or one made here
/// when the child left none). None when interrupted.
fn run_child(
    exe: &Path,
    req: &CaseRequest,
    timeout: Duration,
    threads: Option<usize>,
    stop: &AtomicBool,
) -> Result<Option<CaseResult>> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let out = dir.path().join("case.json");
    let stderr_path = dir.path().join("stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| Error::io(&stderr_path, e))?;
    let mut child = Command::new(exe)
        .args(child_args(req, &out, threads))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::io(exe, e))?;
    let start = Instant::now();
    let mut stopped = None;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io(exe, e))? {
            break status;
        }
        if stop.load(Ordering::SeqCst) {
            stopped = Some(Stopped::Interrupted);
        } else if start.elapsed() > timeout {
            stopped = Some(Stopped::Timeout(timeout.as_secs_f64()));
        } else if let Some(limit) = req.memory_limit_bytes.filter(|_| req.device == "cpu") {
            if let Some(rss) = crate::probe::host::rss_bytes_of(child.id()).filter(|&r| r > limit) {
                stopped = Some(Stopped::Memory { rss, limit });
            }
        }
        if stopped.is_some() {
            let _ = child.kill();
            break child.wait().map_err(|e| Error::io(exe, e))?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A Ctrl-C in a terminal reaches the child too; a case it cut short is not run, not failed.
    if stop.load(Ordering::SeqCst) && !out.exists() {
        return Ok(None);
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let record = match stopped {
        Some(Stopped::Interrupted) => return Ok(None),
        Some(Stopped::Timeout(limit_s)) => {
            crate::measure::unrun(req, Outcome::Timeout { limit_s }, None)
        }
        Some(Stopped::Memory { rss, limit }) => crate::measure::unrun(
            req,
            Outcome::Oom {
                message: format!(
                    "resident memory reached {:.1} MiB, over the limit of {:.1} MiB",
                    mib(rss),
                    mib(limit)
                ),
            },
            None,
        ),
        None => match std::fs::read_to_string(&out)
            .ok()
            .and_then(|t| serde_json::from_str::<CaseResult>(&t).ok())
        {
            Some(r) => r,
            None => {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let tail: String = err
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ");
                let killed = {
                    use std::os::unix::process::ExitStatusExt;
                    status.signal()
                };
                let outcome = if killed == Some(9) {
                    Outcome::Oom {
                        message: "killed by the OS (SIGKILL), most likely out of memory".into(),
                    }
                } else if err.contains("memory allocation of") {
                    Outcome::Oom { message: tail }
                } else {
                    Outcome::Error {
                        message: format!(
                            "the case process ended ({status}) without a record: {tail}"
                        ),
                    }
                };
                crate::measure::unrun(req, outcome, None)
            }
        },
    };
    Ok(Some(record))
}

/// One line about a finished case.
fn brief(r: &CaseResult) -> String {
    match (&r.outcome, &r.metrics) {
        (Outcome::Ok, Some(m)) => format!(
            "ok, prefill {:.1} tok/s, decode {:.1} tok/s, peak RSS {:.0} MiB",
            m.prefill_tok_per_s.median,
            m.decode_tok_per_s.median,
            m.peak_rss_bytes.unwrap_or(0) as f64 / (1u64 << 20) as f64
        ),
        (Outcome::Ok, None) => "ok".into(),
        (Outcome::Oom { message }, _) => format!("oom: {message}"),
        (Outcome::Timeout { limit_s }, _) => format!("timeout after {limit_s} s"),
        (Outcome::Error { message }, _) => format!("error: {message}"),
    }
}

/// Runs a suite; returns the summary (also when interrupted).
pub fn run(opts: &BenchOptions) -> Result<Summary> {
    let suite = &opts.suite;
    let memory_limit = match (&opts.memory_limit, &suite.memory_limit) {
        (Some(b), _) => Some(*b),
        (None, Some(s)) => Some(crate::suite::parse_bytes(s).map_err(Error::Unsupported)?),
        (None, None) => None,
    };
    let results = opts
        .out
        .clone()
        .unwrap_or_else(|| default_results_path(&suite.device));
    if let Some(dir) = results.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let done = if opts.resume {
        recorded_keys(&results)
    } else {
        HashSet::new()
    };
    let mut summary = Summary {
        results: results.clone(),
        ..Summary::default()
    };
    let mut todo = Vec::new();
    for (i, c) in suite.cases().into_iter().enumerate() {
        if opts.shard.is_some_and(|s| !s.has(i)) {
            continue;
        }
        let req = request(suite, &c, memory_limit);
        if done.contains(&crate::measure::request_key(&req).id()) {
            summary.skipped += 1;
        } else {
            todo.push(req);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed (tests run several suites in one process):
        // then Ctrl-C simply ends the process, which loses nothing already recorded.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let bar = if opts.progress {
        indicatif::ProgressBar::new(todo.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} cases, {elapsed} elapsed, ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let timeout = Duration::from_secs_f64(suite.timeout_s);
    for (n, req) in todo.iter().enumerate() {
        let key = crate::measure::request_key(req);
        bar.set_message(key.id());
        match run_child(&exe, req, timeout, opts.threads, &stop)? {
            Some(mut record) => {
                // The runner's view of the case wins for what it enforced.
                record.key.memory_limit_bytes = req.memory_limit_bytes;
                summary.count(&record.outcome);
                append(&results, &record)?;
                let line = format!(
                    "[{}/{}] {}: {}",
                    n + 1,
                    todo.len(),
                    key.id(),
                    brief(&record)
                );
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

    /// Every field of a request reaches the child (a suite's fill_kv once did not).
    #[test]
    fn the_child_gets_the_whole_request() {
        let case = SuiteCase {
            model: "synthetic:1b".into(),
            quant: Some("q8_0".into()),
            kv_dtype: "bf16".into(),
            ctx: 8192,
            prompt_tokens: 64,
            gen_tokens: 4,
            prefill_chunk: 256,
            image: Some("synthetic".into()),
            fill_kv: true,
        };
        let req = request_on("cuda:1", &case, Some(1 << 30));
        let args = child_args(&req, Path::new("/tmp/x.json"), Some(3)).join(" ");
        for want in [
            "--model synthetic:1b",
            "--quant q8_0",
            "--kv-dtype bf16",
            "--ctx 8192",
            "--prompt-tokens 64",
            "--gen 4",
            "--prefill-chunk 256",
            "--image synthetic",
            "--device cuda:1",
            "--threads 3",
            "--memory-limit-bytes 1073741824",
            "--fill-kv synthetic",
            "--out /tmp/x.json",
        ] {
            assert!(args.contains(want), "{want} missing from {args}");
        }
        let plain = SuiteCase {
            fill_kv: false,
            ..case
        };
        let args = child_args(&request_on("cpu", &plain, None), Path::new("x"), None).join(" ");
        assert!(!args.contains("--fill-kv"), "{args}");
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("AMD EPYC 7B13 64-Core Processor"),
            "amd-epyc-7b13-64-core-processor"
        );
        assert_eq!(slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
        assert_eq!(slug("  "), "unknown-machine");
    }

    #[test]
    fn appending_after_a_cut_line_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let req = request(
            &Suite::parse(
                "name='t'\n[axes]\nmodels=['default']\ncontexts=[64]\nprompt_tokens=[8]\ngen_tokens=[2]\n",
            )
            .unwrap(),
            &SuiteCase {
                model: "default".into(),
                quant: None,
                kv_dtype: "f32".into(),
                ctx: 64,
                prompt_tokens: 8,
                gen_tokens: 2,
                prefill_chunk: 512,
                image: None,
                fill_kv: false,
            },
            None,
        );
        let rec = crate::measure::unrun(&req, Outcome::Timeout { limit_s: 1.0 }, None);
        std::fs::write(&path, b"{\"schema_version\": 1, \"key\": {\"si").unwrap();
        append(&path, &rec).unwrap();
        append(&path, &rec).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let keys = recorded_keys(&path);
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&crate::measure::request_key(&req).id()));
    }
}

/// What to search: every (model, quant, KV dtype) for its largest context.
#[derive(Debug, Clone)]
pub struct FrontierOptions {
    pub models: Vec<String>,
    pub quants: Vec<String>,
    pub kv_dtypes: Vec<String>,
    pub device: String,
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
    pub threads: Option<usize>,
    pub progress: bool,
}

/// The measured frontier of one (model, quant, KV dtype).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrontierRow {
    pub model: String,
    pub quant: Option<String>,
    pub kv_dtype: String,
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
    pub probes: usize,
}

fn model_max_ctx(model: &str) -> usize {
    use crate::engine::load::spec::ModelSpec;
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

/// The estimator's largest context for (model, quant, KV dtype) in `capacity` bytes, for the
/// cases it predicts (synthetic presets and the default model); None otherwise.
fn predicted_frontier(
    model: &str,
    quant: Option<&str>,
    kv: &str,
    device: &str,
    capacity: u64,
    prompt_tokens: usize,
) -> Option<usize> {
    use crate::engine::load::spec::ModelSpec;
    use crate::estimate::{Query, Target};
    let (size, quant, tokenizer) = match model.parse::<ModelSpec>().ok()? {
        ModelSpec::Default => ("270m".to_string(), "q4_k_m".to_string(), true),
        ModelSpec::Synthetic(s) => (s, quant?.to_ascii_lowercase(), false),
        _ => return None,
    };
    let target = match DeviceSpec::parse(device).ok()? {
        DeviceSpec::Cpu => Target::Cpu,
        DeviceSpec::Cuda(_) => Target::Cuda,
    };
    let base = Query {
        size,
        quant,
        kv_dtype: crate::measure::pass::parse_kv_dtype(kv).ok()?,
        ctx: 1,
        rows: prompt_tokens.clamp(1, 512),
        image: false,
        target,
        tokenizer,
    };
    crate::estimate::fit::largest_ctx(&base, model_max_ctx(model), |total| total <= capacity)
        .ok()
        .flatten()
}

/// Finds, by bisection over the context size, the largest context each case runs at (on the
/// device, or under the memory limit). Every probe is a case like any other: it runs in a child
/// process with the KV cache filled synthetically (`--fill-kv synthetic`), and its record is
/// appended to the results file.
pub fn frontier(opts: &FrontierOptions) -> Result<(Vec<FrontierRow>, PathBuf)> {
    let results = opts
        .out
        .clone()
        .unwrap_or_else(|| default_results_path(&opts.device));
    if let Some(dir) = results.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let stop = AtomicBool::new(false);
    let mut combos = Vec::new();
    for model in &opts.models {
        let quants: Vec<Option<String>> =
            if opts.quants.is_empty() || !crate::suite::takes_quant(model) {
                vec![None]
            } else {
                opts.quants.iter().cloned().map(Some).collect()
            };
        for q in quants {
            for kv in &opts.kv_dtypes {
                combos.push((model.clone(), q.clone(), kv.clone()));
            }
        }
    }
    let bar = if opts.progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let floor = opts.prompt_tokens + opts.gen_tokens;
    // The memory the estimator's guess is for: the limit, or a whole GPU.
    let capacity = opts
        .memory_limit
        .or_else(|| match DeviceSpec::parse(&opts.device) {
            Ok(DeviceSpec::Cuda(n)) => crate::probe::nvml::total_memory_bytes(n as u32).ok(),
            _ => None,
        });
    let mut rows = Vec::new();
    for (model, quant, kv) in combos {
        let probe = |ctx: usize| -> Result<CaseResult> {
            bar.set_message(format!(
                "{model} {} {kv}: ctx {ctx}",
                quant.as_deref().unwrap_or("")
            ));
            bar.tick();
            let case = SuiteCase {
                model: model.clone(),
                quant: quant.clone(),
                kv_dtype: kv.clone(),
                ctx,
                prompt_tokens: opts.prompt_tokens,
                gen_tokens: opts.gen_tokens,
                prefill_chunk: 512,
                image: None,
                fill_kv: ctx > floor,
            };
            let req = request_on(&opts.device, &case, opts.memory_limit);
            let mut record = run_child(&exe, &req, opts.timeout, opts.threads, &stop)?
                .ok_or_else(|| Error::Unsupported("interrupted".into()))?;
            record.key.memory_limit_bytes = opts.memory_limit;
            append(&results, &record)?;
            Ok(record)
        };
        let lo_ctx = opts.min_ctx.max(floor);
        let hi_ctx = opts
            .max_ctx
            .unwrap_or_else(|| model_max_ctx(&model))
            .max(lo_ctx);
        let guess = capacity.and_then(|cap| {
            predicted_frontier(
                &model,
                quant.as_deref(),
                &kv,
                &opts.device,
                cap,
                opts.prompt_tokens,
            )
        });
        let mut details = BTreeMap::new();
        let (ok, failing, probes) = bisect(lo_ctx, hi_ctx, opts.step, guess, |ctx| {
            let r = probe(ctx)?;
            let ok = r.outcome.is_ok();
            details.insert(ctx, r);
            Ok(ok)
        })?;
        let row = FrontierRow {
            predicted_ctx: guess,
            model: model.clone(),
            quant: quant.clone(),
            kv_dtype: kv.clone(),
            memory_limit_bytes: opts.memory_limit,
            largest_ok_ctx: ok,
            largest_ok_peak_bytes: ok
                .and_then(|c| details.get(&c))
                .and_then(CaseResult::peak_bytes),
            smallest_failing_ctx: failing,
            failure: failing
                .and_then(|c| details.get(&c))
                .map(|r| r.outcome.clone()),
            probes,
        };
        rows.push(row);
    }
    bar.finish_and_clear();
    Ok((rows, results))
}
