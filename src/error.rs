//! The library's error type. Every variant says what was wrong, with which file or value, and
//! (where there is one) what to do about it. The binary maps these to exit codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file not found: {path}\n  hint: pass --model default to use the default model (fetched on first use), or a path to a .gguf file")]
    ModelNotFound { path: PathBuf },

    #[error(
        "{path} is not a GGUF file (it starts with {magic:02x?}, a GGUF file starts with \"GGUF\")"
    )]
    NotGguf { path: PathBuf, magic: Vec<u8> },

    #[error("{path}: GGUF file is damaged or truncated: {reason}")]
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

    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("{index} lists shard {shard}, which is missing")]
    MissingShard { index: PathBuf, shard: PathBuf },

    #[error("{path}: safetensors damaged or unreadable: {reason}")]
    CorruptSafetensors { path: PathBuf, reason: String },

    #[error("{path}: not a readable image (PNG or JPEG): {reason}")]
    BadImage { path: PathBuf, reason: String },

    #[error("unsupported: {0}")]
    Unsupported(String),

    #[error("fetching the default model failed: {0}")]
    Fetch(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
