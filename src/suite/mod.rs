//! Suite files (TOML, `suites/*.toml`): axes whose product is the matrix of cases, with
//! excludes, and the settings every case shares. See `suites/README.md` for the format.

pub mod runner;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

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
    pub device: String,
    /// A cap on each case's resident memory, e.g. "1536MiB" (overridden by `--memory-limit`).
    #[serde(default)]
    pub memory_limit: Option<String>,
}

fn one() -> usize {
    1
}
fn default_timeout() -> f64 {
    600.0
}
fn cpu() -> String {
    "cpu".into()
}

/// The axes; every combination is a case (formats apply to synthetic models and safetensors
/// folders only; a GGUF file runs once in its own formats).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    pub models: Vec<String>,
    #[serde(default)]
    pub quants: Vec<String>,
    #[serde(default = "f32_kv")]
    pub kv_dtypes: Vec<String>,
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
    pub fill_kv: Vec<String>,
}

fn no_fill() -> Vec<String> {
    vec!["none".into()]
}

fn f32_kv() -> Vec<String> {
    vec!["f32".into()]
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
    fn spec(&self) -> Option<String> {
        match self {
            ImageAxis::Flag(false) => None,
            ImageAxis::Flag(true) => Some("synthetic".into()),
            ImageAxis::File(f) => Some(f.clone()),
        }
    }
}

/// Cases to leave out: every field given must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    pub model: Option<String>,
    pub quant: Option<String>,
    pub kv_dtype: Option<String>,
    pub context: Option<usize>,
    pub prompt_tokens: Option<usize>,
    pub gen_tokens: Option<usize>,
    pub prefill_chunk: Option<usize>,
    pub image: Option<ImageAxis>,
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteCase {
    pub model: String,
    pub quant: Option<String>,
    pub kv_dtype: String,
    pub ctx: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_chunk: usize,
    pub image: Option<String>,
    pub fill_kv: bool,
}

impl Exclude {
    fn matches(&self, c: &SuiteCase) -> bool {
        let eq = |a: &Option<String>, b: &str| a.as_ref().is_none_or(|a| a.eq_ignore_ascii_case(b));
        eq(&self.model, &c.model)
            && self.quant.as_ref().is_none_or(|q| {
                c.quant
                    .as_ref()
                    .is_some_and(|cq| cq.eq_ignore_ascii_case(q))
            })
            && eq(&self.kv_dtype, &c.kv_dtype)
            && self.context.is_none_or(|v| v == c.ctx)
            && self.prompt_tokens.is_none_or(|v| v == c.prompt_tokens)
            && self.gen_tokens.is_none_or(|v| v == c.gen_tokens)
            && self.prefill_chunk.is_none_or(|v| v == c.prefill_chunk)
            && self.image.as_ref().is_none_or(|i| i.spec() == c.image)
    }
}

/// Whether `--quant` applies to a model spec (synthetic models and safetensors folders).
pub fn takes_quant(model: &str) -> bool {
    match model.parse::<crate::engine::load::spec::ModelSpec>() {
        Ok(crate::engine::load::spec::ModelSpec::Synthetic(_))
        | Ok(crate::engine::load::spec::ModelSpec::HfDir(_))
        | Ok(crate::engine::load::spec::ModelSpec::Hub(_)) => true,
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
        let suite: Suite = toml::from_str(text).map_err(|e| e.to_string())?;
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
        ];
        if let Some((key, _)) = empty.iter().find(|(_, e)| *e) {
            return Err(format!("{key} is empty: the matrix would have no case"));
        }
        if a.models.iter().any(|m| takes_quant(m)) && a.quants.is_empty() {
            return Err(
                "axes.quants is empty but synthetic or safetensors models need a format".into(),
            );
        }
        if !(suite.timeout_s.is_finite() && suite.timeout_s > 0.0) {
            return Err("timeout_s must be a positive number of seconds".into());
        }
        if let Some(l) = &suite.memory_limit {
            parse_bytes(l).map_err(|e| format!("memory_limit: {e}"))?;
        }
        for kv in &a.kv_dtypes {
            crate::measure::pass::parse_kv_dtype(kv).map_err(|e| format!("axes.kv_dtypes: {e}"))?;
        }
        if let Some(f) = a
            .fill_kv
            .iter()
            .find(|f| !matches!(f.as_str(), "none" | "synthetic"))
        {
            return Err(format!("axes.fill_kv: '{f}' (choose none or synthetic)"));
        }
        for q in &a.quants {
            crate::engine::load::synthetic::parse_format(q)
                .map_err(|e| format!("axes.quants: {e}"))?;
        }
        Ok(suite)
    }

    /// Every case, in a fixed order (axes nested as listed), excludes removed.
    pub fn cases(&self) -> Vec<SuiteCase> {
        let a = &self.axes;
        let mut out = Vec::new();
        for model in &a.models {
            let quants: Vec<Option<String>> = if takes_quant(model) {
                a.quants.iter().cloned().map(Some).collect()
            } else {
                vec![None]
            };
            for quant in &quants {
                for kv in &a.kv_dtypes {
                    for &ctx in &a.contexts {
                        for &p in &a.prompt_tokens {
                            for &g in &a.gen_tokens {
                                for &chunk in &a.prefill_chunks {
                                    for (img, fill) in a
                                        .images
                                        .iter()
                                        .flat_map(|i| a.fill_kv.iter().map(move |f| (i, f)))
                                    {
                                        let c = SuiteCase {
                                            model: model.clone(),
                                            quant: quant.clone(),
                                            kv_dtype: kv.to_ascii_lowercase(),
                                            ctx,
                                            prompt_tokens: p,
                                            gen_tokens: g,
                                            prefill_chunk: chunk,
                                            image: img.spec(),
                                            fill_kv: fill == "synthetic",
                                        };
                                        if !self.exclude.iter().any(|e| e.matches(&c)) {
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

/// Parses a byte size: "512MiB", "1.5GiB", "24GB", "1048576".
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512MiB, 24GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024f64.powi(2),
        "gib" | "g" => 1024f64.powi(3),
        "tib" | "t" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use KiB, MiB, GiB, GB, ...)"
            ))
        }
    };
    Ok((v * mult) as u64)
}

/// The suites shipped in `suites/`, built into the binary so `bench quick` works from any folder.
const SHIPPED: &[(&str, &str)] = &[
    ("quick", include_str!("../../suites/quick.toml")),
    ("ci", include_str!("../../suites/ci.toml")),
    ("fit-matrix", include_str!("../../suites/fit-matrix.toml")),
    ("full", include_str!("../../suites/full.toml")),
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
        None => Err(Error::Unsupported(format!(
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
        let cases = s.cases();
        // default: 1 (own format) × 2 ctx × 2 images = 4; 1b: 2 quants × 2 × 2 = 8, minus 2.
        assert_eq!(cases.len(), 4 + 8 - 2);
        assert!(cases
            .iter()
            .all(|c| c.model != "default" || c.quant.is_none()));
        assert!(!cases
            .iter()
            .any(|c| c.quant.as_deref() == Some("q8_0") && c.ctx == 4096));
        assert_eq!(cases.iter().filter(|c| c.image.is_some()).count(), 5);
        assert_eq!((s.repeats, s.device.as_str()), (2, "cpu"));
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_matrix() {
        let n = Suite::parse(SUITE).unwrap().cases().len();
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
        assert!(e.contains("q9_9"), "{e}");
    }

    #[test]
    fn shipped_suites_parse() {
        for (name, text) in SHIPPED {
            let s = Suite::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, *name);
            assert!(!s.cases().is_empty(), "{name}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("24GB"), Ok(24_000_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
