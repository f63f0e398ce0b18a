//! Memory bandwidth of a device, measured: the physical ceiling decode speed is judged against.
//!
//! Decoding one token reads every weight once plus the KV cache in span, so
//! `bandwidth ÷ bytes read per token` bounds tokens per second. On the CPU the probe reads a
//! buffer far larger than any cache with the given number of threads (decode reads, it hardly
//! writes) and also times a copy; on a CUDA device it times device-to-device copies, counting the
//! bytes read plus the bytes written.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::stats::median;

/// One bandwidth measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bandwidth {
    /// The GPU's name, or the CPU model: what reports match it to (their machine names).
    pub machine: String,
    pub device: String,
    /// Size of the buffer read (and of each copy's source).
    pub buffer_bytes: u64,
    /// Threads that read or copied (CPU; 0 on a GPU).
    pub threads: usize,
    pub repeats: usize,
    /// Median over the repeats of bytes read per second (CPU only).
    pub read_bytes_per_s: Option<f64>,
    /// Median over the repeats of (bytes read + bytes written) per second of a copy.
    pub copy_bytes_per_s: f64,
    /// What the figure for decode uses: the read figure on the CPU, the copy figure on a GPU.
    pub decode_bytes_per_s: f64,
}

/// Measures `device` with a buffer of `bytes` (at least 1 MiB), `repeats` times after one warm-up.
pub fn measure(device: &Device, bytes: u64, threads: usize, repeats: usize) -> Result<Bandwidth> {
    let bytes = bytes.max(1 << 20);
    let repeats = repeats.max(1);
    match device {
        Device::Cpu => Ok(cpu(bytes, threads.max(1), repeats)),
        _ => gpu(device, bytes, repeats),
    }
}

fn cpu(bytes: u64, threads: usize, repeats: usize) -> Bandwidth {
    let words = (bytes / 8) as usize;
    // Filled with data, so every page is resident before the clock starts.
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![0u64; words];
    let chunk = words.div_ceil(threads);
    let read_once = |src: &[u64]| -> f64 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = src.chunks(chunk).map(|c| s.spawn(move || sum(c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        (words * 8) as f64 / t.elapsed().as_secs_f64()
    };
    let copy_once = |src: &[u64], dst: &mut [u64]| -> f64 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        std::hint::black_box(&dst);
        (2 * words * 8) as f64 / t.elapsed().as_secs_f64()
    };
    read_once(&src);
    copy_once(&src, &mut dst);
    let read: Vec<f64> = (0..repeats).map(|_| read_once(&src)).collect();
    let copy: Vec<f64> = (0..repeats).map(|_| copy_once(&src, &mut dst)).collect();
    let read = median(&read);
    Bandwidth {
        machine: crate::probe::host::HostInfo::read().cpu_model,
        device: "cpu".into(),
        buffer_bytes: (words * 8) as u64,
        threads,
        repeats,
        read_bytes_per_s: Some(read),
        copy_bytes_per_s: median(&copy),
        decode_bytes_per_s: read,
    }
}

/// Sum in eight independent lanes, so the loop vectorizes and is bound by memory, not by a
/// dependency chain.
fn sum(c: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let mut it = c.chunks_exact(8);
    for w in &mut it {
        for i in 0..8 {
            lanes[i] = lanes[i].wrapping_add(w[i]);
        }
    }
    it.remainder()
        .iter()
        .chain(&lanes)
        .fold(0, |a, &b| a.wrapping_add(b))
}

fn gpu(device: &Device, bytes: u64, repeats: usize) -> Result<Bandwidth> {
    let index = match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id as u32),
        _ => None,
    };
    let machine = index
        .and_then(|i| {
            crate::probe::nvml::GpuReport::read()
                .gpus
                .into_iter()
                .find(|g| g.index == i)
        })
        .map_or_else(|| format!("{device:?}"), |g| g.name);
    let src = Tensor::zeros(bytes as usize, DType::U8, device)?;
    let copy_once = || -> Result<f64> {
        device.synchronize()?;
        let t = Instant::now();
        let dst = src.copy()?;
        device.synchronize()?;
        let s = t.elapsed().as_secs_f64();
        drop(dst);
        Ok(2.0 * bytes as f64 / s)
    };
    copy_once()?;
    let copy: Vec<f64> = (0..repeats).map(|_| copy_once()).collect::<Result<_>>()?;
    let copy = median(&copy);
    Ok(Bandwidth {
        machine,
        device: format!("{device:?}"),
        buffer_bytes: bytes,
        threads: 0,
        repeats,
        read_bytes_per_s: None,
        copy_bytes_per_s: copy,
        decode_bytes_per_s: copy,
    })
}

/// Bandwidth records from files (`gemma-fit bandwidth --json` output: one JSON object per line).
pub fn read(paths: &[std::path::PathBuf]) -> Result<Vec<Bandwidth>> {
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| crate::Error::io(p, e))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(
                serde_json::from_str(line).map_err(|e| crate::Error::BadConfig {
                    path: p.clone(),
                    reason: format!(
                        "line {}: not a `gemma-fit bandwidth --json` record: {e}",
                        i + 1
                    ),
                })?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sum_is_the_sum() {
        let v: Vec<u64> = (0..1003).collect();
        assert_eq!(sum(&v), 1003 * 1002 / 2);
    }

    #[test]
    fn cpu_probe_reports_plausible_rates() {
        let b = measure(&Device::Cpu, 8 << 20, 2, 3).unwrap();
        assert_eq!(b.buffer_bytes, 8 << 20);
        let read = b.read_bytes_per_s.unwrap();
        // Anything from 100 MB/s to 10 TB/s: a broken timer or byte count lands outside.
        assert!((1e8..1e13).contains(&read), "{read}");
        assert!((1e8..1e13).contains(&b.copy_bytes_per_s));
        assert_eq!(b.decode_bytes_per_s, read);
    }
}
