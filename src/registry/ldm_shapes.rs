//! Reads the architecture of an LDM/CompVis single-file checkpoint from tensor names and
//! shapes alone (UNet levels and widths, VAE levels, text tower layout). Header data only;
//! never loads a weight and never panics on a malformed file.

use std::collections::BTreeSet;

use super::tensors::TensorIndex;

pub(crate) const UNET_PREFIX: &str = "model.diffusion_model.";
pub(crate) const VAE_PREFIX: &str = "first_stage_model.";
pub(crate) const SD1_TEXT_PREFIX: &str = "cond_stage_model.transformer.";
pub(crate) const SD2_TEXT_PREFIX: &str = "cond_stage_model.model.";

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("not a Stable Diffusion checkpoint: {0}")]
    Layout(String),
}

fn layout(msg: impl Into<String>) -> ShapeError {
    ShapeError::Layout(msg.into())
}

/// UNet numbers read from the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnetShape {
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) model_channels: usize,
    /// Output channels of each resolution level (`block_out_channels` in diffusers).
    pub(crate) block_out_channels: Vec<usize>,
    pub(crate) layers_per_block: usize,
    /// Whether each level has cross-attention transformers.
    pub(crate) attention: Vec<bool>,
    pub(crate) use_linear_projection: bool,
    pub(crate) transformer_depth: usize,
    pub(crate) context_dim: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaeShape {
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) latent_channels: usize,
    pub(crate) block_out_channels: Vec<usize>,
    pub(crate) layers_per_block: usize,
}

/// How the text tower is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextLayout {
    /// SD1: Hugging Face CLIPTextModel names under this prefix (with or without `text_model.`).
    HfClip { prefix: String },
    /// OpenCLIP names under this prefix (SD2: `cond_stage_model.model.`, SDXL's second tower:
    /// `conditioner.embedders.1.model.`) with fused attention projections.
    OpenClip { prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextShape {
    pub(crate) layout: TextLayout,
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) vocab_size: usize,
    pub(crate) max_position_embeddings: usize,
    /// Transformer layers stored in the file (SD2 files hold one more than SD2 uses).
    pub(crate) layers_in_file: usize,
}

/// Distinct numeric path segments right after `prefix` (`prefix` + `N.`...).
pub(crate) fn indices(index: &TensorIndex, prefix: &str) -> BTreeSet<usize> {
    index
        .names_with_prefix(prefix)
        .filter_map(|name| name[prefix.len()..].split('.').next()?.parse().ok())
        .collect()
}

pub(crate) fn dim(index: &TensorIndex, name: &str, d: usize) -> Result<usize, ShapeError> {
    index
        .shape(name)
        .and_then(|s| s.get(d).copied())
        .ok_or_else(|| layout(format!("missing or malformed tensor {name}")))
}

pub(crate) fn count(set: &BTreeSet<usize>, what: &str) -> Result<usize, ShapeError> {
    // Indices must be 0..n with no holes, or the numbering rules below do not apply.
    let n = set.len();
    if n == 0 || set.iter().copied().ne(0..n) {
        return Err(layout(format!("unexpected {what} numbering")));
    }
    Ok(n)
}

pub(crate) fn unet_shape(index: &TensorIndex) -> Result<UnetShape, ShapeError> {
    let p = UNET_PREFIX;
    let conv_in = format!("{p}input_blocks.0.0.weight");
    let model_channels = dim(index, &conv_in, 0)?;
    let in_channels = dim(index, &conv_in, 1)?;
    let out_channels = dim(index, &format!("{p}out.2.weight"), 0)?;
    let n_in = count(&indices(index, &format!("{p}input_blocks.")), "input block")?;
    let downsamplers = (1..n_in)
        .filter(|i| index.contains(&format!("{p}input_blocks.{i}.0.op.weight")))
        .count();
    let levels = downsamplers + 1;
    // input_blocks = conv_in + levels * layers + (levels - 1) downsamplers
    let layers = (n_in - 1 - downsamplers) / levels;
    if layers == 0 || 1 + levels * layers + downsamplers != n_in {
        return Err(layout("unexpected UNet input block layout"));
    }
    let mut block_out_channels = Vec::with_capacity(levels);
    let mut attention = Vec::with_capacity(levels);
    let mut first_attention = None;
    for level in 0..levels {
        let first = 1 + level * (layers + 1);
        block_out_channels.push(dim(
            index,
            &format!("{p}input_blocks.{first}.0.out_layers.3.weight"),
            0,
        )?);
        let proj_in = format!("{p}input_blocks.{first}.1.proj_in.weight");
        let has = index.contains(&proj_in);
        if has && first_attention.is_none() {
            first_attention = Some(format!("{p}input_blocks.{first}.1."));
        }
        attention.push(has);
    }
    let attn_prefix = first_attention.unwrap_or_else(|| format!("{p}middle_block.1."));
    let proj_in = index
        .shape(&format!("{attn_prefix}proj_in.weight"))
        .ok_or_else(|| layout("UNet has no cross-attention"))?;
    let use_linear_projection = proj_in.len() == 2;
    let transformer_depth = count(
        &indices(index, &format!("{attn_prefix}transformer_blocks.")),
        "transformer block",
    )?;
    let context_dim = dim(
        index,
        &format!("{attn_prefix}transformer_blocks.0.attn2.to_k.weight"),
        1,
    )?;
    Ok(UnetShape {
        in_channels,
        out_channels,
        model_channels,
        block_out_channels,
        layers_per_block: layers,
        attention,
        use_linear_projection,
        transformer_depth,
        context_dim,
    })
}

pub(crate) fn vae_shape(index: &TensorIndex) -> Result<VaeShape, ShapeError> {
    let p = VAE_PREFIX;
    let levels = count(&indices(index, &format!("{p}encoder.down.")), "VAE level")?;
    let layers = count(
        &indices(index, &format!("{p}encoder.down.0.block.")),
        "VAE resnet",
    )?;
    let block_out_channels = (0..levels)
        .map(|l| {
            dim(
                index,
                &format!("{p}encoder.down.{l}.block.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VaeShape {
        in_channels: dim(index, &format!("{p}encoder.conv_in.weight"), 1)?,
        out_channels: dim(index, &format!("{p}decoder.conv_out.weight"), 0)?,
        latent_channels: dim(index, &format!("{p}post_quant_conv.weight"), 0)?,
        block_out_channels,
        layers_per_block: layers,
    })
}

pub(crate) fn text_shape(index: &TensorIndex) -> Result<TextShape, ShapeError> {
    if index.has_prefix(SD2_TEXT_PREFIX) {
        return open_clip_shape(index, SD2_TEXT_PREFIX);
    }
    let with_text_model = format!("{SD1_TEXT_PREFIX}text_model.");
    if index.has_prefix(&with_text_model) {
        hf_clip_shape(index, &with_text_model)
    } else if index.has_prefix(SD1_TEXT_PREFIX) {
        hf_clip_shape(index, SD1_TEXT_PREFIX)
    } else {
        Err(layout("no text encoder weights"))
    }
}

/// An OpenCLIP text tower stored under `p`.
pub(crate) fn open_clip_shape(index: &TensorIndex, p: &str) -> Result<TextShape, ShapeError> {
    let emb = format!("{p}token_embedding.weight");
    Ok(TextShape {
        layout: TextLayout::OpenClip {
            prefix: p.to_string(),
        },
        hidden_size: dim(index, &emb, 1)?,
        vocab_size: dim(index, &emb, 0)?,
        max_position_embeddings: dim(index, &format!("{p}positional_embedding"), 0)?,
        intermediate_size: dim(
            index,
            &format!("{p}transformer.resblocks.0.mlp.c_fc.weight"),
            0,
        )?,
        layers_in_file: count(
            &indices(index, &format!("{p}transformer.resblocks.")),
            "text layer",
        )?,
    })
}

/// A Hugging Face CLIPTextModel stored under `prefix` (ending in `text_model.` or not).
pub(crate) fn hf_clip_shape(index: &TensorIndex, prefix: &str) -> Result<TextShape, ShapeError> {
    let emb = format!("{prefix}embeddings.token_embedding.weight");
    Ok(TextShape {
        hidden_size: dim(index, &emb, 1)?,
        vocab_size: dim(index, &emb, 0)?,
        max_position_embeddings: dim(
            index,
            &format!("{prefix}embeddings.position_embedding.weight"),
            0,
        )?,
        intermediate_size: dim(
            index,
            &format!("{prefix}encoder.layers.0.mlp.fc1.weight"),
            0,
        )?,
        layers_in_file: count(
            &indices(index, &format!("{prefix}encoder.layers.")),
            "text layer",
        )?,
        layout: TextLayout::HfClip {
            prefix: prefix.to_string(),
        },
    })
}
