//! One fuzz case's process: started under an address-space limit, killed at a timeout, reaped
//! with its resource usage (the kernel's peak resident memory of that process alone).
//!
//! That peak counts from the fork: a forked child's `ru_maxrss` starts at the pages it copied
//! from its parent, so it reads at least the parent's resident memory then. [`Exit`] keeps that
//! figure too (`inherited_rss_bytes`), so that a parent grown large (a test binary printing a
//! backtrace beside the fuzz run) is not taken for a case over its memory bound.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The exit code, or None when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
    pub max_rss_bytes: u64,
    /// This process's resident memory when the child was forked (0 where /proc cannot be
    /// read): `max_rss_bytes` is at least about that, whatever the child did.
    pub inherited_rss_bytes: u64,
    pub wall: Duration,
    pub timed_out: bool,
}

impl Exit {
    /// The child's own peak resident memory, or None when the reading is no more than what it
    /// inherited at the fork (then it says nothing about the child).
    pub fn own_peak_bytes(&self) -> Option<u64> {
        let margin = (self.inherited_rss_bytes / 20).max(1 << 20);
        (self.max_rss_bytes > self.inherited_rss_bytes + margin).then_some(self.max_rss_bytes)
    }
}

/// Runs `bin args` with stdout discarded, at most `address_space` bytes of virtual memory and
/// `timeout` of wall time (then SIGKILL).
pub fn run(
    bin: &Path,
    args: &[OsString],
    address_space: u64,
    timeout: Duration,
) -> std::io::Result<Exit> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .env("RAYON_NUM_THREADS", "1");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: address_space,
                rlim_max: address_space,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let inherited = crate::probe::host::rss_bytes_of(std::process::id()).unwrap_or(0);
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut pipe = child.stderr.take().expect("stderr is piped");
    // Read stderr while the child runs, so a long message cannot block it on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    });
    let pid = child.id() as libc::pid_t;
    let mut timed_out = false;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our child, not yet reaped; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if !timed_out && start.elapsed() > timeout {
            timed_out = true;
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    Ok(Exit {
        code,
        signal,
        stderr,
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: usage.ru_maxrss.max(0) as u64 * 1024,
        inherited_rss_bytes: inherited,
        wall,
        timed_out,
    })
}
