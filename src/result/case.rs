//! The one case type. A [`CaseSpec`] says everything about what to measure; the suite's matrix
//! cells, `run`'s options and the frontier's probes are all `CaseSpec`s, the runner hands one to
//! its child process as JSON, and the record's [`CaseKey`] (what identifies the case across runs
//! and machines) and [`CaseParams`] (how it was run) are views of it.
//!
//! **Adding an axis** (batch, engine): a field here, its option in `cli.rs` and
//! its axis in `suite/`, and the code that uses it. In [`CaseKey`] the new field is
//! `#[serde(default)]` and left out of [`CaseKey::id`] while it has its default value, so every
//! record written before keeps its key and id (`fill_kv` and `v_dtype` are the examples).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::engine::device::{DeviceKind, DeviceSpec};
use crate::engine::kv_cache::{KvDtype, KvPair};
use crate::engine::load::format::Format;
use crate::engine::load::spec::ModelSpec;
use crate::engine::vision::VisionConfig;

/// An image in a case's prompt: seeded random pixels, or a PNG/JPEG file ("synthetic" or the
/// path, in specs and records).
#[derive(Debug, Clone, PartialEq, Eq, Hash, SerializeDisplay, DeserializeFromStr)]
pub enum ImageSpec {
    Synthetic,
    File(PathBuf),
}

impl ImageSpec {
    /// What the key holds: "synthetic", or the file's name without its folder (so machines agree).
    pub fn key_name(&self) -> String {
        match self {
            ImageSpec::Synthetic => "synthetic".into(),
            ImageSpec::File(p) => file_name(p),
        }
    }
}

impl std::str::FromStr for ImageSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "synthetic" => ImageSpec::Synthetic,
            "" => return Err("an image is 'synthetic' or a path to a PNG/JPEG file".into()),
            path => ImageSpec::File(path.into()),
        })
    }
}

impl std::fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSpec::Synthetic => f.write_str("synthetic"),
            ImageSpec::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How the context before the prompt is reached (`--fill-kv`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FillKv {
    /// Nothing before the prompt: it starts at position 0.
    #[default]
    None,
    /// The KV cache filled with random keys and values up to ctx − prompt − image − generated
    /// positions; the prompt is prefilled and the tokens decoded at that depth.
    Synthetic,
}

impl std::str::FromStr for FillKv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(FillKv::None),
            "synthetic" => Ok(FillKv::Synthetic),
            _ => Err(format!("fill_kv '{s}' (choose none or synthetic)")),
        }
    }
}

/// Records write the fill as `null` (none) or `"synthetic"`, as they always have.
impl Serialize for FillKv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FillKv::None => s.serialize_none(),
            FillKv::Synthetic => s.serialize_str("synthetic"),
        }
    }
}

impl<'de> Deserialize<'de> for FillKv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(FillKv::None),
            Some(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The engine that runs a case (`--engine`): gemma-fit's own, or llama.cpp as a peer with the
/// settings that change what it allocates (its K/V types are the case's `kv_dtype`; its
/// `n_batch` is the case's `prefill_chunk`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "name")]
pub enum CaseEngine {
    #[default]
    #[serde(rename = "gemma-fit")]
    GemmaFit,
    /// llama.cpp through llama-cpp-python's C API (`measure/llamacpp.rs`).
    #[serde(rename = "llama.cpp")]
    LlamaCpp {
        /// `-ub`: the micro-batch.
        n_ubatch: usize,
        /// `-fa on|off`.
        flash_attn: bool,
        /// `--swa-full`: a full-size cache on the sliding layers.
        swa_full: bool,
    },
}

impl CaseEngine {
    /// A short tag: None for gemma-fit, else e.g. `llama.cpp:ub512:fa:swa-full` (the key id's
    /// last field, and the reports' label).
    pub fn tag(&self) -> Option<String> {
        match self {
            CaseEngine::GemmaFit => None,
            CaseEngine::LlamaCpp {
                n_ubatch,
                flash_attn,
                swa_full,
            } => Some(format!(
                "llama.cpp:ub{n_ubatch}{}{}",
                if *flash_attn { ":fa" } else { "" },
                if *swa_full { ":swa-full" } else { "" }
            )),
        }
    }
}

impl std::fmt::Display for CaseEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaseEngine::GemmaFit => f.write_str("gemma-fit"),
            CaseEngine::LlamaCpp {
                n_ubatch,
                flash_attn,
                swa_full,
            } => write!(
                f,
                "llama.cpp (n_ubatch {n_ubatch}, flash attention {}, swa_full {})",
                if *flash_attn { "on" } else { "off" },
                if *swa_full { "on" } else { "off" }
            ),
        }
    }
}

/// Everything that says what a case measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSpec {
    /// `--model` as given: 'default', a file, a folder, hf:ORG/NAME, synthetic:SIZE.
    pub model: String,
    /// The weight format for synthetic models and safetensors folders (None: the file's own).
    #[serde(default)]
    pub quant: Option<Format>,
    /// Seed of synthetic weights.
    #[serde(default)]
    pub seed: u64,
    pub device: DeviceSpec,
    /// CPU threads for the engine's kernels (resolved: never "all").
    pub threads: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Positions the KV cache holds; None: prompt + image + generated tokens.
    #[serde(default)]
    pub ctx: Option<usize>,
    pub prefill_chunk: usize,
    /// The cache's key and value types ("q8_0", or "q8_0/f16").
    pub kv_dtype: KvPair,
    #[serde(default)]
    pub image: Option<ImageSpec>,
    #[serde(default)]
    pub fill_kv: FillKv,
    /// Measured passes over the one loaded model.
    pub repeats: usize,
    /// Unmeasured passes before them.
    pub warmup: usize,
    /// GPU sampling interval.
    pub sample_ms: f64,
    /// A memory cap the case runs under: the runner's RSS watchdog on the CPU, a ballast on a GPU.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Sequences decoded together, each with its own prompt and KV cache (`--batch`).
    #[serde(default = "one")]
    pub batch: usize,
    /// Which engine runs it (`--engine`).
    #[serde(default)]
    pub engine: CaseEngine,
}

/// The default of `batch` in specs, keys and params written before it existed.
fn one() -> usize {
    1
}

impl CaseSpec {
    /// Refuses a spec no case can run with (the CLI's ranges, for specs read as JSON).
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |what: &str| Err(crate::error::Error::BadInput(format!("case spec: {what}")));
        if !(self.sample_ms.is_finite() && self.sample_ms > 0.0) {
            return bad("the sampling interval (sample_ms, --sample-ms) must be a positive number of milliseconds");
        }
        if self.prompt_tokens == 0 || self.prefill_chunk == 0 || self.repeats == 0 {
            return bad("prompt_tokens, prefill_chunk and repeats must each be at least 1");
        }
        if self.batch == 0 {
            return bad("batch (--batch) must be at least 1");
        }
        if self.batch > 1 && self.image.is_some() {
            return Err(crate::error::Error::Unsupported(
                "an image case runs one sequence: --batch > 1 takes text prompts only".into(),
            ));
        }
        if self.threads == 0 {
            return bad("threads must be at least 1");
        }
        if let Some(ImageSpec::File(path)) = &self.image {
            // Fail before loading gigabytes of weights.
            if !path.is_file() {
                return Err(crate::error::Error::BadInput(format!(
                    "--image {}: no such file",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Why the case's engine cannot run it, if it cannot: llama.cpp runs a GGUF file (`default`
    /// or a path) on the CPU, text prompts from position 0.
    pub fn engine_refusal(&self) -> Option<String> {
        if self.engine == CaseEngine::GemmaFit {
            return None;
        }
        let why = if !matches!(
            self.model.parse(),
            Ok(ModelSpec::Default | ModelSpec::Gguf(_))
        ) {
            format!(
                "llama.cpp runs GGUF files: --model {} has none (use 'default' or a .gguf path)",
                self.model
            )
        } else if self.device != DeviceSpec::Cpu {
            "llama.cpp here is llama-cpp-python's CPU build: --device cpu only".into()
        } else if self.image.is_some() {
            "llama.cpp's image path (its mmproj) is not run by gemma-fit yet: text cases only"
                .into()
        } else if self.fill_kv != FillKv::None {
            "--fill-kv synthetic writes gemma-fit's own cache: llama.cpp cases start at position 0"
                .into()
        } else {
            return None;
        };
        Some(format!("unsupported: {why}"))
    }

    /// The positions the case needs: prompt, the image's (soft tokens and markers), generated.
    pub fn needed_positions(&self, image_positions: usize) -> usize {
        self.prompt_tokens + image_positions + self.gen_tokens
    }

    /// The key, before anything runs: what suites and `--resume` match on. A context left to its
    /// default counts an image as Gemma 3's 258 positions; `measure` corrects it for a model
    /// whose tower makes a different number.
    pub fn key(&self) -> CaseKey {
        let image_positions = self
            .image
            .as_ref()
            .map_or(0, |_| VisionConfig::gemma3().positions_per_image());
        CaseKey {
            size: match self.model.parse() {
                Ok(ModelSpec::Synthetic(s)) => Some(s),
                Ok(ModelSpec::Default) => Some("270m".into()),
                _ => None,
            },
            weights: weights_id(&self.model),
            quant: self.quant,
            kv_dtype: self.kv_dtype.k,
            v_dtype: self.kv_dtype.v_if_different(),
            ctx: self
                .ctx
                .unwrap_or_else(|| self.needed_positions(image_positions)),
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            prefill_chunk: self.prefill_chunk,
            threads: self.threads,
            device_kind: self.device.kind(),
            image: self.image.as_ref().map(ImageSpec::key_name),
            memory_limit_bytes: self.memory_limit_bytes,
            fill_kv: self.fill_kv,
            batch: self.batch,
            engine: self.engine,
        }
    }

    /// The parameters recorded for the case with `key`; `source` and `model_size` say what was
    /// loaded (before a load: the spec as given and the key's size).
    pub fn params(&self, key: &CaseKey) -> CaseParams {
        CaseParams {
            model: self.model.clone(),
            source: self.model.clone(),
            model_size: key.size.clone(),
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            ctx: key.ctx,
            prefill_chunk: self.prefill_chunk,
            kv_dtype: self.kv_dtype,
            threads: self.threads,
            device: self.device,
            image: self.image.as_ref().map(ToString::to_string),
            repeats: self.repeats.max(1),
            warmup: self.warmup,
            seed: self.seed,
            fill_kv: self.fill_kv,
            batch: self.batch,
        }
    }
}

/// The last component of a path (what identifies a file across machines).
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The key's `weights` field for a `--model` spec: kind plus file or folder name, no path.
fn weights_id(model: &str) -> String {
    match model.parse::<ModelSpec>() {
        Ok(ModelSpec::Default) => "default".into(),
        Ok(ModelSpec::Synthetic(_)) => "synthetic".into(),
        Ok(ModelSpec::Hub(id)) => format!("hf:{id}"),
        Ok(ModelSpec::HfDir(p)) => format!("hf-dir:{}", file_name(&p)),
        Ok(ModelSpec::Gguf(p)) => format!("gguf:{}", file_name(&p)),
        Err(_) => model.to_string(),
    }
}

/// The fields that identify a case across runs and machines (never anything about the machine:
/// that is the record's `Environment`). Suites, `--resume`, `compare` and `fit --results` match
/// on it. See the module's note on adding a field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CaseKey {
    /// Gemma 3 size ("270m" … "27b"), when the model's shape is one of the presets.
    pub size: Option<String>,
    /// Where the weights come from: "default", "synthetic", "gguf:FILE", "hf-dir:FOLDER",
    /// "hf:ORG/NAME" (file and folder by name, not path, so machines agree).
    pub weights: String,
    /// `--quant` (synthetic or quantized at load); None for a GGUF file's own formats.
    pub quant: Option<Format>,
    /// The KV cache's key type, and its value type too unless `v_dtype` says otherwise.
    pub kv_dtype: KvDtype,
    /// The value type where it differs from the key type (llama.cpp's `-ctv`); None: the same.
    #[serde(default)]
    pub v_dtype: Option<KvDtype>,
    pub ctx: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_chunk: usize,
    pub threads: usize,
    pub device_kind: DeviceKind,
    /// "synthetic", an image file's name, or None.
    pub image: Option<String>,
    /// A memory cap the case ran under, if any.
    pub memory_limit_bytes: Option<u64>,
    /// How the context before the prompt was reached.
    #[serde(default)]
    pub fill_kv: FillKv,
    /// Sequences decoded together (1 in records written before the axis existed).
    #[serde(default = "one")]
    pub batch: usize,
    /// The engine that ran it, with its settings (gemma-fit in records written before).
    #[serde(default)]
    pub engine: CaseEngine,
}

impl CaseKey {
    /// The cache's K and V types.
    pub fn kv(&self) -> KvPair {
        KvPair {
            k: self.kv_dtype,
            v: self.v_dtype.unwrap_or(self.kv_dtype),
        }
    }

    /// A stable one-line id, e.g. `4b|synthetic|q4_k|f32|ctx4096|p64|g8|c512|t2|cpu|-|-`; fields
    /// added after the first version appear only away from their default (`|fill-synthetic`,
    /// `|b8`, `|llama.cpp:ub512:fa`; the KV types read `q8_0/f16` only when they differ).
    pub fn id(&self) -> String {
        let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        format!(
            "{}|{}|{}|{}|ctx{}|p{}|g{}|c{}|t{}|{}|{}|{}{}{}{}",
            opt(self.size.clone()),
            self.weights,
            opt(self.quant.map(|q| q.to_string())),
            self.kv(),
            self.ctx,
            self.prompt_tokens,
            self.gen_tokens,
            self.prefill_chunk,
            self.threads,
            self.device_kind,
            opt(self.image.clone()),
            opt(self.memory_limit_bytes.map(|b| b.to_string())),
            match self.fill_kv {
                FillKv::None => "",
                FillKv::Synthetic => "|fill-synthetic",
            },
            match self.batch {
                1 => String::new(),
                b => format!("|b{b}"),
            },
            self.engine.tag().map_or(String::new(), |t| format!("|{t}"))
        )
    }
}

/// How the case was run: the spec's fields that do not identify it, and what was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseParams {
    /// `--model` as given.
    pub model: String,
    /// What was loaded, e.g. "synthetic:4b (q4_k)" or a file path.
    pub source: String,
    /// The preset the model's shape matches ("270m" … "27b"), when known.
    #[serde(default)]
    pub model_size: Option<String>,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub ctx: usize,
    pub prefill_chunk: usize,
    /// "q8_0", or "q8_0/f16" for differing key and value types.
    pub kv_dtype: KvPair,
    pub threads: usize,
    pub device: DeviceSpec,
    /// "synthetic" or the image file as given.
    #[serde(default)]
    pub image: Option<String>,
    pub repeats: usize,
    pub warmup: usize,
    pub seed: u64,
    #[serde(default)]
    pub fill_kv: FillKv,
    #[serde(default = "one")]
    pub batch: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> CaseSpec {
        CaseSpec {
            model: "synthetic:4b".into(),
            quant: Some("q4_k".parse().unwrap()),
            seed: 0,
            device: DeviceSpec::Cpu,
            threads: 2,
            prompt_tokens: 64,
            gen_tokens: 8,
            ctx: Some(4096),
            prefill_chunk: 512,
            kv_dtype: KvPair::both(KvDtype::F32),
            image: None,
            fill_kv: FillKv::None,
            repeats: 1,
            warmup: 0,
            sample_ms: 10.0,
            memory_limit_bytes: None,
            batch: 1,
            engine: CaseEngine::GemmaFit,
        }
    }

    #[test]
    fn key_id_is_stable_and_distinguishes_cases() {
        let k = spec().key();
        assert_eq!(
            k.id(),
            "4b|synthetic|q4_k|f32|ctx4096|p64|g8|c512|t2|cpu|-|-"
        );
        let image = CaseSpec {
            image: Some(ImageSpec::File("/photos/cat.png".into())),
            ..spec()
        };
        assert_eq!(image.key().image.as_deref(), Some("cat.png"));
        assert_ne!(k.id(), image.key().id());
        let filled = CaseSpec {
            fill_kv: FillKv::Synthetic,
            ..spec()
        };
        assert!(filled.key().id().ends_with("|-|-|fill-synthetic"));
        let batched = CaseSpec {
            batch: 8,
            fill_kv: FillKv::Synthetic,
            ..spec()
        };
        assert!(batched.key().id().ends_with("|-|-|fill-synthetic|b8"));
        assert_ne!(batched.key(), filled.key());
        // The default context counts Gemma 3's 258 image positions.
        let default_ctx = CaseSpec {
            ctx: None,
            image: Some(ImageSpec::Synthetic),
            ..spec()
        };
        assert_eq!(default_ctx.key().ctx, 64 + 258 + 8);
        let llama = CaseSpec {
            engine: CaseEngine::LlamaCpp {
                n_ubatch: 512,
                flash_attn: true,
                swa_full: false,
            },
            ..spec()
        };
        assert!(llama.key().id().ends_with("|-|-|llama.cpp:ub512:fa"));
        let full = CaseSpec {
            engine: CaseEngine::LlamaCpp {
                n_ubatch: 256,
                flash_attn: false,
                swa_full: true,
            },
            ..spec()
        };
        assert!(full.key().id().ends_with("|-|-|llama.cpp:ub256:swa-full"));
    }

    /// What llama.cpp cannot run is refused before anything starts, saying why.
    #[test]
    fn llama_cpp_runs_gguf_text_cases_on_the_cpu() {
        let llama = |model: &str| CaseSpec {
            model: model.into(),
            quant: None,
            engine: CaseEngine::LlamaCpp {
                n_ubatch: 512,
                flash_attn: true,
                swa_full: false,
            },
            ..spec()
        };
        assert_eq!(llama("default").engine_refusal(), None);
        assert_eq!(llama("/models/x.gguf").engine_refusal(), None);
        assert!(
            spec().engine_refusal().is_none(),
            "gemma-fit runs everything"
        );
        let why = |s: CaseSpec| s.engine_refusal().unwrap();
        assert!(why(llama("synthetic:1b")).contains("GGUF files"));
        assert!(why(CaseSpec {
            fill_kv: FillKv::Synthetic,
            ..llama("default")
        })
        .contains("position 0"));
        assert!(why(CaseSpec {
            image: Some(ImageSpec::Synthetic),
            ..llama("default")
        })
        .contains("text cases"));
    }

    /// Keys read from a record of the first version (no `fill_kv`) keep their id, and a key's
    /// JSON is what records have always held.
    #[test]
    fn keys_of_old_records_read_and_keep_their_id() {
        let old = r#"{"size":"270m","weights":"default","quant":null,"kv_dtype":"f32","ctx":1024,
            "prompt_tokens":512,"gen_tokens":32,"prefill_chunk":512,"threads":2,"device_kind":"cpu",
            "image":null,"memory_limit_bytes":null}"#;
        let k: CaseKey = serde_json::from_str(old).unwrap();
        assert_eq!(k.fill_kv, FillKv::None);
        assert_eq!(k.batch, 1, "old records read as one sequence");
        assert_eq!(
            k.engine,
            CaseEngine::GemmaFit,
            "old records are gemma-fit's"
        );
        assert_eq!(
            k.id(),
            "270m|default|-|f32|ctx1024|p512|g32|c512|t2|cpu|-|-"
        );
        let v = serde_json::to_value(spec().key()).unwrap();
        assert_eq!(v["quant"], "q4_k");
        assert_eq!(v["device_kind"], "cpu");
        assert_eq!(v["fill_kv"], serde_json::Value::Null);
        assert_eq!(v["engine"], serde_json::json!({"name": "gemma-fit"}));
        let llama = CaseSpec {
            engine: CaseEngine::LlamaCpp {
                n_ubatch: 512,
                flash_attn: true,
                swa_full: false,
            },
            ..spec()
        };
        let v = serde_json::to_value(llama.key()).unwrap();
        assert_eq!(
            v["engine"],
            serde_json::json!({"name": "llama.cpp", "n_ubatch": 512, "flash_attn": true, "swa_full": false})
        );
        assert_eq!(serde_json::from_value::<CaseKey>(v).unwrap(), llama.key());
    }

    #[test]
    fn specs_no_case_can_run_with_are_refused() {
        assert!(spec().check().is_ok());
        for bad in [
            CaseSpec {
                sample_ms: -1.0,
                ..spec()
            },
            CaseSpec {
                repeats: 0,
                ..spec()
            },
            CaseSpec {
                threads: 0,
                ..spec()
            },
            CaseSpec { batch: 0, ..spec() },
        ] {
            assert!(bad
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("case spec: "));
        }
    }

    #[test]
    fn a_spec_survives_its_json() {
        let s = CaseSpec {
            image: Some(ImageSpec::Synthetic),
            fill_kv: FillKv::Synthetic,
            device: DeviceSpec::Cuda(1),
            memory_limit_bytes: Some(1 << 30),
            batch: 4,
            ..spec()
        };
        let back: CaseSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
