//! Where the engine runs: `--device cpu` or `cuda:N`.

use candle_core::Device;
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::error::Result;

/// A device as users name it; records hold it as that text ("cpu", "cuda:1").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

/// The kind of a device, without its index: what identifies a case across machines ("cpu",
/// "cuda" in records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceSpec {
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceSpec::Cpu => DeviceKind::Cpu,
            DeviceSpec::Cuda(_) => DeviceKind::Cuda,
        }
    }

    /// The GPU's index, on a CUDA device.
    pub fn gpu_index(&self) -> Option<u32> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(n) => Some(*n as u32),
        }
    }

    /// The candle device; CUDA only in builds with the `cuda` feature.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => Ok(Device::new_cuda(*n)?),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(crate::Error::Unsupported(
                "this gemma-fit was built without CUDA support; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit)".into(),
            )),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device '{}' (use cpu or cuda:N)", s.trim())),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            other => Err(format!("unknown device kind '{other}' (cpu or cuda)")),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert!("metal"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .contains("cpu or cuda:N"));
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert_eq!(
            serde_json::to_string(&DeviceSpec::Cuda(2)).unwrap(),
            "\"cuda:2\""
        );
        #[cfg(not(feature = "cuda"))]
        assert!(DeviceSpec::Cuda(0)
            .device()
            .unwrap_err()
            .to_string()
            .contains("--features cuda"));
    }
}
