//! The vision part of Gemma 3 4B/12B/27B: a SigLIP encoder and the projector into the text width.
//!
//! Encoder: the image (896 × 896, 3 channels) is cut into 14 × 14 patches (a 64 × 64 grid); each
//! patch is mapped to 1152 values (a convolution with stride = kernel, done here as one matrix
//! product), a learned position embedding is added, then 27 pre-LayerNorm transformer layers
//! (16 heads, bidirectional attention over all 4096 patches, GELU-tanh MLP of 4304) and a final
//! LayerNorm. Projector: 4 × 4 average pooling of the patch grid (→ 16 × 16 = 256 tokens),
//! Gemma's RMSNorm (weight 1 + w), and a linear map to the text model's hidden width. The 256
//! rows are the image's soft tokens; the decoder places them between begin/end-of-image tokens.
//!
//! Weights keep their stored width (f16/bf16 stay 2 bytes per value); each product widens its
//! weight to f32 for the duration of that product only. Attention runs in blocks of queries and
//! the MLP in blocks of rows, so the transient memory of an encode stays in the tens of MiB
//! rather than the gigabyte a full 16 × 4096 × 4096 score tensor would take.
//!
//! Tensor names follow llama.cpp's `mmproj` GGUF files (`v.blk.N.attn_q.weight`, ...);
//! `safetensors.rs` maps them to the Hugging Face names.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::engine::load::weights::{WeightBytes, WeightSource};
use crate::error::Result;

/// The SigLIP tower's shape and the number of soft tokens per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub patch_size: usize,
    pub image_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f64,
    /// Soft tokens per image after pooling (a square number).
    pub tokens_per_image: usize,
}

impl VisionConfig {
    /// Gemma 3's SigLIP-400M tower (`docs/gemma3.md` §5), shared by 4B, 12B and 27B.
    pub fn gemma3() -> Self {
        VisionConfig {
            hidden_size: 1152,
            intermediate_size: 4304,
            num_layers: 27,
            num_heads: 16,
            patch_size: 14,
            image_size: 896,
            num_channels: 3,
            layer_norm_eps: 1e-6,
            tokens_per_image: 256,
        }
    }

    /// Patches along one side of the image (64).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions an image takes in the context: its soft tokens and the begin/end markers.
    pub fn positions_per_image(&self) -> usize {
        self.tokens_per_image + 2
    }

    /// Soft tokens along one side after pooling (16).
    pub fn tokens_per_side(&self) -> usize {
        (self.tokens_per_image as f64).sqrt().round() as usize
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        // Sizes far above SigLIP-400M's, as for the text config: larger is damage.
        let sizes = [
            ("hidden_size", self.hidden_size, 1 << 14),
            ("intermediate_size", self.intermediate_size, 1 << 16),
            ("num_hidden_layers", self.num_layers, 1 << 8),
            ("num_attention_heads", self.num_heads, 1 << 8),
            ("patch_size", self.patch_size, 1 << 10),
            ("image_size", self.image_size, 1 << 13),
            ("mm_tokens_per_image", self.tokens_per_image, 1 << 14),
        ];
        for (name, v, max) in sizes {
            if v == 0 || v > max {
                return Err(format!(
                    "vision config: {name} is {v} (1 to {max} are possible)"
                ));
            }
        }
        if self.num_channels != 3 {
            return Err(format!(
                "vision config: num_channels is {}, images are RGB (3)",
                self.num_channels
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "vision config: layer_norm_eps is {}, not a positive number",
                self.layer_norm_eps
            ));
        }
        let side = self.tokens_per_side();
        let checks = [
            (
                self.patch_size > 0 && self.image_size.is_multiple_of(self.patch_size),
                "image_size must be a multiple of patch_size",
            ),
            (
                self.num_heads > 0 && self.hidden_size.is_multiple_of(self.num_heads),
                "the vision hidden size must be a multiple of its head count",
            ),
            (
                side > 0 && side * side == self.tokens_per_image,
                "mm_tokens_per_image must be a square number",
            ),
            (
                side > 0 && self.patches_per_side().is_multiple_of(side),
                "the patch grid must pool evenly into the soft-token grid",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err(format!("vision config: {why} ({self:?})")),
            None => Ok(()),
        }
    }

    /// Parameters of the tower (patch and position embeddings, layers, final LayerNorm).
    pub fn tower_params(&self) -> u64 {
        tensor_shapes(self, 0)
            .iter()
            .filter(|(name, _)| name.starts_with("v."))
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Parameters of the projector into a text width of `text_hidden`.
    pub fn projector_params(&self, text_hidden: usize) -> u64 {
        (self.hidden_size * text_hidden + self.hidden_size) as u64
    }
}

/// Every vision tensor with its shape (candle order), in the order the loader reads them.
/// `text_hidden`: the width the projector maps into.
pub fn tensor_shapes(v: &VisionConfig, text_hidden: usize) -> Vec<(String, Vec<usize>)> {
    let (d, f, p) = (v.hidden_size, v.intermediate_size, v.patch_size);
    let patches = v.patches_per_side() * v.patches_per_side();
    let mut t = vec![
        (
            "v.patch_embd.weight".to_string(),
            vec![d, v.num_channels, p, p],
        ),
        ("v.patch_embd.bias".into(), vec![d]),
        ("v.position_embd.weight".into(), vec![patches, d]),
    ];
    for i in 0..v.num_layers {
        let n = |s: &str| format!("v.blk.{i}.{s}");
        for (name, out, inp) in [
            ("attn_q", d, d),
            ("attn_k", d, d),
            ("attn_v", d, d),
            ("attn_out", d, d),
            ("ffn_up", f, d),
            ("ffn_down", d, f),
        ] {
            t.push((n(&format!("{name}.weight")), vec![out, inp]));
            t.push((n(&format!("{name}.bias")), vec![out]));
        }
        for norm in ["ln1", "ln2"] {
            t.push((n(&format!("{norm}.weight")), vec![d]));
            t.push((n(&format!("{norm}.bias")), vec![d]));
        }
    }
    t.extend([
        ("v.post_ln.weight".into(), vec![d]),
        ("v.post_ln.bias".into(), vec![d]),
        ("mm.soft_emb_norm.weight".into(), vec![d]),
        // [vision, text]: applied as x @ W (the Hugging Face and llama.cpp layout).
        ("mm.input_projection.weight".into(), vec![d, text_hidden]),
    ]);
    t
}

/// `x @ Wᵀ + b`, the weight kept in its stored format and widened only while multiplying.
struct Dense {
    w: QTensor,
    b: Tensor,
}

impl Dense {
    fn load(w: &mut dyn WeightSource, name: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Dense {
            w: w.qtensor(&format!("{name}.weight"), &[out, inp])?,
            b: w.f32_tensor(&format!("{name}.bias"), &[out])?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, &self.widened(x.device())?)
    }

    /// The weight as f32, for several products in a row (one widening, not one per product).
    fn widened(&self, device: &Device) -> candle_core::Result<Tensor> {
        self.w.dequantize(device)
    }

    /// `x @ wᵀ + b` with `w` from [`Dense::widened`].
    fn apply(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&w.t()?)?.broadcast_add(&self.b)
    }
}

struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

impl LayerNorm {
    fn load(w: &mut dyn WeightSource, name: &str, d: usize) -> Result<Self> {
        Ok(LayerNorm {
            w: w.f32_tensor(&format!("{name}.weight"), &[d])?,
            b: w.f32_tensor(&format!("{name}.bias"), &[d])?,
        })
    }

    fn forward(&self, x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, eps as f32)
    }
}

struct EncoderLayer {
    ln1: LayerNorm,
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
    ln2: LayerNorm,
    up: Dense,
    down: Dense,
}

/// The vision tower and projector, loaded.
pub struct VisionTower {
    pub cfg: VisionConfig,
    patch_embd: QTensor,
    patch_bias: Tensor,
    position_embd: QTensor,
    layers: Vec<EncoderLayer>,
    post_ln: LayerNorm,
    soft_emb_norm: Tensor,
    projection: QTensor,
    pub weight_bytes: WeightBytes,
}

/// Most f32 elements of attention scores held at once (8 Mi = 32 MiB).
const SCORE_BLOCK_ELEMS: usize = 8 << 20;
/// Rows of the MLP computed at once (its [rows, 4304] intermediate is the other large transient).
const MLP_ROWS: usize = 1024;

/// Peak transient bytes of encoding one image: the attention step of a layer, which holds 7 f32
/// activations of [patches, hidden] (input, normed, q, kᵀ, v, the output blocks and their
/// concatenation) and a block of scores with its softmax. Measured: 4B with a synthetic image on
/// the CPU peaked 195 MB above weights, KV cache and runtime; this count gives 199 MB.
pub fn encode_workspace_bytes(cfg: &VisionConfig) -> u64 {
    let patches = cfg.patches_per_side() * cfg.patches_per_side();
    let activations = 7 * patches * cfg.hidden_size * 4;
    let scores = 2 * SCORE_BLOCK_ELEMS.min(cfg.num_heads * patches * patches) * 4;
    (activations + scores) as u64
}

impl VisionTower {
    /// Reads the tower and projector from `w` (tensor names and shapes of [`tensor_shapes`]).
    pub fn load(cfg: VisionConfig, text_hidden: usize, w: &mut dyn WeightSource) -> Result<Self> {
        cfg.validate().map_err(crate::Error::Unsupported)?;
        let before = w.bytes();
        let (d, f, p, c) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.patch_size,
            cfg.num_channels,
        );
        let patches = cfg.patches_per_side() * cfg.patches_per_side();
        let patch_embd = w.qtensor("v.patch_embd.weight", &[d, c, p, p])?;
        let patch_bias = w.f32_tensor("v.patch_embd.bias", &[d])?;
        let position_embd = w.qtensor("v.position_embd.weight", &[patches, d])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |s: &str| format!("v.blk.{i}.{s}");
            layers.push(EncoderLayer {
                ln1: LayerNorm::load(w, &n("ln1"), d)?,
                q: Dense::load(w, &n("attn_q"), d, d)?,
                k: Dense::load(w, &n("attn_k"), d, d)?,
                v: Dense::load(w, &n("attn_v"), d, d)?,
                out: Dense::load(w, &n("attn_out"), d, d)?,
                ln2: LayerNorm::load(w, &n("ln2"), d)?,
                up: Dense::load(w, &n("ffn_up"), f, d)?,
                down: Dense::load(w, &n("ffn_down"), d, f)?,
            });
        }
        let post_ln = LayerNorm::load(w, "v.post_ln", d)?;
        let soft_emb_norm = w.f32_tensor("mm.soft_emb_norm.weight", &[d])?;
        let projection = w.qtensor("mm.input_projection.weight", &[d, text_hidden])?;
        let after = w.bytes();
        Ok(VisionTower {
            cfg,
            patch_embd,
            patch_bias,
            position_embd,
            layers,
            post_ln,
            soft_emb_norm,
            projection,
            weight_bytes: WeightBytes {
                file_weight_bytes: after.file_weight_bytes - before.file_weight_bytes,
                resident_weight_bytes: after.resident_weight_bytes - before.resident_weight_bytes,
            },
        })
    }

    /// The encoder's output before the projector: [patches, vision hidden].
    pub fn encoder_output(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let (g, p, d) = (c.patches_per_side(), c.patch_size, c.hidden_size);
        let want = (c.num_channels, c.image_size, c.image_size);
        if pixels.dims3()? != want {
            return Err(crate::Error::BadInput(format!(
                "vision: image tensor {:?}, the tower expects {want:?}",
                pixels.dims()
            )));
        }
        // [C, g·p, g·p] → [g·g patches, C·p·p], each row one patch in the kernel's (c, y, x) order.
        let patches = pixels
            .to_dtype(DType::F32)?
            .reshape((c.num_channels, g, p, g, p))?
            .permute((1, 3, 0, 2, 4))?
            .contiguous()?
            .reshape((g * g, c.num_channels * p * p))?;
        let kernel = self
            .patch_embd
            .dequantize(pixels.device())?
            .reshape((d, c.num_channels * p * p))?;
        let mut x = patches
            .matmul(&kernel.t()?)?
            .broadcast_add(&self.patch_bias)?;
        x = (x + self.position_embd.dequantize(pixels.device())?)?;
        for layer in &self.layers {
            x = layer.forward(&x, c)?;
        }
        Ok(self.post_ln.forward(&x, c.layer_norm_eps)?)
    }

    /// Encodes one preprocessed image ([channels, size, size], f32, values in [-1, 1]) into its
    /// soft tokens: [tokens_per_image, text hidden], f32.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let x = self.encoder_output(pixels)?;
        let (g, t, d) = (c.patches_per_side(), c.tokens_per_side(), c.hidden_size);
        // [patches, d] → [1, d, g, g] → average pool (g / t) → [t·t, d]
        let pooled = x
            .t()?
            .reshape((1, d, g, g))?
            .avg_pool2d(g / t)?
            .reshape((d, t * t))?
            .t()?
            .contiguous()?;
        let normed =
            candle_nn::ops::rms_norm(&pooled, &self.soft_emb_norm, c.layer_norm_eps as f32)?;
        Ok(normed.matmul(&self.projection.dequantize(pixels.device())?)?)
    }
}

impl EncoderLayer {
    fn forward(&self, x: &Tensor, c: &VisionConfig) -> candle_core::Result<Tensor> {
        let eps = c.layer_norm_eps;
        let h = self.ln1.forward(x, eps)?;
        let attn = self.attention(&h, c)?;
        let x = (x + self.out.forward(&attn)?)?;
        let h = self.ln2.forward(&x, eps)?;
        let rows = x.dim(0)?;
        let (up, down) = (self.up.widened(x.device())?, self.down.widened(x.device())?);
        let mut outs = Vec::with_capacity(rows.div_ceil(MLP_ROWS));
        for start in (0..rows).step_by(MLP_ROWS) {
            let hb = h.narrow(0, start, MLP_ROWS.min(rows - start))?;
            outs.push(self.down.apply(&self.up.apply(&hb, &up)?.gelu()?, &down)?);
        }
        x + Tensor::cat(&outs, 0)?
    }

    /// Full (bidirectional) multi-head attention over all patches, in blocks of queries.
    fn attention(&self, h: &Tensor, c: &VisionConfig) -> candle_core::Result<Tensor> {
        let (n, d) = h.dims2()?;
        let (heads, hd) = (c.num_heads, c.hidden_size / c.num_heads);
        let split = |t: Tensor| t.reshape((n, heads, hd))?.transpose(0, 1)?.contiguous();
        let q = (split(self.q.forward(h)?)? * (hd as f64).powf(-0.5))?;
        let k_t = split(self.k.forward(h)?)?.t()?.contiguous()?; // [heads, hd, n]
        let v = split(self.v.forward(h)?)?; // [heads, n, hd]
        let block = (SCORE_BLOCK_ELEMS / (heads * n).max(1)).clamp(1, n);
        let mut outs = Vec::with_capacity(n.div_ceil(block));
        for start in (0..n).step_by(block) {
            let qb = q.narrow(1, start, block.min(n - start))?;
            let probs = candle_nn::ops::softmax_last_dim(&qb.matmul(&k_t)?)?;
            outs.push(probs.matmul(&v)?);
        }
        Tensor::cat(&outs, 1)? // [heads, n, hd]
            .transpose(0, 1)?
            .reshape((n, d))
    }
}

/// Mean and standard deviation of Gemma 3's image preprocessing (pixel / 255, then (x - 0.5) / 0.5).
const PIXEL_MEAN: f32 = 0.5;
const PIXEL_STD: f32 = 0.5;

/// An image file as the encoder's input: resized to `size` × `size` (bilinear, aspect ratio not
/// kept, as Gemma 3's processor does without pan-and-scan), RGB, scaled to [-1, 1], [3, size, size].
pub fn load_image(path: &std::path::Path, size: usize, device: &Device) -> Result<Tensor> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| crate::Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| crate::Error::io(path, e))?;
    reader.limits(image_limits());
    let img = reader.decode().map_err(|e| crate::Error::BadImage {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let rgb = image::imageops::resize(
        &img.to_rgb8(),
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    let data: Vec<f32> = rgb
        .into_raw()
        .into_iter()
        .map(|v| (v as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD)
        .collect();
    Ok(Tensor::from_vec(data, (size, size, 3), device)?
        .permute((2, 0, 1))?
        .contiguous()?)
}

/// What an image may claim before it is decoded: its dimensions and the decoder's allocations
/// are checked against these from the header, so a decompression bomb (a small file declaring
/// a huge image) is refused at once. 8192 × 8192 RGBA is 256 MiB; every image is resized to the
/// tower's 896 × 896 anyway.
pub fn image_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(8192);
    limits.max_image_height = Some(8192);
    limits.max_alloc = Some(512 << 20);
    limits
}

/// A seeded random image in the encoder's input range ([3, size, size]): for measuring without
/// an image file (the encoder's cost does not depend on the pixels).
pub fn synthetic_image(size: usize, seed: u64, device: &Device) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let data: Vec<f32> = (0..3 * size * size)
        .map(|_| rng.random_range(-1f32..1.0))
        .collect();
    Ok(Tensor::from_vec(data, (3, size, size), device)?)
}
