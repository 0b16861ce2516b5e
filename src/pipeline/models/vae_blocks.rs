//! The VAE's DownEncoderBlock2D and UpDecoderBlock2D (diffusers naming): ResNet blocks without
//! time embedding, then a stride-2 conv (asymmetric zero pad, as diffusers) or a nearest 2x
//! upsample + conv. Ours so their ResNet blocks use the fused GroupNorm. Never renames weights.

use candle_core::{Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::pipeline::layers::conv::{conv2d, Conv2d};

use crate::pipeline::error::Result;
use crate::pipeline::layers::resnet::{ResnetBlock2D, ResnetConfig};

fn resnets(
    vb: VarBuilder,
    layers: usize,
    cin: usize,
    cout: usize,
    groups: usize,
) -> Result<Vec<ResnetBlock2D>> {
    let cfg = ResnetConfig {
        out_channels: cout,
        temb_channels: None,
        groups,
        eps: 1e-6,
        output_scale_factor: 1.0,
    };
    (0..layers)
        .map(|i| {
            let cin = if i == 0 { cin } else { cout };
            ResnetBlock2D::new(vb.pp(format!("resnets.{i}")), cin, cfg)
        })
        .collect()
}

fn run(resnets: &[ResnetBlock2D], xs: &Tensor) -> Result<Tensor> {
    let mut xs = xs.clone();
    for r in resnets {
        xs = r.forward(&xs, None)?;
    }
    Ok(xs)
}

/// Encoder stage: `layers` ResNet blocks, then (if `downsample`) pad right/bottom by one and a
/// 3x3 stride-2 conv with no padding (the SD VAE's `downsample_padding = 0`).
pub(crate) struct EncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsample: Option<Conv2d>,
}

impl EncoderBlock {
    pub(crate) fn new(
        vb: VarBuilder,
        layers: usize,
        cin: usize,
        cout: usize,
        groups: usize,
        downsample: bool,
    ) -> Result<Self> {
        let downsample = if downsample {
            let cfg = Conv2dConfig {
                stride: 2,
                ..Default::default()
            };
            Some(conv2d(cout, cout, 3, cfg, vb.pp("downsamplers.0.conv"))?)
        } else {
            None
        };
        Ok(EncoderBlock {
            resnets: resnets(vb, layers, cin, cout, groups)?,
            downsample,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = run(&self.resnets, xs)?;
        match &self.downsample {
            Some(conv) => {
                let xs = xs
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
                Ok(conv.forward(&xs)?)
            }
            None => Ok(xs),
        }
    }
}

/// Decoder stage: `layers` ResNet blocks, then (if `upsample`) nearest 2x and a 3x3 conv.
pub(crate) struct DecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsample: Option<Conv2d>,
}

impl DecoderBlock {
    pub(crate) fn new(
        vb: VarBuilder,
        layers: usize,
        cin: usize,
        cout: usize,
        groups: usize,
        upsample: bool,
    ) -> Result<Self> {
        let upsample = if upsample {
            let cfg = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            Some(conv2d(cout, cout, 3, cfg, vb.pp("upsamplers.0.conv"))?)
        } else {
            None
        };
        Ok(DecoderBlock {
            resnets: resnets(vb, layers, cin, cout, groups)?,
            upsample,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = run(&self.resnets, xs)?;
        match &self.upsample {
            Some(conv) => Ok(conv.forward_upsampled_2x(&xs)?),
            None => Ok(xs),
        }
    }
}
