//! The UNet's Transformer2DModel (diffusers naming): GroupNorm, proj_in, BasicTransformerBlocks
//! (self-attention, cross-attention, GEGLU feed-forward with exact erf GELU), proj_out,
//! residual. Ours rather than candle's because candle's GEGLU uses the tanh GELU
//! approximation. Attention scores are always computed in f32; on the CPU in f32 attention and
//! GEGLU run as fused kernels (`attention_cpu`), elsewhere as candle ops.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

use crate::pipeline::layers::linear::{linear, linear_no_bias, Linear};

use crate::pipeline::error::Result;
use crate::pipeline::kernels::cpu::attention as attention_cpu;
use crate::pipeline::layers::conv::{conv2d, Conv2d};
use crate::pipeline::layers::norm::{fused_group_norm, FusedGroupNorm};

/// Upper bound on one attention score block, in f32 elements (256 MiB), so large images do
/// not allocate batch*heads*tokens^2 at once.
pub(crate) const MAX_SCORE_ELEMENTS: usize = 64 * 1024 * 1024;

/// softmax(q k^T * scale) v with q `[B, T, D]`, `kt` = k^T `[B, D, S]`, v `[B, S, Dv]`, all f32,
/// computed over blocks of query rows so no score block exceeds `max_elements`. Row blocks
/// are independent, so the result does not depend on the block size.
pub(crate) fn chunked_attention(
    q: &Tensor,
    kt: &Tensor,
    v: &Tensor,
    scale: f64,
    max_elements: usize,
) -> Result<Tensor> {
    let (b, t, _) = q.dims3()?;
    let s = kt.dim(2)?;
    let rows = (max_elements / (b * s).max(1)).clamp(1, t.max(1));
    let mut outs = Vec::with_capacity(t.div_ceil(rows));
    let mut start = 0;
    while start < t {
        let len = rows.min(t - start);
        let scores = (q.narrow(1, start, len)?.matmul(kt)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(v)?);
        start += len;
    }
    if outs.len() == 1 {
        Ok(outs.remove(0))
    } else {
        Ok(Tensor::cat(&outs, 1)?)
    }
}

pub(crate) struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub(crate) fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
            head_dim,
        })
    }

    /// `[b, t, heads*d]` -> `[b*heads, t, d]` in f32.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        Ok(xs
            .reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b * self.heads, t, self.head_dim))?
            .to_dtype(DType::F32)?
            .contiguous()?)
    }

    pub(crate) fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let in_dtype = xs.dtype();
        let context = context.unwrap_or(xs);
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.to_q.forward(xs)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        if attention_cpu::supports(&[&q, &k, &v]) {
            let out = attention_cpu::attention(&q, &k, &v, self.heads, scale)?;
            return Ok(self.to_out.forward(&out)?);
        }
        let (q, k, v) = (
            self.split_heads(&q)?,
            self.split_heads(&k)?,
            self.split_heads(&v)?,
        );
        let kt = k.t()?.contiguous()?;
        let out = chunked_attention(&q, &kt, &v, scale, MAX_SCORE_ELEMENTS)?;
        let out = out
            .reshape((b, self.heads, t, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?
            .to_dtype(in_dtype)?;
        Ok(self.to_out.forward(&out)?)
    }
}

/// diffusers' GEGLU feed-forward: proj to 2*inner, value * gelu(gate) with exact GELU.
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(FeedForward {
            proj_in: linear(dim, inner * 2, vb.pp("net.0.proj"))?,
            proj_out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.proj_in.forward(xs)?;
        if attention_cpu::supports(&[&h]) {
            return Ok(self.proj_out.forward(&attention_cpu::geglu(&h)?)?);
        }
        let parts = h.chunk(2, D::Minus1)?;
        let (value, gate) = match parts.as_slice() {
            [a, g] => (a, g),
            _ => {
                return Err(
                    candle_core::Error::Msg("GEGLU projection did not split in two".into()).into(),
                )
            }
        };
        let h = (value * gate.gelu_erf()?)?;
        Ok(self.proj_out.forward(&h)?)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        head_dim: usize,
        context_dim: usize,
    ) -> Result<Self> {
        Ok(BasicTransformerBlock {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + &xs)?;
        Ok((self.ff.forward(&self.norm3.forward(&xs)?)? + &xs)?)
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// Settings of one Transformer2DModel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transformer2DConfig {
    pub channels: usize,
    pub heads: usize,
    pub depth: usize,
    pub context_dim: usize,
    pub norm_groups: usize,
    pub use_linear_projection: bool,
}

pub(crate) struct Transformer2D {
    norm: FusedGroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2D {
    pub(crate) fn new(vb: VarBuilder, cfg: Transformer2DConfig) -> Result<Self> {
        let c = cfg.channels;
        let head_dim = c / cfg.heads.max(1);
        let inner = cfg.heads * head_dim;
        let norm = fused_group_norm(cfg.norm_groups, c, 1e-6, vb.pp("norm"))?;
        let (proj_in, proj_out) = if cfg.use_linear_projection {
            (
                Projection::Linear(linear(c, inner, vb.pp("proj_in"))?),
                Projection::Linear(linear(inner, c, vb.pp("proj_out"))?),
            )
        } else {
            (
                Projection::Conv(conv2d(c, inner, 1, Default::default(), vb.pp("proj_in"))?),
                Projection::Conv(conv2d(inner, c, 1, Default::default(), vb.pp("proj_out"))?),
            )
        };
        let blocks = (0..cfg.depth)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    inner,
                    cfg.heads,
                    head_dim,
                    cfg.context_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2D {
            norm,
            proj_in,
            blocks,
            proj_out,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let residual = xs;
        let xs = self.norm.forward(xs)?;
        let to_tokens = |x: &Tensor| -> Result<Tensor> {
            let c = x.dim(1)?;
            Ok(x.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?)
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(p) => to_tokens(&p.forward(&xs)?)?,
            Projection::Linear(p) => p.forward(&to_tokens(&xs)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_image = |x: &Tensor| -> Result<Tensor> {
            let c = x.dim(2)?;
            Ok(x.reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?)
        };
        let out = match &self.proj_out {
            Projection::Conv(p) => p.forward(&to_image(&tokens)?)?,
            Projection::Linear(p) => to_image(&p.forward(&tokens)?)?,
        };
        Ok((out + residual)?)
    }
}

#[cfg(test)]
mod tests {
    use super::chunked_attention;
    use crate::pipeline::test_util::max_abs_diff;
    use candle_core::{Device, Tensor};

    #[test]
    fn chunking_does_not_change_attention() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (3, 37, 8), &dev).unwrap();
        let kt = Tensor::randn(0f32, 1.0, (3, 8, 29), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (3, 29, 5), &dev).unwrap();
        let whole = chunked_attention(&q, &kt, &v, 0.3, usize::MAX).unwrap();
        for max in [1, 100, 3 * 29 * 5, 3 * 29 * 36] {
            let parts = chunked_attention(&q, &kt, &v, 0.3, max).unwrap();
            let d = max_abs_diff(&whole, &parts);
            assert!(d < 1e-6, "max {max}: {d}");
        }
        assert_eq!(whole.dims(), &[3, 37, 5]);
    }
}
