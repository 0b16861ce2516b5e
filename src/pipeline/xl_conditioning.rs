//! SDXL's text conditioning. Literal prompts as StableDiffusionXLPipeline.encode_prompt
//! builds it: the prompt embedding is the concatenation of both text encoders' penultimate
//! hidden states (without final LayerNorm; `clip_skip` moves further back, for the prompt
//! only), the pooled embedding comes from the second encoder's projection, and an empty
//! negative prompt becomes all-zero embeddings when the model's config says
//! `force_zeros_for_empty_prompt` and the request asks for that semantics
//! ([`EmptyNegative`]). A1111 prompts go through conditioning.rs (both towers chunk by
//! chunk, pooled from the first chunk, an empty negative prompt zeroed). Either way
//! `add_time_ids` carries the micro-conditioning (original size, crop top-left, target
//! size), one row per context row.

use candle_core::{DType, Tensor};
use tokenizers::Tokenizer;

use super::conditioning::a1111_context;
use super::conditioning::Context;
use super::error::{PipelineError, Result};
use super::load::config::ClipConfig;
use super::load::model_parts::XlParts;
use super::load::tokenizer::prompt_ids;
use super::model::StableDiffusion;
use super::models::added_cond::AddedCond;
use super::models::clip_projection::ClipTextWithProjection;
use super::options::RuntimeOptions;
use super::params::{EmptyNegative, GenerateParams};
use super::prompt::PromptSyntax;
use super::trace::{record, Trace};

/// The second tower of an SDXL model and the pipeline-level flag that goes with it.
pub struct XlText {
    pub(crate) encoder_2: ClipTextWithProjection,
    pub(crate) tokenizer_2: Tokenizer,
    pub(crate) pad_token_id_2: u32,
    pub(crate) force_zeros_for_empty_prompt: bool,
}

impl XlText {
    /// Builds the second tower from its parts (weights at `opts.dtype`).
    pub(crate) fn from_parts(parts: XlParts, opts: &RuntimeOptions) -> Result<XlText> {
        let cfg = ClipConfig::from_json(&parts.text_encoder_2_config)?;
        let vb = parts.text_encoder_2.set_dtype(opts.dtype);
        Ok(XlText {
            encoder_2: ClipTextWithProjection::new(vb, &cfg, &parts.text_encoder_2_config)?,
            tokenizer_2: parts.tokenizer_2,
            pad_token_id_2: parts.pad_token_id_2,
            force_zeros_for_empty_prompt: parts.force_zeros_for_empty_prompt,
        })
    }

    /// `[1, 77, w1 + w2]` prompt embedding and `[1, proj]` pooled embedding of `prompt`.
    fn encode(&self, sd: &StableDiffusion, prompt: &str, skip: usize) -> Result<(Tensor, Tensor)> {
        let (dev, encoder_1) = (&sd.device, &sd.text_encoder);
        let ids_1 = prompt_ids(&sd.tokenizer, prompt, sd.pad_token_id)?;
        let keep_1 = penultimate_keep(encoder_1.num_layers(), skip)?;
        let ids_1 = Tensor::new(ids_1.as_slice(), dev)?.unsqueeze(0)?;
        let (hidden_1, _) = encoder_1.forward_states(&ids_1, keep_1)?;

        let ids_2 = prompt_ids(&self.tokenizer_2, prompt, self.pad_token_id_2)?;
        let keep_2 = penultimate_keep(self.encoder_2.num_layers(), skip)?;
        let ids_2_t = Tensor::new(ids_2.as_slice(), dev)?.unsqueeze(0)?;
        let (hidden_2, pooled) = self.encoder_2.forward(&ids_2_t, &ids_2, keep_2)?;
        let embeds = Tensor::cat(
            &[
                &hidden_1.to_dtype(DType::F32)?,
                &hidden_2.to_dtype(DType::F32)?,
            ],
            2,
        )?;
        Ok((embeds, pooled.to_dtype(DType::F32)?))
    }
}

/// `hidden_states[-(skip + 2)]` of an encoder with `layers` layers: the state after
/// `layers - 1 - skip` layers.
fn penultimate_keep(layers: usize, skip: usize) -> Result<usize> {
    layers.checked_sub(1 + skip).ok_or_else(|| {
        PipelineError::InvalidRequest(format!(
            "clip_skip {skip} must be below the text encoders' {layers} layers"
        ))
    })
}

/// `[1, 6]` time ids `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`.
fn time_ids(
    params: &GenerateParams,
    size: (usize, usize),
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let pair = |p: Option<(u32, u32)>| p.map_or((h, w), |(pw, ph)| (ph as f32, pw as f32));
    let (oh, ow) = pair(params.xl.original_size);
    let (th, tw) = pair(params.xl.target_size);
    let (ct, cl) = params.xl.crop_top_left;
    let ids = [oh, ow, ct as f32, cl as f32, th, tw];
    Ok(Tensor::new(&ids, dev)?.unsqueeze(0)?)
}

/// The UNet's text context (`[uncond, cond]` rows with guidance, else `[cond]`; with
/// A1111 prompts of different chunk counts one context each) and the matching added
/// conditioning, for an SDXL model. `size` is the request's (width, height).
pub(crate) fn xl_context(
    sd: &StableDiffusion,
    xl: &XlText,
    params: &GenerateParams,
    do_cfg: bool,
    size: (usize, usize),
    trace: &mut Option<&mut Trace>,
) -> Result<(Context, AddedCond)> {
    let (context, pooled) = match params.syntax {
        PromptSyntax::Literal => {
            let (context, pooled) = xl_literal(sd, xl, params, do_cfg, trace)?;
            (Context::Joint(context), pooled)
        }
        PromptSyntax::A1111 { pad_cond_uncond } => {
            let (context, pooled) = a1111_context(sd, params, pad_cond_uncond, do_cfg, trace)?;
            let pooled = pooled.ok_or_else(|| {
                PipelineError::Config("SDXL's A1111 encoding lost its pooled embedding".into())
            })?;
            (context, pooled)
        }
    };
    let time = time_ids(params, size, &sd.device)?;
    record(trace, "add_time_ids", &time)?;
    let rows = pooled.dim(0)?;
    let added = AddedCond {
        text_embeds: pooled,
        time_ids: time.repeat((rows, 1))?,
    };
    if do_cfg {
        record(trace, "negative_add_time_ids", &time)?;
        record(trace, "unet_added_text_embeds", &added.text_embeds)?;
        record(trace, "unet_added_time_ids", &added.time_ids)?;
    }
    Ok((context, added))
}

/// diffusers' encoding of literal prompts: the context and the pooled embeddings, rows
/// `[uncond, cond]` with guidance, else `[cond]`.
fn xl_literal(
    sd: &StableDiffusion,
    xl: &XlText,
    params: &GenerateParams,
    do_cfg: bool,
    trace: &mut Option<&mut Trace>,
) -> Result<(Tensor, Tensor)> {
    let skip = params.clip_skip.unwrap_or(0);
    let enc = |prompt: &str, skip: usize| xl.encode(sd, prompt, skip);
    let (embeds, pooled) = enc(&params.prompt, skip)?;
    record(trace, "prompt_embeds", &embeds)?;
    record(trace, "pooled_prompt_embeds", &pooled)?;
    if !do_cfg {
        return Ok((embeds, pooled));
    }
    let zeros = xl.force_zeros_for_empty_prompt
        && params.negative_prompt.is_empty()
        && params.xl.empty_negative == EmptyNegative::Zeros;
    // diffusers encodes the negative prompt at the penultimate layer whatever clip_skip is.
    let (neg, neg_pooled) = if zeros {
        (embeds.zeros_like()?, pooled.zeros_like()?)
    } else {
        enc(&params.negative_prompt, 0)?
    };
    record(trace, "negative_prompt_embeds", &neg)?;
    record(trace, "negative_pooled_prompt_embeds", &neg_pooled)?;
    Ok((
        Tensor::cat(&[&neg, &embeds], 0)?,
        Tensor::cat(&[&neg_pooled, &pooled], 0)?,
    ))
}
