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

/// CPU package energy from RAPL through powercap, summed over packages, in microjoules.
pub struct Rapl {
    domains: Vec<std::path::PathBuf>,
}

impl Rapl {
    /// The package domains (`/sys/class/powercap/intel-rapl:N/energy_uj`, AMD CPUs included on
    /// recent kernels), or why there are none readable.
    pub fn open() -> Result<Self, String> {
        let root = std::path::Path::new("/sys/class/powercap");
        let entries = std::fs::read_dir(root)
            .map_err(|e| format!("rapl: {} not available ({e})", root.display()))?;
        let mut domains: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("intel-rapl:") && n.matches(':').count() == 1)
            })
            .map(|p| p.join("energy_uj"))
            .collect();
        domains.sort();
        if domains.is_empty() {
            return Err("rapl: no package domains under /sys/class/powercap".into());
        }
        let rapl = Rapl { domains };
        rapl.read_uj()?;
        Ok(rapl)
    }

    /// The summed counter (it wraps; differences over a phase are what matter).
    pub fn read_uj(&self) -> Result<u64, String> {
        let mut total = 0u64;
        for d in &self.domains {
            let text = std::fs::read_to_string(d)
                .map_err(|e| format!("rapl: cannot read {} ({e})", d.display()))?;
            total += text
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("rapl: {}: {e}", d.display()))?;
        }
        Ok(total)
    }
}
