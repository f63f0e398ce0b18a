//! The engine's memory plan: what a run of a given shape holds, computed by the rules the engine
//! allocates with, never re-derived elsewhere. Weights come from the loader's tensor lists
//! ([`crate::engine::decoder::tensor_shapes`], [`crate::engine::vision::tensor_shapes`]) in the
//! format's per-tensor types ([`Format::tensor_type`]) as the device holds them
//! ([`crate::engine::load::weights::resident_type`], [`Linear::derived_copy_bytes`]); the KV cache from
//! [`KvCache::size_in_bytes`]; RoPE tables from [`RopeTable::bytes_for`]; activations from
//! [`crate::engine::decoder::run_workspace_bytes`] and
//! [`crate::engine::vision::encode_workspace_bytes`]. A change to any of them changes the plan.
//!
//! `crate::estimate` adds the runtime's own overhead and turns plans into fit verdicts.

use candle_core::quantized::GgmlDType;
use serde::Serialize;

use crate::engine::config::Gemma3Config;
use crate::engine::kernels::linear::Linear;
use crate::engine::kv_cache::{KvCache, KvPair};
use crate::engine::kv_rotation::rotation_matrix_bytes;
use crate::engine::load::format::Format;
use crate::engine::rope::RopeTable;
use crate::engine::vision::VisionConfig;

/// One weight tensor as a file stores it and as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorPlan {
    pub name: String,
    pub shape: Vec<usize>,
    /// The type in a GGUF file of the format (1-D norms and biases: F32).
    #[serde(serialize_with = "ser_dtype")]
    pub file_type: GgmlDType,
    pub file_bytes: u64,
    /// What the device holds for it: the tensor in its resident type, plus copies the product
    /// kernels derive from it (or instead of it).
    pub resident_bytes: u64,
}

fn ser_dtype<S: serde::Serializer>(t: &GgmlDType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{t:?}"))
}

/// The shape of a run, as far as memory is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunShape {
    /// Positions the KV cache and RoPE tables are sized for.
    pub ctx: usize,
    pub kv_dtype: KvPair,
    /// The most positions one forward pass processes (the largest prefill chunk).
    pub rows: usize,
    /// Sequences decoded together, each with its own KV cache (the RoPE tables are shared).
    pub batch: usize,
    /// Whether an image is encoded (the tower's weights and its encode workspace).
    pub image: bool,
    /// CPU or an accelerator (CUDA): weights are held differently.
    pub on_cpu: bool,
}

/// Bytes a run holds, by what holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// Text weights as held on the device (norms included).
    pub weights: u64,
    /// The same weights as a GGUF file of the format stores them.
    pub file_weights: u64,
    /// The vision tower and projector (0 without an image).
    pub vision_weights: u64,
    pub kv_cache: u64,
    pub rope_tables: u64,
    /// The largest transient of the run: a forward pass over `rows` positions, a decode step of
    /// `batch` sequences with their logits, or the image encode, whichever is larger (they never overlap); off the CPU, plus the block-format
    /// cache's rotation matrices (at most 320 KiB).
    pub workspace: u64,
    /// The most a load holds at once: the embedding (read first) with what its products derive
    /// from it, and the transient of building them; or, where matrices are repacked on the
    /// CPU, all the weights and one matrix's second copy. At most the weights, except for such
    /// transients (dense weights off the CPU are widened to f32 on the way).
    pub load_peak: u64,
}

/// Plans of every text tensor of `cfg` in `format`.
pub fn text_tensors(cfg: &Gemma3Config, format: Format, on_cpu: bool) -> Vec<TensorPlan> {
    tensors(
        &crate::engine::decoder::tensor_shapes(cfg),
        format,
        cfg.num_layers,
        on_cpu,
    )
}

/// Plans of the vision tower and projector tensors (the projector maps into `text_hidden`).
pub fn vision_tensors(
    v: &VisionConfig,
    text_hidden: usize,
    format: Format,
    on_cpu: bool,
) -> Vec<TensorPlan> {
    tensors(
        &crate::engine::vision::tensor_shapes(v, text_hidden),
        format,
        0,
        on_cpu,
    )
}

fn tensors(
    shapes: &[(String, Vec<usize>)],
    format: Format,
    layers: usize,
    on_cpu: bool,
) -> Vec<TensorPlan> {
    let typed: Vec<(String, Vec<usize>, GgmlDType)> = shapes
        .iter()
        .map(|(name, shape)| {
            // Norm weights and biases: f32 in the file and on the device.
            let t = if shape.len() == 1 {
                GgmlDType::F32
            } else {
                format.tensor_type(name, shape, layers)
            };
            (name.clone(), shape.clone(), t)
        })
        .collect();
    stored_tensors(&typed, on_cpu)
}

/// Plans of tensors stored as given — (name, shape, type), e.g. a GGUF file's, read from its
/// header: what each holds in the file and on the device.
pub fn stored_tensors(list: &[(String, Vec<usize>, GgmlDType)], on_cpu: bool) -> Vec<TensorPlan> {
    list.iter()
        .map(|(name, shape, file_type)| {
            let elems: usize = shape.iter().product();
            let bytes = |t: GgmlDType| (elems / t.block_size() * t.type_size()) as u64;
            if shape.len() == 1 {
                // Norm weights and biases are held in f32.
                return TensorPlan {
                    name: name.clone(),
                    shape: shape.clone(),
                    file_type: *file_type,
                    file_bytes: bytes(*file_type),
                    resident_bytes: bytes(GgmlDType::F32),
                };
            }
            let held = crate::engine::load::weights::resident_type(*file_type, on_cpu);
            let vision = crate::engine::load::format::is_vision_tensor(name);
            let resident_bytes = if vision {
                // The tower keeps its matrices as loaded and widens them per product.
                bytes(held)
            } else {
                // (The tied embedding's lookup shares its output product's weight.)
                Linear::resident_bytes(held, elems, bytes(held), on_cpu)
            };
            TensorPlan {
                name: name.clone(),
                shape: shape.clone(),
                file_type: *file_type,
                file_bytes: bytes(*file_type),
                resident_bytes,
            }
        })
        .collect()
}

/// What a run of `shape` holds for a model of `cfg` (with `vision` when it has a tower) in
/// `format`.
pub fn plan(
    cfg: &Gemma3Config,
    vision: Option<&VisionConfig>,
    format: Format,
    shape: RunShape,
) -> MemoryPlan {
    let vision = match (shape.image, vision) {
        (true, Some(v)) => Some((v, vision_tensors(v, cfg.hidden_size, format, shape.on_cpu))),
        _ => None,
    };
    plan_of(cfg, &text_tensors(cfg, format, shape.on_cpu), vision, shape)
}

/// [`plan`] for given text tensors (a file's, as stored) and, with an image, the tower's.
pub fn plan_of(
    cfg: &Gemma3Config,
    text: &[TensorPlan],
    vision: Option<(&VisionConfig, Vec<TensorPlan>)>,
    shape: RunShape,
) -> MemoryPlan {
    let vision_bytes = vision
        .as_ref()
        .map_or(0, |(_, t)| t.iter().map(|t| t.resident_bytes).sum());
    let vision = vision.map(|(v, _)| v);
    let encode = match (shape.image, vision) {
        (true, Some(v)) => crate::engine::vision::encode_workspace_bytes(v),
        _ => 0,
    };
    let weights: u64 = text.iter().map(|t| t.resident_bytes).sum();
    let load_peak = text
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .map_or(0, |t| {
            let elems = t.shape.iter().product();
            let held = crate::engine::load::weights::resident_type(t.file_type, shape.on_cpu);
            match Linear::load_transient_bytes(held, elems, shape.on_cpu) {
                0 => t.resident_bytes,
                // The loaded tensor, its f32 widening and the product's copy, at once.
                transient => t.file_bytes + transient + t.resident_bytes,
            }
        });
    // A matrix repacked at load (`packed.rs`) is held twice while it is copied: at the last
    // layer, on top of everything else.
    let repack = text
        .iter()
        .filter(|t| t.shape.len() == 2 && t.name != "token_embd.weight")
        .filter(|t| {
            let held = crate::engine::load::weights::resident_type(t.file_type, shape.on_cpu);
            crate::engine::kernels::packed::applies(held, t.shape[0], shape.on_cpu)
        })
        .map(|t| t.resident_bytes)
        .max()
        .map_or(0, |b| weights + b);
    MemoryPlan {
        load_peak: load_peak.max(repack),
        weights,
        file_weights: text.iter().map(|t| t.file_bytes).sum(),
        vision_weights: vision_bytes,
        kv_cache: shape.batch.max(1) as u64
            * KvCache::size_in_bytes(cfg, shape.ctx, shape.kv_dtype) as u64,
        rope_tables: 2 * RopeTable::bytes_for(cfg.head_dim, shape.ctx) as u64,
        workspace: (crate::engine::decoder::run_workspace_bytes(
            cfg,
            shape.rows.min(shape.batch.max(1) * shape.ctx).max(1),
            shape.batch,
            shape.on_cpu,
        ) + if shape.on_cpu {
            0 // the CPU kernel reads every cache type in place
        } else {
            crate::engine::attention::generic::transient_bytes(cfg, shape.ctx, shape.kv_dtype)
        })
        .max(encode)
            + rotation_matrix_bytes(shape.kv_dtype, cfg.head_dim, shape.on_cpu),
    }
}

/// Bytes of KV cache a decoded token reads at `depth` positions (every layer's keys and values
/// in its span): with the weights, what bounds decode speed by memory bandwidth.
pub fn kv_bytes_read_per_token(cfg: &Gemma3Config, depth: usize, kv_dtype: KvPair) -> u64 {
    KvCache::size_in_bytes(cfg, depth.max(1), kv_dtype) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::presets;

    fn gguf_cfg(size: &str) -> Gemma3Config {
        let mut c = presets::find(size).unwrap().config;
        c.vocab_size = 262_144;
        c
    }

    #[test]
    fn cpu_repacks_q5_0_and_cuda_keeps_dense_matrices_in_their_width() {
        let cfg = gguf_cfg("270m");
        let q = "q4_k_m"
            .parse::<crate::engine::load::format::Format>()
            .unwrap();
        let cpu = text_tensors(&cfg, q, true);
        let gate = cpu
            .iter()
            .find(|t| t.name == "blk.0.ffn_gate.weight")
            .unwrap();
        assert_eq!(gate.file_type, GgmlDType::Q5_0);
        assert_eq!(gate.resident_bytes * 22, gate.file_bytes * 34);
        let shape = RunShape {
            ctx: 1024,
            kv_dtype: KvPair::both(crate::engine::kv_cache::KvDtype::F32),
            rows: 1,
            batch: 1,
            image: false,
            on_cpu: true,
        };
        let p = plan(&cfg, None, q, shape);
        if crate::engine::kernels::qmatmul::has_vnni() {
            // The largest repacked matrix (ffn_gate/ffn_up, Q8_0) is held twice at the end.
            assert_eq!(p.load_peak, p.weights + gate.resident_bytes);
        } else {
            assert!(p.load_peak < p.weights);
        }
        let cuda = text_tensors(&cfg, q, false);
        assert!(cuda.iter().all(|t| t.resident_bytes == t.file_bytes));

        let bf16 = "bf16"
            .parse::<crate::engine::load::format::Format>()
            .unwrap();
        let cpu: u64 = text_tensors(&cfg, bf16, true)
            .iter()
            .map(|t| t.resident_bytes)
            .sum();
        let file: u64 = text_tensors(&cfg, bf16, true)
            .iter()
            .map(|t| t.file_bytes)
            .sum();
        assert_eq!(cpu, file, "bf16 stays bf16 on the CPU");
        let cuda = text_tensors(&cfg, bf16, false);
        let up = cuda
            .iter()
            .find(|t| t.name == "blk.3.ffn_up.weight")
            .unwrap();
        assert_eq!(up.resident_bytes, up.file_bytes, "held in its own width");
        let embd = cuda.iter().find(|t| t.name == "token_embd.weight").unwrap();
        assert_eq!(
            embd.resident_bytes, embd.file_bytes,
            "the lookup shares the product's copy"
        );
        let shape = RunShape {
            ctx: 4096,
            kv_dtype: KvPair::both(crate::engine::kv_cache::KvDtype::Bf16),
            rows: 512,
            batch: 1,
            image: false,
            on_cpu: false,
        };
        let p = plan(&cfg, None, bf16, shape);
        assert_eq!(
            p.load_peak,
            4 * embd.file_bytes,
            "+ the f32 widening on the way"
        );
        let p = plan(
            &cfg,
            None,
            bf16,
            RunShape {
                on_cpu: true,
                ..shape
            },
        );
        assert!(p.load_peak < p.weights);
    }

    #[test]
    fn the_workspace_grows_with_the_chunk_and_an_image_adds_the_tower() {
        let p = presets::find("4b").unwrap();
        let q = "q4_k_m"
            .parse::<crate::engine::load::format::Format>()
            .unwrap();
        let shape = RunShape {
            ctx: 8192,
            kv_dtype: KvPair::both(crate::engine::kv_cache::KvDtype::Bf16),
            rows: 512,
            batch: 1,
            image: false,
            on_cpu: true,
        };
        let a = plan(&p.config, p.vision.as_ref(), q, shape);
        let b = plan(
            &p.config,
            p.vision.as_ref(),
            q,
            RunShape { rows: 1, ..shape },
        );
        assert!(a.workspace > 40 * b.workspace, "{a:?} {b:?}");
        assert_eq!(a.vision_weights, 0);
        let c = plan(
            &p.config,
            p.vision.as_ref(),
            q,
            RunShape {
                image: true,
                ..shape
            },
        );
        assert!(c.vision_weights > 800_000_000 && c.workspace > a.workspace);
        // Rows beyond the context cannot be processed at once.
        let d = plan(&p.config, None, q, RunShape { ctx: 16, ..shape });
        assert_eq!(
            d.workspace,
            crate::engine::decoder::forward_workspace_bytes(&p.config, 16, 1, true)
        );
    }

    /// A batch of B: B KV caches, one set of RoPE tables, and a decode step's B rows of logits
    /// (held twice) where they outgrow the prefill chunk's activations.
    #[test]
    fn a_batch_holds_a_cache_per_sequence_and_its_logits() {
        let cfg = gguf_cfg("270m");
        let q = "q4_k_m"
            .parse::<crate::engine::load::format::Format>()
            .unwrap();
        let shape = RunShape {
            ctx: 4096,
            kv_dtype: KvPair::both(crate::engine::kv_cache::KvDtype::F16),
            rows: 512,
            batch: 1,
            image: false,
            on_cpu: true,
        };
        let one = plan(&cfg, None, q, shape);
        let eight = plan(&cfg, None, q, RunShape { batch: 8, ..shape });
        assert_eq!(eight.kv_cache, 8 * one.kv_cache);
        assert_eq!(eight.rope_tables, one.rope_tables);
        assert_eq!(eight.weights, one.weights);
        // 270M: a row of the prefill chunk holds 4 × 2048 + 2 × 640 f32; the vocabulary is
        // 262,144 wide.
        let per_row = (4 * 2048 + 2 * 640) * 4;
        assert_eq!(one.workspace, 512 * per_row + 262_144 * 4);
        let logits = 2 * 64 * 262_144 * 4;
        let b64 = plan(&cfg, None, q, RunShape { batch: 64, ..shape });
        assert_eq!(b64.workspace, 64 * per_row + logits);
    }
}
