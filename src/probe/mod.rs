//! What this machine is: host facts (CPU, memory) and NVIDIA GPUs through NVML.

pub mod host;
pub mod nvml;
