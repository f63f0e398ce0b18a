//! The reports as a reader sees them: every page `gemma-fit report` writes, rendered by Debian's
//! Chromium (headless). Each page must load without console errors, show every chart at a
//! non-zero size within the page's width with its series drawn, carry the fit heatmap's expected
//! cells, and link only to files that exist. Screenshots of each page are kept in
//! `target/tmp/browser/` for a person to look at.
//!
//! Chromium is found as `$GEMMA_FIT_CHROMIUM`, `chromium` or `chromium-browser`; where it is
//! missing the test is skipped with a message, except under `CI=true` (`.ci/run` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("GEMMA_FIT_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| common::which("chromium"))
        .or_else(|| common::which("chromium-browser"));
    if found.is_none() {
        common::missing(
            "browser test: Chromium not found (apt-get install chromium, or set GEMMA_FIT_CHROMIUM)",
        );
    }
    found
}

/// Runs before the page's own content: records errors, a resource that fails to load included.
const CATCH: &str = r#"<script>window.__gfErrors=[];addEventListener('error',function(e){__gfErrors.push(e.message||('failed to load '+((e.target&&(e.target.src||e.target.href))||'?')))},true);</script>"#;

/// Runs after the page has loaded: what a reader would see of each figure, as JSON in
/// `<pre id="gf-check">`.
const CHECK: &str = r#"<script>addEventListener('load',function(){
var palette=function(v){v=(v||'').toUpperCase();return /^#[0-9A-F]{6}$/.test(v)&&!/^#(..)\1\1$/.test(v)?v:null;};
var figs=[].slice.call(document.querySelectorAll('figure')).map(function(f){
 var svg=f.querySelector('svg'),r=svg?svg.getBoundingClientRect():{width:0,height:0,right:0},st=svg?getComputedStyle(svg):null,colors={},rects={};
 if(svg){[].slice.call(svg.querySelectorAll('polyline,path,rect,circle,line')).forEach(function(el){['stroke','fill'].forEach(function(a){var c=palette(el.getAttribute(a));if(c){colors[c]=1;}});
  if(el.tagName==='rect'){var c=(el.getAttribute('fill')||'').toUpperCase();rects[c]=(rects[c]||0)+1;}});}
 var a=f.querySelector('figcaption a');
 return {file:a?a.getAttribute('href'):null,width:r.width,height:r.height,right:r.right,
  visible:!!st&&st.display!=='none'&&st.visibility!=='hidden',colors:Object.keys(colors),rects:rects,
  texts:svg?[].slice.call(svg.querySelectorAll('text')).map(function(t){return t.textContent.trim();}):[]};});
var d=document.documentElement,pre=document.createElement('pre');pre.id='gf-check';
pre.textContent=JSON.stringify({figures:figs,errors:window.__gfErrors,scroll_height:d.scrollHeight,scroll_width:d.scrollWidth,client_width:d.clientWidth,
 links:[].slice.call(document.querySelectorAll('a[href],img[src],link[href]')).map(function(a){return a.getAttribute('href')||a.getAttribute('src');})});
document.body.appendChild(pre);});</script>"#;

const WIDTH: u32 = 1280;

fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .timeout(Duration::from_secs(120));
    c
}

/// What Chromium saw of `page`: the checker's JSON and the console lines; a screenshot of the
/// whole page goes to `shots/<name>.png`.
fn render(browser: &Path, page: &Path, shots: &Path, name: &str) -> (Value, Vec<String>) {
    let html = std::fs::read_to_string(page).unwrap();
    let probe = page.with_file_name(format!("{name}.check.html"));
    let html = html
        .replacen("<head>", &format!("<head>{CATCH}"), 1)
        .replacen("</body>", &format!("{CHECK}</body>"), 1);
    std::fs::write(&probe, html).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = headless(browser, profile.path())
        .arg(format!("--window-size={WIDTH},900"))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}", probe.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed on {page:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&probe).unwrap();
    let dom = String::from_utf8(out.stdout).unwrap();
    let start = dom
        .find("<pre id=\"gf-check\">")
        .unwrap_or_else(|| panic!("{page:?}: the check did not run (load never fired?)"));
    let json = &dom[start + "<pre id=\"gf-check\">".len()..];
    let json = &json[..json.find("</pre>").unwrap()];
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let check: Value = serde_json::from_str(&json).unwrap();
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    let height = check["scroll_height"].as_u64().unwrap().clamp(300, 16000);
    let shot = shots.join(format!("{name}.png"));
    let profile = tempfile::tempdir().unwrap();
    headless(browser, profile.path())
        .arg(format!("--window-size={WIDTH},{height}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .assert()
        .success();
    assert!(
        std::fs::read(&shot).is_ok_and(|png| png.starts_with(b"\x89PNG")),
        "no screenshot of {page:?}"
    );
    (check, console)
}

/// The checks every page passes; returns its figures by file.
fn page_is_sound(browser: &Path, page: &Path, shots: &Path, name: &str) -> Vec<Value> {
    let (check, console) = render(browser, page, shots, name);
    assert!(console.is_empty(), "{page:?} logged: {console:#?}");
    assert_eq!(check["errors"], serde_json::json!([]), "{page:?}");
    assert!(
        check["scroll_width"].as_u64() <= check["client_width"].as_u64(),
        "{page:?} is wider than the window: {check}"
    );
    let client = check["client_width"].as_f64().unwrap();
    for link in check["links"].as_array().unwrap() {
        let link = link.as_str().unwrap();
        assert!(!link.contains("://"), "{page:?} reaches out: {link}");
        let target = page.parent().unwrap().join(link.split('#').next().unwrap());
        assert!(
            target.exists(),
            "{page:?} links to {link}, which is missing"
        );
    }
    let figures = check["figures"].as_array().unwrap().clone();
    assert!(!figures.is_empty(), "{page:?} has no charts");
    for f in &figures {
        let file = f["file"].as_str().unwrap_or("?");
        assert!(f["visible"] == true, "{page:?}: {file} is hidden");
        assert!(
            f["width"].as_f64().unwrap() > 300.0 && f["height"].as_f64().unwrap() > 150.0,
            "{page:?}: {file} is drawn at {} × {} px",
            f["width"],
            f["height"]
        );
        assert!(
            f["right"].as_f64().unwrap() <= client + 1.0,
            "{page:?}: {file} runs past the page's edge"
        );
        assert!(
            !f["colors"].as_array().unwrap().is_empty(),
            "{page:?}: {file} draws no series"
        );
        assert!(
            !f["texts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().unwrap().ends_with("no data")),
            "{page:?}: {file} says it has no data"
        );
    }
    figures
}

fn figure<'a>(figures: &'a [Value], file: &str) -> &'a Value {
    figures
        .iter()
        .find(|f| f["file"] == file)
        .unwrap_or_else(|| panic!("no {file} among the figures"))
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The committed records of the quick suite and the serving suite on the AMD EPYC machine.
fn committed_records() -> Vec<PathBuf> {
    vec![
        repo("reports/amd-epyc/results.jsonl"),
        repo("reports/serving-amd-epyc/results.jsonl"),
    ]
}

#[test]
fn every_report_page_renders_in_chromium() {
    let Some(browser) = chromium() else {
        return;
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // One machine: the quick and serving suites' records.
    let one = dir.path().join("one");
    Command::cargo_bin("gemma-fit")
        .unwrap()
        .arg("report")
        .args(committed_records())
        .arg("--out")
        .arg(&one)
        .assert()
        .success();
    let figures = page_is_sound(&browser, &one.join("index.html"), &shots, "machine");
    for stem in [
        "fit-heatmap",
        "memory-breakdown",
        "frontier",
        "memory-vs-context",
        "throughput-vs-batch",
    ] {
        figure(&figures, &format!("{stem}.svg"));
    }

    // The heatmap's cells are the verdicts `fit` gives for this machine's memory.
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&committed_records()[0])
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let ram = first["environment"]["ram_total_bytes"].as_u64().unwrap();
    let fit = Command::cargo_bin("gemma-fit")
        .unwrap()
        .args([
            "fit",
            "--device",
            "cpu",
            "--kv-dtype",
            "bf16",
            "--format",
            "json",
        ])
        .arg(format!("--memory={ram}B"))
        .assert()
        .success();
    let cells: Value = serde_json::from_slice(&fit.get_output().stdout).unwrap();
    let count = |v: &str| {
        cells
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["verdict"] == v)
            .count() as u64
    };
    let na = 5 * 3 * 4 - cells.as_array().unwrap().len() as u64;
    let rects = &figure(&figures, "fit-heatmap.svg")["rects"];
    // One rectangle per cell, plus one per entry of the legend.
    for (fill, want) in [
        ("#78BE78", count("fits")),
        ("#F5C85A", count("tight")),
        ("#E68278", count("does_not_fit")),
        ("#E1E1E1", na),
    ] {
        let legend = u64::from(want > 0 || fill != "#E1E1E1");
        assert_eq!(
            rects[fill].as_u64().unwrap_or(0),
            want + legend,
            "heatmap cells of colour {fill}: {rects}"
        );
    }

    // Several machines: the same records as if a second machine had made them too.
    let other = dir.path().join("other.jsonl");
    let mut lines = String::new();
    for line in std::fs::read_to_string(&committed_records()[0])
        .unwrap()
        .lines()
    {
        let mut v: Value = serde_json::from_str(line).unwrap();
        v["environment"]["cpu_model"] = "Other CPU 9000".into();
        lines.push_str(&serde_json::to_string(&v).unwrap());
        lines.push('\n');
    }
    std::fs::write(&other, lines).unwrap();
    let many = dir.path().join("many");
    Command::cargo_bin("gemma-fit")
        .unwrap()
        .arg("report")
        .args(committed_records())
        .arg(&other)
        .arg("--out")
        .arg(&many)
        .assert()
        .success();
    let figures = page_is_sound(&browser, &many.join("index.html"), &shots, "compare");
    figure(&figures, "compare-frontier.svg");
    for m in std::fs::read_dir(&many).unwrap().flatten() {
        let page = m.path().join("index.html");
        if page.exists() {
            let name = m.file_name().to_string_lossy().into_owned();
            page_is_sound(&browser, &page, &shots, &format!("compare-{name}"));
        }
    }
    eprintln!("screenshots: {}", shots.display());
}

/// The checks can fail: a page with a console error, a resource that does not load, a chart
/// drawn at zero size and one with no series is seen as such.
#[test]
fn a_broken_page_is_seen_broken() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("index.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>\
         <figure><svg width=\"0\" height=\"0\"><polyline stroke=\"#1F77B4\" points=\"0,0 1,1\"/></svg><figcaption><a href=\"a.svg\">a</a></figcaption></figure>\
         <figure><svg width=\"400\" height=\"200\"><rect fill=\"#000000\" width=\"10\" height=\"10\"/></svg><figcaption><a href=\"b.svg\">b</a></figcaption></figure>\
         <img src=\"missing.png\"><script>console.error('boom')</script></body></html>",
    )
    .unwrap();
    let (check, console) = render(&browser, &page, dir.path(), "broken");
    assert!(console.iter().any(|l| l.contains("boom")), "{console:?}");
    assert!(
        check["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("missing.png")),
        "{check}"
    );
    let figures = check["figures"].as_array().unwrap();
    assert_eq!(figures[0]["width"], 0.0, "{check}");
    assert_eq!(figures[0]["colors"], serde_json::json!(["#1F77B4"]));
    assert_eq!(figures[1]["colors"], serde_json::json!([]), "{check}");
    assert!(check["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "missing.png"));
}
