//! The library's error type. Every variant says what was wrong, with which file or value, and
//! (where there is one) what to do about it, in one line. Conditions the harness acts on have
//! types of their own: [`Error::OutOfMemory`] (the case does not fit), [`Error::ContextFull`],
//! [`Error::Interrupted`], and [`Error::BadInput`] (a value that cannot work). The binary maps
//! errors to exit codes; a case's outcome is classified from the type (`result::Outcome`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file not found: {path} (pass --model default for the default model, fetched on first use, or a path to a .gguf file)")]
    ModelNotFound { path: PathBuf },

    #[error(
        "{path} is not a GGUF file (it starts with {magic:02x?}, a GGUF file starts with \"GGUF\")"
    )]
    NotGguf { path: PathBuf, magic: Vec<u8> },

    #[error("{path}: GGUF file is damaged or truncated: {reason} (download it again)")]
    CorruptGguf { path: PathBuf, reason: String },

    #[error("{path}: architecture '{found}' is not supported (gemma-fit runs Gemma 3: general.architecture = \"gemma3\")")]
    UnsupportedArchitecture { path: PathBuf, found: String },

    #[error("{path}: metadata key '{key}' is missing or has the wrong type: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error("{path}: tensor '{name}' is missing (the file is not a complete Gemma 3 model)")]
    MissingTensor { path: PathBuf, name: String },

    #[error("{path}: tensor '{name}' has shape {found:?}, the configuration needs {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("unknown model spec '{spec}': expected 'default', a path to a .gguf file, a folder with config.json and *.safetensors, hf:ORG/NAME, or synthetic:SIZE (270m, 1b, 4b, 12b, 27b)")]
    UnknownModelSpec { spec: String },

    /// A file whose content is not what it should be (suite, config.json, catalog, ...).
    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("{index} lists shard {shard}, which is missing")]
    MissingShard { index: PathBuf, shard: PathBuf },

    #[error("{path}: safetensors damaged or unreadable: {reason} (download it again)")]
    CorruptSafetensors { path: PathBuf, reason: String },

    #[error("{path}: logits file is damaged or truncated: {reason} (make it again)")]
    CorruptLogits { path: PathBuf, reason: String },

    #[error("{path}: not a readable image (PNG or JPEG): {reason}")]
    BadImage { path: PathBuf, reason: String },

    /// A value (an option, a case's shape) that cannot work; the text names it and says why.
    #[error("{0}")]
    BadInput(String),

    /// The case does not fit in the memory there is (refused before allocating, or the
    /// device's allocator failed).
    #[error("{0}")]
    OutOfMemory(String),

    /// The sequence has no room for more positions.
    #[error("context full: {used} positions used, {requested} more requested, room for {capacity} (raise --ctx)")]
    ContextFull {
        used: usize,
        requested: usize,
        capacity: usize,
    },

    /// The user stopped the run (Ctrl-C).
    #[error("interrupted")]
    Interrupted,

    /// Something this build or this version cannot do (yet); the text says what and why.
    #[error("{0}")]
    Unsupported(String),

    #[error("fetching the default model failed: {0}")]
    Fetch(String),

    /// The cause is in the message, not the error chain, so `{:#}` does not say it twice.
    #[error("I/O error on {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{}", candle_message(.0))]
    Candle(#[from] candle_core::Error),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// Whether the error means the case did not fit: our own refusal, or a device allocator's
    /// out-of-memory error (matched by type, never by message).
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            Error::OutOfMemory(_) => true,
            Error::Candle(e) => candle_out_of_memory(e),
            _ => false,
        }
    }
}

/// A candle error without the wrappers that carry no message of their own: backtraces (which
/// candle captures when RUST_BACKTRACE is set) are dropped, contexts and paths kept on one line.
fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => one_line(&other.to_string()),
    }
}

fn candle_out_of_memory(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
            candle_out_of_memory(inner)
        }
        #[cfg(feature = "cuda")]
        E::Cuda(inner) => {
            use candle_core::cuda::cudarc::cublas::{result::CublasError, sys::cublasStatus_t};
            use candle_core::cuda::cudarc::driver::{sys::CUresult, DriverError};
            use candle_core::cuda::CudaError;
            matches!(
                inner.downcast_ref::<CudaError>(),
                Some(CudaError::Cuda(DriverError(
                    CUresult::CUDA_ERROR_OUT_OF_MEMORY
                ))) | Some(CudaError::Cublas(CublasError(
                    cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED
                )))
            ) || matches!(
                inner.downcast_ref::<DriverError>(),
                Some(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY))
            )
        }
        _ => false,
    }
}

/// `s` quoted for an error message: escaped (no control characters, no raw bytes) and cut to
/// 60 characters, so a damaged name can never fill a terminal.
pub fn quote(s: &str) -> String {
    cut(s.escape_debug().to_string())
}

/// Bytes that may not be text, quoted as [`quote`] does: printable ASCII as it is, everything
/// else as escapes (`\xff`).
pub fn quote_bytes(b: &[u8]) -> String {
    cut(b.escape_ascii().to_string())
}

fn cut(escaped: String) -> String {
    const MAX: usize = 60;
    match escaped.char_indices().nth(MAX) {
        Some((i, _)) => format!("'{}…'", &escaped[..i]),
        None => format!("'{escaped}'"),
    }
}

/// `text` on one line: the lines trimmed and joined with "; " (empty ones dropped).
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A TOML error on one line: where (line and the line's text, shortened) and what.
pub fn toml_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let source: String = text
                .lines()
                .nth(line - 1)
                .unwrap_or("")
                .trim()
                .chars()
                .take(80)
                .collect();
            format!("line {line} ({source}): {}", one_line(e.message()))
        }
        None => one_line(e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_a_type_not_a_message() {
        assert!(Error::OutOfMemory("27b in f32 needs 100 GiB".into()).is_out_of_memory());
        // A message that reads like one is not one.
        assert!(
            !Error::BadInput("out of memory: needs 3 GiB, 2 available".into()).is_out_of_memory()
        );
        let wrapped = candle_core::Error::Msg("x".into()).context("loading");
        assert!(!Error::Candle(wrapped).is_out_of_memory());
    }

    #[test]
    fn candle_errors_are_one_line_without_backtraces() {
        let inner = candle_core::Error::Msg("shape mismatch\nin matmul".into());
        let e = Error::Candle(candle_core::Error::WithBacktrace {
            inner: Box::new(inner.context("layer 3")),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        });
        assert_eq!(e.to_string(), "layer 3: shape mismatch; in matmul");
    }
}
