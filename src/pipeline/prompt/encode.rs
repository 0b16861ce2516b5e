//! Encodes an A1111 prompt with one or more CLIP text towers: parse, chunk per tower, run
//! the encoder on every 77-token chunk on its own (textual-inversion vectors written over
//! their placeholder tokens), apply A1111's default "Original" emphasis per chunk (multiply
//! each token's row by its weight, then rescale so the chunk's mean is what it was), and
//! concatenate the chunks along the sequence. Several towers (SDXL) are concatenated along
//! the width, chunk by chunk; SDXL's towers read the penultimate layer without the final
//! LayerNorm (A1111's SDXL conditioner), and the bigG tower's pooled embedding of the FIRST
//! chunk, taken at its end-of-text token, is the prompt's pooled embedding (A1111 returns
//! `zs[0].pooled`).

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use super::chunk::{chunk_prompt, tokenize, Chunk, EmbeddingName, SpecialIds};
use super::parse::{parse_prompt_attention, Piece};
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::models::clip::ClipTextTransformer;
use crate::pipeline::models::clip_projection::ClipTextWithProjection;

/// A textual-inversion embedding as one tower sees it.
#[derive(Clone)]
pub(crate) struct TowerEmbedding {
    /// The word that invokes it (the file stem).
    pub(crate) name: String,
    /// `[n_vectors, width]`, f32.
    pub(crate) vectors: Tensor,
}

/// Which hidden state of a tower a chunk's embedding is.
#[derive(Clone, Copy)]
pub(crate) enum TowerLayer<'a> {
    /// SD1/SD2: the last layer's output (`clip_skip` layers earlier) through the final
    /// LayerNorm, as A1111's `CLIP_stop_at_last_layers`.
    Final,
    /// SDXL's CLIP-L tower: the penultimate layer's output without the final LayerNorm.
    /// `clip_skip` is not used: A1111's SDXL conditioner ignores "Clip skip" (its option
    /// `sdxl_clip_l_skip` is off by default).
    Penultimate,
    /// SDXL's bigG tower: as `Penultimate`, plus the pooled embedding (projection of the
    /// final LayerNorm state at the end-of-text token).
    PenultimatePooled(&'a ClipTextWithProjection),
}

/// One text tower: tokenizer, encoder and the embeddings it knows.
pub(crate) struct Tower<'a> {
    pub(crate) tokenizer: &'a Tokenizer,
    pub(crate) encoder: &'a ClipTextTransformer,
    pub(crate) special: SpecialIds,
    pub(crate) embeddings: Vec<TowerEmbedding>,
    pub(crate) layer: TowerLayer<'a>,
}

/// One tower's result.
pub(crate) struct TowerEncoding {
    pub(crate) chunks: Vec<Chunk>,
    /// `[1, 77 * chunks, width]` with emphasis.
    pub(crate) embeds: Tensor,
    /// The same without emphasis (all multipliers 1), when asked for.
    pub(crate) unweighted: Option<Tensor>,
    /// `[1, proj]`: the pooled embedding of the first chunk (bigG tower only). Emphasis does
    /// not touch it.
    pub(crate) pooled: Option<Tensor>,
}

/// A prompt encoded by all of a model's towers.
pub(crate) struct A1111Encoding {
    /// `[1, 77 * chunks, sum of widths]`.
    pub(crate) embeds: Tensor,
    /// SDXL's pooled embedding `[1, proj]`; None for SD1/SD2.
    pub(crate) pooled: Option<Tensor>,
}

/// Where open_clip pools a row of ids: `argmax`, the first end-of-text token (no id is above
/// it; textual-inversion placeholders and padding are 0).
fn pool_position(ids: &[u32]) -> usize {
    let mut best = 0;
    for (i, &id) in ids.iter().enumerate() {
        if id > ids[best] {
            best = i;
        }
    }
    best
}

impl Tower<'_> {
    fn names(&self) -> Result<Vec<EmbeddingName>> {
        self.embeddings
            .iter()
            .map(|e| {
                Ok(EmbeddingName {
                    ids: tokenize(self.tokenizer, &e.name)?,
                    vectors: e.vectors.dim(0)?,
                })
            })
            .collect()
    }

    /// `[1, 77, width]` of one chunk, before emphasis, and its pooled embedding when `pool`
    /// and the tower has one.
    fn encode_chunk(
        &self,
        chunk: &Chunk,
        clip_skip: Option<usize>,
        pool: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let device = self.encoder_device();
        let ids = Tensor::new(chunk.ids.as_slice(), &device)?.unsqueeze(0)?;
        let mut replace = Vec::with_capacity(chunk.fixes.len());
        for fix in &chunk.fixes {
            let e = self.embeddings.get(fix.embedding).ok_or_else(|| {
                PipelineError::Config("a chunk names an unknown embedding".into())
            })?;
            replace.push((fix.position, &e.vectors));
        }
        let projection = match self.layer {
            TowerLayer::Final => {
                let z = self
                    .encoder
                    .forward_with_vectors(&ids, &replace, clip_skip)?;
                return Ok((z, None));
            }
            TowerLayer::Penultimate => None,
            TowerLayer::PenultimatePooled(p) => Some(p).filter(|_| pool),
        };
        let keep = self.encoder.num_layers().checked_sub(1).ok_or_else(|| {
            PipelineError::Config("a text encoder without layers has no penultimate state".into())
        })?;
        let (hidden, last) =
            self.encoder
                .forward_states_with_vectors(&ids, &replace, keep, projection.is_some())?;
        let pooled = match (projection, last) {
            (Some(p), Some(last)) => Some(p.pooled_at(&last, pool_position(&chunk.ids))?),
            _ => None,
        };
        Ok((hidden, pooled))
    }

    fn encoder_device(&self) -> Device {
        self.encoder.device().clone()
    }

    /// Parses nothing: chunks `pieces` and encodes every chunk.
    pub(crate) fn encode_pieces(
        &self,
        pieces: &[Piece],
        clip_skip: Option<usize>,
        keep_unweighted: bool,
    ) -> Result<TowerEncoding> {
        let chunks = chunk_prompt(self.tokenizer, self.special, pieces, &self.names()?)?;
        let mut weighted = Vec::with_capacity(chunks.len());
        let mut plain = Vec::new();
        let mut pooled = None;
        for (j, chunk) in chunks.iter().enumerate() {
            let (z, p) = self.encode_chunk(chunk, clip_skip, j == 0)?;
            if j == 0 {
                pooled = p;
            }
            weighted.push(emphasis_original(&z, &chunk.multipliers)?);
            if keep_unweighted {
                plain.push(z);
            }
        }
        Ok(TowerEncoding {
            chunks,
            embeds: Tensor::cat(&weighted, 1)?,
            unweighted: keep_unweighted
                .then(|| Tensor::cat(&plain, 1))
                .transpose()?,
            pooled,
        })
    }
}

/// A1111's "Original" emphasis on one chunk `z [1, 77, width]`: `z * multiplier` per token,
/// then scaled by `mean(z) / mean(z * multiplier)` over the whole chunk.
pub(crate) fn emphasis_original(z: &Tensor, multipliers: &[f64]) -> Result<Tensor> {
    if multipliers.iter().all(|&m| m == 1.0) {
        return Ok(z.clone());
    }
    let dtype = z.dtype();
    let z = z.to_dtype(candle_core::DType::F32)?;
    let m: Vec<f32> = multipliers.iter().map(|&m| m as f32).collect();
    let m = Tensor::from_vec(m, (1, multipliers.len(), 1), z.device())?;
    let before = z.mean_all()?.to_scalar::<f32>()?;
    let weighted = z.broadcast_mul(&m)?;
    let after = weighted.mean_all()?.to_scalar::<f32>()?;
    Ok((weighted * f64::from(before / after))?.to_dtype(dtype)?)
}

/// Concatenates the towers' `[1, n, width]` tensors along the width (one tower: as is).
pub(crate) fn concat_towers(parts: &[&Tensor]) -> Result<Tensor> {
    match parts {
        [one] => Ok((*one).clone()),
        _ => {
            let lens = parts
                .iter()
                .map(|t| t.dim(1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            if lens.windows(2).any(|w| w[0] != w[1]) {
                return Err(PipelineError::InvalidRequest(format!(
                    "the text towers cut the prompt into different chunk counts ({lens:?} tokens)"
                )));
            }
            Ok(Tensor::cat(parts, 2)?)
        }
    }
}

/// Encodes `prompt` with every tower and concatenates them along the width (chunk counts
/// agree: the towers share the BPE vocabulary), with the pooled embedding of the tower that
/// has one.
pub(crate) fn encode_a1111(
    towers: &[Tower<'_>],
    prompt: &str,
    clip_skip: Option<usize>,
) -> Result<A1111Encoding> {
    let pieces = parse_prompt_attention(prompt);
    let outs = towers
        .iter()
        .map(|t| t.encode_pieces(&pieces, clip_skip, false))
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<&Tensor> = outs.iter().map(|o| &o.embeds).collect();
    Ok(A1111Encoding {
        embeds: concat_towers(&parts)?,
        pooled: outs.iter().find_map(|o| o.pooled.clone()),
    })
}
