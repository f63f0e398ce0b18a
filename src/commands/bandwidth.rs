//! `gemma-fit bandwidth`: measured memory bandwidth, the ceiling for decode speed.

use anyhow::Result;

use crate::cli::BandwidthArgs;
use crate::units::mib;

pub fn run(args: &BandwidthArgs) -> Result<()> {
    let device = args.device.device()?;
    // Every logical core: a read of memory is faster with all of them (the engine's default is
    // candle's, the physical cores).
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let b = crate::probe::bandwidth::measure(&device, args.size, threads, args.repeats as usize)?;
    if args.json {
        println!("{}", serde_json::to_string(&b)?);
        return Ok(());
    }
    let gbs = |v: f64| v / 1e9;
    println!(
        "{}: {:.1} MiB buffer, {} repeats{}",
        b.device,
        mib(b.buffer_bytes),
        b.repeats,
        if b.threads > 0 {
            format!(", {} threads", b.threads)
        } else {
            String::new()
        }
    );
    if let Some(r) = b.read_bytes_per_s {
        println!("read  {:.1} GB/s", gbs(r));
    }
    println!(
        "copy  {:.1} GB/s (bytes read + written)",
        gbs(b.copy_bytes_per_s)
    );
    println!("decode ceiling uses {:.1} GB/s", gbs(b.decode_bytes_per_s));
    Ok(())
}
