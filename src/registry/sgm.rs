//! SDXL single files in Stability's SGM layout: `model.diffusion_model.*` (with `label_emb`,
//! the added `text_time` embedding), `first_stage_model.*`, CLIP-L under
//! `conditioner.embedders.0.transformer.*` (Hugging Face names) and OpenCLIP bigG under
//! `conditioner.embedders.1.model.*` (fused `in_proj` attention, `text_projection` stored
//! transposed). Reads the SDXL numbers from tensor shapes (transformer depth per level, pooled
//! and time-id widths), synthesizes the diffusers configs (the SD parts through ldm_config)
//! and adds the SDXL names to the key map. Header data only; never loads a weight.

use serde_json::{json, Value};

use super::identify::Identity;
use super::ldm_config::{
    clip_text_config, default_text_heads, scheduler_config, unet_config, vae_config,
    SynthesizedConfigs,
};
use super::ldm_keys::{build_key_map, text_map, KeyMap, Mapping, Transform};
use super::ldm_shapes::{
    count, dim, hf_clip_shape, indices, open_clip_shape, ShapeError, TextLayout, TextShape,
    UnetShape, VaeShape, UNET_PREFIX,
};
use super::ldm_yaml::LdmYaml;
use super::tensors::TensorIndex;

pub(crate) const XL_TEXT1_PREFIX: &str = "conditioner.embedders.0.transformer.";
pub(crate) const XL_TEXT2_PREFIX: &str = "conditioner.embedders.1.model.";
/// The refiner's only text tower (OpenCLIP bigG in the first embedder slot).
pub(crate) const XL_REFINER_TEXT_PREFIX: &str = "conditioner.embedders.0.model.";

/// The SDXL scaling factor of the VAE latents (the SDXL base config's).
const XL_SCALING_FACTOR: f64 = 0.13025;
/// Micro-conditioning values per request: original size, crop top-left, target size.
const TIME_IDS: usize = 6;

/// What an SDXL file adds to the SD layout, from its tensor shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XlShape {
    pub(crate) text_1: TextShape,
    pub(crate) text_2: TextShape,
    /// Width of the pooled embedding (`text_projection` `[width, projection_dim]`).
    pub(crate) projection_dim: usize,
    /// Transformer blocks per level (1 where a level has no attention).
    pub(crate) depths: Vec<usize>,
    /// Input width of the added embedding: pooled + 6 time ids x their sinusoidal width.
    pub(crate) adm_in_channels: usize,
    pub(crate) time_embed_dim: usize,
}

fn layout(msg: String) -> ShapeError {
    ShapeError::Layout(msg)
}

pub(crate) fn xl_shape(index: &TensorIndex, unet: &UnetShape) -> Result<XlShape, ShapeError> {
    let with_text_model = format!("{XL_TEXT1_PREFIX}text_model.");
    let text_1 = if index.has_prefix(&with_text_model) {
        hf_clip_shape(index, &with_text_model)?
    } else {
        hf_clip_shape(index, XL_TEXT1_PREFIX)?
    };
    let text_2 = open_clip_shape(index, XL_TEXT2_PREFIX)?;
    let projection = format!("{XL_TEXT2_PREFIX}text_projection");
    if dim(index, &projection, 0)? != text_2.hidden_size {
        return Err(layout(
            "text_projection does not match the text width".into(),
        ));
    }
    let projection_dim = dim(index, &projection, 1)?;
    let p = UNET_PREFIX;
    let lpb = unet.layers_per_block;
    let depths = unet
        .attention
        .iter()
        .enumerate()
        .map(|(level, &has)| {
            if !has {
                return Ok(1);
            }
            let first = 1 + level * (lpb + 1);
            count(
                &indices(
                    index,
                    &format!("{p}input_blocks.{first}.1.transformer_blocks."),
                ),
                "transformer block",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mid = count(
        &indices(index, &format!("{p}middle_block.1.transformer_blocks.")),
        "mid transformer block",
    )?;
    // diffusers builds the mid block with the last level's depth.
    if depths.last() != Some(&mid) {
        return Err(layout(format!(
            "mid block depth {mid} differs from the last level's {:?}",
            depths.last()
        )));
    }
    let adm_in_channels = dim(index, &format!("{p}label_emb.0.0.weight"), 1)?;
    let time_width = adm_in_channels
        .checked_sub(projection_dim)
        .filter(|w| w % TIME_IDS == 0 && *w > 0)
        .ok_or_else(|| {
            layout(format!(
                "added embedding input {adm_in_channels} is not pooled {projection_dim} + \
                 {TIME_IDS} time ids"
            ))
        })?;
    Ok(XlShape {
        text_1,
        text_2,
        projection_dim,
        depths,
        adm_in_channels,
        time_embed_dim: time_width / TIME_IDS,
    })
}

/// The diffusers documents of an SDXL file (configs of both text encoders included).
pub(crate) fn xl_configs(
    unet: &UnetShape,
    vae: &VaeShape,
    xl: &XlShape,
    identity: &Identity,
    yaml: Option<&LdmYaml>,
) -> SynthesizedConfigs {
    let mut unet_json = unet_config(unet, identity, yaml);
    unet_json["transformer_layers_per_block"] = json!(xl.depths);
    unet_json["addition_embed_type"] = json!("text_time");
    unet_json["addition_embed_type_num_heads"] = json!(64);
    unet_json["addition_time_embed_dim"] = json!(xl.time_embed_dim);
    unet_json["projection_class_embeddings_input_dim"] = json!(xl.adm_in_channels);
    let sample_size = unet_json
        .get("sample_size")
        .and_then(Value::as_u64)
        .unwrap_or(128);
    let mut vae_json = vae_config(vae, sample_size, yaml);
    if yaml.and_then(|y| y.scale_factor).is_none() {
        vae_json["scaling_factor"] = json!(XL_SCALING_FACTOR);
    }
    let heads = |i: usize, text: &TextShape| {
        yaml.and_then(|y| y.text.embedder_heads.get(i).copied().flatten())
            .unwrap_or_else(|| default_text_heads(text))
    };
    let (t1, t2) = (&xl.text_1, &xl.text_2);
    let text_encoder = clip_text_config(
        t1,
        heads(0, t1),
        "quick_gelu",
        t1.layers_in_file,
        t1.hidden_size,
    );
    let mut text_encoder_2 = clip_text_config(
        t2,
        heads(1, t2),
        "gelu",
        t2.layers_in_file,
        xl.projection_dim,
    );
    text_encoder_2["architectures"] = json!(["CLIPTextModelWithProjection"]);
    let mut scheduler = scheduler_config(identity, yaml);
    scheduler["timestep_spacing"] = json!("leading");
    scheduler["interpolation_type"] = json!("linear");
    scheduler["use_karras_sigmas"] = json!(false);
    SynthesizedConfigs {
        unet: unet_json,
        vae: vae_json,
        text_encoder,
        scheduler,
        text_encoder_2: Some(text_encoder_2),
        text_layers_used: t1.layers_in_file,
    }
}

/// The SD key map plus SDXL's names: `label_emb.0.{0,2}` -> `add_embedding.linear_{1,2}`,
/// the OpenCLIP tower -> `text_encoder_2` (`text_projection` transposed).
pub(crate) fn xl_key_map(
    index: &TensorIndex,
    unet: &UnetShape,
    vae: &VaeShape,
    xl: &XlShape,
) -> KeyMap {
    let mut map = build_key_map(index, unet, vae, &xl.text_1, xl.text_1.layers_in_file);
    let label = format!("{UNET_PREFIX}label_emb.0.");
    for key in index.names_with_prefix(&label) {
        let rest = &key[label.len()..];
        let name = match rest.split_once('.') {
            Some(("0", param)) => format!("add_embedding.linear_1.{param}"),
            Some(("2", param)) => format!("add_embedding.linear_2.{param}"),
            _ => continue,
        };
        map.unet.insert(
            name,
            Mapping {
                source: key.to_string(),
                transform: Transform::Identity,
            },
        );
    }
    text_map(
        index,
        &xl.text_2,
        xl.text_2.layers_in_file,
        &mut map.text_encoder_2,
    );
    if let TextLayout::OpenClip { prefix } = &xl.text_2.layout {
        map.text_encoder_2.insert(
            "text_projection.weight".into(),
            Mapping {
                source: format!("{prefix}text_projection"),
                transform: Transform::Transpose,
            },
        );
    }
    map
}
