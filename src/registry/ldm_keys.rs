//! Renames LDM/CompVis checkpoint keys to diffusers / transformers keys, following the rules of
//! diffusers' `convert_original_stable_diffusion_to_diffusers` script: UNet input/middle/output
//! blocks to down/mid/up blocks, VAE `down`/`up`/`mid` to `down_blocks`/`up_blocks`/`mid_block`
//! (the decoder's levels in reverse order), OpenCLIP text names to CLIPTextModel names. Only
//! names and tensor transforms are decided here; no weight is read.

use std::collections::BTreeMap;

use super::ldm_shapes::{TextLayout, TextShape, UnetShape, VaeShape, UNET_PREFIX, VAE_PREFIX};
use super::tensors::TensorIndex;

/// What to do to a checkpoint tensor to get the diffusers tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    Identity,
    /// A 1x1 convolution weight `[out, in, 1, 1]` used as a linear weight `[out, in]`
    /// (the VAE mid-block attention projections).
    Conv1x1ToLinear,
    /// Rows `start..start + len` of dimension 0 (q, k or v out of OpenCLIP's fused `in_proj`).
    Rows {
        start: usize,
        len: usize,
    },
    /// The transpose of a matrix (OpenCLIP's `text_projection` is stored `[width, proj]`).
    Transpose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub source: String,
    pub transform: Transform,
}

/// diffusers name -> where it comes from, per component.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyMap {
    pub(crate) unet: BTreeMap<String, Mapping>,
    pub(crate) vae: BTreeMap<String, Mapping>,
    pub(crate) text_encoder: BTreeMap<String, Mapping>,
    /// SDXL's second text encoder (empty for SD1/SD2).
    pub(crate) text_encoder_2: BTreeMap<String, Mapping>,
}

fn same(source: &str) -> Mapping {
    Mapping {
        source: source.to_string(),
        transform: Transform::Identity,
    }
}

/// Renames inside an LDM ResBlock (UNet) to a diffusers ResnetBlock2D.
fn unet_resnet_part(rest: &str) -> String {
    const RULES: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ];
    for (from, to) in RULES {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

/// Splits `"N.M.rest"` into `(N, M, rest)`.
fn two_indices(s: &str) -> Option<(usize, usize, &str)> {
    let (a, s) = s.split_once('.')?;
    let (b, rest) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

fn unet_name(key: &str, shape: &UnetShape) -> Option<String> {
    let k = key.strip_prefix(UNET_PREFIX)?;
    let n = shape.layers_per_block;
    const FIXED: [(&str, &str); 6] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
        ("middle_block.1.", "mid_block.attentions.0."),
    ];
    for (from, to) in FIXED {
        if let Some(tail) = k.strip_prefix(from) {
            return Some(format!("{to}{tail}"));
        }
    }
    if let Some(tail) = k.strip_prefix("middle_block.0.") {
        return Some(format!("mid_block.resnets.0.{}", unet_resnet_part(tail)));
    }
    if let Some(tail) = k.strip_prefix("middle_block.2.") {
        return Some(format!("mid_block.resnets.1.{}", unet_resnet_part(tail)));
    }
    if let Some(tail) = k.strip_prefix("input_blocks.") {
        let (i, part, rest) = two_indices(tail)?;
        let i = i.checked_sub(1)?;
        let (block, layer) = (i / (n + 1), i % (n + 1));
        return Some(match (layer == n, part) {
            (true, 0) => {
                let rest = rest.strip_prefix("op.")?;
                format!("down_blocks.{block}.downsamplers.0.conv.{rest}")
            }
            (false, 0) => format!(
                "down_blocks.{block}.resnets.{layer}.{}",
                unet_resnet_part(rest)
            ),
            (false, 1) => format!("down_blocks.{block}.attentions.{layer}.{rest}"),
            _ => return None,
        });
    }
    if let Some(tail) = k.strip_prefix("output_blocks.") {
        let (i, part, rest) = two_indices(tail)?;
        let (block, layer) = (i / (n + 1), i % (n + 1));
        if part == 0 {
            return Some(format!(
                "up_blocks.{block}.resnets.{layer}.{}",
                unet_resnet_part(rest)
            ));
        }
        // The upsampler follows the resnet (part 1) or the resnet and attention (part 2).
        if let Some(conv) = rest.strip_prefix("conv.") {
            return Some(format!("up_blocks.{block}.upsamplers.0.conv.{conv}"));
        }
        if part == 1 {
            return Some(format!("up_blocks.{block}.attentions.{layer}.{rest}"));
        }
        return None;
    }
    None
}

fn vae_resnet_part(rest: &str) -> String {
    match rest.strip_prefix("nin_shortcut.") {
        Some(tail) => format!("conv_shortcut.{tail}"),
        None => rest.to_string(),
    }
}

fn vae_mid(rest: &str) -> Option<(String, Transform)> {
    if let Some(tail) = rest.strip_prefix("block_1.") {
        return Some((
            format!("mid_block.resnets.0.{}", vae_resnet_part(tail)),
            Transform::Identity,
        ));
    }
    if let Some(tail) = rest.strip_prefix("block_2.") {
        return Some((
            format!("mid_block.resnets.1.{}", vae_resnet_part(tail)),
            Transform::Identity,
        ));
    }
    let tail = rest.strip_prefix("attn_1.")?;
    let (part, param) = tail.split_once('.')?;
    let to = match part {
        "norm" => {
            return Some((
                format!("mid_block.attentions.0.group_norm.{param}"),
                Transform::Identity,
            ))
        }
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "proj_out" => "to_out.0",
        _ => return None,
    };
    let transform = if param == "weight" {
        Transform::Conv1x1ToLinear
    } else {
        Transform::Identity
    };
    Some((format!("mid_block.attentions.0.{to}.{param}"), transform))
}

fn vae_name(key: &str, shape: &VaeShape) -> Option<(String, Transform)> {
    let k = key.strip_prefix(VAE_PREFIX)?;
    let id = Transform::Identity;
    for side in ["encoder", "decoder"] {
        let Some(rest) = k.strip_prefix(side).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        if let Some(tail) = rest.strip_prefix("norm_out.") {
            return Some((format!("{side}.conv_norm_out.{tail}"), id));
        }
        if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            return Some((format!("{side}.{rest}"), id));
        }
        if let Some(mid) = rest.strip_prefix("mid.") {
            let (name, transform) = vae_mid(mid)?;
            return Some((format!("{side}.{name}"), transform));
        }
        let (level_key, blocks) = if side == "encoder" {
            ("down.", "down_blocks")
        } else {
            ("up.", "up_blocks")
        };
        let tail = rest.strip_prefix(level_key)?;
        let (level, tail) = tail.split_once('.')?;
        let level: usize = level.parse().ok()?;
        // LDM numbers decoder levels from the lowest resolution up; diffusers the reverse.
        let block = if side == "decoder" {
            shape.block_out_channels.len().checked_sub(level + 1)?
        } else {
            level
        };
        if let Some(t) = tail.strip_prefix("block.") {
            let (j, t) = t.split_once('.')?;
            let j: usize = j.parse().ok()?;
            return Some((
                format!("{side}.{blocks}.{block}.resnets.{j}.{}", vae_resnet_part(t)),
                id,
            ));
        }
        let sampler = if side == "encoder" {
            "downsample."
        } else {
            "upsample."
        };
        let samplers = if side == "encoder" {
            "downsamplers"
        } else {
            "upsamplers"
        };
        let t = tail.strip_prefix(sampler)?;
        return Some((format!("{side}.{blocks}.{block}.{samplers}.0.{t}"), id));
    }
    if k.starts_with("quant_conv.") || k.starts_with("post_quant_conv.") {
        return Some((k.to_string(), id));
    }
    None
}

fn open_clip_layer_part(rest: &str) -> Option<&'static str> {
    Some(match rest {
        "ln_1.weight" => "layer_norm1.weight",
        "ln_1.bias" => "layer_norm1.bias",
        "ln_2.weight" => "layer_norm2.weight",
        "ln_2.bias" => "layer_norm2.bias",
        "mlp.c_fc.weight" => "mlp.fc1.weight",
        "mlp.c_fc.bias" => "mlp.fc1.bias",
        "mlp.c_proj.weight" => "mlp.fc2.weight",
        "mlp.c_proj.bias" => "mlp.fc2.bias",
        "attn.out_proj.weight" => "self_attn.out_proj.weight",
        "attn.out_proj.bias" => "self_attn.out_proj.bias",
        _ => return None,
    })
}

pub(crate) fn text_map(
    index: &TensorIndex,
    text: &TextShape,
    layers_used: usize,
    out: &mut BTreeMap<String, Mapping>,
) {
    match &text.layout {
        TextLayout::HfClip { prefix } => {
            for key in index.names_with_prefix(prefix) {
                let rest = &key[prefix.len()..];
                if rest.ends_with("position_ids") {
                    continue;
                }
                if let Some(layer) = rest
                    .strip_prefix("encoder.layers.")
                    .and_then(|t| t.split_once('.'))
                    .and_then(|(n, _)| n.parse::<usize>().ok())
                {
                    if layer >= layers_used {
                        continue;
                    }
                }
                out.insert(format!("text_model.{rest}"), same(key));
            }
        }
        TextLayout::OpenClip { prefix } => {
            let p = prefix.as_str();
            let t = "text_model.";
            out.insert(
                format!("{t}embeddings.token_embedding.weight"),
                same(&format!("{p}token_embedding.weight")),
            );
            out.insert(
                format!("{t}embeddings.position_embedding.weight"),
                same(&format!("{p}positional_embedding")),
            );
            for param in ["weight", "bias"] {
                out.insert(
                    format!("{t}final_layer_norm.{param}"),
                    same(&format!("{p}ln_final.{param}")),
                );
            }
            let h = text.hidden_size;
            for layer in 0..layers_used {
                let src = format!("{p}transformer.resblocks.{layer}.");
                let dst = format!("{t}encoder.layers.{layer}.");
                for key in index.names_with_prefix(&src) {
                    if let Some(to) = open_clip_layer_part(&key[src.len()..]) {
                        out.insert(format!("{dst}{to}"), same(key));
                    }
                }
                for param in ["weight", "bias"] {
                    let fused = format!("{src}attn.in_proj_{param}");
                    for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        out.insert(
                            format!("{dst}self_attn.{proj}.{param}"),
                            Mapping {
                                source: fused.clone(),
                                transform: Transform::Rows {
                                    start: i * h,
                                    len: h,
                                },
                            },
                        );
                    }
                }
            }
        }
    }
}

/// Builds the full rename map. `text_layers_used` is how many text transformer layers the
/// model runs (SD2 drops the last one: it uses the penultimate layer's output).
pub(crate) fn build_key_map(
    index: &TensorIndex,
    unet: &UnetShape,
    vae: &VaeShape,
    text: &TextShape,
    text_layers_used: usize,
) -> KeyMap {
    let mut map = KeyMap::default();
    for key in index.names_with_prefix(UNET_PREFIX) {
        match unet_name(key, unet) {
            Some(name) => {
                map.unet.insert(name, same(key));
            }
            None => log::debug!("ignoring UNet tensor {key}"),
        }
    }
    for key in index.names_with_prefix(VAE_PREFIX) {
        match vae_name(key, vae) {
            Some((name, transform)) => {
                map.vae.insert(
                    name,
                    Mapping {
                        source: key.to_string(),
                        transform,
                    },
                );
            }
            // e.g. first_stage_model.loss.* (the training discriminator)
            None => log::debug!("ignoring VAE tensor {key}"),
        }
    }
    text_map(index, text, text_layers_used, &mut map.text_encoder);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ldm_shapes::SD2_TEXT_PREFIX;
    use crate::registry::tensors::TensorMeta;

    /// SD1.5's real layout (4 levels, 2 resnets each, attention on the first three): the
    /// tiny fixtures do not cover an upsampler after an attention (`output_blocks.N.2.conv`).
    fn sd15() -> (UnetShape, VaeShape) {
        let unet = UnetShape {
            in_channels: 4,
            out_channels: 4,
            model_channels: 320,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            attention: vec![true, true, true, false],
            use_linear_projection: false,
            transformer_depth: 1,
            context_dim: 768,
        };
        let vae = VaeShape {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
        };
        (unet, vae)
    }

    #[test]
    fn sd15_unet_and_vae_names_follow_the_diffusers_script() {
        let (unet, vae) = sd15();
        let cases = [
            (
                "input_blocks.1.1.proj_in.weight",
                "down_blocks.0.attentions.0.proj_in.weight",
            ),
            (
                "input_blocks.2.0.in_layers.2.weight",
                "down_blocks.0.resnets.1.conv1.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.11.0.emb_layers.1.weight",
                "down_blocks.3.resnets.1.time_emb_proj.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.8.1.transformer_blocks.0.attn1.to_q.weight",
                "up_blocks.2.attentions.2.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "output_blocks.11.0.out_layers.3.weight",
                "up_blocks.3.resnets.2.conv2.weight",
            ),
            (
                "middle_block.1.proj_out.weight",
                "mid_block.attentions.0.proj_out.weight",
            ),
            (
                "middle_block.2.in_layers.0.bias",
                "mid_block.resnets.1.norm1.bias",
            ),
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
            ("out.0.weight", "conv_norm_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                unet_name(&format!("{UNET_PREFIX}{ldm}"), &unet).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
        assert_eq!(
            unet_name(&format!("{UNET_PREFIX}label_emb.0.0.weight"), &unet),
            None
        );
        let vae_cases = [
            (
                "decoder.up.3.block.0.conv1.weight",
                "decoder.up_blocks.0.resnets.0.conv1.weight",
            ),
            (
                "decoder.up.0.block.0.nin_shortcut.weight",
                "decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            (
                "decoder.mid.attn_1.norm.bias",
                "decoder.mid_block.attentions.0.group_norm.bias",
            ),
        ];
        for (ldm, diffusers) in vae_cases {
            let got = vae_name(&format!("{VAE_PREFIX}{ldm}"), &vae).map(|(n, _)| n);
            assert_eq!(got.as_deref(), Some(diffusers), "{ldm}");
        }
        let (name, transform) = vae_name(
            &format!("{VAE_PREFIX}encoder.mid.attn_1.proj_out.weight"),
            &vae,
        )
        .unwrap();
        assert_eq!(name, "encoder.mid_block.attentions.0.to_out.0.weight");
        assert_eq!(transform, Transform::Conv1x1ToLinear);
        assert_eq!(vae_name(&format!("{VAE_PREFIX}loss.logvar"), &vae), None);
        // A level number past the end must not underflow.
        assert_eq!(
            vae_name(
                &format!("{VAE_PREFIX}decoder.up.9.block.0.conv1.weight"),
                &vae
            ),
            None
        );
    }

    #[test]
    fn open_clip_fused_projections_split_into_rows() {
        let mut index = TensorIndex::default();
        let meta = |shape: Vec<usize>| TensorMeta {
            shape,
            elem_size: 4,
        };
        let p = SD2_TEXT_PREFIX;
        for l in 0..3 {
            index.tensors.insert(
                format!("{p}transformer.resblocks.{l}.attn.in_proj_weight"),
                meta(vec![48, 16]),
            );
        }
        let text = TextShape {
            layout: TextLayout::OpenClip {
                prefix: SD2_TEXT_PREFIX.to_string(),
            },
            hidden_size: 16,
            intermediate_size: 64,
            vocab_size: 10,
            max_position_embeddings: 77,
            layers_in_file: 3,
        };
        let mut out = BTreeMap::new();
        text_map(&index, &text, 2, &mut out);
        let k = &out["text_model.encoder.layers.1.self_attn.k_proj.weight"];
        assert_eq!(
            k.source,
            format!("{p}transformer.resblocks.1.attn.in_proj_weight")
        );
        assert_eq!(k.transform, Transform::Rows { start: 16, len: 16 });
        assert!(
            !out.keys().any(|k| k.contains("layers.2.")),
            "penultimate rule"
        );
    }
}
