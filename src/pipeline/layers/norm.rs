//! GroupNorm with an optional fused SiLU: one statistics pass and one normalize+affine(+SiLU)
//! pass over contiguous f32 NCHW data on the CPU, instead of candle_nn's chain of ~8
//! elementwise ops (each a full-size allocation). Other devices, dtypes and layouts keep
//! candle's implementation. Never changes what is computed beyond summation order.

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Shape, Tensor};
use candle_nn::{GroupNorm, VarBuilder};
use rayon::prelude::*;

use crate::pipeline::error::Result;
use crate::pipeline::kernels::cpu::fast_math;
use crate::pipeline::kernels::cpu::gemm::contiguous_f32;
use crate::pipeline::kernels::cpu::takes_host_f32;

/// A GroupNorm layer that can apply SiLU to its output in the same pass.
#[derive(Debug)]
pub(crate) struct FusedGroupNorm {
    /// candle's layer, used whenever the fused CPU kernel does not apply.
    fallback: GroupNorm,
    /// Host copies of gamma/beta for the CPU kernel (present only for f32 CPU weights).
    cpu: Option<CpuGroupNorm>,
}

/// The CPU kernel's parameters; `silu` is chosen per call.
#[derive(Debug, Clone)]
struct CpuGroupNorm {
    groups: usize,
    eps: f64,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Op<'a> {
    p: &'a CpuGroupNorm,
    silu: bool,
}

/// Loads `weight` and `bias` of a GroupNorm over `channels` channels, like `candle_nn::group_norm`.
pub(crate) fn fused_group_norm(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> Result<FusedGroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    FusedGroupNorm::from_tensors(weight, bias, groups, eps)
}

impl FusedGroupNorm {
    /// Wraps gamma/beta tensors of shape (channels,).
    pub(crate) fn from_tensors(
        weight: Tensor,
        bias: Tensor,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let channels = weight.elem_count();
        let cpu = if takes_host_f32(&weight) {
            Some(CpuGroupNorm {
                groups,
                eps,
                weight: weight.to_vec1::<f32>()?,
                bias: bias.to_vec1::<f32>()?,
            })
        } else {
            None
        };
        let fallback = GroupNorm::new(weight, bias, channels, groups, eps)?;
        Ok(FusedGroupNorm { fallback, cpu })
    }

    /// GroupNorm of `xs` (N, C, ...).
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, false)
    }

    /// SiLU(GroupNorm(`xs`)).
    pub(crate) fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, true)
    }

    fn run(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        match &self.cpu {
            Some(p) if takes_host_f32(xs) && xs.rank() >= 2 => {
                Ok(xs.apply_op1_no_bwd(&Op { p, silu })?)
            }
            _ => {
                let ys = self.fallback.forward(xs)?;
                Ok(if silu { candle_nn::ops::silu(&ys)? } else { ys })
            }
        }
    }
}

/// Mean and (biased) variance of one group in a single pass: f64 sums of x and x^2 in eight
/// independent lanes (so the loop vectorises), combined at the end. In f64 the E[x^2]-mean^2
/// form loses nothing that matters for activations of SD's magnitudes.
#[inline(never)] // kept out of line so profiles attribute its time
fn group_stats(xs: &[f32]) -> (f64, f64) {
    const LANES: usize = 8;
    let mut sum = [0f64; LANES];
    let mut sq = [0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let v = c[j] as f64;
            sum[j] += v;
            sq[j] += v * v;
        }
    }
    let (mut s, mut q) = (sum.iter().sum::<f64>(), sq.iter().sum::<f64>());
    for &v in rest {
        s += v as f64;
        q += v as f64 * v as f64;
    }
    let n = xs.len().max(1) as f64;
    let mean = s / n;
    (mean, (q / n - mean * mean).max(0.0))
}

/// `out = x * scale + shift`, then SiLU when asked.
#[inline(never)] // kept out of line so profiles attribute its time
fn normalize(out: &mut [f32], xs: &[f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        fast_math::affine_silu(out, xs, scale, shift);
    } else {
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = x * scale + shift;
        }
    }
}

impl CustomOp1 for Op<'_> {
    fn name(&self) -> &'static str {
        "fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, "fused-group-norm: input")?;
        let dims = layout.dims();
        let Some(&c) = dims.get(1) else {
            candle_core::bail!("fused-group-norm: expected (N, C, ...) input");
        };
        let spatial: usize = dims.iter().skip(2).product();
        let groups = self.p.groups;
        if groups == 0 || c % groups != 0 || self.p.weight.len() != c || self.p.bias.len() != c {
            candle_core::bail!("fused-group-norm: {c} channels do not split into {groups} groups");
        }
        let group_len = (c / groups) * spatial;
        let mut dst = vec![0f32; src.len()];
        if group_len == 0 {
            return Ok((CpuStorage::F32(dst), layout.shape().clone()));
        }
        let cpg = c / groups;
        dst.par_chunks_mut(group_len)
            .zip(src.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (out, inp))| {
                let g = i % groups;
                let (mean, sq) = group_stats(inp);
                let inv_std = 1.0 / (sq + self.p.eps).sqrt();
                for k in 0..cpg {
                    let ch = g * cpg + k;
                    let scale = (inv_std * self.p.weight[ch] as f64) as f32;
                    let shift =
                        (self.p.bias[ch] as f64 - mean * inv_std * self.p.weight[ch] as f64) as f32;
                    let range = k * spatial..(k + 1) * spatial;
                    normalize(
                        &mut out[range.clone()],
                        &inp[range],
                        scale,
                        shift,
                        self.silu,
                    );
                }
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused kernel matches candle's GroupNorm (+ SiLU) on random data.
    #[test]
    fn matches_candle_group_norm() -> Result<()> {
        let dev = Device::Cpu;
        let c = 8;
        let weight = Tensor::randn(0f32, 1., c, &dev)?;
        let bias = Tensor::randn(0f32, 1., c, &dev)?;
        let ours = FusedGroupNorm::from_tensors(weight.clone(), bias.clone(), 4, 1e-6)?;
        assert!(ours.cpu.is_some(), "the CPU f32 kernel must be selected");
        let reference = GroupNorm::new(weight, bias, c, 4, 1e-6)?;
        let xs = (Tensor::randn(0f32, 3., (2, c, 5, 7), &dev)? + 1.5)?;
        let want = reference.forward(&xs)?;
        let got = ours.forward(&xs)?;
        let diff = (want.clone() - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "group norm diff {diff}");
        let want = candle_nn::ops::silu(&want)?;
        let got = ours.forward_silu(&xs)?;
        let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "group norm + silu diff {diff}");
        Ok(())
    }
}
