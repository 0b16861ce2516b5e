//! The text conditioning of one request: prompt and negative prompt encoded as literal text
//! (diffusers: one 77-token window each) or with A1111's syntax (any number of 77-token
//! chunks, emphasis, textual inversion), and how the UNet takes them: one batch
//! `[uncond, cond]`, or (A1111 with different chunk counts) one call each (denoise.rs groups
//! a step's rows by context length).

use candle_core::Tensor;

use super::error::Result;
use super::model::StableDiffusion;
use super::params::GenerateParams;
use super::prompt::chunk::SpecialIds;
use super::prompt::encode::{encode_a1111, Tower, TowerEmbedding};
use super::prompt::PromptSyntax;
use super::trace::{record, Trace};

/// What the UNet attends to.
pub(crate) enum Context {
    /// `[cond]`, or `[uncond, cond]` with guidance: one UNet batch.
    Joint(Tensor),
    /// Guidance with contexts of different lengths: one UNet call each (`[1, n, width]`).
    Split { uncond: Tensor, cond: Tensor },
}

impl Context {
    /// Tokens of the longest context row (77 per prompt chunk).
    pub(crate) fn max_len(&self) -> Result<usize> {
        Ok(match self {
            Context::Joint(c) => c.dim(1)?,
            Context::Split { uncond, cond } => uncond.dim(1)?.max(cond.dim(1)?),
        })
    }
}

impl StableDiffusion {
    /// The special ids of the model's (only) tokenizer, for A1111 chunking.
    fn special_ids(&self) -> Result<SpecialIds> {
        SpecialIds::of(&self.tokenizer, self.pad_token_id)
    }

    /// The model's text towers for A1111 encoding (one for SD1/SD2), each with its part of
    /// the textual-inversion embeddings.
    pub(crate) fn towers(&self) -> Result<Vec<Tower<'_>>> {
        let embeddings = |tower: usize| {
            self.embeddings
                .iter()
                .filter_map(|e| {
                    e.vectors.get(tower).map(|v| TowerEmbedding {
                        name: e.name.clone(),
                        vectors: v.clone(),
                    })
                })
                .collect()
        };
        Ok(vec![Tower {
            tokenizer: &self.tokenizer,
            encoder: &self.text_encoder,
            special: self.special_ids()?,
            embeddings: embeddings(0),
        }])
    }

    /// `[1, 77 * chunks, width]` embeddings of `prompt` read with A1111's syntax.
    pub(crate) fn encode_prompt_a1111(
        &self,
        prompt: &str,
        clip_skip: Option<usize>,
    ) -> Result<Tensor> {
        Ok(encode_a1111(&self.towers()?, prompt, clip_skip)?.0)
    }

    /// Encodes the request's prompts and arranges them for the UNet; records
    /// `prompt_embeds` and `negative_prompt_embeds` (`uncond_prompt_embeds` when split).
    pub(crate) fn text_context(
        &self,
        params: &GenerateParams,
        do_cfg: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Context> {
        let PromptSyntax::A1111 { pad_cond_uncond } = params.syntax else {
            return self.literal_context(params, do_cfg, trace);
        };
        let cond = self.encode_prompt_a1111(&params.prompt, params.clip_skip)?;
        record(trace, "prompt_embeds", &cond)?;
        if !do_cfg {
            return Ok(Context::Joint(cond));
        }
        let mut uncond = self.encode_prompt_a1111(&params.negative_prompt, params.clip_skip)?;
        let (nc, nu) = (cond.dim(1)?, uncond.dim(1)?);
        let mut cond = cond;
        if nc != nu && pad_cond_uncond {
            let empty = self.encode_prompt_a1111("", params.clip_skip)?;
            let pad = |t: &Tensor, to: usize| -> Result<Tensor> {
                let reps = (to - t.dim(1)?) / empty.dim(1)?;
                let mut parts = vec![t.clone()];
                parts.extend(std::iter::repeat(empty.clone()).take(reps));
                Ok(Tensor::cat(&parts, 1)?)
            };
            if nc < nu {
                cond = pad(&cond, nu)?;
                record(trace, "prompt_embeds", &cond)?;
            } else {
                uncond = pad(&uncond, nc)?;
            }
        }
        if cond.dim(1)? == uncond.dim(1)? {
            record(trace, "negative_prompt_embeds", &uncond)?;
            Ok(Context::Joint(Tensor::cat(&[&uncond, &cond], 0)?))
        } else {
            record(trace, "uncond_prompt_embeds", &uncond)?;
            Ok(Context::Split { uncond, cond })
        }
    }

    /// Today's literal encoding: one 77-token window per prompt, as diffusers.
    fn literal_context(
        &self,
        params: &GenerateParams,
        do_cfg: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Context> {
        let context = if do_cfg && params.clip_skip.unwrap_or(0) == 0 {
            // Both prompts use the last layer: one batch-2 encoder call (every row of it is
            // computed on its own, so this only saves a second pass over the weights).
            let both = self.encode_prompts(&[&params.negative_prompt, &params.prompt], None)?;
            record(trace, "prompt_embeds", &both.narrow(0, 1, 1)?)?;
            record(trace, "negative_prompt_embeds", &both.narrow(0, 0, 1)?)?;
            both
        } else {
            let cond = self.encode_prompt(&params.prompt, params.clip_skip)?;
            record(trace, "prompt_embeds", &cond)?;
            if do_cfg {
                // diffusers applies clip_skip to the prompt only: the negative prompt always
                // uses the last layer. Kept for parity with the reference pipelines.
                let uncond = self.encode_prompt(&params.negative_prompt, None)?;
                record(trace, "negative_prompt_embeds", &uncond)?;
                Tensor::cat(&[&uncond, &cond], 0)?
            } else {
                cond
            }
        };
        Ok(Context::Joint(context))
    }
}
