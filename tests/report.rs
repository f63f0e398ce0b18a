//! `gemma-fit report` as users run it: real records from `run`, one machine and several.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn gemma_fit() -> Command {
    Command::cargo_bin("gemma-fit").unwrap()
}

/// Two finished synthetic 270M cases at two contexts and one that fails (a context too small
/// for its prompt), as `run --out` records.
fn records(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (name, quant, ctx) in [
        ("a", "q8_0", "256"),
        ("b", "q8_0", "1024"),
        ("c", "q8_0", "8"),
    ] {
        let path = dir.join(format!("{name}.json"));
        let mut cmd = gemma_fit();
        cmd.args([
            "run",
            "-m",
            "synthetic:270m",
            "--quant",
            quant,
            "--ctx",
            ctx,
            "--prompt-tokens",
            "16",
            "--gen",
            "2",
            "--repeats",
            "2",
            "--fill-kv",
            "synthetic",
            "--out",
        ])
        .arg(&path);
        if ctx == "8" {
            cmd.assert().failure();
        } else {
            cmd.assert().success();
        }
        out.push(path);
    }
    out
}

/// Every href and src of an HTML page points at a file that exists beside it.
fn links_resolve(page: &Path) {
    let html = std::fs::read_to_string(page).unwrap();
    let mut n = 0;
    for attr in ["href=\"", "src=\""] {
        for part in html.split(attr).skip(1) {
            let target = &part[..part.find('"').unwrap()];
            assert!(
                !target.starts_with("http"),
                "{page:?} reaches the network: {target}"
            );
            let p = page.parent().unwrap().join(target);
            assert!(
                p.exists(),
                "{page:?} links to {target}, which does not exist"
            );
            n += 1;
        }
    }
    assert!(n > 5, "{page:?} has only {n} links");
}

fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG parses");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

/// How many lines of an SVG are stroked in `colour`.
fn strokes(path: &Path, colour: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(colour))
        .count()
}

#[test]
fn a_machine_report_has_its_table_charts_exports_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let files = records(dir.path());
    let out = dir.path().join("report");
    gemma_fit()
        .arg("report")
        .args(&files)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    links_resolve(&out.join("index.html"));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("Environment"),
        "charts inline"
    );

    // The fit table: both contexts measured, the failed case recorded with its reason.
    let md = std::fs::read_to_string(out.join("fit-table.md")).unwrap();
    assert!(
        md.contains("270m q8_0 kv f32") && md.contains("tok/s"),
        "{md}"
    );
    assert!(md.contains("error: "), "the failed case's reason: {md}");

    // Charts: the series is in the legend of every chart; a PNG beside each SVG.
    for stem in [
        "decode-vs-context",
        "prefill-vs-prompt",
        "memory-vs-context",
    ] {
        let t = svg_texts(&out.join(format!("{stem}.svg")));
        assert!(t.iter().any(|x| x == "270m q8_0 kv f32"), "{stem}: {t:?}");
        assert!(out.join(format!("{stem}.png")).exists());
    }
    let mem = svg_texts(&out.join("memory-vs-context.svg"));
    // The prediction: dashed, in its measured series' colour (many short strokes, where the
    // measured series is one line).
    assert!(
        mem.iter().any(|x| x.contains("dashed: predicted")),
        "{mem:?}"
    );
    assert!(strokes(&out.join("memory-vs-context.svg"), "#1F77B4") > 5);
    // The machine's 20-odd GiB are far above these runs' 0.3 GiB: named in the title, not drawn
    // as a line that would squash the series into the bottom pixels.
    assert!(!mem.iter().any(|x| x.starts_with("capacity ")), "{mem:?}");
    assert!(
        mem.iter()
            .any(|x| x.contains("(capacity ") && x.contains("far above")),
        "{mem:?}"
    );
    // What holds the peak: per finished case a predicted and a measured bar.
    let parts = svg_texts(&out.join("memory-breakdown.svg"));
    for want in [
        "270m q8_0 kv f32, ctx 256",
        "270m q8_0 kv f32, ctx 1K",
        "KV cache",
    ] {
        assert!(parts.iter().any(|x| x == want), "{want}: {parts:?}");
    }
    assert_eq!(parts.iter().filter(|x| *x == "measured").count(), 2);
    assert_eq!(parts.iter().filter(|x| *x == "predicted").count(), 2);
    // Which Gemma 3 fits this machine: 15 models and formats × 4 contexts, 270M and 1B n/a at
    // 128K (past their 32K window).
    let fits = svg_texts(&out.join("fit-heatmap.svg"));
    assert!(fits.iter().any(|x| x == "27b q4_k_m"), "{fits:?}");
    assert_eq!(fits.iter().filter(|x| *x == "n/a").count(), 6 + 1);
    // The frontier: the largest context run, and the estimator's curve.
    let frontier = svg_texts(&out.join("frontier.svg"));
    assert!(
        frontier.iter().any(|x| x == "270m q8_0 kv f32"),
        "{frontier:?}"
    );

    // llama-bench rows: a prefill row and a decode row per finished case, its field names.
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("llama-bench.json")).unwrap())
            .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        for f in [
            "build_commit",
            "cpu_info",
            "gpu_info",
            "model_type",
            "model_size",
            "model_n_params",
            "n_batch",
            "n_threads",
            "n_parallel",
            "type_k",
            "type_v",
            "n_prompt",
            "n_gen",
            "n_depth",
            "test_time",
            "avg_ns",
            "stddev_ns",
            "avg_ts",
            "stddev_ts",
            "samples_ns",
            "samples_ts",
        ] {
            assert!(r.get(f).is_some(), "{f} missing: {r}");
        }
        assert_eq!(
            r["samples_ts"].as_array().unwrap().len(),
            2,
            "one sample per repeat"
        );
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
    }
    let prefill = rows
        .iter()
        .filter(|r| r["n_gen"] == 0 && r["n_prompt"] == 16)
        .count();
    let decode = rows
        .iter()
        .filter(|r| r["n_prompt"] == 0 && r["n_gen"] == 2)
        .count();
    assert_eq!((prefill, decode), (2, 2));
    let deep = rows
        .iter()
        .find(|r| r["n_gen"] == 2 && r["n_depth"].as_u64().unwrap() > 1000)
        .expect("decode at ctx 1024 runs at depth 1006 + 16");
    assert_eq!(deep["n_depth"], 1024 - 2);
    let csv = std::fs::read_to_string(out.join("llama-bench.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("avg_ts") && csv.lines().count() == 5);

    // BMF: benchmark → measure → value (lower/upper for speeds).
    let bmf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bmf.json")).unwrap()).unwrap();
    let benches = bmf.as_object().unwrap();
    assert_eq!(benches.len(), 2);
    for measures in benches.values() {
        let m = measures.as_object().unwrap();
        for (name, v) in m {
            assert!(v["value"].is_number(), "{name}: {v}");
        }
        assert!(m["decode-tok-per-s"]["lower_value"].is_number());
        assert!(m["peak-memory-bytes"]["value"].as_u64().unwrap() > 100 << 20);
    }
    let ga: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("benchmark-action.json")).unwrap())
            .unwrap();
    assert!(ga
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"].is_string() && e["unit"] == "tok/s" && e["value"].is_number()));
}

#[test]
fn several_machines_are_compared() {
    let dir = tempfile::tempdir().unwrap();
    let files = records(dir.path());
    // The same records as if a second machine had made them.
    let other = dir.path().join("other.jsonl");
    let mut lines = String::new();
    for f in &files[..2] {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        v["environment"]["cpu_model"] = "Other CPU 9000".into();
        lines.push_str(&serde_json::to_string(&v).unwrap());
        lines.push('\n');
    }
    std::fs::write(&other, lines).unwrap();
    let out = dir.path().join("cmp");
    gemma_fit()
        .arg("report")
        .args(&files)
        .arg(&other)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    links_resolve(&out.join("index.html"));
    let cmp = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(
        cmp.contains("Other CPU 9000") && cmp.contains("270m q8_0 kv f32"),
        "{cmp}"
    );
    // Both machines ran the same cases: each keeps its own (not only the newest of the two).
    let decode: Vec<&str> = cmp
        .lines()
        .filter(|l| l.contains("270m q8_0 kv f32"))
        .map(|l| l.split('|').nth(4).unwrap().trim())
        .collect();
    assert_eq!(decode.len(), 2, "{cmp}");
    assert!(decode.iter().all(|d| d.parse::<f64>().is_ok()), "{cmp}");
    let t = svg_texts(&out.join("compare-decode.svg"));
    assert!(t.iter().any(|x| x == "Other CPU 9000"), "{t:?}");
    let machines: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("index.html").exists())
        .collect();
    assert_eq!(machines.len(), 2);
    for m in machines {
        links_resolve(&m.path().join("index.html"));
    }
}

#[test]
fn bad_report_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "{\"not\": \"a record\"}\n").unwrap();
    gemma_fit()
        .arg("report")
        .arg(&junk)
        .assert()
        .failure()
        .stderr(predicates::str::contains("no result records"));
    gemma_fit()
        .args(["report", "/no/such/file.jsonl"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("/no/such/file.jsonl"))
        // The cause once, not once from the message and again from the error chain.
        .stderr(predicates::function::function(|e: &str| {
            e.matches("os error 2").count() == 1
        }));
}

/// checks.md: each finished case against the estimator and, with a measured bandwidth beside the
/// results, against the bandwidth limit; a case under a memory limit is a machine of its own.
#[test]
fn checks_set_cases_against_the_estimator_and_the_bandwidth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = records(dir.path());
    let bw = gemma_fit()
        .args(["bandwidth", "--size", "16MiB", "--repeats", "2", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let rate: serde_json::Value = serde_json::from_slice(&bw).unwrap();
    assert!(rate["decode_bytes_per_s"].as_f64().unwrap() > 1e8, "{rate}");
    std::fs::write(dir.path().join("bandwidth.json"), &bw).unwrap();

    // Without the limited case: one machine, the report in OUT itself.
    let out = dir.path().join("one");
    gemma_fit()
        .arg("report")
        .args(&files)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let checks = std::fs::read_to_string(out.join("checks.md")).unwrap();
    assert!(checks.contains("## Estimator error"), "{checks}");
    assert!(checks.contains("Measured bandwidth"), "{checks}");
    // Two finished cases, each in both tables (the failed one in neither).
    let (estimator, limits) = checks.split_once("## Decode against").unwrap();
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("| 270m q8_0 kv f32 ctx"))
            .map(String::from)
            .collect()
    };
    assert_eq!(rows(estimator).len(), 2, "{checks}");
    assert_eq!(rows(limits).len(), 2, "{checks}");
    for row in rows(limits) {
        let share: f64 = row
            .rsplit('|')
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        assert!(share > 0.0 && share < 1000.0, "{row}");
    }
    assert!(std::fs::read_to_string(out.join("index.html"))
        .unwrap()
        .contains("Decode against the memory-bandwidth limit"));

    // A case recorded under a memory limit goes to a machine of its own.
    let limited = dir.path().join("limited.json");
    gemma_fit()
        .args([
            "run",
            "-m",
            "synthetic:270m",
            "--quant",
            "q8_0",
            "--ctx",
            "256",
            "--prompt-tokens",
            "16",
            "--gen",
            "2",
            "--memory-limit-bytes",
            "2147483648",
            "--out",
        ])
        .arg(&limited)
        .assert()
        .success();
    files.push(limited);
    let out = dir.path().join("two");
    gemma_fit()
        .arg("report")
        .args(&files)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let limited_dir = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("limited-to-2-0-gib")
        })
        .expect("a folder for the limited machine");
    let table = std::fs::read_to_string(limited_dir.path().join("fit-table.md")).unwrap();
    assert!(table.contains("limited to 2.0 GiB"), "{table}");
}

/// Cases run at two batch sizes: the report draws throughput, time per token and memory (with
/// the prediction) against the batch, the fit table gives the most sequences that ran, and the
/// llama-bench rows carry `n_parallel`.
#[test]
fn a_batch_report_draws_its_axis() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for b in ["1", "2"] {
        let path = dir.path().join(format!("b{b}.json"));
        gemma_fit()
            .args([
                "run",
                "-m",
                "synthetic:270m",
                "--quant",
                "q8_0",
                "--ctx",
                "256",
                "--prompt-tokens",
                "16",
                "--gen",
                "2",
                "--fill-kv",
                "synthetic",
                "--batch",
                b,
                "--out",
            ])
            .arg(&path)
            .assert()
            .success()
            .stdout(predicates::str::contains(if b == "2" {
                "2 sequences, each prompt 16 tokens"
            } else {
                "case             prompt 16 tokens"
            }));
        files.push(path);
    }
    let out = dir.path().join("report");
    gemma_fit()
        .arg("report")
        .args(&files)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    for stem in ["throughput-vs-batch", "latency-vs-batch", "memory-vs-batch"] {
        let texts = svg_texts(&out.join(format!("{stem}.svg")));
        assert!(
            texts.iter().any(|t| t == "270m q8_0 kv f32, ctx 256"),
            "{stem}: {texts:?}"
        );
        if stem == "memory-vs-batch" {
            assert!(
                texts.iter().any(|t| t.contains("dashed: predicted")),
                "{texts:?}"
            );
            assert!(strokes(&out.join(format!("{stem}.svg")), "#1F77B4") > 5);
        }
    }
    let table = std::fs::read_to_string(out.join("fit-table.md")).unwrap();
    assert!(table.contains("max sequences at ctx"), "{table}");
    assert!(table.contains("256: 2"), "{table}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("llama-bench.json")).unwrap())
            .unwrap();
    let mut parallel: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n_parallel"].as_u64().unwrap())
        .collect();
    parallel.sort();
    assert_eq!(parallel, [1, 1, 2, 2]);
}
