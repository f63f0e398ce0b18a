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

/// A closed pipe (`gemma-fit models | head -3`) ends the program quietly, as it ends other
/// command-line tools, instead of a panic in the next `println!`. (Rust ignores SIGPIPE.)
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints the error on one line, as `error: …`.
fn fail(e: &anyhow::Error, code: i32) -> ! {
    eprintln!("error: {}", gemma_fit::error::one_line(&format!("{e:#}")));
    std::process::exit(code);
}

/// Whether an error is the input's fault (exit status 2), not the run's.
fn input_error(e: &anyhow::Error) -> bool {
    use gemma_fit::Error as E;
    matches!(
        e.downcast_ref::<E>(),
        Some(
            E::BadInput(_)
                | E::CorruptLogits { .. }
                | E::ModelNotFound { .. }
                | E::NotGguf { .. }
                | E::CorruptGguf { .. }
                | E::CorruptSafetensors { .. }
                | E::BadConfig { .. }
                | E::UnknownModelSpec { .. }
        )
    )
}

fn main() {
    tune_allocator();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    // candle sizes its thread pools from RAYON_NUM_THREADS when they are first used.
    let threads = match &cli.command {
        Command::Generate(a) => a.engine.threads,
        Command::Run(a) => a.engine.threads,
        Command::Quality(a) => a.engine.threads,
        _ => None,
    };
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let result = match &cli.command {
        Command::Fetch(a) => commands::fetch::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Check(a) => commands::check::run(a),
        Command::Fuzz(a) => commands::fuzz::run(a),
        Command::Models(a) => commands::models::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Dequantize(a) => commands::dequantize::run(a),
        // Bad input (a short text, a reference from another model, a damaged file) exits 2.
        Command::Quality(a) => match commands::quality::run(a) {
            Ok(()) => Ok(()),
            Err(e) => fail(&e, if input_error(&e) { 2 } else { 1 }),
        },
        Command::Case(a) => commands::case::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Frontier(a) => commands::frontier::run(a),
        Command::Fit(a) => commands::fit::run(a),
        Command::Gpus(a) => commands::gpus::run(a),
        Command::Bandwidth(a) => commands::bandwidth::run(a),
        Command::Report(a) => commands::report::run(a),
        // The gate: 0 no regression, 1 a regression, 2 bad input.
        Command::Compare(a) => match commands::compare::run(a) {
            Ok(regressed) => std::process::exit(i32::from(regressed)),
            Err(e) => fail(&e, 2),
        },
    };
    if let Err(e) = result {
        fail(&e, 1);
    }
}
