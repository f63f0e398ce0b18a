//! `--model hf:org/name`: a model folder from the Hugging Face Hub, through the `hf-hub` crate
//! and its cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`). Files already cached are
//! used without any network access; missing ones are downloaded (`HF_TOKEN` or the token saved by
//! `huggingface-cli login` authenticates, which gated models such as Gemma need).

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use crate::error::{Error, Result};

const INDEX: &str = "model.safetensors.index.json";

/// The local folder holding `id`'s config and weights, downloading what the cache lacks.
pub fn resolve(id: &str, progress: bool) -> Result<PathBuf> {
    let cache = Cache::from_env();
    if let Some(dir) = cached(&cache, id)? {
        return Ok(dir);
    }
    download(&cache, id, progress)
}

/// The snapshot folder when config and every weight file are in `cache`.
pub fn cached(cache: &Cache, id: &str) -> Result<Option<PathBuf>> {
    let repo = cache.repo(Repo::model(id.to_string()));
    let Some(config) = repo.get("config.json") else {
        return Ok(None);
    };
    let dir = config.parent().map(PathBuf::from).unwrap_or_default();
    let weights = match repo.get(INDEX) {
        Some(index) => shards(&std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?)?,
        None => vec!["model.safetensors".to_string()],
    };
    Ok(weights.iter().all(|f| repo.get(f).is_some()).then_some(dir))
}

/// Shard file names listed in an index.
fn shards(index: &str) -> Result<Vec<String>> {
    let v: serde_json::Value =
        serde_json::from_str(index).map_err(|e| Error::Fetch(format!("bad {INDEX}: {e}")))?;
    let mut files: Vec<String> = v["weight_map"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    Ok(files)
}

fn download(cache: &Cache, id: &str, progress: bool) -> Result<PathBuf> {
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_token(token)
        .with_progress(progress)
        .build()
        .map_err(|e| explain(id, e))?;
    let repo = api.model(id.to_string());
    let config = repo.get("config.json").map_err(|e| explain(id, e))?;
    let files = match repo.get(INDEX) {
        Ok(index) => shards(&std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?)?,
        Err(_) => vec!["model.safetensors".to_string()],
    };
    for f in files {
        repo.get(&f).map_err(|e| explain(id, e))?;
    }
    Ok(config.parent().map(PathBuf::from).unwrap_or_default())
}

/// Turns hub errors into advice: gated models, missing repos, no network.
fn explain(id: &str, e: hf_hub::api::sync::ApiError) -> Error {
    let text = e.to_string();
    let why = if text.contains("401") || text.contains("403") {
        format!(
            "hf:{id} is gated or private: accept its license at https://huggingface.co/{id} while logged in, \
             then set HF_TOKEN (or run `huggingface-cli login`)"
        )
    } else if text.contains("404") {
        format!("hf:{id}: no such model, or it has no config.json / model.safetensors")
    } else {
        format!("hf:{id} could not be downloaded ({text}); no network? Point --model at a local folder instead")
    };
    Error::Fetch(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hub cache layout: refs/main names a snapshot holding the files.
    fn fake_cache(files: &[&str]) -> (tempfile::TempDir, Cache) {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--google--gemma-3-tiny");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        let snap = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        for f in files {
            std::fs::write(snap.join(f), "{}").unwrap();
        }
        let cache = Cache::new(root.path().into());
        (root, cache)
    }

    #[test]
    fn a_cached_model_resolves_without_network() {
        let (root, cache) = fake_cache(&["config.json", "model.safetensors"]);
        let dir = cached(&cache, "google/gemma-3-tiny").unwrap().unwrap();
        assert_eq!(
            dir,
            root.path()
                .join("models--google--gemma-3-tiny/snapshots/0123abcd")
        );
    }

    #[test]
    fn shards_listed_by_the_index_must_all_be_cached() {
        let (_root, cache) =
            fake_cache(&["config.json", INDEX, "model-00001-of-00002.safetensors"]);
        let snap = _root
            .path()
            .join("models--google--gemma-3-tiny/snapshots/0123abcd");
        std::fs::write(
            snap.join(INDEX),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert!(cached(&cache, "google/gemma-3-tiny").unwrap().is_none());
        std::fs::write(snap.join("model-00002-of-00002.safetensors"), "{}").unwrap();
        assert!(cached(&cache, "google/gemma-3-tiny").unwrap().is_some());
        assert!(cached(&cache, "google/other").unwrap().is_none());
    }
}
