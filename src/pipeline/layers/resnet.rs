//! diffusers' ResnetBlock2D (UNet and VAE): GroupNorm+SiLU, 3x3 conv, optional time embedding,
//! GroupNorm+SiLU, 3x3 conv, shortcut, output scale. Same weights and maths as candle's
//! block, but its norms are `FusedGroupNorm` so the CPU path fuses GroupNorm and SiLU.
//! Never changes parameter names (checkpoints load unchanged).

use candle_core::{Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::pipeline::layers::linear::{linear, Linear};

use crate::pipeline::layers::conv::{conv2d, Conv2d};

use crate::pipeline::error::Result;
use crate::pipeline::layers::norm::{fused_group_norm, FusedGroupNorm};
use crate::pipeline::layers::time_rows::TimeRows;

/// Shape of one block (diffusers' defaults for SD: `groups_out` = `groups`, SiLU).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetConfig {
    pub out_channels: usize,
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

#[derive(Debug)]
pub(crate) struct ResnetBlock2D {
    norm1: FusedGroupNorm,
    conv1: Conv2d,
    norm2: FusedGroupNorm,
    conv2: Conv2d,
    time_emb_proj: Option<Linear>,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub(crate) fn new(vb: VarBuilder, in_channels: usize, cfg: ResnetConfig) -> Result<Self> {
        let out = cfg.out_channels;
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_shortcut = if in_channels != out {
            Some(conv2d(
                in_channels,
                out,
                1,
                Default::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        let time_emb_proj = match cfg.temb_channels {
            Some(t) => Some(linear(t, out, vb.pp("time_emb_proj"))?),
            None => None,
        };
        Ok(ResnetBlock2D {
            norm1: fused_group_norm(cfg.groups, in_channels, cfg.eps, vb.pp("norm1"))?,
            conv1: conv2d(in_channels, out, 3, conv3, vb.pp("conv1"))?,
            norm2: fused_group_norm(cfg.groups, out, cfg.eps, vb.pp("norm2"))?,
            conv2: conv2d(out, out, 3, conv3, vb.pp("conv2"))?,
            time_emb_proj,
            conv_shortcut,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, temb: Option<&TimeRows>) -> Result<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(xs)?,
            None => xs.clone(),
        };
        let h = self.conv1.forward(&self.norm1.forward_silu(xs)?)?;
        let h = match (temb, &self.time_emb_proj) {
            (Some(temb), Some(proj)) => temb
                .map(|row| Ok(proj.forward(&candle_nn::ops::silu(row)?)?))?
                .unsqueeze(D::Minus1)?
                .unsqueeze(D::Minus1)?
                .broadcast_add(&h)?,
            _ => h,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let sum = (shortcut + h)?;
        // Dividing by 1.0 is an exact no-op; skip its full-size pass.
        if self.output_scale_factor == 1.0 {
            Ok(sum)
        } else {
            Ok((sum / self.output_scale_factor)?)
        }
    }
}
