//! Where records live: JSON-lines results files (one record per line, appended and synced as
//! each case ends, so a killed run keeps every finished case), single records written
//! atomically (`run --out`), and the default folder a machine's results go to.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::result::CaseResult;

/// The folder results go to by default, under the current folder: git-ignored in a checkout of
/// gemma-fit, so a user's runs never touch the published examples in `reports/`.
pub const RESULTS_DIR: &str = "results";

/// `results/<slug of the machine>/results.jsonl`.
pub fn default_results_path(machine: &str) -> PathBuf {
    Path::new(RESULTS_DIR)
        .join(slug(machine))
        .join("results.jsonl")
}

/// A lowercase slug of a machine's name: "AMD EPYC 7B13" → "amd-epyc-7b13".
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "unknown-machine".into()
    } else {
        out
    }
}

/// Creates the folder a results file goes into.
pub fn create_parent(results: &Path) -> Result<()> {
    match results.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        None => Ok(()),
    }
}

/// The records of several results files or folders ([`read_set`]), and how many lines did not
/// parse.
pub fn read_all(paths: &[PathBuf]) -> Result<(Vec<CaseResult>, usize)> {
    let mut all = Vec::new();
    let mut bad = 0;
    for p in paths {
        let (mut r, b) = read_set(p)?;
        all.append(&mut r);
        bad += b;
    }
    Ok((all, bad))
}

/// The records of a results file, or of every `*.jsonl` and `*.json` file in a folder (the
/// shards of a sharded run write one each; `run --out` one record per file): files there that
/// hold no record (a peer's log, an export) are passed over; a folder with no record at all is
/// an error.
pub fn read_set(path: &Path) -> Result<(Vec<CaseResult>, usize)> {
    if !path.is_dir() {
        return read_records(path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "jsonl" || x == "json"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    let mut bad = 0;
    for f in &files {
        if let Ok((mut r, b)) = read_records(f) {
            all.append(&mut r);
            bad += b;
        }
    }
    if all.is_empty() {
        return Err(Error::BadConfig {
            path: path.into(),
            reason: format!(
                "no result records in this folder ({} .jsonl/.json file(s) read)",
                files.len()
            ),
        });
    }
    Ok((all, bad))
}

/// The records of a results file: JSON lines (`bench`), or one JSON record (`run --out`).
/// Lines that do not parse (one cut short by a kill) are skipped and counted; a file with no
/// record at all is an error.
pub fn read_records(path: &Path) -> Result<(Vec<CaseResult>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if let Ok(one) = serde_json::from_str::<CaseResult>(&text) {
        return Ok((vec![one], 0));
    }
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<CaseResult>(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    if records.is_empty() {
        return Err(Error::BadConfig {
            path: path.into(),
            reason:
                "no result records (expected JSON lines from `bench` or a record from `run --out`)"
                    .into(),
        });
    }
    Ok((records, bad))
}

/// The case keys already in a results file (lines that do not parse, such as one cut short by
/// a kill, are skipped; a missing file has none).
pub fn recorded_keys(path: &Path) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<CaseResult>(l).ok())
        .map(|r| r.key.id())
        .collect()
}

/// Appends one record as a line, flushed and synced. A file whose last line was cut short gets
/// a newline first, so the new record starts on a line of its own.
pub fn append(path: &Path, record: &CaseResult) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut line = String::new();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(|e| Error::io(path, e))?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&serde_json::to_string(record)?);
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|_| f.flush())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON to `path` through a temporary file in the same folder, so a
/// reader never sees half a record.
pub fn write_json_atomically(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(path, e))?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    writeln!(tmp).map_err(|e| Error::io(path, e))?;
    persist(tmp, path)
}

/// Moves a finished temporary file into place at `path`, readable as a plain new file is
/// (`tempfile` creates its files 0600, which would hide results from other users).
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Merges records (e.g. concatenated result files from several machines or shards): one per
/// case key, the newest (`started_unix_s`; on a tie, the later in the input), in input order.
pub fn newest_per_key(records: Vec<CaseResult>) -> Vec<CaseResult> {
    let mut best: HashMap<String, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let id = r.key.id();
        match best.get(&id) {
            Some(&j) if records[j].started_unix_s > r.started_unix_s => {}
            _ => {
                best.insert(id, i);
            }
        }
    }
    let keep: HashSet<usize> = best.into_values().collect();
    records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, r)| r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::case::CaseSpec;
    use crate::result::{Environment, Outcome};

    fn spec() -> CaseSpec {
        serde_json::from_str(
            r#"{"model":"synthetic:270m","quant":"q8_0","device":"cpu","threads":2,
            "prompt_tokens":8,"gen_tokens":2,"ctx":64,"prefill_chunk":512,"kv_dtype":"f32",
            "repeats":1,"warmup":0,"sample_ms":10.0}"#,
        )
        .unwrap()
    }

    fn environment() -> Environment {
        serde_json::from_str(
            r#"{"tool_version":"","git_commit":"","rustc_version":"","candle_version":"",
            "features":[],"cpu_model":"","physical_cores":null,"logical_cores":1,
            "ram_total_bytes":0,"os":"","kernel":""}"#,
        )
        .unwrap()
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("AMD EPYC 7B13 64-Core Processor"),
            "amd-epyc-7b13-64-core-processor"
        );
        assert_eq!(slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
        assert_eq!(slug("  "), "unknown-machine");
        assert_eq!(
            default_results_path("NVIDIA H200"),
            Path::new("results/nvidia-h200/results.jsonl")
        );
    }

    #[test]
    fn appending_after_a_cut_line_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let rec = CaseResult::unrun(
            &spec(),
            Outcome::Timeout { limit_s: 1.0 },
            environment(),
            None,
        );
        std::fs::write(&path, b"{\"schema_version\": 1, \"key\": {\"si").unwrap();
        append(&path, &rec).unwrap();
        append(&path, &rec).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let keys = recorded_keys(&path);
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&spec().key().id()));
        let (records, bad) = read_records(&path).unwrap();
        assert_eq!((records.len(), bad), (2, 1));
    }

    #[test]
    fn merged_files_keep_the_newest_record_per_case() {
        let rec = |ctx: usize, t: u64, outcome: Outcome| {
            let mut r = CaseResult::unrun(
                &CaseSpec {
                    ctx: Some(ctx),
                    ..spec()
                },
                outcome,
                environment(),
                None,
            );
            r.started_unix_s = t;
            r
        };
        let err = || Outcome::Error {
            message: "x".into(),
        };
        let merged = newest_per_key(vec![
            rec(4096, 10, err()),
            rec(8192, 5, Outcome::Ok),
            rec(4096, 20, Outcome::Ok),
            rec(8192, 3, err()),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].key.ctx, merged[0].started_unix_s), (8192, 5));
        assert_eq!(
            (merged[1].key.ctx, merged[1].outcome.clone()),
            (4096, Outcome::Ok)
        );
    }
}
