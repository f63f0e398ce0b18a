//! Fused element-wise kernels for the CPU, with candle-op fallbacks on other devices.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `gelu_tanh(gate) * up`, the gated feed-forward's activation, in one pass and one output
/// buffer (candle's own ops make three temporaries and call libm's scalar tanh per element).
pub fn gelu_tanh_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu()
        && gate.dtype() == candle_core::DType::F32
        && up.dtype() == gate.dtype()
    {
        gate.contiguous()?
            .apply_op2_no_bwd(&up.contiguous()?, &GeluTanhMul)
    } else {
        gate.gelu()? * up
    }
}

struct GeluTanhMul;

impl CustomOp2 for GeluTanhMul {
    fn name(&self) -> &'static str {
        "gelu-tanh-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "gelu-tanh-mul: shapes differ {:?} {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("gelu-tanh-mul: inputs must be contiguous");
        };
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
            candle_core::bail!("gelu-tanh-mul: f32 inputs only");
        };
        let (a, b) = (&a[a0..a1], &b[b0..b1]);
        let mut out = vec![0f32; a.len()];
        // In blocks across candle's worker pool (a prefill chunk's [512, ffn] is megabytes).
        const BLOCK: usize = 4096;
        let dst = crate::engine::kernels::qmatmul::SendPtr(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(a.len().div_ceil(BLOCK), |blocks| {
            let span = blocks.start * BLOCK..(blocks.end * BLOCK).min(a.len());
            // SAFETY: each work item writes only its own span of `out`.
            let o =
                unsafe { std::slice::from_raw_parts_mut(dst.get().add(span.start), span.len()) };
            for ((o, &g), &u) in o.iter_mut().zip(&a[span.clone()]).zip(&b[span]) {
                *o = gelu_tanh(g) * u;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let z = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + tanh(z))
}

/// tanh from a branch-free exp, so loops over it vectorize (libm's tanhf does not).
#[inline(always)]
fn tanh(z: f32) -> f32 {
    // tanh(z) = sign(z)·(1 - e)/(1 + e) with e = exp(-2|z|) in (0, 1].
    let e = exp_neg(-2.0 * z.abs());
    let t = (1.0 - e) / (1.0 + e);
    t.copysign(z)
}

/// exp(x) for x <= 0 (clamped below at -87), relative error about 2e-7: x = n·ln2 + r,
/// exp(r) by a degree-6 polynomial on |r| <= ln2/2, 2^n from the exponent bits.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_gelu_matches_candle() {
        let xs: Vec<f32> = (-400..400).map(|i| i as f32 / 37.0).collect();
        let ys: Vec<f32> = (0..800)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let g = Tensor::from_vec(xs, (8, 100), &Device::Cpu).unwrap();
        let u = Tensor::from_vec(ys, (8, 100), &Device::Cpu).unwrap();
        let fused = gelu_tanh_mul(&g, &u)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let reference = (g.gelu().unwrap() * &u)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in fused.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn exp_is_accurate_over_its_range() {
        for i in 0..=870 {
            let x = -(i as f32) / 10.0;
            let (a, b) = (exp_neg(x), x.exp());
            assert!((a - b).abs() <= 1e-6 * b + 1e-38, "exp({x}): {a} vs {b}");
        }
    }
}
