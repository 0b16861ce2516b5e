//! transformers' CLIPTextModelWithProjection (SDXL's second text encoder, OpenCLIP bigG in
//! transformers naming): our CLIP text transformer plus `text_projection` (no bias) applied to
//! the final-LayerNorm state at the end-of-text token. Which token that is follows
//! transformers: with the legacy `eos_token_id` 2 the position of the largest id (argmax),
//! otherwise the first position holding `eos_token_id`.

use candle_core::{Module, Tensor};
use candle_nn::{linear_no_bias, Linear, VarBuilder};
use serde_json::Value;

use super::clip::ClipTextTransformer;
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::config::{ClipConfig, Fields};

/// The projection settings of a CLIPTextModelWithProjection config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionConfig {
    pub projection_dim: usize,
    pub eos_token_id: u32,
}

impl ProjectionConfig {
    pub fn from_json(doc: &Value) -> Result<ProjectionConfig> {
        let doc = doc.get("text_config").unwrap_or(doc);
        let f = Fields {
            what: "text encoder 2 config",
            doc,
        };
        let eos = f.usize_or("eos_token_id", 2)?;
        Ok(ProjectionConfig {
            projection_dim: f.usize_or("projection_dim", 512)?,
            eos_token_id: u32::try_from(eos).map_err(|_| f.bad("eos_token_id"))?,
        })
    }

    /// Where the pooled output is read in one row of token ids.
    pub fn eos_position(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            // torch.argmax: the first of equal maxima.
            let mut best = 0;
            for (i, &id) in ids.iter().enumerate() {
                if id > ids[best] {
                    best = i;
                }
            }
            best
        } else {
            ids.iter()
                .position(|&id| id == self.eos_token_id)
                .unwrap_or(0)
        }
    }
}

pub struct ClipTextWithProjection {
    text: ClipTextTransformer,
    projection: Linear,
    cfg: ProjectionConfig,
}

impl ClipTextWithProjection {
    /// `vb` at the model root: `text_model.*` and `text_projection.weight`.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig, doc: &Value) -> Result<Self> {
        let proj = ProjectionConfig::from_json(doc)?;
        let projection = linear_no_bias(
            cfg.hidden_size,
            proj.projection_dim,
            vb.pp("text_projection"),
        )?;
        Ok(ClipTextWithProjection {
            text: ClipTextTransformer::new(vb, cfg)?,
            projection,
            cfg: proj,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.text.num_layers()
    }

    /// The transformer without the projection (A1111's chunked encoding drives it itself).
    pub(crate) fn text(&self) -> &ClipTextTransformer {
        &self.text
    }

    /// The projected pooled embedding `[1, proj]` of the final-LayerNorm state `last`
    /// (`[1, seq, hidden]`) at `position`.
    pub(crate) fn pooled_at(&self, last: &Tensor, position: usize) -> Result<Tensor> {
        let pooled = last.narrow(1, position, 1)?.squeeze(1)?;
        Ok(self.projection.forward(&pooled)?)
    }

    /// For one row of `ids` (`[1, seq]`, `host_ids` the same values): the hidden state after
    /// `keep` layers (no final LayerNorm) and the projected pooled embedding `[1, proj]`.
    pub fn forward(&self, ids: &Tensor, host_ids: &[u32], keep: usize) -> Result<(Tensor, Tensor)> {
        if ids.dims2()? != (1, host_ids.len()) {
            return Err(PipelineError::Config(
                "text encoder 2: ids and host ids disagree".into(),
            ));
        }
        let (hidden, last) = self.text.forward_states(ids, keep)?;
        let eos = self.cfg.eos_position(host_ids);
        Ok((hidden, self.pooled_at(&last, eos)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_position_follows_transformers() {
        let legacy = ProjectionConfig {
            projection_dim: 4,
            eos_token_id: 2,
        };
        // Padded with 0 (SDXL's tokenizer_2): the end-of-text id is the largest.
        assert_eq!(legacy.eos_position(&[49406, 320, 49407, 0, 0]), 2);
        // Padded with the end-of-text id itself: the first of the maxima.
        assert_eq!(legacy.eos_position(&[49406, 320, 49407, 49407]), 2);
        // An added token above 49407 wins under the legacy rule (as in transformers).
        assert_eq!(legacy.eos_position(&[49406, 49408, 49407, 0]), 1);
        let explicit = ProjectionConfig {
            projection_dim: 4,
            eos_token_id: 49407,
        };
        assert_eq!(explicit.eos_position(&[49406, 49408, 49407, 0]), 2);
    }
}
