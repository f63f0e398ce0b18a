//! What this machine is and what a case uses: host facts and peak RSS (`host.rs`), NVIDIA GPUs
//! through NVML (`nvml.rs`), and the background sampler that splits readings into phases
//! (`sampler.rs`); memory bandwidth, the ceiling for decode (`bandwidth.rs`).

pub mod bandwidth;
pub mod host;
pub mod nvml;
pub mod sampler;
