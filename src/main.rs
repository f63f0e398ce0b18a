use clap::Parser;

use gemma_fit::cli::{Cli, Command};
use gemma_fit::commands;

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Fetch(a) => commands::fetch(a),
        Command::Info(a) => commands::info(a),
        Command::Tokenize(a) => commands::tokenize(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
