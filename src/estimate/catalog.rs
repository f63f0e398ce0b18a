//! The GPU catalog: `gpus.toml` beside this file (built into the binary), extended or
//! overridden by users' own files in the same format.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const BUILT_IN: &str = include_str!("gpus.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The vendor's capacity label in GB ("24 GB").
    pub memory_gb: f64,
    /// Total memory as the driver reports it (nvidia-smi), MiB: what verdicts compare against.
    pub total_mib: u64,
    pub bandwidth_gbs: f64,
    #[serde(default)]
    pub bf16_tflops: Option<f64>,
    #[serde(default)]
    pub tdp_w: Option<f64>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub total_source: String,
}

impl Gpu {
    pub fn total_bytes(&self) -> u64 {
        self.total_mib << 20
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    gpu: Vec<Gpu>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub gpus: Vec<Gpu>,
}

fn parse(text: &str, origin: &str) -> Result<Vec<Gpu>> {
    let bad = |reason: String| Error::BadConfig {
        path: format!("GPU catalog {origin}").into(),
        reason,
    };
    let file: File = toml::from_str(text).map_err(|e| {
        bad(format!(
            "{} (expected [[gpu]] tables with name, memory_gb, total_mib, bandwidth_gbs; see `gemma-fit gpus --help`)",
            crate::error::toml_message(text, &e)
        ))
    })?;
    for g in &file.gpu {
        if g.total_mib == 0 || g.bandwidth_gbs <= 0.0 || g.name.trim().is_empty() {
            return Err(bad(format!(
                "'{}' needs a name, total_mib > 0 and bandwidth_gbs > 0",
                g.name
            )));
        }
    }
    Ok(file.gpu)
}

/// Lowercase words of a name ("NVIDIA GeForce RTX 4090" → ["nvidia", "geforce", "rtx", "4090"]).
fn words(s: &str) -> Vec<String> {
    s.to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

impl Catalog {
    /// The built-in catalog.
    pub fn built_in() -> Self {
        Catalog {
            gpus: parse(BUILT_IN, "(built in)").expect("the built-in GPU catalog parses"),
        }
    }

    /// The built-in catalog with `files` on top, in order: an entry whose name matches one
    /// already there (case-insensitively) replaces it, others are added.
    pub fn load(files: &[std::path::PathBuf]) -> Result<Self> {
        let mut c = Self::built_in();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            for g in parse(&text, &f.display().to_string())? {
                match c
                    .gpus
                    .iter_mut()
                    .find(|o| o.name.eq_ignore_ascii_case(&g.name))
                {
                    Some(o) => *o = g,
                    None => c.gpus.push(g),
                }
            }
        }
        Ok(c)
    }

    /// The GPU a loose name means: "4090", "rtx 4090", "h100 sxm", "NVIDIA L4". A name that
    /// matches several cards, or none, is an error naming the candidates.
    pub fn find(&self, query: &str) -> Result<&Gpu> {
        let q = words(query);
        if q.is_empty() {
            return Err(Error::BadInput("--gpu needs a name, e.g. 4090".into()));
        }
        let names = |g: &Gpu| {
            std::iter::once(g.name.clone())
                .chain(g.aliases.iter().cloned())
                .map(|n| words(&n))
                .collect::<Vec<_>>()
        };
        let exact: Vec<&Gpu> = self.gpus.iter().filter(|g| names(g).contains(&q)).collect();
        if let [one] = exact.as_slice() {
            return Ok(one);
        }
        // Every word of the query is a word of the name; failing that, the query's letters
        // appear in the name's ("rtx4090").
        let by_words: Vec<&Gpu> = self
            .gpus
            .iter()
            .filter(|g| names(g).iter().any(|n| q.iter().all(|w| n.contains(w))))
            .collect();
        let candidates = if by_words.is_empty() {
            let joined = q.concat();
            self.gpus
                .iter()
                .filter(|g| names(g).iter().any(|n| n.concat().contains(&joined)))
                .collect()
        } else {
            by_words
        };
        match candidates.as_slice() {
            [one] => Ok(one),
            [] => {
                let mut scored: Vec<(f64, &str)> = self
                    .gpus
                    .iter()
                    .map(|g| {
                        let score = names(g)
                            .iter()
                            .map(|n| strsim::jaro_winkler(&n.join(" "), &q.join(" ")))
                            .fold(0.0, f64::max);
                        (score, g.name.as_str())
                    })
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                let closest: Vec<&str> = scored.iter().take(3).map(|s| s.1).collect();
                Err(Error::BadInput(format!(
                    "unknown GPU '{query}'; closest: {}. `gemma-fit gpus` lists the catalog; add a card with --catalog FILE, or give --memory SIZE",
                    closest.join(", ")
                )))
            }
            many => Err(Error::BadInput(format!(
                "'{query}' matches several GPUs: {}; say which",
                many.iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_loosely() {
        let c = Catalog::built_in();
        for (q, want) in [
            ("4090", "NVIDIA GeForce RTX 4090"),
            ("rtx 4090", "NVIDIA GeForce RTX 4090"),
            ("RTX4090", "NVIDIA GeForce RTX 4090"),
            ("h100 sxm", "NVIDIA H100 80GB HBM3"),
            ("a10", "NVIDIA A10G"),
            ("l4", "NVIDIA L4"),
            ("NVIDIA H200", "NVIDIA H200"),
        ] {
            assert_eq!(c.find(q).unwrap().name, want, "{q}");
        }
        let e = c.find("h100").unwrap_err().to_string();
        assert!(
            e.contains("several") && e.contains("H100 PCIe") && e.contains("HBM3"),
            "{e}"
        );
        let e = c.find("rtx 4999").unwrap_err().to_string();
        assert!(e.contains("unknown GPU 'rtx 4999'; closest: "), "{e}");
    }

    #[test]
    fn user_files_add_and_replace_entries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mine.toml");
        std::fs::write(
            &f,
            "[[gpu]]\nname = \"NVIDIA GeForce RTX 4090\"\nmemory_gb = 24\ntotal_mib = 20000\nbandwidth_gbs = 1000\n\
             [[gpu]]\nname = \"Lab Card X1\"\nmemory_gb = 8\ntotal_mib = 8192\nbandwidth_gbs = 100\n",
        )
        .unwrap();
        let c = Catalog::load(std::slice::from_ref(&f)).unwrap();
        assert_eq!(c.gpus.len(), Catalog::built_in().gpus.len() + 1);
        assert_eq!(c.find("4090").unwrap().total_mib, 20000);
        assert_eq!(c.find("x1").unwrap().total_bytes(), 8 << 30);
        std::fs::write(&f, "[[gpu]]\nname = \"Y\"\nmemory = 8\n").unwrap();
        let e = Catalog::load(&[f]).unwrap_err().to_string();
        assert!(
            e.contains("mine.toml") && e.contains("unknown field"),
            "{e}"
        );
    }
}
