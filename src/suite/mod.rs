//! Suites: a TOML file of axes whose product, minus excludes, is the matrix of cases, with the
//! settings every case shares (`suites/README.md` documents the format). The runner
//! (`runner.rs`) runs them, each in a child process (`child.rs`); the frontier search
//! (`frontier.rs`) runs probes the same way.

pub mod child;
pub mod emit;
pub mod frontier;
pub mod runner;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::engine::device::DeviceSpec;
use crate::engine::kv_cache::{KvDtype, KvPair};
use crate::engine::load::format::Format;
use crate::engine::load::spec::ModelSpec;
use crate::error::{Error, Result};
use crate::result::case::{CaseSpec, FillKv, ImageSpec};

/// A suite as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub axes: Axes,
    #[serde(default)]
    pub exclude: Vec<Exclude>,
    /// Measured passes per case.
    #[serde(default = "one")]
    pub repeats: usize,
    #[serde(default)]
    pub warmup: usize,
    /// Seconds a case may take (its child process is killed after that).
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    #[serde(default = "cpu")]
    pub device: DeviceSpec,
    /// A cap on each case's resident memory, e.g. "1536MiB" (overridden by `--memory-limit`).
    #[serde(default, deserialize_with = "byte_size")]
    pub memory_limit: Option<u64>,
    /// The engine every case runs on (`bench --engine`; not a suite file's setting).
    #[serde(skip)]
    pub engine: crate::result::case::CaseEngine,
}

fn one() -> usize {
    1
}
fn default_timeout() -> f64 {
    600.0
}
fn cpu() -> DeviceSpec {
    DeviceSpec::Cpu
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => crate::units::parse_bytes(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The axes; every combination is a case (formats apply to synthetic models and safetensors
/// folders only; a GGUF file runs once in its own formats).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    pub models: Vec<String>,
    #[serde(default)]
    pub quants: Vec<Format>,
    #[serde(default = "f32_kv")]
    pub kv_dtypes: Vec<KvPair>,
    pub contexts: Vec<usize>,
    pub prompt_tokens: Vec<usize>,
    pub gen_tokens: Vec<usize>,
    #[serde(default = "default_chunk")]
    pub prefill_chunks: Vec<usize>,
    /// `false` (no image), `true` (a synthetic image) or an image file.
    #[serde(default = "no_image")]
    pub images: Vec<ImageAxis>,
    /// How the context before the prompt is reached: "none" or "synthetic" (see `run --fill-kv`).
    #[serde(default = "no_fill")]
    pub fill_kv: Vec<FillKv>,
    /// Sequences served at once (see `run --batch`); default 1.
    #[serde(default = "one_sequence")]
    pub batch: Vec<usize>,
}

fn one_sequence() -> Vec<usize> {
    vec![1]
}
fn no_fill() -> Vec<FillKv> {
    vec![FillKv::None]
}
fn f32_kv() -> Vec<KvPair> {
    vec![KvPair::both(KvDtype::F32)]
}
fn default_chunk() -> Vec<usize> {
    vec![512]
}
fn no_image() -> Vec<ImageAxis> {
    vec![ImageAxis::Flag(false)]
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ImageAxis {
    Flag(bool),
    File(String),
}

impl ImageAxis {
    fn spec(&self) -> Option<ImageSpec> {
        match self {
            ImageAxis::Flag(false) => None,
            ImageAxis::Flag(true) => Some(ImageSpec::Synthetic),
            ImageAxis::File(f) => f.parse().ok(),
        }
    }
}

/// Cases to leave out: every field given must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    pub model: Option<String>,
    pub quant: Option<Format>,
    pub kv_dtype: Option<KvPair>,
    pub context: Option<usize>,
    pub prompt_tokens: Option<usize>,
    pub gen_tokens: Option<usize>,
    pub prefill_chunk: Option<usize>,
    pub image: Option<ImageAxis>,
    pub batch: Option<usize>,
}

impl Exclude {
    fn matches(&self, c: &CaseSpec) -> bool {
        fn given<T: PartialEq>(want: &Option<T>, have: T) -> bool {
            want.as_ref().is_none_or(|w| *w == have)
        }
        self.model
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&c.model))
            && self.quant.is_none_or(|q| c.quant == Some(q))
            && given(&self.kv_dtype, c.kv_dtype)
            && given(&self.context, c.ctx.unwrap_or(0))
            && given(&self.prompt_tokens, c.prompt_tokens)
            && given(&self.gen_tokens, c.gen_tokens)
            && given(&self.prefill_chunk, c.prefill_chunk)
            && self.image.as_ref().is_none_or(|i| i.spec() == c.image)
            && given(&self.batch, c.batch)
    }
}

/// Whether `--quant` applies to a model spec (synthetic models and safetensors folders).
pub fn takes_quant(model: &str) -> bool {
    match model.parse::<ModelSpec>() {
        Ok(ModelSpec::Synthetic(_)) | Ok(ModelSpec::HfDir(_)) | Ok(ModelSpec::Hub(_)) => true,
        // GGUF files, the default model, and specs that do not parse (the case records why).
        _ => model.starts_with("synthetic:") || model.starts_with("hf:"),
    }
}

impl Suite {
    /// Reads and checks a suite file; errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|reason| Error::BadConfig {
            path: path.into(),
            reason,
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let suite: Suite =
            toml::from_str(text).map_err(|e| crate::error::toml_message(text, &e))?;
        let a = &suite.axes;
        let empty = [
            ("axes.models", a.models.is_empty()),
            ("axes.contexts", a.contexts.is_empty()),
            ("axes.prompt_tokens", a.prompt_tokens.is_empty()),
            ("axes.gen_tokens", a.gen_tokens.is_empty()),
            ("axes.kv_dtypes", a.kv_dtypes.is_empty()),
            ("axes.prefill_chunks", a.prefill_chunks.is_empty()),
            ("axes.images", a.images.is_empty()),
            ("axes.fill_kv", a.fill_kv.is_empty()),
            ("axes.batch", a.batch.is_empty()),
        ];
        if let Some((key, _)) = empty.iter().find(|(_, e)| *e) {
            return Err(format!("{key} is empty: the matrix would have no case"));
        }
        if a.models.iter().any(|m| takes_quant(m)) && a.quants.is_empty() {
            return Err(
                "axes.quants is empty but synthetic or safetensors models need a format".into(),
            );
        }
        if a.batch.contains(&0) {
            return Err("axes.batch: a batch has at least 1 sequence".into());
        }
        if !(suite.timeout_s.is_finite() && suite.timeout_s > 0.0) {
            return Err("timeout_s must be a positive number of seconds".into());
        }
        if let Some(ImageAxis::File(f)) = a
            .images
            .iter()
            .find(|i| i.spec().is_none() && **i != ImageAxis::Flag(false))
        {
            return Err(format!(
                "axes.images: '{f}' is not an image (true, false or a path)"
            ));
        }
        Ok(suite)
    }

    /// Every case, in a fixed order (axes nested as listed), excludes and the cases the engine
    /// cannot run (`CaseSpec::engine_refusal`) removed; `threads` per case.
    pub fn cases(&self, threads: usize) -> Vec<CaseSpec> {
        let a = &self.axes;
        let mut out = Vec::new();
        for model in &a.models {
            let quants: Vec<Option<Format>> = if takes_quant(model) {
                a.quants.iter().copied().map(Some).collect()
            } else {
                vec![None]
            };
            for &quant in &quants {
                for &kv_dtype in &a.kv_dtypes {
                    for &ctx in &a.contexts {
                        for &prompt_tokens in &a.prompt_tokens {
                            for &gen_tokens in &a.gen_tokens {
                                for &prefill_chunk in &a.prefill_chunks {
                                    for image in &a.images {
                                        for (&fill_kv, &batch) in a
                                            .fill_kv
                                            .iter()
                                            .flat_map(|f| a.batch.iter().map(move |b| (f, b)))
                                        {
                                            let c = CaseSpec {
                                                model: model.clone(),
                                                quant,
                                                seed: 0,
                                                device: self.device,
                                                threads,
                                                prompt_tokens,
                                                gen_tokens,
                                                ctx: Some(ctx),
                                                prefill_chunk,
                                                kv_dtype,
                                                image: image.spec(),
                                                fill_kv,
                                                repeats: self.repeats.max(1),
                                                warmup: self.warmup,
                                                sample_ms: 10.0,
                                                memory_limit_bytes: self.memory_limit,
                                                batch,
                                                engine: self.engine,
                                            };
                                            if !self.exclude.iter().any(|e| e.matches(&c))
                                                && c.engine_refusal().is_none()
                                            {
                                                out.push(c);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// `i/n` (1-based): this shard's share of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("--shard '{s}': expected i/n with 1 <= i <= n, e.g. 2/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether the case at `position` in the matrix belongs to this shard (round robin, so
    /// every shard gets a mix of small and large cases).
    pub fn has(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

/// The suites shipped in `suites/`, built into the binary so `bench quick` works from any folder.
const SHIPPED: &[(&str, &str)] = &[
    ("quick", include_str!("../../suites/quick.toml")),
    ("ci", include_str!("../../suites/ci.toml")),
    ("fit-matrix", include_str!("../../suites/fit-matrix.toml")),
    ("full", include_str!("../../suites/full.toml")),
    ("serving", include_str!("../../suites/serving.toml")),
];

/// A suite by path, or by name: `suites/NAME.toml` under the current folder when it exists (so
/// edits there count), else the copy built into the binary. Returns the suite and where it
/// came from.
pub fn find(name_or_path: &str) -> Result<(Suite, PathBuf)> {
    let p = PathBuf::from(name_or_path);
    if p.exists() || name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return Ok((Suite::load(&p)?, p));
    }
    let local = PathBuf::from("suites").join(format!("{name_or_path}.toml"));
    if local.is_file() {
        return Ok((Suite::load(&local)?, local));
    }
    match SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
        Some((_, text)) => {
            let origin = PathBuf::from(format!("(built-in) suites/{name_or_path}.toml"));
            let suite = Suite::parse(text).map_err(|reason| Error::BadConfig {
                path: origin.clone(),
                reason,
            })?;
            Ok((suite, origin))
        }
        None => Err(Error::BadInput(format!(
            "no suite '{name_or_path}': give a path to a .toml file or one of {}",
            SHIPPED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = r#"
name = "t"
repeats = 2
timeout_s = 30
[axes]
models = ["default", "synthetic:1b"]
quants = ["q4_k_m", "q8_0"]
contexts = [1024, 4096]
prompt_tokens = [64]
gen_tokens = [8]
images = [false, true]

[[exclude]]
model = "synthetic:1b"
quant = "q8_0"
context = 4096
"#;

    #[test]
    fn the_matrix_is_the_product_minus_excludes() {
        let s = Suite::parse(SUITE).unwrap();
        let cases = s.cases(2);
        // default: 1 (own format) × 2 ctx × 2 images = 4; 1b: 2 quants × 2 × 2 = 8, minus 2.
        assert_eq!(cases.len(), 4 + 8 - 2);
        assert!(cases
            .iter()
            .all(|c| c.model != "default" || c.quant.is_none()));
        let q8: Format = "q8_0".parse().unwrap();
        assert!(!cases
            .iter()
            .any(|c| c.quant == Some(q8) && c.ctx == Some(4096)));
        assert_eq!(cases.iter().filter(|c| c.image.is_some()).count(), 5);
        assert_eq!((s.repeats, s.device), (2, DeviceSpec::Cpu));
        assert!(cases.iter().all(|c| c.repeats == 2 && c.threads == 2));
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_matrix() {
        let n = Suite::parse(SUITE).unwrap().cases(1).len();
        for count in 1..=5 {
            let mut seen = vec![0; n];
            for index in 1..=count {
                let shard: Shard = format!("{index}/{count}").parse().unwrap();
                for (i, s) in seen.iter_mut().enumerate() {
                    if shard.has(i) {
                        *s += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{count} shards: {seen:?}");
        }
        for bad in ["0/3", "4/3", "x", "1/0", "2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_suites_name_the_line_and_key() {
        let e =
            Suite::parse(&SUITE.replace("contexts = [1024, 4096]", "contexts = [1024, \"big\"]"))
                .unwrap_err();
        assert!(e.contains("line 8") && e.contains("contexts"), "{e}");
        let e = Suite::parse(&SUITE.replace("repeats = 2", "repeats = 2\nrepeat = 3")).unwrap_err();
        assert!(e.contains("line 4") && e.contains("repeat"), "{e}");
        let e = Suite::parse(&SUITE.replace("quants = [\"q4_k_m\", \"q8_0\"]", "quants = []"))
            .unwrap_err();
        assert!(e.contains("axes.quants"), "{e}");
        let e = Suite::parse(&SUITE.replace("\"q8_0\"]", "\"q9_9\"]")).unwrap_err();
        assert!(e.contains("q9_9") && e.contains("line 7"), "{e}");
        let e =
            Suite::parse(&SUITE.replace("[axes]", "memory_limit = \"lots\"\n[axes]")).unwrap_err();
        assert!(e.contains("'lots' is not a size"), "{e}");
        let e = Suite::parse(&SUITE.replace("[axes]", "[axes]\nkv_dtypes = [\"q8_0/q3_k\"]"))
            .unwrap_err();
        assert!(e.contains("kv_dtypes") && e.contains("q3_k"), "{e}");
        // One line, whatever toml's own layout.
        assert!(!e.contains('\n'), "{e}");
        // Names are read in any case, as they always were.
        let upper =
            Suite::parse(&SUITE.replace("[axes]", "device = 'CPU'\n[axes]\nkv_dtypes = ['BF16']"))
                .unwrap();
        assert_eq!(upper.cases(1)[0].kv_dtype, KvPair::both(KvDtype::Bf16));
        // K/V pairs: a case's key names the value type only where it differs.
        let pairs =
            Suite::parse(&SUITE.replace("[axes]", "[axes]\nkv_dtypes = ['q8_0/f16', 'q4_0']"))
                .unwrap()
                .cases(1);
        let keys: Vec<_> = pairs.iter().map(|c| c.kv_dtype.to_string()).collect();
        assert!(
            keys.contains(&"q8_0/f16".into()) && keys.contains(&"q4_0".into()),
            "{keys:?}"
        );
        let k = pairs
            .iter()
            .find(|c| c.kv_dtype.k != c.kv_dtype.v)
            .unwrap()
            .key();
        assert_eq!((k.kv_dtype, k.v_dtype), (KvDtype::Q8_0, Some(KvDtype::F16)));
        assert!(k.id().contains("|q8_0/f16|"), "{}", k.id());
    }

    #[test]
    fn shipped_suites_parse() {
        for (name, text) in SHIPPED {
            let s = Suite::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, *name);
            assert!(!s.cases(1).is_empty(), "{name}");
        }
    }
}
