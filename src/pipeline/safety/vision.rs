//! The CLIP vision tower of transformers' CLIPVisionModel, as StableDiffusionSafetyChecker
//! uses it: patch embedding (a bias-free convolution with stride = patch), class token and
//! learned positions, pre-LayerNorm (`pre_layrnorm`, transformers' spelling), the shared
//! [`ClipLayer`] encoder layers without a mask, and `pooler_output` = post-LayerNorm of the
//! class token.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{
    conv2d_no_bias, embedding, layer_norm, Conv2d, Conv2dConfig, Embedding, LayerNorm, VarBuilder,
};

use super::config::VisionConfig;
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::models::clip::ClipLayer;

pub(crate) struct VisionTower {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipLayer>,
    post_layernorm: LayerNorm,
    image_size: usize,
    positions: usize,
    device: Device,
}

impl VisionTower {
    /// `vb` points at the tower (`vision_model.vision_model` in the Hub's checkpoint).
    pub(crate) fn new(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let h = cfg.layers.hidden_size;
        let emb = vb.pp("embeddings");
        let conv = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let layers = (0..cfg.layers.num_hidden_layers)
            .map(|i| ClipLayer::new(vb.pp(format!("encoder.layers.{i}")), &cfg.layers, false))
            .collect::<Result<Vec<_>>>()?;
        let eps = cfg.layers.layer_norm_eps;
        Ok(VisionTower {
            patch_embedding: conv2d_no_bias(
                cfg.num_channels,
                h,
                cfg.patch_size,
                conv,
                emb.pp("patch_embedding"),
            )?,
            class_embedding: emb.get(h, "class_embedding")?,
            position_embedding: embedding(cfg.positions(), h, emb.pp("position_embedding"))?,
            pre_layrnorm: layer_norm(h, eps, vb.pp("pre_layrnorm"))?,
            layers,
            post_layernorm: layer_norm(h, eps, vb.pp("post_layernorm"))?,
            image_size: cfg.image_size,
            positions: cfg.positions(),
            device: vb.device().clone(),
        })
    }

    /// `pixel_values [b, 3, S, S]` -> `pooler_output [b, hidden]`.
    pub(crate) fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, hh, ww) = pixel_values.dims4()?;
        if hh != self.image_size || ww != self.image_size {
            return Err(PipelineError::InvalidRequest(format!(
                "safety checker expects {0}x{0} pixel values, got {ww}x{hh}",
                self.image_size
            )));
        }
        let patches = self
            .patch_embedding
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let hidden = self.class_embedding.dim(0)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((b, 1, hidden))?
            .to_dtype(patches.dtype())?;
        let ids = Tensor::arange(0u32, self.positions as u32, &self.device)?.unsqueeze(0)?;
        let xs = Tensor::cat(&[cls, patches], 1)?
            .broadcast_add(&self.position_embedding.forward(&ids)?)?;
        let mut xs = self.pre_layrnorm.forward(&xs)?;
        let mask = Tensor::zeros((self.positions, self.positions), xs.dtype(), &self.device)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask)?;
        }
        let cls = xs.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.post_layernorm.forward(&cls)?.contiguous()?)
    }
}

/// `x / max(||x||, 1e-12)` along the last dimension, as torch's `F.normalize`.
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
