//! Decides what a model is (SD1, SD2 or SDXL, txt2img or inpaint, epsilon or v-prediction, or
//! an architecture runai does not serve, such as the SDXL refiner) from its weights' names and
//! shapes and its config files, never from its path. Reads headers and small JSON/yaml files
//! only.
//!
//! Prediction type rules, in order: a diffusers folder's `scheduler/scheduler_config.json`
//! `prediction_type`; for a single file, a `v_pred` key in the state dict (as ComfyUI reads
//! it), `parameterization: "v"` or an SGM `VScaling` denoiser in the `.yaml` beside it (as
//! AUTOMATIC1111 does); otherwise **epsilon** (the documented default: SD1.x, SD2.x-base, SDXL
//! and the inpainting models are epsilon models; a 768-v SD2 file needs its `.yaml`).

use std::path::Path;

use serde_json::Value;

use super::ldm_shapes::{SD1_TEXT_PREFIX, SD2_TEXT_PREFIX, UNET_PREFIX};
use super::ldm_yaml::LdmYaml;
use super::model::{ModelKind, ModelVersion, Prediction};
use super::sgm::{XL_REFINER_TEXT_PREFIX, XL_TEXT1_PREFIX, XL_TEXT2_PREFIX};
use super::tensors::TensorIndex;

/// Config JSON files larger than this are not diffusers configs.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// A model of an architecture runai does not serve (the text names it, e.g. "SDXL").
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A file could not be read or parsed.
    #[error("{0}")]
    Unreadable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub version: ModelVersion,
    pub kind: ModelKind,
    pub prediction: Prediction,
}

fn kind_from_in_channels(n: u64) -> Result<ModelKind, IdentifyError> {
    match n {
        4 => Ok(ModelKind::Txt2Img),
        9 => Ok(ModelKind::Inpaint),
        n => Err(IdentifyError::Unsupported(format!(
            "UNet with {n} input channels (depth, pix2pix or upscaler models are not served)"
        ))),
    }
}

fn version_from_context_dim(dim: u64) -> Result<ModelVersion, IdentifyError> {
    match dim {
        768 => Ok(ModelVersion::V1),
        1024 => Ok(ModelVersion::V2),
        2048 => Err(IdentifyError::Unsupported(
            "2048-wide cross-attention (SDXL) without SDXL's text encoders and added embedding"
                .into(),
        )),
        n => Err(IdentifyError::Unsupported(format!(
            "cross-attention width {n} without a known text encoder"
        ))),
    }
}

/// The SDXL refiner is not served: its UNet is conditioned on aesthetic scores, not on the
/// base model's time ids, and it has only the 1280-wide text encoder.
fn refiner() -> IdentifyError {
    IdentifyError::Unsupported(
        "SDXL refiner (one 1280-wide text encoder, aesthetic-score conditioning): runai serves \
         SDXL base models and fine-tunes only"
            .into(),
    )
}

/// Identifies an LDM/CompVis/SGM single-file checkpoint.
pub(crate) fn identify_checkpoint(
    index: &TensorIndex,
    yaml: Option<&LdmYaml>,
) -> Result<Identity, IdentifyError> {
    let xl = index.has_prefix("conditioner.embedders.")
        || index.has_prefix(&format!("{UNET_PREFIX}label_emb."));
    if xl {
        if index.has_prefix(XL_REFINER_TEXT_PREFIX) && !index.has_prefix(XL_TEXT1_PREFIX) {
            return Err(refiner());
        }
        if !index.has_prefix(XL_TEXT1_PREFIX) || !index.has_prefix(XL_TEXT2_PREFIX) {
            return Err(IdentifyError::Unsupported(
                "SDXL weights without both text encoders (a UNet-only file?)".into(),
            ));
        }
    }
    let conv_in = index
        .shape(&format!("{UNET_PREFIX}input_blocks.0.0.weight"))
        .ok_or_else(|| {
            IdentifyError::Unsupported(
                "not a Stable Diffusion checkpoint (no model.diffusion_model weights; \
                 a LoRA, VAE or embedding file?)"
                    .into(),
            )
        })?;
    let in_channels = conv_in.get(1).copied().unwrap_or(0) as u64;
    let kind = kind_from_in_channels(in_channels)?;
    let version = if xl {
        ModelVersion::Xl
    } else if index.has_prefix(SD2_TEXT_PREFIX) {
        ModelVersion::V2
    } else if index.has_prefix(SD1_TEXT_PREFIX) {
        ModelVersion::V1
    } else {
        let context_dim = index
            .names_with_prefix(UNET_PREFIX)
            .find(|k| k.ends_with("attn2.to_k.weight"))
            .and_then(|k| index.shape(k))
            .and_then(|s| s.get(1).copied())
            .unwrap_or(0);
        version_from_context_dim(context_dim as u64)?
    };
    let prediction = if index.contains("v_pred") || yaml.is_some_and(LdmYaml::is_v_prediction) {
        Prediction::VPrediction
    } else {
        Prediction::Epsilon
    };
    Ok(Identity {
        version,
        kind,
        prediction,
    })
}

/// Reads a small JSON config; a missing file is `Ok(None)`.
pub(crate) fn read_json_config(path: &Path) -> Result<Option<Value>, IdentifyError> {
    // Named by its last two components (`unet/config.json`), never the full path.
    let shown: Vec<_> = path.iter().rev().take(2).collect();
    let shown = shown
        .iter()
        .rev()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let unreadable =
        |reason: String| IdentifyError::Unreadable(format!("cannot read {shown}: {reason}"));
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.kind().to_string())),
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(unreadable("too large for a config file".into()));
    }
    let text = std::fs::read(path).map_err(|e| unreadable(e.kind().to_string()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| unreadable(e.to_string()))
}

/// Identifies a diffusers folder from its component configs.
pub fn identify_diffusers(dir: &Path) -> Result<Identity, IdentifyError> {
    if let Some(index) = read_json_config(&dir.join("model_index.json"))? {
        let class = index
            .get("_class_name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let named = |key: &str| {
            index
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(|v| v.iter().any(|x| !x.is_null()))
        };
        if class.contains("XL") && named("text_encoder_2") && !named("text_encoder") {
            return Err(refiner());
        }
    }
    let unet = read_json_config(&dir.join("unet").join("config.json"))?.ok_or_else(|| {
        IdentifyError::Unreadable("the folder has no unet/config.json".to_string())
    })?;
    let xl = unet.get("addition_embed_type").and_then(Value::as_str) == Some("text_time");
    if xl && !dir.join("text_encoder").join("config.json").is_file() {
        return Err(refiner());
    }
    let in_channels = unet.get("in_channels").and_then(Value::as_u64).unwrap_or(4);
    let kind = kind_from_in_channels(in_channels)?;
    let text = read_json_config(&dir.join("text_encoder").join("config.json"))?;
    // SD1 uses OpenAI CLIP (quick_gelu), SD2 OpenCLIP (gelu): the text encoder decides, the
    // cross-attention width only when the text config says nothing.
    let version = match text
        .as_ref()
        .filter(|_| !xl)
        .and_then(|t| t.get("hidden_act"))
        .and_then(Value::as_str)
    {
        Some("quick_gelu") => ModelVersion::V1,
        Some("gelu") => ModelVersion::V2,
        _ if xl => ModelVersion::Xl,
        _ => {
            let dim = match unet.get("cross_attention_dim") {
                Some(Value::Array(dims)) => dims.first().and_then(Value::as_u64),
                Some(v) => v.as_u64(),
                None => None,
            };
            version_from_context_dim(dim.unwrap_or(768))?
        }
    };
    let scheduler = read_json_config(&dir.join("scheduler").join("scheduler_config.json"))?;
    let prediction = match scheduler
        .as_ref()
        .and_then(|s| s.get("prediction_type"))
        .and_then(Value::as_str)
    {
        Some("v_prediction") => Prediction::VPrediction,
        _ => Prediction::Epsilon,
    };
    Ok(Identity {
        version,
        kind,
        prediction,
    })
}
