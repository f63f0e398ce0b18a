//! Rotary position embeddings: one cos/sin table per (base, scale), sized to the context the
//! run asks for (not to the model's maximum), shared by every layer with those parameters.

use candle_core::{DType, Device, Result, Tensor};

#[derive(Debug, Clone)]
pub struct RopeTable {
    cos: Tensor,
    sin: Tensor,
    positions: usize,
}

impl RopeTable {
    /// `positions` rows of `head_dim / 2` frequencies: θ_i = pos / scale / base^(2i / head_dim).
    pub fn new(
        base: f64,
        scale: f64,
        head_dim: usize,
        positions: usize,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / base.powf(2.0 * i as f64 / head_dim as f64) / scale) as f32)
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(RopeTable {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
            positions,
        })
    }

    pub fn size_in_bytes(&self) -> usize {
        2 * self.cos.elem_count() * DType::F32.size_in_bytes()
    }

    /// The size of a table for `positions` positions, without building it (cos and sin, f32).
    pub fn bytes_for(head_dim: usize, positions: usize) -> usize {
        2 * positions * (head_dim / 2) * DType::F32.size_in_bytes()
    }

    /// Rotates `x` of shape [heads, n, head_dim] for positions `start..start + n`
    /// (rotate-half layout, as Gemma uses).
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (_, n, _) = x.dims3()?;
        if start + n > self.positions {
            candle_core::bail!(
                "position {} is beyond the RoPE table ({} positions): the context is full",
                start + n - 1,
                self.positions
            );
        }
        let cos = self.cos.narrow(0, start, n)?;
        let sin = self.sin.narrow(0, start, n)?;
        candle_nn::rotary_emb::rope(&x.unsqueeze(0)?, &cos, &sin)?.squeeze(0)
    }
}
