//! The Gemma 3 text decoder: the token embedding, the layers (`layer.rs`: each a type with its
//! loader and `forward`), the final norm and the output projection, which is the (quantized)
//! token embedding itself. Embeddings are scaled by sqrt(hidden). Per-sequence state (KV cache,
//! and RoPE tables, which the sequences of a batch share) is a [`Session`].
//!
//! **Batches.** A forward pass takes the rows of several sequences at once (`Part`s): their rows are
//! stacked, every weight product runs once over all of them, and each layer's attention runs per
//! sequence over its own cache (`layer.rs`). Every op a row goes through is row-independent
//! (the products' kernels, norms, RoPE, the per-query attention), so a sequence's logits in a
//! batch are the ones it gets alone, bit for bit on the CPU; the output projection takes its rows
//! one at a time where candle's multi-row kernel would differ (`Gemma3::logits`).

mod layer;

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::engine::config::{Gemma3Config, LayerKind};
use crate::engine::kernels::linear::Linear;
use crate::engine::kv_cache::{KvCache, KvPair};
use crate::engine::load::gguf::GgufFile;
use crate::engine::load::weights::{GgufWeights, WeightBytes, WeightSource};
use crate::engine::rope::RopeTable;
use crate::error::Result;

use self::layer::{DecoderLayer, Step};

/// Every tensor a Gemma 3 GGUF file holds for `cfg`, with its shape (candle order: rows,
/// columns), in the order the loader reads them. Synthetic weights and size estimates use the
/// same list.
pub fn tensor_shapes(cfg: &Gemma3Config) -> Vec<(String, Vec<usize>)> {
    let (h, hd, ff, vocab) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let (q_out, kv_out) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut t = vec![
        ("token_embd.weight".to_string(), vec![vocab, h]),
        ("output_norm.weight".into(), vec![h]),
    ];
    for i in 0..cfg.num_layers {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        t.extend([
            (n("attn_q"), vec![q_out, h]),
            (n("attn_k"), vec![kv_out, h]),
            (n("attn_v"), vec![kv_out, h]),
            (n("attn_output"), vec![h, q_out]),
            (n("attn_q_norm"), vec![hd]),
            (n("attn_k_norm"), vec![hd]),
            (n("ffn_gate"), vec![ff, h]),
            (n("ffn_up"), vec![ff, h]),
            (n("ffn_down"), vec![h, ff]),
            (n("attn_norm"), vec![h]),
            (n("post_attention_norm"), vec![h]),
            (n("ffn_norm"), vec![h]),
            (n("post_ffw_norm"), vec![h]),
        ]);
    }
    t
}

/// f32 activations of width `intermediate_size` held per position at the peak of a forward pass
/// (the feed-forward's gate and up outputs, their product, and the activations quantized for the
/// down projection), plus 2 of width `hidden_size` (the residual stream and its normed copy).
/// Measured on the CPU (peak RSS against prompt length; 270M GGUF, synthetic 1B/4B; chunks of 1 to
/// 1024 positions): 36, 122 and 169 KB per position, against 38, 120 and 184 by this count.
const FFN_WIDE_BUFFERS: usize = 4;
const HIDDEN_BUFFERS: usize = 2;
/// candle's CUDA quantized products keep per-device scratch that only grows: a 16 MiB fix-up
/// buffer, and the activations quantized to Q8_1 (144 bytes per 128 values), sized by the widest
/// input (candle-core 0.11.1 `quantized/cuda.rs`; read, not yet measured on a GPU).
const CUDA_MMQ_FIXUP_BYTES: usize = 16 << 20;

/// Peak transient bytes of one forward pass over `rows` positions (activations, and on CUDA
/// candle's product scratch) that ends in `logit_rows` rows of f32 logits (vocab × 4 each).
pub fn forward_workspace_bytes(
    cfg: &Gemma3Config,
    rows: usize,
    logit_rows: usize,
    on_cpu: bool,
) -> u64 {
    let per_row = FFN_WIDE_BUFFERS * cfg.intermediate_size + HIDDEN_BUFFERS * cfg.hidden_size;
    let mut bytes = rows * per_row * 4 + logit_rows * cfg.vocab_size * 4;
    if !on_cpu {
        let widest = cfg.intermediate_size.max(cfg.num_heads * cfg.head_dim);
        bytes += CUDA_MMQ_FIXUP_BYTES + rows * widest.div_ceil(128) * 144;
    }
    bytes as u64
}

/// Peak transient bytes of a run that prefills in passes of at most `rows` positions (only the
/// last position of a prompt goes through the output projection) and decodes `batch` sequences
/// a step at a time: a step's logits are held twice, as the projection's tensor and as the rows
/// handed back ([`Gemma3::decode_batch`]).
pub fn run_workspace_bytes(cfg: &Gemma3Config, rows: usize, batch: usize, on_cpu: bool) -> u64 {
    let batch = batch.max(1);
    forward_workspace_bytes(cfg, rows, 1, on_cpu).max(forward_workspace_bytes(
        cfg,
        batch,
        2 * batch,
        on_cpu,
    ))
}

/// While it lives, a decode step's buffers stay on the heap for the next step (glibc on Linux;
/// elsewhere it does nothing). Made by [`Gemma3::decode_heap`] around a run of decode steps.
///
/// By default glibc maps each block above 128 KiB (a threshold that only rises as large blocks
/// are freed) fresh from the kernel, unmaps it when freed, and returns free memory above twice
/// that threshold at the heap's top. A decode step's largest buffers (the logits, 1 MiB a row at
/// Gemma 3's 262,144-token vocabulary, and each sequence's copy of its row) were then mapped,
/// zeroed and faulted in by the kernel page by page every step: about a fifth of a step with 8
/// sequences on the 2-core machine (docs/serving.md). While the guard lives, blocks up to 32 MiB
/// come from the heap and up to 64 MiB of free heap stays mapped. When it is dropped, free heap
/// is handed back and both thresholds return to glibc's starting 128 KiB: kept for a prefill,
/// the same settings added 14–23 MiB to a 480-position prefill of synthetic 4B at its peak (not
/// explained; the estimator check caught it), while decode's peak does not change.
pub struct DecodeHeap {
    on: bool,
}

impl DecodeHeap {
    fn set(on: bool) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let (mmap, trim) = if on {
                (32 << 20, 64 << 20)
            } else {
                (128 << 10, 128 << 10)
            };
            // SAFETY: mallopt only changes the thresholds of later allocations and malloc_trim
            // only releases free pages; neither touches a live allocation.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
                libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
                if !on {
                    libc::malloc_trim(0);
                }
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = on;
    }
}

impl Drop for DecodeHeap {
    fn drop(&mut self) {
        if self.on {
            Self::set(false);
        }
    }
}

/// A loaded Gemma 3 text model. Per-run state (KV cache, RoPE tables) lives in [`Session`].
pub struct Gemma3 {
    pub cfg: Gemma3Config,
    embed: TokenEmbedding,
    lm_head: Linear,
    layers: Vec<DecoderLayer>,
    final_norm: Tensor,
    device: Device,
    pub weight_bytes: WeightBytes,
    /// Tensors whose format was changed at load: (name, from, to).
    pub repacked: Vec<(String, String, String)>,
}

/// The token embedding's lookup: from the loaded (quantized) tensor, or, where the tied output
/// product holds the weight as a plain dense tensor (off the CPU), from that same tensor, so the
/// embedding is held once.
enum TokenEmbedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl TokenEmbedding {
    /// Rows of `ids`, f32.
    fn lookup(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            TokenEmbedding::Quantized(q) => q.embedding(ids),
            TokenEmbedding::Dense(w) => w.index_select(ids, 0)?.to_dtype(DType::F32),
        }
    }
}

/// A piece of a prompt: text token ids, or one image's soft tokens ([tokens, hidden], from
/// [`crate::engine::vision::VisionTower::encode`]), which the caller places between the
/// begin- and end-of-image tokens.
pub enum Segment<'a> {
    Text(&'a [u32]),
    Image(&'a Tensor),
}

/// The RoPE tables of a context: held once for all the sequences of a batch.
struct Ropes {
    local: RopeTable,
    global: RopeTable,
}

/// The state of one sequence: its KV cache, and the RoPE tables sized for its context (shared
/// with the other sequences made by the same [`Gemma3::sessions`]).
pub struct Session {
    pub cache: KvCache,
    ropes: Arc<Ropes>,
}

impl Session {
    /// Positions processed so far.
    pub fn position(&self) -> usize {
        self.cache.len
    }

    /// Bytes of the RoPE tables (held once however many sessions share them).
    pub fn rope_bytes(&self) -> usize {
        self.ropes.local.size_in_bytes() + self.ropes.global.size_in_bytes()
    }
}

/// One sequence's rows in a forward pass: `tokens` at its session's next positions, with
/// `images` (offset in `tokens`, soft tokens [len, hidden]) replacing the embeddings they cover.
struct Part<'a> {
    tokens: &'a [u32],
    images: &'a [(usize, &'a Tensor)],
    session: &'a mut Session,
}

/// RMSNorm over the last dimension (Gemma's 1 + w is already in the loaded weight).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

impl Gemma3 {
    /// Loads a Gemma 3 GGUF file onto `device`.
    pub fn from_gguf(file: &GgufFile, device: &Device) -> Result<Self> {
        let cfg = Self::config_of(file)?;
        Self::load(cfg, &mut GgufWeights::new(file, device)?, device)
    }

    /// The configuration of a GGUF file: its `gemma3.*` keys, the vocabulary from the token
    /// embedding's shape.
    pub fn config_of(file: &GgufFile) -> Result<Gemma3Config> {
        let embed_info = file
            .content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or_else(|| crate::Error::MissingTensor {
                path: file.path.clone(),
                name: "token_embd.weight".into(),
            })?;
        let vocab = embed_info.shape.dims().first().copied().unwrap_or(0);
        Gemma3Config::from_gguf(file, vocab)
    }

    /// Builds the model from any weight source (GGUF tensor names and shapes).
    pub fn load(cfg: Gemma3Config, w: &mut dyn WeightSource, device: &Device) -> Result<Self> {
        let (vocab, h) = (cfg.vocab_size, cfg.hidden_size);
        // The largest tensor first, so the transient copy made while reading it does not stack
        // on top of everything else (it bounds the peak resident memory of a load).
        let embed = Arc::new(w.qtensor("token_embd.weight", &[vocab, h])?);
        let (embed, lm_head) = if w.has("output.weight") {
            let out = Arc::new(w.qtensor("output.weight", &[vocab, h])?);
            (TokenEmbedding::Quantized(embed), Linear::single_row(out)?)
        } else {
            let lm_head = Linear::single_row(embed.clone())?;
            match &lm_head {
                // The loaded tensor is dropped here: the lookup shares the product's weight.
                Linear::Dense(t) => (TokenEmbedding::Dense(t.clone()), lm_head),
                _ => (TokenEmbedding::Quantized(embed), lm_head),
            }
        };
        let final_norm = w.f32_tensor("output_norm.weight", &[h])?;
        let layers = (0..cfg.num_layers)
            .map(|i| DecoderLayer::load(&cfg, i, w))
            .collect::<Result<Vec<_>>>()?;
        // Weights repacked at load (`packed.rs`) freed their loaded copies; those under the
        // allocator's mmap threshold sit between live buffers on the heap, resident until
        // something reuses them (~25 MB for 4B Q4_K_M). Hand their pages back now, so the memory
        // figures show what the model holds, not the load's history.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if device.is_cpu() {
            // SAFETY: malloc_trim only releases free pages; it touches no live allocation.
            unsafe { libc::malloc_trim(0) };
        }
        let repacked = w
            .repacked()
            .iter()
            .map(|(n, a, b)| (n.clone(), format!("{a:?}"), format!("{b:?}")))
            .collect();
        Ok(Gemma3 {
            weight_bytes: w.bytes(),
            repacked,
            cfg,
            embed,
            lm_head,
            layers,
            final_norm,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh sequence with room for `ctx` positions.
    pub fn session(&self, ctx: usize, kv: KvPair) -> Result<Session> {
        Ok(self.sessions(ctx, kv, 1)?.remove(0))
    }

    /// `n` fresh sequences (a batch), each with its own KV cache of `ctx` positions; the RoPE
    /// tables are held once for all of them.
    pub fn sessions(&self, ctx: usize, kv: KvPair, n: usize) -> Result<Vec<Session>> {
        let c = &self.cfg;
        let ropes = Arc::new(Ropes {
            local: RopeTable::new(c.rope_local_base, 1.0, c.head_dim, ctx, &self.device)?,
            global: RopeTable::new(
                c.rope_global_base,
                c.rope_global_scale,
                c.head_dim,
                ctx,
                &self.device,
            )?,
        });
        (0..n.max(1))
            .map(|_| {
                Ok(Session {
                    cache: KvCache::new(c, ctx, kv, &self.device)?,
                    ropes: ropes.clone(),
                })
            })
            .collect()
    }

    /// Runs `tokens` through the model in chunks of at most `chunk` positions and returns the
    /// logits of the last position ([vocab], f32).
    pub fn prefill(&self, tokens: &[u32], chunk: usize, s: &mut Session) -> Result<Vec<f32>> {
        self.prefill_segments(&[Segment::Text(tokens)], chunk, s)
    }

    /// Runs a prompt of text and images through the model in chunks of at most `chunk`
    /// positions (an image's soft tokens are never split across chunks: they attend to each
    /// other both ways, so a run that does not fit the current chunk starts the next one, and
    /// one longer than `chunk` is a chunk of its own). Returns the last position's logits.
    pub fn prefill_segments(
        &self,
        segments: &[Segment],
        chunk: usize,
        s: &mut Session,
    ) -> Result<Vec<f32>> {
        let chunk = chunk.max(1);
        let mut logits = None;
        let mut ids: Vec<u32> = Vec::with_capacity(chunk);
        let mut images: Vec<(usize, &Tensor)> = Vec::new();
        for seg in segments {
            match seg {
                Segment::Text(tokens) => {
                    let mut rest = *tokens;
                    while !rest.is_empty() {
                        if ids.len() >= chunk {
                            logits = Some(self.forward_with_images(&ids, &images, s)?);
                            ids.clear();
                            images.clear();
                        }
                        let take = (chunk - ids.len()).min(rest.len());
                        ids.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                    }
                }
                Segment::Image(soft) => {
                    let (len, width) = soft.dims2()?;
                    if width != self.cfg.hidden_size || len == 0 {
                        return Err(crate::Error::BadInput(format!(
                            "image soft tokens are [{len}, {width}]; the model needs rows of {}",
                            self.cfg.hidden_size
                        )));
                    }
                    if !ids.is_empty() && ids.len() + len > chunk {
                        logits = Some(self.forward_with_images(&ids, &images, s)?);
                        ids.clear();
                        images.clear();
                    }
                    images.push((ids.len(), soft));
                    // The ids under an image are placeholders: their embeddings are replaced.
                    ids.extend(std::iter::repeat_n(0, len));
                }
            }
        }
        if !ids.is_empty() {
            logits = Some(self.forward_with_images(&ids, &images, s)?);
        }
        logits.ok_or_else(|| crate::Error::BadInput("prefill needs at least one token".into()))
    }

    /// Processes `tokens` at the session's next positions as one chunk; returns the last
    /// position's logits ([vocab], f32). Only that position goes through the output projection.
    pub fn forward(&self, tokens: &[u32], s: &mut Session) -> Result<Vec<f32>> {
        self.forward_with_images(tokens, &[], s)
    }

    /// [`Self::forward`] where `images` (chunk offset, soft tokens [len, hidden]) replace the
    /// embeddings of the positions they cover.
    fn forward_with_images(
        &self,
        tokens: &[u32],
        images: &[(usize, &Tensor)],
        s: &mut Session,
    ) -> Result<Vec<f32>> {
        let x = self.hidden_states(&mut [Part {
            tokens,
            images,
            session: s,
        }])?;
        let last = x.narrow(0, tokens.len() - 1, 1)?;
        Ok(self.logits(&last)?.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// Processes `tokens` at the session's next positions as one chunk, like [`Self::forward`],
    /// and hands the logits ([vocab], f32) of every position from chunk offset `first` on to
    /// `each(offset of the first row, rows)`, a few rows at a time, in order: the logits of a
    /// long chunk are never all held at once. The projection's rows are independent, so each
    /// row's logits are those a one-row projection gives.
    pub fn forward_all(
        &self,
        tokens: &[u32],
        first: usize,
        s: &mut Session,
        mut each: impl FnMut(usize, &[Vec<f32>]) -> Result<()>,
    ) -> Result<()> {
        const ROWS: usize = 16;
        let x = self.hidden_states(&mut [Part {
            tokens,
            images: &[],
            session: s,
        }])?;
        let mut row = first;
        while row < tokens.len() {
            let n = ROWS.min(tokens.len() - row);
            each(row, &self.logits(&x.narrow(0, row, n)?)?.to_vec2::<f32>()?)?;
            row += n;
        }
        Ok(())
    }

    /// Keeps decode steps' buffers on the heap while the guard lives ([`DecodeHeap`]; CPU only).
    pub fn decode_heap(&self) -> DecodeHeap {
        let on = self.device.is_cpu();
        if on {
            DecodeHeap::set(true);
        }
        DecodeHeap { on }
    }

    /// One decode step of a batch: `tokens[i]` at the next position of `sessions[i]`, all in one
    /// forward pass. Returns each sequence's logits ([vocab], f32), in order.
    pub fn decode_batch(&self, tokens: &[u32], sessions: &mut [Session]) -> Result<Vec<Vec<f32>>> {
        if tokens.len() != sessions.len() || tokens.is_empty() {
            return Err(crate::Error::BadInput(format!(
                "a decode step takes one token per sequence ({} tokens, {} sequences)",
                tokens.len(),
                sessions.len()
            )));
        }
        let mut parts: Vec<Part> = tokens
            .iter()
            .zip(sessions.iter_mut())
            .map(|(t, s)| Part {
                tokens: std::slice::from_ref(t),
                images: &[],
                session: s,
            })
            .collect();
        let x = self.hidden_states(&mut parts)?;
        Ok(self.logits(&x)?.to_vec2::<f32>()?)
    }

    /// Prefills the prompts of a batch (`prompts[i]` into `sessions[i]`) packed into forward
    /// passes of at most `chunk` positions: the prompts in order, a prompt that does not fit the
    /// rest of a chunk continuing in the next (chunked prefill gives the same numbers). As each
    /// prompt's last position is processed, `done(i, its logits)` is called, before the next
    /// chunk starts: the time of that call is the sequence's first token.
    pub fn prefill_batch(
        &self,
        prompts: &[&[u32]],
        chunk: usize,
        sessions: &mut [Session],
        mut done: impl FnMut(usize, Vec<f32>),
    ) -> Result<()> {
        if prompts.len() != sessions.len() || prompts.iter().any(|p| p.is_empty()) {
            return Err(crate::Error::BadInput(
                "a batch prefill takes one non-empty prompt per sequence".into(),
            ));
        }
        let chunk = chunk.max(1);
        // (sequence, first token of the prompt not yet processed)
        let mut next = (0usize, 0usize);
        while next.0 < prompts.len() {
            // This chunk's pieces: (sequence, range of its prompt).
            let mut pieces = Vec::new();
            let mut room = chunk;
            while room > 0 && next.0 < prompts.len() {
                let (i, from) = next;
                let take = room.min(prompts[i].len() - from);
                pieces.push((i, from..from + take));
                room -= take;
                next = if from + take == prompts[i].len() {
                    (i + 1, 0)
                } else {
                    (i, from + take)
                };
            }
            let first = pieces[0].0;
            let mut parts = Vec::with_capacity(pieces.len());
            for ((i, r), s) in pieces.iter().zip(sessions[first..].iter_mut()) {
                parts.push(Part {
                    tokens: &prompts[*i][r.clone()],
                    images: &[],
                    session: s,
                });
            }
            let x = self.hidden_states(&mut parts)?;
            // The last row of each prompt that ends in this chunk.
            let mut row = 0;
            for (i, r) in &pieces {
                row += r.len();
                if r.end == prompts[*i].len() {
                    let logits = self.logits(&x.narrow(0, row - 1, 1)?)?;
                    done(*i, logits.squeeze(0)?.to_vec1::<f32>()?);
                }
            }
        }
        Ok(())
    }

    /// The hidden states after the last layer ([rows, hidden]) of the parts' tokens, stacked in
    /// order, at their sessions' next positions, which they then occupy.
    fn hidden_states(&self, parts: &mut [Part]) -> Result<Tensor> {
        let mut ids = Vec::new();
        let mut spans = Vec::with_capacity(parts.len());
        let mut soft = Vec::new();
        for p in parts.iter() {
            let (n, cache) = (p.tokens.len(), &p.session.cache);
            if cache.len + n > cache.ctx {
                return Err(crate::Error::ContextFull {
                    used: cache.len,
                    requested: n,
                    capacity: cache.ctx,
                });
            }
            let mut runs = Vec::with_capacity(p.images.len());
            for &(offset, t) in p.images {
                let len = t.dim(0)?;
                soft.push((ids.len() + offset, t));
                runs.push((cache.len + offset, cache.len + offset + len));
            }
            spans.push(runs);
            ids.extend_from_slice(p.tokens);
        }
        let ids = Tensor::new(ids.as_slice(), &self.device)?;
        let mut x = (self.embed.lookup(&ids)? * (self.cfg.hidden_size as f64).sqrt())?;
        for (row, t) in soft {
            // Soft tokens enter as they are (not scaled like token embeddings).
            let len = t.dim(0)?;
            x = x.slice_assign(
                &[row..row + len, 0..self.cfg.hidden_size],
                &t.to_dtype(x.dtype())?,
            )?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let steps: Vec<Step> = parts
                .iter()
                .zip(&spans)
                .map(|(p, spans)| {
                    let s = &*p.session;
                    Step {
                        pos: s.cache.len,
                        n: p.tokens.len(),
                        spans,
                        cache: &s.cache.layers[i],
                        rope: match layer.kind {
                            LayerKind::Sliding => &s.ropes.local,
                            LayerKind::Global => &s.ropes.global,
                        },
                        rotations: &s.cache.rotations,
                    }
                })
                .collect();
            x = layer.forward(&x, &steps, &self.cfg)?;
        }
        for p in parts.iter_mut() {
            p.session.cache.len += p.tokens.len();
        }
        Ok(x)
    }

    /// f32 logits ([rows, vocab]) of hidden states `x` ([rows, hidden]): the final norm and the
    /// output projection, each row's logits those it gets alone ([`Linear::forward_rows_alike`]).
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = rms_norm(x, &self.final_norm, self.cfg.rms_norm_eps)?;
        Ok(self.lm_head.forward_rows_alike(&x)?.to_dtype(DType::F32)?)
    }
}
