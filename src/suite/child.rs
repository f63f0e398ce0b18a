//! Running one case: the [`Executor`] the runner and the frontier search call, and its real
//! implementation, [`ChildProcess`]: the case in a child process of this same binary
//! (`gemma-fit case --spec FILE --out FILE`, the spec as JSON), so an out-of-memory, a crash or
//! a hang costs that case only and each case's peak memory is its own. (Tests use a scripted
//! executor instead.)

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::measure::environment::environment;
use crate::result::case::CaseSpec;
use crate::result::{CaseResult, Outcome};
use crate::units::mib;

/// Runs a case to its record.
pub trait Executor {
    /// The record of `spec` run with at most `timeout`; None when the run was interrupted (the
    /// case is then not run, rather than failed).
    fn run(&self, spec: &CaseSpec, timeout: Duration) -> Result<Option<CaseResult>>;
}

/// Each case in a child process, watched for its timeout, its memory limit (on the CPU) and
/// Ctrl-C.
pub struct ChildProcess {
    exe: PathBuf,
    stop: Arc<AtomicBool>,
}

impl ChildProcess {
    /// Children of the running binary; Ctrl-C kills the running child and stops the run.
    pub fn new() -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A second handler cannot be installed (tests run several suites in one process): then
        // Ctrl-C simply ends the process, which loses nothing already recorded.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
        Ok(ChildProcess { exe, stop })
    }
}

/// Why the runner stopped a child, if it did.
enum Stopped {
    Timeout(f64),
    Memory { rss: u64, limit: u64 },
    Interrupted,
}

impl Executor for ChildProcess {
    fn run(&self, spec: &CaseSpec, timeout: Duration) -> Result<Option<CaseResult>> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let spec_path = dir.path().join("spec.json");
        let out = dir.path().join("case.json");
        let stderr_path = dir.path().join("stderr.txt");
        crate::result::store::write_json_atomically(&spec_path, spec)?;
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| Error::io(&stderr_path, e))?;
        let mut child = Command::new(&self.exe)
            .arg("case")
            .arg("--spec")
            .arg(&spec_path)
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::io(&self.exe, e))?;
        let start = Instant::now();
        let watched_limit = spec
            .memory_limit_bytes
            .filter(|_| spec.device == DeviceSpec::Cpu);
        let mut stopped = None;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| Error::io(&self.exe, e))? {
                break status;
            }
            if self.stop.load(Ordering::SeqCst) {
                stopped = Some(Stopped::Interrupted);
            } else if start.elapsed() > timeout {
                stopped = Some(Stopped::Timeout(timeout.as_secs_f64()));
            } else if let Some(limit) = watched_limit {
                if let Some(rss) =
                    crate::probe::host::rss_bytes_of(child.id()).filter(|&r| r > limit)
                {
                    stopped = Some(Stopped::Memory { rss, limit });
                }
            }
            if stopped.is_some() {
                let _ = child.kill();
                break child.wait().map_err(|e| Error::io(&self.exe, e))?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The child's own record, whole or absent (it is written atomically): a case that
        // finished just as Ctrl-C came is kept.
        let recorded = std::fs::read_to_string(&out)
            .ok()
            .and_then(|t| serde_json::from_str::<CaseResult>(&t).ok());
        // A Ctrl-C in a terminal reaches the child too; a case it cut short is not run, not failed.
        if self.stop.load(Ordering::SeqCst) && recorded.is_none() {
            return Ok(None);
        }
        let unrun =
            |outcome| CaseResult::unrun(spec, outcome, environment(spec.device.gpu_index()), None);
        let record = match (stopped, recorded) {
            (None | Some(Stopped::Interrupted), Some(r)) => r,
            (Some(Stopped::Interrupted), None) => return Ok(None),
            (Some(Stopped::Timeout(limit_s)), _) => unrun(Outcome::Timeout { limit_s }),
            (Some(Stopped::Memory { rss, limit }), _) => unrun(Outcome::Oom {
                message: format!(
                    "resident memory reached {:.1} MiB, over the limit of {:.1} MiB",
                    mib(rss),
                    mib(limit)
                ),
            }),
            (None, None) => unrun(judge_exit(
                status,
                &std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            )),
        };
        Ok(Some(record))
    }
}

/// The outcome of a child that left no record: the one place that reads text, since an aborted
/// or killed process leaves only its exit status and stderr. SIGKILL is the kernel's OOM killer
/// (most likely); Rust's "memory allocation of N bytes failed" abort is out of memory too.
fn judge_exit(status: ExitStatus, stderr: &str) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let tail = stderr_tail(stderr);
    if status.signal() == Some(9) {
        Outcome::Oom {
            message: "killed by the OS (SIGKILL), most likely out of memory".into(),
        }
    } else if stderr.contains("memory allocation of") {
        Outcome::Oom { message: tail }
    } else {
        Outcome::Error {
            message: format!("the case process ended ({status}) without a record: {tail}"),
        }
    }
}

/// The last three non-empty lines of a child's stderr, on one line.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::process::ExitStatusExt;

    /// An executor that runs nothing: each case gets the outcome `script` gives it (None: the
    /// run is interrupted there), and every spec it was handed is kept.
    pub struct Scripted<F: Fn(&CaseSpec) -> Option<Outcome>> {
        pub script: F,
        pub seen: RefCell<Vec<CaseSpec>>,
    }

    impl<F: Fn(&CaseSpec) -> Option<Outcome>> Scripted<F> {
        pub fn new(script: F) -> Self {
            Scripted {
                script,
                seen: RefCell::new(Vec::new()),
            }
        }
    }

    impl<F: Fn(&CaseSpec) -> Option<Outcome>> Executor for Scripted<F> {
        fn run(&self, spec: &CaseSpec, _: Duration) -> Result<Option<CaseResult>> {
            self.seen.borrow_mut().push(spec.clone());
            Ok((self.script)(spec).map(|o| {
                let env = serde_json::from_value(serde_json::json!({
                    "tool_version": "", "git_commit": "", "rustc_version": "", "candle_version": "",
                    "features": [], "cpu_model": "Test CPU", "physical_cores": null, "logical_cores": 1,
                    "ram_total_bytes": 0, "os": "", "kernel": ""
                }))
                .unwrap();
                CaseResult::unrun(spec, o, env, None)
            }))
        }
    }

    #[test]
    fn a_child_without_a_record_is_judged_by_its_exit() {
        let killed = ExitStatus::from_raw(9);
        assert!(matches!(judge_exit(killed, ""), Outcome::Oom { .. }));
        let aborted = ExitStatus::from_raw(6);
        assert!(matches!(
            judge_exit(aborted, "memory allocation of 1073741824 bytes failed\n"),
            Outcome::Oom { message } if message.contains("1073741824")
        ));
        let crashed = ExitStatus::from_raw(11);
        assert!(matches!(
            judge_exit(crashed, "a\nb\n\nc\nd\n"),
            Outcome::Error { message } if message.ends_with("without a record: b | c | d")
        ));
    }
}
