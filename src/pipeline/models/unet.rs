//! UNet2DConditionModel (SD1/SD2; SDXL with its added `text_time` embedding, added_cond.rs)
//! assembled from the diffusers config: time embedding, down blocks (with or without
//! cross-attention), mid block, up blocks with skip connections. Reuses candle's timestep
//! embedding (numerically identical to diffusers); ResNet blocks (fused GroupNorm+SiLU on CPU,
//! resnet.rs) and attention (attention.rs) are ours. Never allocates noise or touches
//! schedulers.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::pipeline::layers::conv::{conv2d, Conv2d};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};

use super::added_cond::{AddedCond, TextTimeEmbedding};
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::layers::attention::{Transformer2D, Transformer2DConfig};
use crate::pipeline::layers::norm::{fused_group_norm, FusedGroupNorm};
use crate::pipeline::layers::resnet::{ResnetBlock2D, ResnetConfig};
use crate::pipeline::load::config::UNetConfig;

fn conv3(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    conv2d(cin, cout, 3, cfg, vb)
}

fn resnet(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    temb: usize,
    cfg: &UNetConfig,
    scale: f64,
) -> Result<ResnetBlock2D> {
    let rc = ResnetConfig {
        out_channels: cout,
        temb_channels: Some(temb),
        groups: cfg.norm_num_groups,
        eps: cfg.norm_eps,
        output_scale_factor: scale,
    };
    ResnetBlock2D::new(vb, cin, rc)
}

struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Conv2d>,
}

impl DownBlock {
    fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            xs = r.forward(&xs, Some(temb))?;
            if let Some(a) = self.attentions.get(i) {
                xs = a.forward(&xs, context)?;
            }
            skips.push(xs.clone());
        }
        if let Some(d) = &self.downsample {
            xs = d.forward(&xs)?;
            skips.push(xs.clone());
        }
        Ok(xs)
    }
}

struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Conv2d>,
}

impl UpBlock {
    fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("UNet skip connections exhausted".into()))?;
            xs = Tensor::cat(&[&xs, &skip], 1)?;
            xs = r.forward(&xs, Some(temb))?;
            if let Some(a) = self.attentions.get(i) {
                xs = a.forward(&xs, context)?;
            }
        }
        if let Some(conv) = &self.upsample {
            let (_, _, h, w) = xs.dims4()?;
            let (th, tw) = upsample_size.unwrap_or((2 * h, 2 * w));
            xs = if (th, tw) == (2 * h, 2 * w) {
                conv.forward_upsampled_2x(&xs)?
            } else {
                conv.forward(&xs.upsample_nearest2d(th, tw)?)?
            };
        }
        Ok(xs)
    }
}

struct MidBlock {
    first: ResnetBlock2D,
    layers: Vec<(Transformer2D, ResnetBlock2D)>,
}

/// The denoiser. `forward` takes the (scaled, possibly mask-concatenated) latents, one
/// timestep for the whole batch and the text embeddings.
pub(crate) struct UNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// SDXL's `text_time` added embedding (None for SD1/SD2).
    add_embedding: Option<TextTimeEmbedding>,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    conv_norm_out: FusedGroupNorm,
    conv_out: Conv2d,
    pub config: UNetConfig,
    dtype: DType,
}

impl UNet {
    pub(crate) fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        cfg.check()?;
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let c0 = boc[0];
        let temb = c0 * 4;
        let tcfg = |channels: usize, i: usize| Transformer2DConfig {
            channels,
            heads: cfg.num_attention_heads[i],
            depth: cfg.transformer_layers_per_block[i],
            context_dim: cfg.cross_attention_dim[i],
            norm_groups: cfg.norm_num_groups,
            use_linear_projection: cfg.use_linear_projection,
        };

        let conv_in = conv3(vb.pp("conv_in"), cfg.in_channels, c0, 1)?;
        let time_proj = Timesteps::new(c0, cfg.flip_sin_to_cos, cfg.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), c0, temb)?;
        let add_embedding = match &cfg.addition {
            Some(a) => Some(TextTimeEmbedding::new(
                vb.clone(),
                a,
                cfg.flip_sin_to_cos,
                cfg.freq_shift,
                temb,
            )?),
            None => None,
        };

        let mut down = Vec::with_capacity(n);
        let mut out_ch = c0;
        for (i, &block_ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = block_ch;
            let bvb = vb.pp(format!("down_blocks.{i}"));
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for l in 0..cfg.layers_per_block[i] {
                let cin = if l == 0 { in_ch } else { out_ch };
                resnets.push(resnet(
                    bvb.pp(format!("resnets.{l}")),
                    cin,
                    out_ch,
                    temb,
                    cfg,
                    1.0,
                )?);
                if cfg.down_cross_attn[i] {
                    attentions.push(Transformer2D::new(
                        bvb.pp(format!("attentions.{l}")),
                        tcfg(out_ch, i),
                    )?);
                }
            }
            let downsample = if i + 1 < n {
                let dvb = bvb.pp("downsamplers.0.conv");
                let pad = cfg.downsample_padding;
                let cc = Conv2dConfig {
                    padding: pad,
                    stride: 2,
                    ..Default::default()
                };
                if pad != 1 {
                    return Err(PipelineError::Config(format!(
                        "unet config: downsample_padding {pad} is not supported"
                    )));
                }
                Some(conv2d(out_ch, out_ch, 3, cc, dvb)?)
            } else {
                None
            };
            down.push(DownBlock {
                resnets,
                attentions,
                downsample,
            });
        }

        let last = n - 1;
        let cl = boc[last];
        let mvb = vb.pp("mid_block");
        let msf = cfg.mid_block_scale_factor;
        let first = resnet(mvb.pp("resnets.0"), cl, cl, temb, cfg, msf)?;
        let layers = vec![(
            Transformer2D::new(mvb.pp("attentions.0"), tcfg(cl, last))?,
            resnet(mvb.pp("resnets.1"), cl, cl, temb, cfg, msf)?,
        )];
        let mid = MidBlock { first, layers };

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for i in 0..n {
            let block = n - 1 - i; // index into the per-block (down order) lists
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let bvb = vb.pp(format!("up_blocks.{i}"));
            let layers = cfg.layers_per_block[block] + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for l in 0..layers {
                let skip_ch = if l + 1 == layers { in_ch } else { out_ch };
                let cin = if l == 0 { prev_out } else { out_ch };
                resnets.push(resnet(
                    bvb.pp(format!("resnets.{l}")),
                    cin + skip_ch,
                    out_ch,
                    temb,
                    cfg,
                    1.0,
                )?);
                if cfg.up_cross_attn[i] {
                    attentions.push(Transformer2D::new(
                        bvb.pp(format!("attentions.{l}")),
                        tcfg(out_ch, block),
                    )?);
                }
            }
            let upsample = if i + 1 < n {
                Some(conv3(bvb.pp("upsamplers.0.conv"), out_ch, out_ch, 1)?)
            } else {
                None
            };
            up.push(UpBlock {
                resnets,
                attentions,
                upsample,
            });
        }

        let conv_norm_out = fused_group_norm(
            cfg.norm_num_groups,
            c0,
            cfg.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = conv3(vb.pp("conv_out"), c0, cfg.out_channels, 1)?;
        Ok(UNet {
            conv_in,
            time_proj,
            time_embedding,
            add_embedding,
            down,
            mid,
            up,
            conv_norm_out,
            conv_out,
            config: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// Predicts noise (or v) for `xs` `[b, in_channels, h, w]` at `timestep`.
    pub(crate) fn forward(&self, xs: &Tensor, timestep: f64, context: &Tensor) -> Result<Tensor> {
        self.forward_added(xs, timestep, context, None)
    }

    /// As [`UNet::forward`] with the added conditioning a `text_time` UNet (SDXL) requires
    /// (one row per batch row); other UNets take None.
    pub(crate) fn forward_added(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let xs = xs.to_dtype(self.dtype)?;
        let context = context.to_dtype(self.dtype)?;
        let xs = if self.config.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs
        };
        // Sinusoidal embedding in f32 as diffusers computes it, then the model dtype.
        let t = (Tensor::ones(b, DType::F32, xs.device())? * timestep)?;
        let temb = self.time_proj.forward(&t)?.to_dtype(self.dtype)?;
        let temb = self.time_embedding.forward(&temb)?;
        let temb = match (&self.add_embedding, added) {
            (Some(emb), Some(added)) => (temb + emb.forward(added, self.dtype)?)?,
            (None, None) => temb,
            (Some(_), None) => {
                return Err(PipelineError::Config(
                    "this UNet needs the pooled text embedding and time ids (SDXL)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(PipelineError::Config(
                    "this UNet takes no added conditioning".into(),
                ))
            }
        };

        let mut xs = self.conv_in.forward(&xs)?;
        let mut skips = vec![xs.clone()];
        for block in &self.down {
            xs = block.forward(&xs, &temb, &context, &mut skips)?;
        }
        xs = self.mid.first.forward(&xs, Some(&temb))?;
        for (attn, res) in &self.mid.layers {
            xs = res.forward(&attn.forward(&xs, &context)?, Some(&temb))?;
        }
        // diffusers forwards explicit sizes when the latent is not divisible by 2^(n-1).
        let factor = 1usize << (self.up.len().saturating_sub(1)).min(16);
        let odd = h % factor != 0 || w % factor != 0;
        let n_up = self.up.len();
        for (i, block) in self.up.iter().enumerate() {
            let remaining = skips.len().saturating_sub(block.resnets.len());
            let size = if odd && i + 1 < n_up {
                match skips.get(remaining.wrapping_sub(1)) {
                    Some(t) => {
                        let (_, _, sh, sw) = t.dims4()?;
                        Some((sh, sw))
                    }
                    None => None,
                }
            } else {
                None
            };
            xs = block.forward(&xs, &temb, &context, &mut skips, size)?;
        }
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        Ok(self.conv_out.forward(&xs)?)
    }
}
