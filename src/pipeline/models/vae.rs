//! AutoencoderKL (diffusers naming) from its config: the encoder returns the posterior's mean
//! and std (so the caller draws the sample from its own seeded noise), the decoder maps
//! unscaled latents to pixels in about [-1, 1]. Built from candle's public encoder/decoder
//! blocks (numerically identical to diffusers) and our own memory-bounded mid-block attention.
//! Never draws random numbers itself.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::pipeline::layers::linear::Linear;

use crate::pipeline::layers::conv::{conv2d, Conv2d};

use crate::pipeline::error::Result;
use crate::pipeline::kernels::cpu::attention as attention_cpu;
use crate::pipeline::layers::attention::{chunked_attention, MAX_SCORE_ELEMENTS};
use crate::pipeline::layers::norm::{fused_group_norm, FusedGroupNorm};
use crate::pipeline::layers::resnet::{ResnetBlock2D, ResnetConfig};
use crate::pipeline::load::config::VaeConfig;
use crate::pipeline::models::vae_blocks::{DecoderBlock, EncoderBlock};

fn conv3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    conv2d(cin, cout, 3, cfg, vb)
}

/// Reads a q/k/v/out projection stored either as a linear weight `[c, c]` or as the 1x1
/// convolution `[c, c, 1, 1]` of original LDM checkpoints.
fn projection(vb: VarBuilder, c: usize) -> Result<Linear> {
    let weight = match vb.get((c, c), "weight") {
        Ok(w) => w,
        Err(_) => vb.get((c, c, 1, 1), "weight")?.reshape((c, c))?,
    };
    let bias = vb.get(c, "bias")?;
    Ok(Linear::new(weight, Some(bias))?)
}

/// diffusers' VAE mid-block attention: GroupNorm, one head over all channels, residual.
/// Query rows are processed in chunks so large images do not need tokens^2 memory at once.
struct VaeAttention {
    norm: FusedGroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl VaeAttention {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> Result<Self> {
        // Older diffusers exports name the projections query/key/value/proj_attn.
        let (q, k, v, o) = if vb.contains_tensor("to_q.weight") {
            ("to_q", "to_k", "to_v", "to_out.0")
        } else {
            ("query", "key", "value", "proj_attn")
        };
        Ok(VaeAttention {
            norm: fused_group_norm(groups, c, 1e-6, vb.pp("group_norm"))?,
            to_q: projection(vb.pp(q), c)?,
            to_k: projection(vb.pp(k), c)?,
            to_v: projection(vb.pp(v), c)?,
            to_out: projection(vb.pp(o), c)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let in_dtype = xs.dtype();
        let tokens = self
            .norm
            .forward(xs)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let scale = (c as f64).powf(-0.5);
        let (q, k, v) = (
            self.to_q.forward(&tokens)?,
            self.to_k.forward(&tokens)?,
            self.to_v.forward(&tokens)?,
        );
        let out = if attention_cpu::supports(&[&q, &k, &v]) {
            attention_cpu::attention(&q, &k, &v, 1, scale)?
        } else {
            let f32 = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
            let kt = f32(k)?.t()?.contiguous()?;
            chunked_attention(&f32(q)?, &kt, &f32(v)?, scale, MAX_SCORE_ELEMENTS)?
        };
        let out = self.to_out.forward(&out.to_dtype(in_dtype)?)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((out + xs)?)
    }
}

/// UNetMidBlock2D of the VAE: resnet, attention, resnet (no time embedding).
struct MidBlock {
    first: ResnetBlock2D,
    attention: VaeAttention,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> Result<Self> {
        let rc = ResnetConfig {
            out_channels: c,
            temb_channels: None,
            groups,
            eps: 1e-6,
            output_scale_factor: 1.0,
        };
        Ok(MidBlock {
            first: ResnetBlock2D::new(vb.pp("resnets.0"), c, rc)?,
            attention: VaeAttention::new(vb.pp("attentions.0"), c, groups)?,
            second: ResnetBlock2D::new(vb.pp("resnets.1"), c, rc)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.first.forward(xs, None)?;
        let xs = self.attention.forward(&xs)?;
        self.second.forward(&xs, None)
    }
}

struct Encoder {
    conv_in: Conv2d,
    down: Vec<EncoderBlock>,
    mid: MidBlock,
    norm_out: FusedGroupNorm,
    conv_out: Conv2d,
}

struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    up: Vec<DecoderBlock>,
    norm_out: FusedGroupNorm,
    conv_out: Conv2d,
}

/// Posterior of the encoder: a diagonal Gaussian (diffusers clamps logvar to [-30, 20]).
pub(crate) struct Posterior {
    pub mean: Tensor,
    pub std: Tensor,
}

pub(crate) struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    pub config: VaeConfig,
}

impl Vae {
    pub(crate) fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        cfg.check()?;
        let boc = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let n = boc.len();
        let lc = cfg.latent_channels;
        let last = boc[n - 1];

        let evb = vb.pp("encoder");
        let mut down = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, &c) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = c;
            down.push(EncoderBlock::new(
                evb.pp(format!("down_blocks.{i}")),
                cfg.layers_per_block,
                in_ch,
                out_ch,
                g,
                i + 1 < n,
            )?);
        }
        let encoder = Encoder {
            conv_in: conv3(evb.pp("conv_in"), cfg.in_channels, boc[0])?,
            down,
            mid: MidBlock::new(evb.pp("mid_block"), last, g)?,
            norm_out: fused_group_norm(g, last, 1e-6, evb.pp("conv_norm_out"))?,
            conv_out: conv3(evb.pp("conv_out"), last, 2 * lc)?,
        };

        let dvb = vb.pp("decoder");
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = c;
            up.push(DecoderBlock::new(
                dvb.pp(format!("up_blocks.{i}")),
                cfg.layers_per_block + 1,
                in_ch,
                out_ch,
                g,
                i + 1 < n,
            )?);
        }
        let decoder = Decoder {
            conv_in: conv3(dvb.pp("conv_in"), lc, last)?,
            mid: MidBlock::new(dvb.pp("mid_block"), last, g)?,
            up,
            norm_out: fused_group_norm(g, boc[0], 1e-6, dvb.pp("conv_norm_out"))?,
            conv_out: conv3(dvb.pp("conv_out"), boc[0], cfg.out_channels)?,
        };
        let one = Conv2dConfig::default();
        let quant_conv = if cfg.use_quant_conv {
            Some(conv2d(2 * lc, 2 * lc, 1, one, vb.pp("quant_conv"))?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(conv2d(lc, lc, 1, one, vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Vae {
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            config: cfg.clone(),
        })
    }

    /// Pixels `[b, 3, H, W]` in [-1, 1] -> posterior over unscaled latents.
    pub(crate) fn encode(&self, xs: &Tensor) -> Result<Posterior> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(xs)?;
        for block in &e.down {
            h = block.forward(&h)?;
        }
        h = e.mid.forward(&h)?;
        h = e.norm_out.forward_silu(&h)?;
        h = e.conv_out.forward(&h)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let lc = self.config.latent_channels;
        let mean = h.narrow(1, 0, lc)?.contiguous()?;
        let logvar = h.narrow(1, lc, lc)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(Posterior { mean, std })
    }

    /// Unscaled latents (already divided by scaling_factor) -> pixels.
    pub(crate) fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let mut h = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        h = d.conv_in.forward(&h)?;
        h = d.mid.forward(&h)?;
        for block in &d.up {
            h = block.forward(&h)?;
        }
        h = d.norm_out.forward_silu(&h)?;
        Ok(d.conv_out.forward(&h)?)
    }
}
