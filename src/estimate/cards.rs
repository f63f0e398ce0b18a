//! `fit --gpus all|NAME,…`: the catalog-wide answer. For each model × format × KV types ×
//! context, the cards it fits on (smallest first, with the GiB left free); and per card, the
//! largest model and format that fits at each context, with its decode-speed bound. The figures
//! are gemma-fit's prediction for one CUDA process, or another engine's profile
//! (`--engine`, [`super::engines`]) asked card by card; the decode bound is always the card's
//! bandwidth over the bytes a token reads (gemma-fit's plan).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::estimate::catalog::{Catalog, Gpu};
use crate::estimate::engines::{self, Engine, Options};
use crate::estimate::fit::{self, Request, Verdict};
use crate::estimate::Target;
use crate::output::table::Table;
use crate::output::Format as Output;
use crate::units::{ctx_label, gib};

/// The cards `spec` names: "all" (the whole catalog) or names, matched as `--gpu` matches them;
/// smallest memory first.
pub fn select<'a>(catalog: &'a Catalog, spec: &[String]) -> Result<Vec<&'a Gpu>> {
    let mut out: Vec<&Gpu> = if spec.iter().any(|s| s.eq_ignore_ascii_case("all")) {
        catalog.gpus.iter().collect()
    } else {
        spec.iter()
            .map(|s| catalog.find(s))
            .collect::<Result<Vec<_>>>()?
    };
    if out.is_empty() {
        return Err(Error::BadInput(
            "--gpus needs 'all' or card names, e.g. --gpus 4090,l4".into(),
        ));
    }
    out.sort_by(|a, b| a.total_mib.cmp(&b.total_mib).then(a.name.cmp(&b.name)));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// One card's verdict on one cell.
#[derive(Debug, Clone, Serialize)]
pub struct OnCard {
    pub gpu: String,
    pub total_bytes: u64,
    pub verdict: Verdict,
    /// Memory left over (negative when it does not fit).
    pub free_bytes: i64,
    pub decode_tok_per_s_bound: Option<f64>,
    /// vLLM: requests of the cell's context its cache holds at once on this card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<f64>,
}

impl OnCard {
    /// How a table cell says how well it fits: the GiB free, or vLLM's concurrency ("×2.7").
    pub fn room(&self) -> String {
        match self.max_concurrency {
            Some(c) => format!("×{c:.1}"),
            None => format!("{:+.1}", self.free_bytes as f64 / (1u64 << 30) as f64),
        }
    }
}

/// A model × format × KV types × context across the cards.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCards {
    pub model: String,
    pub quant: String,
    pub kv_dtype: String,
    pub ctx: usize,
    /// What it needs, whatever the card (vLLM: before its KV cache, which takes the rest of
    /// its share of the card).
    pub predicted_bytes: u64,
    /// Every selected card, smallest first.
    pub cards: Vec<OnCard>,
}

impl ModelCards {
    /// The cards it fits on (within 90%), smallest first.
    pub fn fits_on(&self) -> impl Iterator<Item = &OnCard> {
        self.cards.iter().filter(|c| c.verdict == Verdict::Fits)
    }
}

/// A card's best at one context: the largest model, then the widest format, that fits.
#[derive(Debug, Clone, Serialize)]
pub struct CardBest {
    pub gpu: String,
    pub total_bytes: u64,
    pub ctx: usize,
    /// None when not even the smallest model fits.
    pub model: Option<String>,
    pub quant: Option<String>,
    pub kv_dtype: Option<String>,
    pub predicted_bytes: Option<u64>,
    pub free_bytes: Option<i64>,
    pub decode_tok_per_s_bound: Option<f64>,
}

/// Both views.
#[derive(Debug, Clone, Serialize)]
pub struct Cards {
    /// Whose allocation: "gemma-fit 0.1.0", "llama.cpp 0c1e57098", ...
    pub engine: String,
    pub models: Vec<ModelCards>,
    pub cards: Vec<CardBest>,
    /// Cells the engine cannot run, with why ("vLLM serves safetensors ...").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

impl Cards {
    /// Whether the cells give the engine's concurrency (vLLM's) rather than GiB free.
    pub fn in_concurrency(&self) -> bool {
        self.models
            .iter()
            .any(|m| m.cards.iter().any(|o| o.max_concurrency.is_some()))
    }
}

/// Predicts `req` cell by cell (one CUDA process) and sets it against each of `gpus`: gemma-fit's
/// plan once per cell, another engine's profile on each card (vLLM's budget is a share of it).
pub fn cards(req: &Request, gpus: &[&Gpu], engine: Engine, o: &Options) -> Result<Cards> {
    if engine == Engine::All {
        return Err(Error::Unsupported(
            "--gpus sets one engine against the catalog: name it (--engine gemma-fit, llama.cpp, ollama, vllm or transformers), or use --gpu NAME --engine all for one card".into(),
        ));
    }
    let mut models: Vec<ModelCards> = Vec::new();
    let mut left_out = Vec::new();
    for m in fit::model_rows(req)? {
        for &kv_dtype in &req.kv_dtypes {
            for &ctx in &req.ctxs {
                let q = m.query(req, kv_dtype, ctx, Target::Cuda);
                let p = crate::estimate::predict(&q)?;
                if ctx > p.max_ctx {
                    continue;
                }
                let bound = |g: &Gpu| {
                    Some(q.batch as f64 * g.bandwidth_gbs * 1e9 / p.bytes_per_token as f64)
                };
                let (needed, cards) = if engine == Engine::GemmaFit {
                    let total = p.breakdown.total();
                    let cards = gpus
                        .iter()
                        .map(|g| OnCard {
                            gpu: g.name.clone(),
                            total_bytes: g.total_bytes(),
                            verdict: Verdict::of(total, g.total_bytes()),
                            free_bytes: g.total_bytes() as i64 - total as i64,
                            decode_tok_per_s_bound: bound(g),
                            max_concurrency: None,
                        })
                        .collect();
                    (total, cards)
                } else {
                    let figures = gpus
                        .iter()
                        .map(|g| {
                            let cap = fit::Capacity {
                                name: g.name.clone(),
                                total_bytes: g.total_bytes(),
                                bandwidth_gbs: Some(g.bandwidth_gbs),
                                target: Target::Cuda,
                            };
                            engines::cell_figure(engine, &m, kv_dtype, ctx, req, &cap, o)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let Some(f) = figures.iter().find(|f| f.verdict != "n/a") else {
                        let why = figures.first().and_then(|f| f.note.clone());
                        let line = format!(
                            "{} {} kv {}: {}",
                            m.model,
                            m.quant_label,
                            kv_dtype,
                            why.unwrap_or_else(|| "n/a".into())
                        );
                        if !left_out.contains(&line) {
                            left_out.push(line);
                        }
                        continue;
                    };
                    let needed = match f.max_concurrency {
                        Some(_) => f.weights_bytes + f.compute_bytes + f.other_bytes,
                        None => f.predicted_bytes,
                    };
                    let cards = gpus
                        .iter()
                        .zip(&figures)
                        .map(|(g, f)| OnCard {
                            gpu: g.name.clone(),
                            total_bytes: g.total_bytes(),
                            verdict: match f.verdict {
                                "fits" => Verdict::Fits,
                                "tight" => Verdict::Tight,
                                _ => Verdict::DoesNotFit,
                            },
                            free_bytes: g.total_bytes() as i64 - f.predicted_bytes as i64,
                            decode_tok_per_s_bound: bound(g),
                            max_concurrency: f.max_concurrency,
                        })
                        .collect();
                    (needed, cards)
                };
                models.push(ModelCards {
                    model: m.model.clone(),
                    quant: m.quant_label.clone(),
                    kv_dtype: kv_dtype.to_string(),
                    ctx,
                    predicted_bytes: needed,
                    cards,
                });
            }
        }
    }
    // Per card and context: the largest model (the order sizes are listed in, by parameters),
    // then the format holding the most bytes, that fits.
    let mut best = Vec::new();
    for (g, gpu) in gpus.iter().enumerate() {
        for &ctx in &req.ctxs {
            let pick = models
                .iter()
                .filter(|m| m.ctx == ctx && m.cards[g].verdict == Verdict::Fits)
                .max_by_key(|m| (params_of(&m.model), m.predicted_bytes));
            best.push(CardBest {
                gpu: gpu.name.clone(),
                total_bytes: gpu.total_bytes(),
                ctx,
                model: pick.map(|m| m.model.clone()),
                quant: pick.map(|m| m.quant.clone()),
                kv_dtype: pick.map(|m| m.kv_dtype.clone()),
                predicted_bytes: pick.map(|m| m.predicted_bytes),
                free_bytes: pick.map(|m| m.cards[g].free_bytes),
                decode_tok_per_s_bound: pick.and_then(|m| m.cards[g].decode_tok_per_s_bound),
            });
        }
    }
    Ok(Cards {
        engine: engine.version().to_string(),
        models,
        cards: best,
        left_out,
    })
}

/// What "fits" means for `engine`'s figures.
pub fn fits_rule(engine: &str) -> &'static str {
    if engine.starts_with("vLLM") {
        "fits = its KV cache holds every sequence at the context"
    } else {
        "fits = at most 90% of the card"
    }
}

/// A model's parameter count, for ranking (0 for a name that is not a preset).
fn params_of(model: &str) -> u64 {
    crate::engine::presets::find(model).map_or(0, |p| p.params().total)
}

/// The short name tables use for a card ("NVIDIA GeForce RTX 4090" → "RTX 4090").
pub fn short(name: &str) -> String {
    name.trim_start_matches("NVIDIA ")
        .trim_start_matches("GeForce ")
        .to_string()
}

/// Both views as tables (terminal, md, csv) or one JSON object.
pub fn render(c: &Cards, req: &Request, format: Output) -> Result<String> {
    if format == Output::Json {
        return Ok(serde_json::to_string_pretty(c)? + "\n");
    }
    let mut by_model = Table::new([
        "model",
        "format",
        "KV",
        "ctx",
        "needs GiB",
        if c.in_concurrency() {
            "fits on (× concurrency at ctx)"
        } else {
            "fits on (GiB free)"
        },
    ]);
    for m in &c.models {
        // The smallest few (the answer), then how many more (JSON has them all).
        let all: Vec<String> = m
            .fits_on()
            .map(|o| format!("{} ({})", short(&o.gpu), o.room()))
            .collect();
        let mut on: Vec<String> = all.iter().take(3).cloned().collect();
        if all.len() > 3 {
            on.push(format!("and {} larger", all.len() - 3));
        }
        by_model.row([
            m.model.clone(),
            m.quant.clone(),
            m.kv_dtype.clone(),
            ctx_label(m.ctx),
            format!("{:.2}", gib(m.predicted_bytes)),
            if on.is_empty() {
                "none".into()
            } else {
                on.join(", ")
            },
        ]);
    }
    let mut header = vec!["card".to_string(), "GiB".to_string()];
    header.extend(
        req.ctxs
            .iter()
            .map(|&x| format!("largest at {}", ctx_label(x))),
    );
    let mut by_card = Table::new(header);
    for chunk in c.cards.chunks(req.ctxs.len().max(1)) {
        let mut line = vec![
            short(&chunk[0].gpu),
            format!("{:.1}", gib(chunk[0].total_bytes)),
        ];
        line.extend(chunk.iter().map(|b| match (&b.model, &b.quant) {
            (Some(m), Some(q)) => format!(
                "{m} {q}{}",
                b.decode_tok_per_s_bound
                    .map_or(String::new(), |t| format!(" (≤ {t:.0} tok/s)"))
            ),
            _ => "nothing".into(),
        }));
        by_card.row(line);
    }
    if format == Output::Csv {
        return Ok(by_model.csv()? + "\n" + &by_card.csv()?);
    }
    let left_out: String = c
        .left_out
        .iter()
        .map(|l| format!("Left out (the engine cannot run it): {l}\n"))
        .collect();
    Ok(format!(
        "Which cards fit — {}, one CUDA process; {}; KV {}, {} sequence(s), prefill chunk {}:\n{}\n{left_out}\nPer card, the largest model and format that fits (decode bound from the card's bandwidth):\n{}\n",
        c.engine,
        fits_rule(&c.engine),
        req.kv_label(),
        req.batch,
        req.rows,
        by_model.render(format)?,
        by_card.render(format)?
    ))
}
