use clap::Parser;

use gemma_fit::cli::{Cli, Command};
use gemma_fit::commands;

/// glibc's malloc raises its mmap threshold after the first large free and then serves
/// multi-MiB buffers from per-thread heaps that it never gives back, so the process's resident
/// memory would report its allocator's history rather than the engine's needs. A fixed 4 MiB
/// threshold sends the big buffers (KV cache, score blocks, long-prompt activations) to mmap,
/// which returns them on free, while chunk-sized activations are reused from the heap without
/// page faults; at most two arenas.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    // candle sizes its thread pools from RAYON_NUM_THREADS when they are first used.
    let threads = match &cli.command {
        Command::Generate(a) => a.engine.threads,
        Command::Run(a) => a.engine.threads,
        _ => None,
    };
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    let result = match &cli.command {
        Command::Fetch(a) => commands::fetch(a),
        Command::Info(a) => commands::info(a),
        Command::Tokenize(a) => commands::tokenize(a),
        Command::Models(a) => commands::models(a),
        Command::Generate(a) => commands::generate(a),
        Command::Run(a) => commands::run(a),
        Command::Bench(a) => commands::bench(a),
        Command::Frontier(a) => commands::frontier(a),
        Command::Fit(a) => commands::fit(a),
        Command::Gpus(a) => commands::gpus(a),
        Command::Bandwidth(a) => commands::bandwidth(a),
        Command::Report(a) => commands::report(a),
        Command::Compare(a) => match commands::compare(a) {
            Ok(regressed) => std::process::exit(i32::from(regressed)),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
