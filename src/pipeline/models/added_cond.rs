//! SDXL's added UNet conditioning (diffusers' `addition_embed_type: "text_time"`): the pooled
//! text embedding and the six micro-conditioning time ids (original size, crop top-left,
//! target size) are embedded and added to the timestep embedding. Holds the per-request
//! tensors ([`AddedCond`]) and the UNet's module that embeds them ([`TextTimeEmbedding`]).

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};

use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::config::TextTimeConfig;

/// The added conditioning of one UNet call, one row per batch row (`[uncond, cond]` with
/// classifier-free guidance): `text_embeds [rows, pooled]`, `time_ids [rows, 6]`.
#[derive(Debug, Clone)]
pub(crate) struct AddedCond {
    pub(crate) text_embeds: Tensor,
    pub(crate) time_ids: Tensor,
}

/// `add_time_proj` (sinusoidal, per time id) + `add_embedding` (linear, SiLU, linear).
pub(crate) struct TextTimeEmbedding {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
    cfg: TextTimeConfig,
}

impl TextTimeEmbedding {
    /// `vb` at the UNet root (`add_embedding.linear_{1,2}`); `out_dim` = the time embedding's.
    pub(crate) fn new(
        vb: VarBuilder,
        cfg: &TextTimeConfig,
        flip_sin_to_cos: bool,
        freq_shift: f64,
        out_dim: usize,
    ) -> Result<Self> {
        Ok(TextTimeEmbedding {
            time_proj: Timesteps::new(cfg.time_embed_dim, flip_sin_to_cos, freq_shift),
            embedding: TimestepEmbedding::new(vb.pp("add_embedding"), cfg.input_dim, out_dim)?,
            cfg: cfg.clone(),
        })
    }

    /// The embedding to add to the timestep embedding, `[rows, out_dim]` in `dtype`.
    pub(crate) fn forward(&self, added: &AddedCond, dtype: DType) -> Result<Tensor> {
        let (rows, n_ids) = added.time_ids.dims2()?;
        let (text_rows, pooled) = added.text_embeds.dims2()?;
        if text_rows != rows || pooled + n_ids * self.cfg.time_embed_dim != self.cfg.input_dim {
            return Err(PipelineError::Config(format!(
                "unet added embedding expects {} values, got pooled {pooled} + {n_ids} time ids \
                 x {} ({text_rows} and {rows} rows)",
                self.cfg.input_dim, self.cfg.time_embed_dim
            )));
        }
        // diffusers embeds the time ids in f32, then casts the concatenation to the model dtype.
        let ids = added.time_ids.to_dtype(DType::F32)?.flatten_all()?;
        let time = self.time_proj.forward(&ids)?.reshape((rows, ()))?;
        let text = added.text_embeds.to_dtype(DType::F32)?;
        let both = Tensor::cat(&[&text, &time], 1)?.to_dtype(dtype)?;
        Ok(self.embedding.forward(&both)?)
    }
}
