//! Host facts from sysinfo.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub cpu_model: String,
    pub physical_cores: Option<usize>,
    pub logical_cores: usize,
    pub ram_total_bytes: u64,
    pub ram_available_bytes: u64,
    pub os: String,
    pub kernel: String,
    pub arch: String,
}

impl HostInfo {
    pub fn read() -> Self {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let cpu_model = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown CPU".into());
        HostInfo {
            cpu_model,
            physical_cores: System::physical_core_count(),
            logical_cores: sys.cpus().len().max(1),
            ram_total_bytes: sys.total_memory(),
            ram_available_bytes: sys.available_memory(),
            os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
            kernel: System::kernel_version().unwrap_or_default(),
            arch: std::env::consts::ARCH.into(),
        }
    }
}

/// Reads one `kB` field of /proc/<pid>/status (`self` when None), in bytes (Linux only).
fn proc_status_bytes(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of this process (VmHWM, kept by the kernel).
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes(None, "VmHWM:")
}

/// Current resident memory of another process (VmRSS), e.g. a suite's case.
pub fn rss_bytes_of(pid: u32) -> Option<u64> {
    proc_status_bytes(Some(pid), "VmRSS:")
}

/// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS, so the next reading is the peak
/// of what follows. Linux 4.0+ (`echo 5 > /proc/self/clear_refs`); the error says why not.
pub fn reset_peak_rss() -> Result<(), String> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| format!("host: cannot reset the peak-RSS mark (/proc/self/clear_refs: {e})"))
}

/// CPU package energy from RAPL through powercap, per package domain.
pub struct Rapl {
    /// (energy_uj file, the counter's wrap-around range in microjoules)
    domains: Vec<(std::path::PathBuf, u64)>,
}

impl Rapl {
    /// The package domains (`/sys/class/powercap/intel-rapl:N`, AMD CPUs included on recent
    /// kernels), or why there are none readable.
    pub fn open() -> Result<Self, String> {
        let root = std::path::Path::new("/sys/class/powercap");
        let entries = std::fs::read_dir(root)
            .map_err(|e| format!("rapl: {} not available ({e})", root.display()))?;
        let mut dirs: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("intel-rapl:") && n.matches(':').count() == 1)
            })
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err("rapl: no package domains under /sys/class/powercap".into());
        }
        let domains = dirs
            .into_iter()
            .map(|d| {
                let range = read_u64(&d.join("max_energy_range_uj")).unwrap_or(u64::MAX);
                (d.join("energy_uj"), range)
            })
            .collect();
        let rapl = Rapl { domains };
        rapl.read()?;
        Ok(rapl)
    }

    /// The counters now, one per domain (they wrap; see [`Rapl::joules_between`]).
    pub fn read(&self) -> Result<Vec<u64>, String> {
        self.domains.iter().map(|(f, _)| read_u64(f)).collect()
    }

    /// Energy between two readings, summed over the domains, each counter's wrap-around
    /// accounted for (at most one wrap between readings).
    pub fn joules_between(&self, a: &[u64], b: &[u64]) -> f64 {
        self.domains
            .iter()
            .zip(a.iter().zip(b))
            .map(|((_, range), (&a, &b))| {
                let uj = if b >= a {
                    b - a
                } else {
                    range.saturating_sub(a) + b
                };
                uj as f64 / 1e6
            })
            .sum()
    }
}

fn read_u64(path: &std::path::Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("rapl: cannot read {} ({e})", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("rapl: {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rapl_differences_survive_a_wrap() {
        let rapl = Rapl {
            domains: vec![("a".into(), 1_000_000), ("b".into(), u64::MAX)],
        };
        // Domain a wraps from 900,000 to 100,000 µJ: 200,000 µJ; b moves 3,000,000 µJ.
        let j = rapl.joules_between(&[900_000, 5_000_000], &[100_000, 8_000_000]);
        assert!((j - 3.2).abs() < 1e-9, "{j}");
    }

    /// A 256 MiB buffer, touched then freed, shows in the peak until the mark is reset.
    #[test]
    fn peak_rss_is_readable_and_resettable() {
        const BIG: usize = 256 << 20;
        assert!(rss_bytes_of(std::process::id()).unwrap() > 0);
        let buf = vec![1u8; BIG];
        let with = peak_rss_bytes().unwrap();
        assert!(with as usize >= BIG, "{with}");
        drop(std::hint::black_box(buf));
        reset_peak_rss().unwrap();
        let after = peak_rss_bytes().unwrap();
        assert!(after + (BIG as u64) / 2 < with, "{after} vs {with}");
    }
}
