//! The text conditioning of one request: prompt and negative prompt encoded as literal text
//! (diffusers: one 77-token window each) or with A1111's syntax (any number of 77-token
//! chunks, emphasis, textual inversion; SDXL's two towers side by side, with the pooled
//! embedding of the first chunk), and how the UNet takes them: one batch `[uncond, cond]`,
//! or (A1111 with different chunk counts) one call each (denoise.rs groups a step's rows by
//! context length). SDXL's literal path and its added conditioning are in
//! xl_conditioning.rs.

use candle_core::{DType, Tensor};

use super::error::Result;
use super::load::tokenizer::MAX_LENGTH;
use super::model::StableDiffusion;
use super::params::{EmptyNegative, GenerateParams};
use super::prompt::chunk::SpecialIds;
use super::prompt::encode::{encode_a1111, A1111Encoding, Tower, TowerEmbedding, TowerLayer};
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

/// The model's text towers for A1111 encoding, each with its part of the textual-
/// inversion embeddings: CLIP-L for SD1 (its last layers), `[clip_l, clip_g]` for SDXL
/// (penultimate layers; the bigG tower also pools).
///
/// SDXL's bigG tower reads the text with the CLIP-L tokenizer when the two share a
/// vocabulary (SDXL's do): A1111 tokenizes that tower with open_clip, which reads `!` as
/// text, whereas `tokenizer_2` turns every `!` into its pad token. Its own pad id (0)
/// still fills the chunk after the end-of-text token, as open_clip's does.
pub(crate) fn towers(sd: &StableDiffusion) -> Result<Vec<Tower<'_>>> {
    let embeddings = |tower: usize| {
        sd.embeddings
            .iter()
            .filter_map(|e| {
                e.vectors.get(tower).map(|v| TowerEmbedding {
                    name: e.name.clone(),
                    vectors: v.clone(),
                })
            })
            .collect()
    };
    let Some(xl) = &sd.xl else {
        return Ok(vec![Tower {
            tokenizer: &sd.tokenizer,
            encoder: &sd.text_encoder,
            special: SpecialIds::of(&sd.tokenizer, sd.pad_token_id)?,
            embeddings: embeddings(0),
            layer: TowerLayer::Final,
        }]);
    };
    let same_vocab = sd.tokenizer.get_vocab_size(false) == xl.tokenizer_2.get_vocab_size(false);
    let tokenizer_g = if same_vocab {
        &sd.tokenizer
    } else {
        &xl.tokenizer_2
    };
    Ok(vec![
        Tower {
            tokenizer: &sd.tokenizer,
            encoder: &sd.text_encoder,
            special: SpecialIds::of(&sd.tokenizer, sd.pad_token_id)?,
            embeddings: embeddings(0),
            layer: TowerLayer::Penultimate,
        },
        Tower {
            tokenizer: tokenizer_g,
            encoder: xl.encoder_2.text(),
            special: SpecialIds::of(tokenizer_g, xl.pad_token_id_2)?,
            embeddings: embeddings(1),
            layer: TowerLayer::PenultimatePooled(&xl.encoder_2),
        },
    ])
}

/// `prompt` read with A1111's syntax: `[1, 77 * chunks, width]` embeddings and, for
/// SDXL, the pooled embedding (f32 for SDXL, as its literal path).
fn encode_a1111_prompt(
    sd: &StableDiffusion,
    prompt: &str,
    clip_skip: Option<usize>,
) -> Result<A1111Encoding> {
    let out = encode_a1111(&towers(sd)?, prompt, clip_skip)?;
    if sd.xl.is_none() {
        return Ok(out);
    }
    Ok(A1111Encoding {
        embeds: out.embeds.to_dtype(DType::F32)?,
        pooled: out.pooled.map(|p| p.to_dtype(DType::F32)).transpose()?,
    })
}

/// Encodes the request's prompts and arranges them for the UNet; records
/// `prompt_embeds` and `negative_prompt_embeds` (`uncond_prompt_embeds` when split).
pub(crate) fn text_context(
    sd: &StableDiffusion,
    params: &GenerateParams,
    do_cfg: bool,
    trace: &mut Option<&mut Trace>,
) -> Result<Context> {
    match params.syntax {
        PromptSyntax::A1111 { pad_cond_uncond } => {
            Ok(a1111_context(sd, params, pad_cond_uncond, do_cfg, trace)?.0)
        }
        PromptSyntax::Literal => literal_context(sd, params, do_cfg, trace),
    }
}

/// A1111's conditioning of a request: the context and, for SDXL, the pooled embeddings
/// with one row per context row (`[uncond, cond]`, or `[cond]`). An empty negative
/// prompt of an SDXL model is all zeros (A1111 zeros it for every SDXL model, unless the
/// request asks for `""` to be encoded). Records `pooled_prompt_embeds` and
/// `negative_pooled_prompt_embeds` besides the context's tensors.
pub(crate) fn a1111_context(
    sd: &StableDiffusion,
    params: &GenerateParams,
    pad_cond_uncond: bool,
    do_cfg: bool,
    trace: &mut Option<&mut Trace>,
) -> Result<(Context, Option<Tensor>)> {
    let cond = encode_a1111_prompt(sd, &params.prompt, params.clip_skip)?;
    record(trace, "prompt_embeds", &cond.embeds)?;
    if let Some(p) = &cond.pooled {
        record(trace, "pooled_prompt_embeds", p)?;
    }
    if !do_cfg {
        return Ok((Context::Joint(cond.embeds), cond.pooled));
    }
    let zeros = sd.xl.is_some()
        && params.negative_prompt.is_empty()
        && params.xl.empty_negative == EmptyNegative::Zeros;
    let negative = if zeros {
        A1111Encoding {
            embeds: cond.embeds.narrow(1, 0, MAX_LENGTH)?.zeros_like()?,
            pooled: cond.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        }
    } else {
        encode_a1111_prompt(sd, &params.negative_prompt, params.clip_skip)?
    };
    if let Some(p) = &negative.pooled {
        record(trace, "negative_pooled_prompt_embeds", p)?;
    }
    let pooled = match (&negative.pooled, &cond.pooled) {
        (Some(u), Some(c)) => Some(Tensor::cat(&[u, c], 0)?),
        _ => None,
    };
    let (mut cond, mut uncond) = (cond.embeds, negative.embeds);
    let (nc, nu) = (cond.dim(1)?, uncond.dim(1)?);
    if nc != nu && pad_cond_uncond {
        // A1111 pads with the empty prompt's encoding (never zeroed), crossattn only.
        let empty = encode_a1111_prompt(sd, "", params.clip_skip)?.embeds;
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
    let context = if cond.dim(1)? == uncond.dim(1)? {
        record(trace, "negative_prompt_embeds", &uncond)?;
        Context::Joint(Tensor::cat(&[&uncond, &cond], 0)?)
    } else {
        record(trace, "uncond_prompt_embeds", &uncond)?;
        Context::Split { uncond, cond }
    };
    Ok((context, pooled))
}

/// Today's literal encoding: one 77-token window per prompt, as diffusers.
fn literal_context(
    sd: &StableDiffusion,
    params: &GenerateParams,
    do_cfg: bool,
    trace: &mut Option<&mut Trace>,
) -> Result<Context> {
    let context = if do_cfg && params.clip_skip.unwrap_or(0) == 0 {
        // Both prompts use the last layer: one batch-2 encoder call (every row of it is
        // computed on its own, so this only saves a second pass over the weights).
        let both = sd.encode_prompts(&[&params.negative_prompt, &params.prompt], None)?;
        record(trace, "prompt_embeds", &both.narrow(0, 1, 1)?)?;
        record(trace, "negative_prompt_embeds", &both.narrow(0, 0, 1)?)?;
        both
    } else {
        let cond = sd.encode_prompt(&params.prompt, params.clip_skip)?;
        record(trace, "prompt_embeds", &cond)?;
        if do_cfg {
            // diffusers applies clip_skip to the prompt only: the negative prompt always
            // uses the last layer. Kept for parity with the reference pipelines.
            let uncond = sd.encode_prompt(&params.negative_prompt, None)?;
            record(trace, "negative_prompt_embeds", &uncond)?;
            Tensor::cat(&[&uncond, &cond], 0)?
        } else {
            cond
        }
    };
    Ok(Context::Joint(context))
}
