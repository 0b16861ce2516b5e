//! AutoencoderKL (diffusers naming) from its config: the encoder returns the posterior's mean
//! and std (so the caller draws the sample from its own seeded noise), the decoder maps
//! unscaled latents to pixels in about [-1, 1]. Built from candle's public VAE blocks, which
//! match diffusers numerically. Never draws random numbers itself.

use candle_core::{Module, Tensor};
use candle_nn::{conv2d, group_norm, Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
    UpDecoderBlock2D, UpDecoderBlock2DConfig,
};

use super::config::VaeConfig;
use super::error::Result;

fn conv3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(conv2d(cin, cout, 3, cfg, vb)?)
}

fn mid_block(vb: VarBuilder, channels: usize, groups: usize) -> Result<UNetMidBlock2D> {
    let cfg = UNetMidBlock2DConfig {
        num_layers: 1,
        resnet_eps: 1e-6,
        resnet_groups: Some(groups),
        // One head spanning every channel, as diffusers' VAE mid-block attention.
        attn_num_head_channels: None,
        output_scale_factor: 1.0,
    };
    Ok(UNetMidBlock2D::new(vb, channels, None, cfg)?)
}

struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: UNetMidBlock2D,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

struct Decoder {
    conv_in: Conv2d,
    mid: UNetMidBlock2D,
    up: Vec<UpDecoderBlock2D>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// Posterior of the encoder: a diagonal Gaussian (diffusers clamps logvar to [-30, 20]).
pub struct Posterior {
    pub mean: Tensor,
    pub std: Tensor,
}

pub struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    pub config: VaeConfig,
}

impl Vae {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
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
            let bc = DownEncoderBlock2DConfig {
                num_layers: cfg.layers_per_block,
                resnet_eps: 1e-6,
                resnet_groups: g,
                output_scale_factor: 1.0,
                add_downsample: i + 1 < n,
                downsample_padding: 0,
            };
            down.push(DownEncoderBlock2D::new(
                evb.pp(format!("down_blocks.{i}")),
                in_ch,
                out_ch,
                bc,
            )?);
        }
        let encoder = Encoder {
            conv_in: conv3(evb.pp("conv_in"), cfg.in_channels, boc[0])?,
            down,
            mid: mid_block(evb.pp("mid_block"), last, g)?,
            norm_out: group_norm(g, last, 1e-6, evb.pp("conv_norm_out"))?,
            conv_out: conv3(evb.pp("conv_out"), last, 2 * lc)?,
        };

        let dvb = vb.pp("decoder");
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = c;
            let bc = UpDecoderBlock2DConfig {
                num_layers: cfg.layers_per_block + 1,
                resnet_eps: 1e-6,
                resnet_groups: g,
                output_scale_factor: 1.0,
                add_upsample: i + 1 < n,
            };
            up.push(UpDecoderBlock2D::new(
                dvb.pp(format!("up_blocks.{i}")),
                in_ch,
                out_ch,
                bc,
            )?);
        }
        let decoder = Decoder {
            conv_in: conv3(dvb.pp("conv_in"), lc, last)?,
            mid: mid_block(dvb.pp("mid_block"), last, g)?,
            up,
            norm_out: group_norm(g, boc[0], 1e-6, dvb.pp("conv_norm_out"))?,
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
    pub fn encode(&self, xs: &Tensor) -> Result<Posterior> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(xs)?;
        for block in &e.down {
            h = block.forward(&h)?;
        }
        h = e.mid.forward(&h, None)?;
        h = candle_nn::ops::silu(&e.norm_out.forward(&h)?)?;
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
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let mut h = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        h = d.conv_in.forward(&h)?;
        h = d.mid.forward(&h, None)?;
        for block in &d.up {
            h = block.forward(&h)?;
        }
        h = candle_nn::ops::silu(&d.norm_out.forward(&h)?)?;
        Ok(d.conv_out.forward(&h)?)
    }
}
