//! The house rule of `docs/ARCHITECTURE.md`, held as data: each top-level module of `src/` may
//! use only the modules listed for it (the layers below it). Every `crate::…` path in the code
//! (not in comments) is checked, so a `use` that breaks the layering fails here, naming the file,
//! the line and the module it reached.

use std::path::Path;

/// Module → the modules it may use. Leaves first; a module is never allowed itself (paths
/// inside a module use `self::`/`super::` or their own name, which are fine).
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("units", &[]),
    ("stats", &[]),
    ("engine", &["error", "units"]),
    ("probe", &["error", "units", "stats"]),
    ("result", &["engine", "probe", "error", "units", "stats"]),
    ("output", &["result", "error", "units", "stats"]),
    (
        "measure",
        &[
            "engine", "probe", "result", "output", "error", "units", "stats",
        ],
    ),
    (
        "estimate",
        &["engine", "result", "output", "error", "units", "stats"],
    ),
    (
        "suite",
        &[
            "measure", "estimate", "engine", "probe", "result", "output", "error", "units", "stats",
        ],
    ),
    ("gate", &["result", "output", "error", "units", "stats"]),
    (
        "report",
        &[
            "estimate", "engine", "probe", "result", "output", "error", "units", "stats",
        ],
    ),
    (
        "cli",
        &[
            "gate", "suite", "estimate", "engine", "result", "output", "error", "units",
        ],
    ),
    (
        "commands",
        &[
            "cli", "report", "gate", "suite", "estimate", "measure", "engine", "probe", "result",
            "output", "error", "units", "stats",
        ],
    ),
];

fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::NAME` references of a line of code (comments left out).
fn references(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `gemma_fit::crate` never occurs; `$crate::` belongs to macros.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    // `use crate::{a, b}` groups.
    if let Some(g) = code.trim_start().strip_prefix("use crate::{") {
        out.extend(
            g.split(['}', ','])
                .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                .filter(|s| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }),
        );
    }
    out
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let modules: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let allowed = LAYERS
            .iter()
            .find(|(m, _)| *m == module)
            .unwrap_or_else(|| {
                panic!("src/{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md")
            })
            .1;
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in references(line) {
                checked += 1;
                if used == module || used == "Error" || used == "Result" {
                    continue;
                }
                assert!(
                    modules.contains(&used.as_str()),
                    "{}:{}: crate::{used} is no module of the layer graph",
                    rel.display(),
                    n + 1
                );
                if !allowed.contains(&used.as_str()) {
                    broken.push(format!(
                        "src/{}:{}: {module} uses {used}",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        checked > 200,
        "only {checked} references found: is the scan broken?"
    );
    assert!(
        broken.is_empty(),
        "uses that break the layering (docs/ARCHITECTURE.md):\n{}",
        broken.join("\n")
    );
}

/// The scan itself: what counts as a reference and what does not.
#[test]
fn references_are_found_in_code_and_not_in_comments() {
    assert_eq!(references("use crate::engine::plan;"), ["engine"]);
    assert_eq!(
        references("    let x = crate::units::gib(b) + crate::stats::median(&v);"),
        ["units", "stats"]
    );
    assert!(references("/// [`crate::estimate`] uses this").is_empty());
    assert!(references("x // crate::report").is_empty());
    assert!(references("return Err($crate::Error::Msg(m))").is_empty());
    assert_eq!(
        references("use crate::{error::Error, engine::device};"),
        ["error", "engine"]
    );
}
