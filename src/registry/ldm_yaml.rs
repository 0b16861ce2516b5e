//! Reads the LDM/CompVis `.yaml` that AUTOMATIC1111 places beside a checkpoint
//! (`model.safetensors` + `model.yaml`): architecture numbers and the prediction type. Only the
//! few fields runai needs are extracted; everything else is ignored. Never writes anything.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// A yaml larger than this is not an LDM config (they are a few KiB).
const MAX_YAML_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// UNet numbers from `model.params.unet_config.params`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct YamlUnet {
    pub in_channels: Option<usize>,
    pub out_channels: Option<usize>,
    pub model_channels: Option<usize>,
    pub attention_resolutions: Option<Vec<usize>>,
    pub num_res_blocks: Option<usize>,
    pub channel_mult: Option<Vec<usize>>,
    pub num_heads: Option<usize>,
    pub num_head_channels: Option<usize>,
    pub transformer_depth: Option<usize>,
    pub context_dim: Option<usize>,
    pub use_linear_in_transformer: Option<bool>,
}

/// VAE numbers from `model.params.first_stage_config.params.ddconfig`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct YamlVae {
    pub ch: Option<usize>,
    pub ch_mult: Option<Vec<usize>>,
    pub num_res_blocks: Option<usize>,
    pub z_channels: Option<usize>,
    pub in_channels: Option<usize>,
    pub out_ch: Option<usize>,
}

/// Text tower: `layer` (`last` / `penultimate`) and the fixtures' `tiny_text_tower` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct YamlText {
    pub target: Option<String>,
    pub layer: Option<String>,
    pub heads: Option<usize>,
    pub hidden_act: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LdmYaml {
    pub path: PathBuf,
    /// `model.params.parameterization`: `"v"` means v-prediction, absent or `"eps"` epsilon.
    pub parameterization: Option<String>,
    pub linear_start: Option<f64>,
    pub linear_end: Option<f64>,
    pub timesteps: Option<usize>,
    pub scale_factor: Option<f64>,
    /// Latent size (`model.params.image_size`).
    pub image_size: Option<usize>,
    pub unet: YamlUnet,
    pub vae: YamlVae,
    pub text: YamlText,
}

impl LdmYaml {
    pub fn is_v_prediction(&self) -> bool {
        self.parameterization.as_deref() == Some("v")
    }
}

/// `model.yaml` for `model.ckpt` / `model.safetensors`.
pub fn yaml_beside(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("yaml")
}

fn at<'a>(root: &'a Value, base: &[&str], key: &str) -> Option<&'a Value> {
    base.iter().chain([&key]).try_fold(root, |v, k| v.get(*k))
}

fn usize_at(root: &Value, base: &[&str], key: &str) -> Option<usize> {
    at(root, base, key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

fn f64_at(root: &Value, base: &[&str], key: &str) -> Option<f64> {
    at(root, base, key).and_then(Value::as_f64)
}

fn str_at(root: &Value, base: &[&str], key: &str) -> Option<String> {
    at(root, base, key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn bool_at(root: &Value, base: &[&str], key: &str) -> Option<bool> {
    at(root, base, key).and_then(Value::as_bool)
}

fn list_at(root: &Value, base: &[&str], key: &str) -> Option<Vec<usize>> {
    at(root, base, key)?
        .as_sequence()?
        .iter()
        .map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
        .collect()
}

/// Parses yaml text; `path` is only recorded for messages.
pub fn parse_ldm_yaml(text: &str, path: &Path) -> Result<LdmYaml, YamlError> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| YamlError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let r = &root;
    let p: &[&str] = &["model", "params"];
    let u: &[&str] = &["model", "params", "unet_config", "params"];
    let dd: &[&str] = &[
        "model",
        "params",
        "first_stage_config",
        "params",
        "ddconfig",
    ];
    let cs: &[&str] = &["model", "params", "cond_stage_config"];
    let csp: &[&str] = &["model", "params", "cond_stage_config", "params"];
    let tiny: &[&str] = &[
        "model",
        "params",
        "cond_stage_config",
        "params",
        "tiny_text_tower",
    ];
    Ok(LdmYaml {
        path: path.to_path_buf(),
        parameterization: str_at(r, p, "parameterization"),
        linear_start: f64_at(r, p, "linear_start"),
        linear_end: f64_at(r, p, "linear_end"),
        timesteps: usize_at(r, p, "timesteps"),
        scale_factor: f64_at(r, p, "scale_factor"),
        image_size: usize_at(r, p, "image_size"),
        unet: YamlUnet {
            in_channels: usize_at(r, u, "in_channels"),
            out_channels: usize_at(r, u, "out_channels"),
            model_channels: usize_at(r, u, "model_channels"),
            attention_resolutions: list_at(r, u, "attention_resolutions"),
            num_res_blocks: usize_at(r, u, "num_res_blocks"),
            channel_mult: list_at(r, u, "channel_mult"),
            num_heads: usize_at(r, u, "num_heads"),
            num_head_channels: usize_at(r, u, "num_head_channels"),
            transformer_depth: usize_at(r, u, "transformer_depth"),
            context_dim: usize_at(r, u, "context_dim"),
            use_linear_in_transformer: bool_at(r, u, "use_linear_in_transformer"),
        },
        vae: YamlVae {
            ch: usize_at(r, dd, "ch"),
            ch_mult: list_at(r, dd, "ch_mult"),
            num_res_blocks: usize_at(r, dd, "num_res_blocks"),
            z_channels: usize_at(r, dd, "z_channels"),
            in_channels: usize_at(r, dd, "in_channels"),
            out_ch: usize_at(r, dd, "out_ch"),
        },
        text: YamlText {
            target: str_at(r, cs, "target"),
            layer: str_at(r, csp, "layer"),
            heads: usize_at(r, tiny, "heads"),
            hidden_act: str_at(r, tiny, "hidden_act"),
        },
    })
}

/// Reads the yaml beside `checkpoint` if there is one.
pub fn read_yaml_beside(checkpoint: &Path) -> Result<Option<LdmYaml>, YamlError> {
    let path = yaml_beside(checkpoint);
    let read_err = |reason: String| YamlError::Read {
        path: path.display().to_string(),
        reason,
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e.to_string())),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_YAML_BYTES {
        return Err(read_err(format!(
            "{} bytes is too large for a model config",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| read_err(e.to_string()))?;
    parse_ldm_yaml(&text, &path).map(Some)
}
