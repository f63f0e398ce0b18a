//! Reports from result records: per machine (a GPU, or a CPU when cases ran on the host) a fit
//! table, charts, exports and a self-contained HTML page (`index.html`); across machines a
//! comparison. One file per output: `fit_table.rs`, `charts.rs`, `checks.rs` (estimator error and
//! decode against the bandwidth limit), `page.rs` (a machine's folder and page),
//! `cross_machine.rs`, and `export/` (one file per format others read).

pub mod charts;
pub mod checks;
pub mod cross_machine;
pub mod export;
pub mod fit_table;
pub mod frontier;
pub mod heatmap;
pub mod page;

use std::path::{Path, PathBuf};

use crate::engine::device::DeviceKind;
use crate::error::{Error, Result};
use crate::result::store::{newest_per_key, slug};
use crate::result::{CaseResult, Environment};
use crate::units::gib;

/// The cases one machine ran.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The GPU's name, or the CPU model for cases on the host; with a memory limit, followed by
    /// it (a smaller card's stand-in is a machine of its own).
    pub name: String,
    /// The GPU's name or the CPU model alone.
    pub hardware: String,
    pub memory_limit_bytes: Option<u64>,
    /// The measured memory bandwidth of the hardware, when given (`gemma-fit bandwidth`).
    pub bandwidth: Option<crate::probe::bandwidth::Bandwidth>,
    pub slug: String,
    pub on_gpu: bool,
    /// The environment of the newest record (tool version, commit, drivers...).
    pub environment: Environment,
    /// What fit is judged against: the GPU's memory, or the host's RAM.
    pub capacity_bytes: Option<u64>,
    pub records: Vec<CaseResult>,
}

/// Records grouped by machine (newest record per case key on each machine: two machines that
/// ran the same case keep one each), machines in name order.
pub fn machines(records: Vec<CaseResult>) -> Vec<Machine> {
    let mut out: Vec<Machine> = Vec::new();
    for r in records {
        let gpu = r
            .environment
            .gpu
            .as_ref()
            .filter(|_| r.key.device_kind != DeviceKind::Cpu);
        let hardware = gpu.map_or_else(|| r.environment.cpu_model.clone(), |g| g.name.clone());
        let limit = r.key.memory_limit_bytes;
        let name = match limit {
            Some(l) => format!("{hardware}, limited to {:.1} GiB", gib(l)),
            None => hardware.clone(),
        };
        let on_gpu = gpu.is_some();
        let capacity = limit.or(gpu.map_or(Some(r.environment.ram_total_bytes), |g| {
            g.memory_total_bytes
        }));
        match out
            .iter_mut()
            .find(|m| m.name == name && m.on_gpu == on_gpu)
        {
            Some(m) => {
                if r.started_unix_s
                    >= m.records
                        .iter()
                        .map(|x| x.started_unix_s)
                        .max()
                        .unwrap_or(0)
                {
                    m.environment = r.environment.clone();
                }
                m.records.push(r);
            }
            None => out.push(Machine {
                slug: slug(&name),
                name,
                hardware,
                memory_limit_bytes: limit,
                bandwidth: None,
                on_gpu,
                environment: r.environment.clone(),
                capacity_bytes: capacity,
                records: vec![r],
            }),
        }
    }
    for m in &mut out {
        m.records = newest_per_key(std::mem::take(&mut m.records));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A model × format × KV dtype: the rows of tables and the series of charts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant {
    /// Size order first (270m < 1b < ...), then the name.
    pub order: usize,
    pub model: String,
    pub quant: String,
    pub kv_dtype: String,
    pub image: bool,
    /// The engine that ran it: empty for gemma-fit, else its tag ("llama.cpp:ub512:fa").
    pub engine: String,
}

impl Variant {
    pub fn of(r: &CaseResult) -> Self {
        let k = &r.key;
        let model = match (&k.size, k.weights.as_str()) {
            (Some(s), "default") => format!("{s} (default GGUF)"),
            (Some(s), _) => s.clone(),
            (None, w) => w.to_string(),
        };
        let order = crate::engine::presets::all()
            .iter()
            .position(|p| Some(p.name) == k.size.as_deref())
            .unwrap_or(99);
        Variant {
            order,
            model,
            quant: match (k.quant, k.weights.as_str()) {
                (Some(q), _) => q.to_string(),
                (None, "default") => "q4_k_m".into(),
                (None, _) => "file".into(),
            },
            kv_dtype: k.kv().to_string(),
            image: k.image.is_some(),
            engine: k.engine.tag().unwrap_or_default(),
        }
    }

    pub fn label(&self) -> String {
        format!(
            "{} {} kv {}{}{}",
            self.model,
            self.quant,
            self.kv_dtype,
            if self.image { " +image" } else { "" },
            if self.engine.is_empty() {
                String::new()
            } else {
                format!(" [{}]", self.engine)
            }
        )
    }
}

/// Writes the report of `records` under `out`: one machine's report in `out` itself, several
/// machines each in `out/<machine>/` with a comparison in `out`. Returns the pages written.
///
/// `bandwidths` (from `gemma-fit bandwidth --json`) go to the machines of the same hardware: they
/// give the decode-speed limit each case is set against.
pub fn write(
    records: Vec<CaseResult>,
    bandwidths: &[crate::probe::bandwidth::Bandwidth],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut machines = machines(records);
    for m in &mut machines {
        m.bandwidth = bandwidths
            .iter()
            .rev()
            .find(|b| b.machine == m.hardware && (b.device == "cpu") != m.on_gpu)
            .cloned();
    }
    if machines.is_empty() {
        return Err(Error::BadInput("no result records to report".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut pages = Vec::new();
    if let [one] = machines.as_slice() {
        pages.push(page::machine_report(one, out)?);
        return Ok(pages);
    }
    for m in &machines {
        let dir = out.join(&m.slug);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        pages.push(page::machine_report(m, &dir)?);
    }
    pages.push(cross_machine::write(&machines, out)?);
    Ok(pages)
}

/// Writes `chart` as `dir/stem.svg` and `.png` and returns the page's figure: the SVG inline
/// (without its XML prolog) with links to both files.
pub(crate) fn figure(dir: &Path, stem: &str, chart: &charts::Chart) -> Result<String> {
    let svg = chart.write(&dir.join(stem))?;
    let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
    Ok(format!(
        "<figure>{body}<figcaption><a href=\"{stem}.svg\">{stem}.svg</a> · <a href=\"{stem}.png\">{stem}.png</a></figcaption></figure>\n"
    ))
}

/// Writes `text` to `dir/name`.
pub(crate) fn put(dir: &Path, name: &str, text: &str) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
}
