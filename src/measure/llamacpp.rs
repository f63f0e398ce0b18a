//! A case run by llama.cpp instead of gemma-fit's engine (`--engine llama.cpp`): llama-cpp-python's
//! C API in a child process (`llamacpp_case.py`, written next to the case), on the same GGUF
//! file, the same prompt token ids, the same context, chunk, K/V types and thread count, probed
//! from outside: its peak RSS per phase from the kernel (`/proc/PID/status` VmHWM, reset between
//! phases through `/proc/PID/clear_refs`, the child pausing at each boundary until the parent has
//! read it) and over its whole life from `wait4`; what llama.cpp allocated from its own log. The
//! record has the schema of gemma-fit's own, the engine and its settings in the key.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::engine::kv_cache::KvDtype;
use crate::engine::load::gguf::GgufFile;
use crate::engine::load::spec::ModelSpec;
use crate::engine::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::probe::host;
use crate::probe::sampler::Phase;
use crate::result::case::{CaseEngine, CaseSpec};
use crate::result::{
    CaseResult, DecodeSteps, Metrics, Outcome, PhaseMemory, Probes, SCHEMA_VERSION,
};
use crate::stats::{median, Stat};
use crate::units::mib;

/// The child's program (it reads the case as JSON from the file its first argument names).
const RUNNER: &str = include_str!("llamacpp_case.py");

/// The llama-cpp-python this runs and the llama.cpp it vendors.
pub const VERSION: &str = "llama-cpp-python 0.3.36 (llama.cpp 0c1e57098)";

/// llama-cpp-python's python: $GEMMA_FIT_LLAMACPP_PYTHON, else where
/// `scripts/install-llamacpp.sh` puts it ($GEMMA_FIT_HOME/peer/llamacpp-venv).
pub fn python() -> Result<PathBuf> {
    let python = std::env::var_os("GEMMA_FIT_LLAMACPP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::engine::load::fetch::home_dir().join("peer/llamacpp-venv/bin/python")
        });
    if python.exists() {
        Ok(python)
    } else {
        Err(Error::Unsupported(format!(
            "llama.cpp is not installed: no llama-cpp-python at {} (scripts/install-llamacpp.sh installs it, ~15 min once)",
            python.display()
        )))
    }
}

/// ggml's number for a cache type (`enum ggml_type`).
fn ggml_type(t: KvDtype) -> u32 {
    match t {
        KvDtype::F32 => 0,
        KvDtype::F16 => 1,
        KvDtype::Q4_0 => 2,
        KvDtype::Q4_1 => 3,
        KvDtype::Q5_0 => 6,
        KvDtype::Q5_1 => 7,
        KvDtype::Q8_0 => 8,
        KvDtype::Bf16 => 30,
    }
}

/// What the child printed when it finished.
#[derive(serde::Deserialize)]
struct Finished {
    load_s: f64,
    passes: Vec<RunnerPass>,
}

#[derive(serde::Deserialize)]
struct RunnerPass {
    prefill_s: f64,
    /// Per sequence, from the pass's start.
    ttft_s: Vec<f64>,
    decode_ms: Vec<f64>,
}

/// One line of the child's stdout.
#[derive(serde::Deserialize)]
struct Line {
    phase: Option<String>,
    result: Option<Finished>,
}

/// Measures `spec` with llama.cpp. Never fails: what went wrong is the record's outcome.
pub fn measure(spec: &CaseSpec) -> CaseResult {
    let started_unix_s = crate::result::unix_now();
    let environment = super::environment::environment(None);
    let mut key = spec.key();
    let mut params = spec.params(&key);
    let mut notes = vec![format!(
        "engine: {VERSION}, run through its C API in a child process; memory probed from outside"
    )];
    let run = (|| -> Result<Metrics> {
        if let Some(why) = spec.engine_refusal() {
            return Err(Error::Unsupported(why));
        }
        let CaseEngine::LlamaCpp {
            n_ubatch,
            flash_attn,
            swa_full,
        } = spec.engine
        else {
            return Err(Error::BadInput("not a llama.cpp case".into()));
        };
        let python = python()?;
        let model: ModelSpec = spec.model.parse()?;
        let path = model.resolve(false)?;
        let file = GgufFile::open_gemma3(&path)?;
        params.source = path.display().to_string();
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let needed = spec.needed_positions(0);
        let ctx = spec.ctx.unwrap_or(needed);
        key.ctx = ctx;
        params.ctx = ctx;
        if ctx < needed {
            return Err(Error::BadInput(format!(
                "--ctx {ctx} is smaller than the {needed} positions the case needs"
            )));
        }
        let prompts = super::pass::shifted_prompts(
            &super::pass::prompt_of(&tokenizer, spec.prompt_tokens + spec.batch - 1),
            spec.prompt_tokens,
            spec.batch,
        );
        // llama-server's `-c N -np B`: N = B × ctx, split into a stream per sequence.
        let case = serde_json::json!({
            "model": path,
            "n_ctx": ctx * spec.batch,
            "n_batch": spec.prefill_chunk,
            "n_ubatch": n_ubatch.min(spec.prefill_chunk),
            "threads": spec.threads,
            "type_k": ggml_type(spec.kv_dtype.k),
            "type_v": ggml_type(spec.kv_dtype.v),
            "flash_attn": flash_attn,
            "swa_full": swa_full,
            "prompts": prompts,
            "gen": spec.gen_tokens,
            "warmup": spec.warmup,
            "repeats": spec.repeats.max(1),
        });
        run_child(&python, &case.to_string(), spec, &mut notes)
    })();
    let (outcome, metrics) = match run {
        Ok(m) => (Outcome::Ok, Some(m)),
        Err(e) => (Outcome::of_error(&e), None),
    };
    let warnings = metrics
        .as_ref()
        .map(|m| {
            super::spread_warnings(m)
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default();
    CaseResult {
        schema_version: SCHEMA_VERSION,
        started_unix_s,
        key,
        params,
        environment,
        outcome,
        metrics,
        probes: Probes {
            gpu: None,
            notes,
            warnings,
        },
        quality: None,
    }
}

/// The child's peak RSS so far (VmHWM), then the mark reset so the next phase has its own.
fn phase_peak(pid: u32) -> Option<u64> {
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    peak
}

/// Waits for the child without blocking: its exit status and peak RSS (`ru_maxrss`) once it
/// has ended.
fn try_reap(pid: u32) -> Option<(i32, u64)> {
    let mut status = 0;
    // SAFETY: plain syscall on our own child; `usage` is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
    (r == pid as i32).then(|| (status, usage.ru_maxrss as u64 * 1024))
}

fn run_child(
    python: &std::path::Path,
    case: &str,
    spec: &CaseSpec,
    notes: &mut Vec<String>,
) -> Result<Metrics> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let script = dir.path().join("llamacpp_case.py");
    std::fs::write(&script, RUNNER).map_err(|e| Error::io(&script, e))?;
    let case_path = dir.path().join("case.json");
    std::fs::write(&case_path, case).map_err(|e| Error::io(&case_path, e))?;
    let log_path = dir.path().join("llama.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let mut command = Command::new(python);
    command
        .arg(&script)
        .arg(&case_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: prctl only, between fork and exec. A runner that kills this process (a timeout,
    // Ctrl-C) takes llama.cpp with it instead of leaving it running.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| Error::io(python, e))?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut peaks: BTreeMap<Phase, u64> = BTreeMap::new();
    let mut current = Phase::Baseline;
    let mut finished = None;
    let limit = spec.memory_limit_bytes;
    let (status, max_rss) = loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(text) => {
                let line: Line = serde_json::from_str(&text).map_err(|e| {
                    Error::BadInput(format!("llama.cpp runner printed '{text}': {e}"))
                })?;
                if let Some(name) = line.phase {
                    if let Some(p) = phase_peak(pid) {
                        let e = peaks.entry(current).or_default();
                        *e = (*e).max(p);
                    }
                    current = match name.as_str() {
                        "load" => Phase::Load,
                        "warmup" => Phase::Warmup,
                        "prefill" => Phase::Prefill,
                        "decode" => Phase::Decode,
                        // "end": the last phase's peak is read; nothing after it is measured.
                        _ => current,
                    };
                    if let Some(w) = stdin.as_mut() {
                        let _ = w.write_all(b"\n").and_then(|_| w.flush());
                    }
                }
                if line.result.is_some() {
                    finished = line.result;
                    stdin = None;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(done) = try_reap(pid) {
            break done;
        }
        if let Some(limit) = limit {
            if let Some(rss) = host::rss_bytes_of(pid).filter(|&r| r > limit) {
                let _ = child.kill();
                while try_reap(pid).is_none() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Err(Error::OutOfMemory(format!(
                    "llama.cpp's resident memory reached {:.1} MiB, over the limit of {:.1} MiB",
                    mib(rss),
                    mib(limit)
                )));
            }
        }
    };
    // Lines printed just before the exit.
    for text in rx.try_iter() {
        if let Ok(Line {
            result: Some(r), ..
        }) = serde_json::from_str::<Line>(&text)
        {
            finished = Some(r);
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let Some(done) = finished else {
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        return Err(
            if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == 9 {
                Error::OutOfMemory(
                    "llama.cpp was killed by the OS (SIGKILL), most likely out of memory".into(),
                )
            } else {
                Error::BadInput(format!("llama.cpp ended without a result: {tail}"))
            },
        );
    };
    let buffers = buffers_of(&log);
    notes.push(format!(
        "llama.cpp allocated (its log): {}",
        buffers
            .iter()
            .map(|(k, v)| format!("{k} {:.2} MiB", mib(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(metrics(spec, &done, buffers, peaks, max_rss))
}

/// The buffers llama.cpp's log names: `model CPU_Mapped`, `model CPU_REPACK`, `KV global`,
/// `KV SWA`, `output`, `compute` (bytes, from its MiB with two decimals).
pub fn buffers_of(log: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut kv = 0;
    let from_mib = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .map(|m| (m * (1u64 << 20) as f64).round() as u64)
    };
    for line in log.lines() {
        let Some((head, value)) = line.split_once(" buffer size =") else {
            continue;
        };
        let Some(bytes) = value.trim().strip_suffix("MiB").and_then(from_mib) else {
            continue;
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let label = if words.last() == Some(&"model") && words.len() >= 2 {
            // "load_tensors:   CPU_Mapped model": the buffer's type before "model".
            format!("model {}", words[words.len() - 2])
        } else if head.ends_with(" KV") {
            kv += 1;
            (if kv == 1 { "KV global" } else { "KV SWA" }).into()
        } else if head.ends_with(" output") {
            "output".into()
        } else if head.ends_with(" compute") {
            "compute".into()
        } else {
            continue;
        };
        *out.entry(label).or_default() += bytes;
    }
    out
}

fn metrics(
    spec: &CaseSpec,
    done: &Finished,
    buffers: BTreeMap<String, u64>,
    peaks: BTreeMap<Phase, u64>,
    max_rss: u64,
) -> Metrics {
    let passes = &done.passes;
    let stat = |f: &dyn Fn(&RunnerPass) -> f64| Stat::of(&passes.iter().map(f).collect::<Vec<_>>());
    let b = spec.batch;
    let weights: u64 = buffers
        .iter()
        .filter(|(k, _)| k.starts_with("model "))
        .map(|(_, v)| v)
        .sum();
    Metrics {
        load_s: done.load_s,
        prompt_positions: spec.prompt_tokens,
        fill_depth: 0,
        ttft_ms: stat(&|p| median(&p.ttft_s) * 1e3),
        ttft_max_ms: (b > 1).then(|| stat(&|p| p.ttft_s.iter().copied().fold(0.0, f64::max) * 1e3)),
        prefill_tok_per_s: stat(&|p| (spec.prompt_tokens * b) as f64 / p.prefill_s),
        decode_tok_per_s: stat(&|p| {
            let step = median(&p.decode_ms);
            if step > 0.0 {
                b as f64 * 1e3 / step
            } else {
                0.0
            }
        }),
        decode_steps: DecodeSteps::of(passes.iter().flat_map(|p| p.decode_ms.clone()).collect()),
        image_encode_ms: None,
        kv_bytes: buffers.get("KV global").copied().unwrap_or(0)
            + buffers.get("KV SWA").copied().unwrap_or(0),
        rope_bytes: 0,
        weights: crate::engine::load::weights::WeightBytes {
            file_weight_bytes: buffers.get("model CPU_Mapped").copied().unwrap_or(weights),
            resident_weight_bytes: weights,
        },
        vision_weights: None,
        peak_rss_bytes: Some(max_rss),
        ballast_bytes: None,
        memory: peaks
            .into_iter()
            .map(|(phase, peak)| PhaseMemory {
                phase: Some(phase),
                host_peak_rss_bytes: Some(peak),
                gpu_used_peak_bytes: None,
                gpu_process_peak_bytes: None,
            })
            .collect(),
        energy: Vec::new(),
        engine_buffers: buffers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_read_from_llama_cpp_s_log() {
        let log = "load_tensors:   CPU_Mapped model buffer size =   235.16 MiB
load_tensors:   CPU_REPACK model buffer size =    12.66 MiB
llama_context:        CPU  output buffer size =     2.00 MiB
llama_kv_cache:        CPU KV buffer size =    12.00 MiB
llama_kv_cache:        CPU KV buffer size =    30.00 MiB
sched_reserve:        CPU compute buffer size =   514.50 MiB
~llama_context:        CPU compute buffer size is 514.5020 MiB, matches expectation of 514.5020 MiB
";
        let b = buffers_of(log);
        let m = |k: &str| mib(b[k]);
        assert_eq!(b.len(), 6, "{b:?}");
        assert!((m("model CPU_Mapped") - 235.16).abs() < 1e-6);
        assert!((m("model CPU_REPACK") - 12.66).abs() < 1e-6);
        assert_eq!(m("KV global"), 12.0);
        assert_eq!(m("KV SWA"), 30.0);
        assert_eq!(m("output"), 2.0);
        assert_eq!(m("compute"), 514.5);
    }
}
