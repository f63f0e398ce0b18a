//! The quality block of a result record (`gemma-fit quality`, computed in `quality/`): the
//! perplexity over a text and, against a reference, the KL divergence and its companions. Each
//! figure carries its uncertainty (one standard error); `docs/quality.md` defines them.

use serde::{Deserialize, Serialize};

/// A figure with its uncertainty (one standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Est {
    pub value: f64,
    pub unc: f64,
}

/// The quality block of a result record (schema v1, optional; `docs/result-schema.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// "default" (the shipped text) or the text file's name, and its sha256.
    pub text: String,
    pub text_sha256: String,
    pub tokens: usize,
    pub ctx: usize,
    pub chunks: usize,
    pub positions: usize,
    pub ppl: Est,
    /// The text model's weights as held (resident bytes).
    #[serde(default)]
    pub weight_bytes: u64,
    /// Matrices per stored type ("Q4K": 27, ...): what a format actually became, fallbacks
    /// included (1-D norm weights, always f32, are not counted).
    #[serde(default)]
    pub tensor_types: std::collections::BTreeMap<String, usize>,
    /// Peak resident memory of the evaluation (the kernel's high-water mark).
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    pub seconds: f64,
    #[serde(default)]
    pub against: Option<Comparison>,
}

/// The figures against a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The reference file's name, producer, model and KV type.
    pub file: String,
    pub producer: String,
    pub model: String,
    pub kv: String,
    pub top_k: usize,
    pub ref_ppl: Est,
    /// PPL(ours) / PPL(reference), from the per-position differences of −log p.
    pub ppl_ratio: Est,
    /// KL(reference ‖ ours), nats.
    pub kl_mean: Est,
    pub kl_median: Est,
    pub kl_p99: Est,
    pub kl_max: f64,
    /// How often the top tokens agree, %.
    pub top1_pct: Est,
    /// p_ours(target) − p_ref(target), percentage points.
    pub dp_mean_pct: Est,
    pub dp_rms_pct: Est,
    /// The positions with the largest KL, largest first.
    pub worst: Vec<Worst>,
    /// The top-K KL against the full-vocabulary KL, where the reference has full rows.
    #[serde(default)]
    pub top_k_check: Option<TopKCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worst {
    /// Index in the token stream of the scored position (it predicts the token after it).
    pub token_index: usize,
    pub chunk: usize,
    pub kl: f64,
    pub target: u32,
    pub ours: u32,
    pub reference: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopKCheck {
    pub positions: usize,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
}

/// The comparison of the newest quality record in `records` that matches `key` on model,
/// quantization and KV type (the chunk length and everything else ignored): what a case's
/// format costs, shown beside its memory.
pub fn matching<'a>(
    records: &'a [super::CaseResult],
    key: &super::case::CaseKey,
) -> Option<&'a Comparison> {
    records
        .iter()
        .filter(|r| {
            r.key.weights == key.weights
                && r.key.size == key.size
                && r.key.quant == key.quant
                && r.key.kv() == key.kv()
        })
        .filter_map(|r| Some((r.started_unix_s, r.quality.as_ref()?.against.as_ref()?)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, c)| c)
}
