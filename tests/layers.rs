//! The house rule of `docs/ARCHITECTURE.md`, held as data: each top-level module of `src/` may
//! use only the modules listed for it (the layers below it). Every path in the code that leaves
//! its own top-level module (`crate::x…`, or enough `super::` to climb out of it, in `use`
//! trees, in expressions and types, and inside macro calls) is checked, so a use that breaks the
//! layering fails here, naming the file, the line and the module it reached. Comments and
//! strings do not count.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Used by every module, and using none.
const LEAVES: &[&str] = &["error", "units", "stats"];

/// Module → the modules it may use besides the leaves. A module may always use itself.
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("units", &[]),
    ("stats", &[]),
    ("engine", &[]),
    ("probe", &[]),
    ("result", &["engine", "probe"]),
    ("output", &["result"]),
    ("measure", &["engine", "probe", "result", "output"]),
    ("estimate", &["engine", "result", "output"]),
    (
        "suite",
        &["measure", "estimate", "engine", "probe", "result", "output"],
    ),
    ("gate", &["result", "output"]),
    ("quality", &["engine", "result", "output"]),
    ("fuzz", &["engine", "quality", "probe", "output"]),
    (
        "report",
        &["estimate", "engine", "probe", "result", "output"],
    ),
    (
        "cli",
        &["gate", "suite", "estimate", "engine", "result", "output"],
    ),
    (
        "commands",
        &[
            "cli", "report", "gate", "suite", "estimate", "measure", "engine", "probe", "result",
            "output", "fuzz", "quality",
        ],
    ),
];

/// What the crate root re-exports (`crate::Error`, `crate::Result`): the error module's.
const ROOT_ITEMS: &[(&str, &str)] = &[("Error", "error"), ("Result", "error")];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/`: `engine/load/mod.rs` → [engine, load],
/// `engine/load/fetch.rs` → [engine, load, fetch].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The top-level modules a file reaches, with the line of each reference.
struct Reach {
    /// The module the code being visited is in (the file's, plus inline `mod`s).
    path: Vec<String>,
    found: Vec<(String, usize)>,
}

impl Reach {
    /// A path's leading segments: `crate::x` reaches x; `super` climbing to the root reaches
    /// the segment after the last `super`.
    fn segments(&mut self, segs: &[String], line: usize) {
        match segs.first().map(String::as_str) {
            Some("crate") => {
                if let Some(next) = segs.get(1) {
                    self.found.push((next.clone(), line));
                }
            }
            Some("super") => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                if ups >= self.path.len() {
                    if let Some(next) = segs.get(ups) {
                        self.found.push((next.clone(), line));
                    }
                }
            }
            _ => {}
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.leaf(prefix, n.ident.to_string(), n.ident.span()),
            syn::UseTree::Rename(r) => self.leaf(prefix, r.ident.to_string(), r.ident.span()),
            syn::UseTree::Glob(_) | syn::UseTree::Group(_) => {
                if let syn::UseTree::Group(g) = tree {
                    for t in &g.items {
                        self.use_tree(prefix, t);
                    }
                }
            }
        }
    }

    fn leaf(&mut self, prefix: &[String], last: String, span: proc_macro2::Span) {
        let mut segs = prefix.to_vec();
        segs.push(last);
        self.segments(&segs, span.start().line);
    }
}

impl<'ast> Visit<'ast> for Reach {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.path.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.path.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.segments(&segs, line);
        syn::visit::visit_path(self, p);
    }

    /// Macro arguments are tokens to syn: their paths are read from the token text.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let line = m
            .path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        let text = m.tokens.to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let is_crate = *w == "crate" && (i == 0 || words[i - 1] != "$");
            if is_crate && words.get(i + 1) == Some(&"::") {
                if let Some(next) = words.get(i + 2) {
                    let name: String = next
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    self.found.push((name, line));
                }
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// The top-level modules `text` (a file of module `path`) reaches.
fn reaches(path: Vec<String>, text: &str) -> Vec<(String, usize)> {
    let file = syn::parse_file(text).expect("the file parses");
    let mut r = Reach {
        path,
        found: Vec::new(),
    };
    r.visit_file(&file);
    r.found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut broken = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let path = module_path(rel);
        let module = path[0].clone();
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
        for (used, line) in reaches(path, &text) {
            checked += 1;
            let used = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == used)
                .map_or(used.as_str(), |(_, m)| m)
                .to_string();
            assert!(
                LAYERS.iter().any(|(m, _)| *m == used),
                "src/{}:{line}: crate::{used} is no module of the layer graph",
                rel.display()
            );
            if used != module
                && !LEAVES.contains(&used.as_str())
                && !allowed.contains(&used.as_str())
            {
                broken.push(format!(
                    "src/{}:{line}: {module} uses {used}",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        checked > 300,
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
fn references_are_found_in_code_and_not_in_comments_or_strings() {
    let names = |path: &[&str], text: &str| -> Vec<String> {
        reaches(path.iter().map(|s| s.to_string()).collect(), text)
            .into_iter()
            .map(|(m, _)| m)
            .collect()
    };
    let one = |text: &str| names(&["estimate"], text);
    assert_eq!(one("use crate::engine::plan;"), ["engine"]);
    assert_eq!(
        one("use crate::{\n    error::Error,\n    engine::{device, plan},\n};"),
        ["error", "engine", "engine"]
    );
    assert_eq!(
        one("fn f() -> u64 { crate::units::gib(1) as u64 + crate::stats::median(&[]) as u64 }"),
        ["units", "stats"]
    );
    assert_eq!(
        one("fn f() { println!(\"{}\", crate::report::x()); }"),
        ["report"]
    );
    assert!(one("/// [`crate::report`] uses this\nfn f() {}").is_empty());
    assert!(one("fn f() { let s = \"crate::report\"; }").is_empty());
    assert!(one("macro_rules! m { () => { $crate::report::x() } }").is_empty());
    // `super` climbs: from engine/load/fetch.rs, super::super::x is engine's own; one more
    // `super` reaches the crate root.
    let fetch = ["engine", "load", "fetch"];
    assert!(names(&fetch, "use super::super::plan;").is_empty());
    assert_eq!(
        names(&fetch, "use super::super::super::report;"),
        ["report"]
    );
    assert_eq!(
        names(&["cli"], "mod tests { use super::super::gate; }"),
        ["gate"]
    );
}
