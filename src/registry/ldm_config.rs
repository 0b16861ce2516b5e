//! Synthesizes the diffusers-format JSON configs (unet, vae, text_encoder as transformers
//! writes it, scheduler) of a single-file checkpoint: structure from the tensor shapes, the
//! numbers shapes cannot tell (attention heads, betas, scaling factor, prediction type) from
//! the `.yaml` beside the file when there is one, else from the standard SD1.5 / SD2.1 / SDXL
//! configs (SDXL's additions: sgm.rs). Pure functions; reads nothing from disk.

use serde_json::{json, Value};

use super::identify::Identity;
use super::ldm_shapes::{TextShape, UnetShape, VaeShape};
use super::ldm_yaml::LdmYaml;
use super::model::{ModelVersion, Prediction};

/// The four documents a diffusers folder would ship, plus the text layer count actually used.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthesizedConfigs {
    pub unet: Value,
    pub vae: Value,
    pub text_encoder: Value,
    pub scheduler: Value,
    /// SDXL's second text encoder (CLIPTextModelWithProjection); None for SD1/SD2.
    pub(crate) text_encoder_2: Option<Value>,
    /// SD2 runs all but the last OpenCLIP block (the "penultimate" layer).
    pub(crate) text_layers_used: usize,
}

/// Latent size of the standard configs (512 px for SD1 and SD2-base, 768 px for SD2 v models).
fn default_sample_size(identity: &Identity) -> usize {
    match (identity.version, identity.prediction) {
        (ModelVersion::V2, Prediction::VPrediction) => 96,
        (ModelVersion::Xl, _) => 128,
        _ => 64,
    }
}

fn warn_mismatch(yaml: &LdmYaml, what: &str, from_yaml: Option<usize>, from_weights: usize) {
    if let Some(y) = from_yaml {
        if y != from_weights {
            log::warn!(
                "{}: {what} is {y} in the yaml but {from_weights} in the weights; using the weights",
                yaml.path.display()
            );
        }
    }
}

pub(crate) fn unet_config(unet: &UnetShape, identity: &Identity, yaml: Option<&LdmYaml>) -> Value {
    if let Some(y) = yaml {
        warn_mismatch(
            y,
            "model_channels",
            y.unet.model_channels,
            unet.model_channels,
        );
        warn_mismatch(y, "in_channels", y.unet.in_channels, unet.in_channels);
        warn_mismatch(
            y,
            "num_res_blocks",
            y.unet.num_res_blocks,
            unet.layers_per_block,
        );
        warn_mismatch(y, "context_dim", y.unet.context_dim, unet.context_dim);
    }
    let yu = yaml.map(|y| &y.unet);
    // diffusers' historical naming: `attention_head_dim` holds the number of heads for SD1
    // (`num_heads` in LDM) and per-level head counts for SD2 (width / `num_head_channels`).
    let head_channels = yu.and_then(|u| u.num_head_channels);
    let num_heads = yu.and_then(|u| u.num_heads);
    let attention_head_dim = match (head_channels, num_heads, identity.version) {
        (Some(c), _, _) if c > 0 => json!(unet
            .block_out_channels
            .iter()
            .map(|ch| ch / c)
            .collect::<Vec<_>>()),
        (_, Some(n), _) => json!(n),
        (_, _, ModelVersion::V1) => json!(8),
        (_, _, ModelVersion::V2 | ModelVersion::Xl) => json!(unet
            .block_out_channels
            .iter()
            .map(|ch| ch / 64)
            .collect::<Vec<_>>()),
    };
    let down: Vec<&str> = unet
        .attention
        .iter()
        .map(|&a| {
            if a {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
        })
        .collect();
    let up: Vec<&str> = unet
        .attention
        .iter()
        .rev()
        .map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
        .collect();
    let sample_size = yaml
        .and_then(|y| y.image_size)
        .unwrap_or_else(|| default_sample_size(identity));
    json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": attention_head_dim,
        "block_out_channels": unet.block_out_channels,
        "center_input_sample": false,
        "class_embed_type": null,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": unet.context_dim,
        "down_block_types": down,
        "downsample_padding": 1,
        "dual_cross_attention": false,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": unet.in_channels,
        "layers_per_block": unet.layers_per_block,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
        "num_attention_heads": null,
        "num_class_embeds": null,
        "only_cross_attention": false,
        "out_channels": unet.out_channels,
        "resnet_time_scale_shift": "default",
        "sample_size": sample_size,
        "time_embedding_type": "positional",
        "transformer_layers_per_block": unet.transformer_depth,
        "up_block_types": up,
        "upcast_attention": identity.version == ModelVersion::V2,
        "use_linear_projection": unet.use_linear_projection,
    })
}

pub(crate) fn vae_config(vae: &VaeShape, unet_sample_size: u64, yaml: Option<&LdmYaml>) -> Value {
    if let Some(y) = yaml {
        warn_mismatch(
            y,
            "ddconfig.num_res_blocks",
            y.vae.num_res_blocks,
            vae.layers_per_block,
        );
        warn_mismatch(
            y,
            "ddconfig.z_channels",
            y.vae.z_channels,
            vae.latent_channels,
        );
    }
    let levels = vae.block_out_channels.len();
    json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": vae.block_out_channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "force_upcast": true,
        "in_channels": vae.in_channels,
        "latent_channels": vae.latent_channels,
        "latents_mean": null,
        "latents_std": null,
        "layers_per_block": vae.layers_per_block,
        "mid_block_add_attention": true,
        "norm_num_groups": 32,
        "out_channels": vae.out_channels,
        "sample_size": unet_sample_size * 8,
        "scaling_factor": yaml.and_then(|y| y.scale_factor).unwrap_or(0.18215),
        "shift_factor": null,
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "use_post_quant_conv": true,
        "use_quant_conv": true,
    })
}

/// How many text layers the model runs: SD2 uses the penultimate OpenCLIP block unless its
/// yaml says `layer: last`; SD1 uses them all.
pub(crate) fn text_layers_used(
    text: &TextShape,
    identity: &Identity,
    yaml: Option<&LdmYaml>,
) -> usize {
    let layer = yaml.and_then(|y| y.text.layer.as_deref());
    match (identity.version, layer) {
        (ModelVersion::V2, Some("last")) => text.layers_in_file,
        (ModelVersion::V2, _) => text.layers_in_file.saturating_sub(1).max(1),
        (ModelVersion::V1 | ModelVersion::Xl, _) => text.layers_in_file,
    }
}

fn text_config(
    text: &TextShape,
    identity: &Identity,
    yaml: Option<&LdmYaml>,
    layers: usize,
) -> Value {
    let heads = yaml
        .and_then(|y| y.text.heads)
        .unwrap_or_else(|| default_text_heads(text));
    let default_act = match identity.version {
        ModelVersion::V1 | ModelVersion::Xl => "quick_gelu",
        ModelVersion::V2 => "gelu",
    };
    let act = yaml
        .and_then(|y| y.text.hidden_act.clone())
        .unwrap_or_else(|| default_act.to_string());
    clip_text_config(text, heads, &act, layers, text.hidden_size)
}

/// CLIP towers use 64-wide heads (ViT-L/14: 12 heads, ViT-H/14: 16, ViT-bigG/14: 20).
pub(crate) fn default_text_heads(text: &TextShape) -> usize {
    if text.hidden_size >= 64 && text.hidden_size % 64 == 0 {
        text.hidden_size / 64
    } else {
        1
    }
}

/// A transformers CLIPTextConfig document (legacy `eos_token_id` 2, as the Hub's SD configs).
pub(crate) fn clip_text_config(
    text: &TextShape,
    heads: usize,
    act: &str,
    layers: usize,
    projection_dim: usize,
) -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dtype": "float32",
        "eos_token_id": 2,
        "hidden_act": act,
        "hidden_size": text.hidden_size,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": text.intermediate_size,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": text.max_position_embeddings,
        "model_type": "clip_text_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "projection_dim": projection_dim,
        "vocab_size": text.vocab_size,
    })
}

pub(crate) fn scheduler_config(identity: &Identity, yaml: Option<&LdmYaml>) -> Value {
    let prediction = match identity.prediction {
        Prediction::Epsilon => "epsilon",
        Prediction::VPrediction => "v_prediction",
    };
    // The class only names the default sampler; every request picks its own.
    let class = match identity.version {
        ModelVersion::V1 => "PNDMScheduler",
        ModelVersion::V2 => "DDIMScheduler",
        ModelVersion::Xl => "EulerDiscreteScheduler",
    };
    json!({
        "_class_name": class,
        "beta_end": yaml.and_then(|y| y.linear_end).unwrap_or(0.012),
        "beta_schedule": "scaled_linear",
        "beta_start": yaml.and_then(|y| y.linear_start).unwrap_or(0.00085),
        "clip_sample": false,
        "num_train_timesteps": yaml.and_then(|y| y.timesteps).unwrap_or(1000),
        "prediction_type": prediction,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
    })
}

pub(crate) fn synthesize_configs(
    unet: &UnetShape,
    vae: &VaeShape,
    text: &TextShape,
    identity: &Identity,
    yaml: Option<&LdmYaml>,
) -> SynthesizedConfigs {
    let unet_json = unet_config(unet, identity, yaml);
    let sample_size = unet_json
        .get("sample_size")
        .and_then(Value::as_u64)
        .unwrap_or(64);
    let layers = text_layers_used(text, identity, yaml);
    SynthesizedConfigs {
        vae: vae_config(vae, sample_size, yaml),
        text_encoder: text_config(text, identity, yaml, layers),
        scheduler: scheduler_config(identity, yaml),
        text_encoder_2: None,
        unet: unet_json,
        text_layers_used: layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ldm_shapes::TextLayout;
    use crate::registry::model::ModelKind;

    fn shapes(
        context_dim: usize,
        linear: bool,
        hidden: usize,
        layers: usize,
    ) -> (UnetShape, VaeShape, TextShape) {
        (
            UnetShape {
                in_channels: 4,
                out_channels: 4,
                model_channels: 320,
                block_out_channels: vec![320, 640, 1280, 1280],
                layers_per_block: 2,
                attention: vec![true, true, true, false],
                use_linear_projection: linear,
                transformer_depth: 1,
                context_dim,
            },
            VaeShape {
                in_channels: 3,
                out_channels: 3,
                latent_channels: 4,
                block_out_channels: vec![128, 256, 512, 512],
                layers_per_block: 2,
            },
            TextShape {
                layout: TextLayout::OpenClip {
                    prefix: String::new(),
                },
                hidden_size: hidden,
                intermediate_size: hidden * 4,
                vocab_size: 49408,
                max_position_embeddings: 77,
                layers_in_file: layers,
            },
        )
    }

    #[test]
    fn without_a_yaml_the_standard_sd15_and_sd21_numbers_are_used() {
        let (u, v, t) = shapes(768, false, 768, 12);
        let id = Identity {
            version: ModelVersion::V1,
            kind: ModelKind::Txt2Img,
            prediction: Prediction::Epsilon,
        };
        let c = synthesize_configs(&u, &v, &t, &id, None);
        assert_eq!(c.unet["attention_head_dim"], 8);
        assert_eq!(c.unet["sample_size"], 64);
        assert_eq!(
            c.unet["down_block_types"],
            json!([
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D"
            ])
        );
        assert_eq!(
            c.unet["up_block_types"],
            json!([
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D"
            ])
        );
        assert_eq!(c.text_encoder["num_attention_heads"], 12);
        assert_eq!(c.text_encoder["num_hidden_layers"], 12);
        assert_eq!(c.text_encoder["hidden_act"], "quick_gelu");
        assert_eq!(c.vae["sample_size"], 512);
        assert_eq!(c.scheduler["prediction_type"], "epsilon");

        let (u, v, t) = shapes(1024, true, 1024, 24);
        let id = Identity {
            version: ModelVersion::V2,
            kind: ModelKind::Txt2Img,
            prediction: Prediction::VPrediction,
        };
        let c = synthesize_configs(&u, &v, &t, &id, None);
        assert_eq!(c.unet["attention_head_dim"], json!([5, 10, 20, 20]));
        assert_eq!(c.unet["use_linear_projection"], true);
        assert_eq!(c.unet["sample_size"], 96);
        assert_eq!(c.text_encoder["num_attention_heads"], 16);
        assert_eq!(c.text_encoder["num_hidden_layers"], 23);
        assert_eq!(c.text_layers_used, 23);
        assert_eq!(c.text_encoder["hidden_act"], "gelu");
        assert_eq!(c.scheduler["prediction_type"], "v_prediction");
    }
}
