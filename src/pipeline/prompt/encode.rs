//! Encodes an A1111 prompt with one or more CLIP text towers: parse, chunk per tower, run
//! the encoder on every 77-token chunk on its own (textual-inversion vectors written over
//! their placeholder tokens), apply A1111's default "Original" emphasis per chunk (multiply
//! each token's row by its weight, then rescale so the chunk's mean is what it was), and
//! concatenate the chunks along the sequence. Several towers (SDXL) are concatenated along
//! the width, chunk by chunk.

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use super::chunk::{chunk_prompt, tokenize, Chunk, EmbeddingName, SpecialIds};
use super::parse::{parse_prompt_attention, Piece};
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::models::clip::ClipTextTransformer;

/// A textual-inversion embedding as one tower sees it.
#[derive(Clone)]
pub(crate) struct TowerEmbedding {
    /// The word that invokes it (the file stem).
    pub(crate) name: String,
    /// `[n_vectors, width]`, f32.
    pub(crate) vectors: Tensor,
}

/// One text tower: tokenizer, encoder and the embeddings it knows.
pub(crate) struct Tower<'a> {
    pub(crate) tokenizer: &'a Tokenizer,
    pub(crate) encoder: &'a ClipTextTransformer,
    pub(crate) special: SpecialIds,
    pub(crate) embeddings: Vec<TowerEmbedding>,
}

/// One tower's result.
pub(crate) struct TowerEncoding {
    pub(crate) chunks: Vec<Chunk>,
    /// `[1, 77 * chunks, width]` with emphasis.
    pub(crate) embeds: Tensor,
    /// The same without emphasis (all multipliers 1), when asked for.
    pub(crate) unweighted: Option<Tensor>,
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

    /// `[1, 77, width]` of one chunk, before emphasis.
    fn encode_chunk(&self, chunk: &Chunk, clip_skip: Option<usize>) -> Result<Tensor> {
        let device = self.encoder_device();
        let ids = Tensor::new(chunk.ids.as_slice(), &device)?.unsqueeze(0)?;
        let mut replace = Vec::with_capacity(chunk.fixes.len());
        for fix in &chunk.fixes {
            let e = self.embeddings.get(fix.embedding).ok_or_else(|| {
                PipelineError::Config("a chunk names an unknown embedding".into())
            })?;
            replace.push((fix.position, &e.vectors));
        }
        self.encoder.forward_with_vectors(&ids, &replace, clip_skip)
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
        for chunk in &chunks {
            let z = self.encode_chunk(chunk, clip_skip)?;
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

/// Encodes `prompt` with every tower and concatenates them along the width (chunk counts
/// agree: the towers share the BPE vocabulary). Returns the result and each tower's chunks.
pub(crate) fn encode_a1111(
    towers: &[Tower<'_>],
    prompt: &str,
    clip_skip: Option<usize>,
) -> Result<(Tensor, Vec<TowerEncoding>)> {
    let pieces = parse_prompt_attention(prompt);
    let outs = towers
        .iter()
        .map(|t| t.encode_pieces(&pieces, clip_skip, false))
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<&Tensor> = outs.iter().map(|o| &o.embeds).collect();
    let embeds = match parts.as_slice() {
        [one] => (*one).clone(),
        _ => Tensor::cat(&parts, 2)?,
    };
    Ok((embeds, outs))
}
