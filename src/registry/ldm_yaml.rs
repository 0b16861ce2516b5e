//! Reads the LDM/CompVis `.yaml` that AUTOMATIC1111 places beside a checkpoint
//! (`model.safetensors` + `model.yaml`): architecture numbers and the prediction type. SDXL's
//! SGM configs are read too (`network_config` for the UNet, the denoiser's scaling for the
//! prediction type, per-embedder text towers). Only the few fields runai needs are extracted;
//! everything else is ignored. Never writes anything.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// A yaml larger than this is not an LDM config (they are a few KiB).
const MAX_YAML_BYTES: u64 = 1024 * 1024;

/// Errors name the yaml by its file name only and never quote its contents.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("cannot read {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("invalid {file}: {field} must be {range}")]
    Invalid {
        file: String,
        field: &'static str,
        range: String,
    },
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "yaml".to_string())
}

/// UNet numbers from `model.params.unet_config.params` (SGM: `network_config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct YamlUnet {
    pub(crate) in_channels: Option<usize>,
    pub(crate) out_channels: Option<usize>,
    pub(crate) model_channels: Option<usize>,
    pub(crate) attention_resolutions: Option<Vec<usize>>,
    pub(crate) num_res_blocks: Option<usize>,
    pub(crate) channel_mult: Option<Vec<usize>>,
    pub(crate) num_heads: Option<usize>,
    pub(crate) num_head_channels: Option<usize>,
    pub(crate) transformer_depth: Option<usize>,
    pub(crate) context_dim: Option<usize>,
    pub(crate) use_linear_in_transformer: Option<bool>,
}

/// VAE numbers from `model.params.first_stage_config.params.ddconfig`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct YamlVae {
    pub(crate) ch: Option<usize>,
    pub(crate) ch_mult: Option<Vec<usize>>,
    pub(crate) num_res_blocks: Option<usize>,
    pub(crate) z_channels: Option<usize>,
    pub(crate) in_channels: Option<usize>,
    pub(crate) out_ch: Option<usize>,
}

/// Text tower: `layer` (`last` / `penultimate`) and the fixtures' `tiny_text_tower` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct YamlText {
    pub(crate) target: Option<String>,
    pub(crate) layer: Option<String>,
    pub(crate) heads: Option<usize>,
    pub(crate) hidden_act: Option<String>,
    /// SGM (SDXL): attention heads of each `conditioner_config` embedder's text tower.
    pub(crate) embedder_heads: Vec<Option<usize>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LdmYaml {
    pub(crate) path: PathBuf,
    /// `model.params.parameterization`: `"v"` means v-prediction, absent or `"eps"` epsilon.
    pub(crate) parameterization: Option<String>,
    pub(crate) linear_start: Option<f64>,
    pub(crate) linear_end: Option<f64>,
    pub(crate) timesteps: Option<usize>,
    pub(crate) scale_factor: Option<f64>,
    /// Latent size (`model.params.image_size`).
    pub(crate) image_size: Option<usize>,
    pub(crate) unet: YamlUnet,
    pub(crate) vae: YamlVae,
    pub(crate) text: YamlText,
    /// SGM: `denoiser_config.params.scaling_config.target` (`...EpsScaling` / `...VScaling`).
    pub(crate) denoiser_scaling: Option<String>,
}

impl LdmYaml {
    pub(crate) fn is_v_prediction(&self) -> bool {
        self.parameterization.as_deref() == Some("v")
            || self
                .denoiser_scaling
                .as_deref()
                .is_some_and(|t| t.ends_with(".VScaling"))
    }
}

/// `model.yaml` for `model.ckpt` / `model.safetensors`.
pub(crate) fn yaml_beside(checkpoint: &Path) -> PathBuf {
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

/// SGM: the text-tower heads of each `conditioner_config.params.emb_models[i]` (from the
/// `tiny_text_tower` settings the test fixtures carry; real SDXL configs have none).
fn embedder_heads(root: &Value) -> Vec<Option<usize>> {
    let models = at(
        root,
        &["model", "params", "conditioner_config", "params"],
        "emb_models",
    )
    .and_then(Value::as_sequence);
    models.map_or_else(Vec::new, |list| {
        list.iter()
            .take(8)
            .map(|m| usize_at(m, &["params", "tiny_text_tower"], "num_attention_heads"))
            .collect()
    })
}

/// Parses yaml text; `path` is only recorded for messages.
pub(crate) fn parse_ldm_yaml(text: &str, path: &Path) -> Result<LdmYaml, YamlError> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| YamlError::Read {
        file: file_name(path),
        reason: match e.location() {
            Some(at) => format!("not valid YAML (line {})", at.line()),
            None => "not valid YAML".to_string(),
        },
    })?;
    let r = &root;
    let p: &[&str] = &["model", "params"];
    let u: &[&str] = if at(r, &["model", "params"], "network_config").is_some() {
        &["model", "params", "network_config", "params"]
    } else {
        &["model", "params", "unet_config", "params"]
    };
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
    let yaml = LdmYaml {
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
            embedder_heads: embedder_heads(r),
        },
        denoiser_scaling: str_at(
            r,
            &[
                "model",
                "params",
                "denoiser_config",
                "params",
                "scaling_config",
            ],
            "target",
        ),
    };
    check_numbers(&yaml)?;
    Ok(yaml)
}

/// Refuses numbers no Stable Diffusion model has (zero timesteps or heads, inverted beta
/// schedules, ...): they would only fail later, deep in the pipeline, as an internal error.
fn check_numbers(y: &LdmYaml) -> Result<(), YamlError> {
    let invalid = |field, range| YamlError::Invalid {
        file: file_name(&y.path),
        field,
        range,
    };
    let count = |v: Option<usize>, max: usize| v.map_or(true, |v| (1..=max).contains(&v));
    let list = |v: &Option<Vec<usize>>, max: usize| {
        v.as_ref().map_or(true, |l| {
            (1..=8).contains(&l.len()) && l.iter().all(|&x| (1..=max).contains(&x))
        })
    };
    let small: [(&'static str, Option<usize>, usize); 16] = [
        ("timesteps", y.timesteps, 100_000),
        ("image_size", y.image_size, 1024),
        ("unet in_channels", y.unet.in_channels, 64),
        ("unet out_channels", y.unet.out_channels, 64),
        ("unet model_channels", y.unet.model_channels, 8192),
        ("unet num_res_blocks", y.unet.num_res_blocks, 16),
        ("unet num_heads", y.unet.num_heads, 1024),
        ("unet num_head_channels", y.unet.num_head_channels, 8192),
        ("unet transformer_depth", y.unet.transformer_depth, 64),
        ("unet context_dim", y.unet.context_dim, 8192),
        ("vae ch", y.vae.ch, 8192),
        ("vae num_res_blocks", y.vae.num_res_blocks, 16),
        ("vae z_channels", y.vae.z_channels, 64),
        ("vae in_channels", y.vae.in_channels, 64),
        ("vae out_ch", y.vae.out_ch, 64),
        ("text heads", y.text.heads, 1024),
    ];
    if !y.text.embedder_heads.iter().all(|&h| count(h, 1024)) {
        return Err(invalid("text heads", "1..=1024".into()));
    }
    for (field, value, max) in small {
        if !count(value, max) {
            return Err(invalid(field, format!("1..={max}")));
        }
    }
    let lists = [
        ("unet channel_mult", &y.unet.channel_mult, 64),
        (
            "unet attention_resolutions",
            &y.unet.attention_resolutions,
            1024,
        ),
        ("vae ch_mult", &y.vae.ch_mult, 64),
    ];
    for (field, value, max) in lists {
        if !list(value, max) {
            return Err(invalid(field, "a list of 1 to 8 positive numbers".into()));
        }
    }
    let unit = |v: Option<f64>| v.map_or(true, |v| v.is_finite() && v > 0.0 && v < 1.0);
    if !unit(y.linear_start) || !unit(y.linear_end) {
        return Err(invalid(
            "linear_start and linear_end",
            "between 0 and 1".into(),
        ));
    }
    if let (Some(a), Some(b)) = (y.linear_start, y.linear_end) {
        if a >= b {
            return Err(invalid("linear_start", "smaller than linear_end".into()));
        }
    }
    if !y
        .scale_factor
        .map_or(true, |v| v.is_finite() && v > 0.0 && v <= 100.0)
    {
        return Err(invalid(
            "scale_factor",
            "a positive number up to 100".into(),
        ));
    }
    Ok(())
}

/// Reads the yaml beside `checkpoint` if there is one.
pub(crate) fn read_yaml_beside(checkpoint: &Path) -> Result<Option<LdmYaml>, YamlError> {
    let path = yaml_beside(checkpoint);
    let read_err = |reason: String| YamlError::Read {
        file: file_name(&path),
        reason,
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e.kind().to_string())),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_YAML_BYTES {
        return Err(read_err("too large for a model config".to_string()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| read_err(e.kind().to_string()))?;
    parse_ldm_yaml(&text, &path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "model:\n  params:\n    timesteps: 1000\n    linear_start: 0.00085\n    \
                        linear_end: 0.012\n    unet_config:\n      params:\n        num_heads: 8\n";

    fn parse(text: &str) -> Result<LdmYaml, YamlError> {
        parse_ldm_yaml(text, Path::new("/models/secret-dir/m.yaml"))
    }

    #[test]
    fn sane_numbers_pass_and_nonsense_is_invalid() {
        let y = parse(BASE).unwrap();
        assert_eq!(y.timesteps, Some(1000));
        for (from, to, field) in [
            ("timesteps: 1000", "timesteps: 0", "timesteps"),
            ("num_heads: 8", "num_heads: 0", "num_heads"),
            ("linear_end: 0.012", "linear_end: 0.0001", "linear_start"),
            (
                "linear_start: 0.00085",
                "linear_start: .nan",
                "linear_start",
            ),
        ] {
            let err = parse(&BASE.replace(from, to)).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, YamlError::Invalid { .. }), "{text}");
            assert!(
                text.contains(field) && text.starts_with("invalid m.yaml"),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_name_the_file_only_and_quote_nothing() {
        let err = parse("model: [SECRET\n").unwrap_err().to_string();
        assert!(
            err.contains("m.yaml") && err.contains("not valid YAML"),
            "{err}"
        );
        assert!(
            !err.contains("SECRET") && !err.contains("secret-dir"),
            "{err}"
        );
    }
}
