//! A diffusers `scheduler_config.json`, read leniently: every key optional, unknown keys
//! ignored, so one model config can seed any scheduler class the way diffusers'
//! `from_config` does. Each scheduler resolves the keys it accepts against its own class
//! defaults; this file never guesses a default on a scheduler's behalf.

use serde::Deserialize;

use super::SchedulerError;

/// The union of the config keys our scheduler classes accept. `None` = absent (or JSON
/// `null`): the target class's default applies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub skip_prk_steps: Option<bool>,
    pub interpolation_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub thresholding: Option<bool>,
    pub variance_type: Option<String>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
    pub use_dynamic_shifting: Option<bool>,
    /// LCM: the distillation schedule's length and the boundary-condition time scale.
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
    /// Python writes the default as `-Infinity` (not JSON); any finite value is unsupported.
    pub lambda_min_clipped: Option<f64>,
}

impl SchedulerConfig {
    /// Reads a diffusers scheduler config; a key of the wrong JSON type is an error.
    pub(crate) fn from_value(value: &serde_json::Value) -> Result<Self, SchedulerError> {
        if !value.is_object() {
            return Err(SchedulerError::InvalidConfig(
                "scheduler config is not a JSON object".into(),
            ));
        }
        serde_json::from_value(value.clone())
            .map_err(|e| SchedulerError::InvalidConfig(e.to_string()))
    }
}

/// `clip_sample` / `clip_sample_range` as the clamp bound of the predicted x0 (None: no
/// clamp); `default` is the class's `clip_sample` default.
pub(crate) fn clip_range(cfg: &SchedulerConfig, default: bool) -> Option<f32> {
    if cfg.clip_sample.unwrap_or(default) {
        Some(cfg.clip_sample_range.unwrap_or(1.0) as f32)
    } else {
        None
    }
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl PredictionType {
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, SchedulerError> {
        match value.unwrap_or("epsilon") {
            "epsilon" => Ok(Self::Epsilon),
            "v_prediction" => Ok(Self::VPrediction),
            "sample" => Ok(Self::Sample),
            other => Err(SchedulerError::unsupported("prediction_type", other)),
        }
    }
}

/// How inference timesteps are picked from the training range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

impl Spacing {
    /// A request's spacing name: diffusers' three, and `sgm_uniform` (ComfyUI's name for the
    /// schedule SDXL Turbo/Lightning use), which is diffusers' `trailing`.
    pub fn from_name(name: &str) -> Option<Spacing> {
        match name.trim().to_ascii_lowercase().as_str() {
            "leading" => Some(Self::Leading),
            "linspace" => Some(Self::Linspace),
            "trailing" | "sgm_uniform" => Some(Self::Trailing),
            _ => None,
        }
    }

    /// The `timestep_spacing` value of a diffusers scheduler config.
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Leading => "leading",
            Self::Linspace => "linspace",
            Self::Trailing => "trailing",
        }
    }

    pub(crate) fn parse(value: Option<&str>, default: Spacing) -> Result<Self, SchedulerError> {
        match value {
            None => Ok(default),
            Some("leading") => Ok(Self::Leading),
            Some("linspace") => Ok(Self::Linspace),
            Some("trailing") => Ok(Self::Trailing),
            Some(other) => Err(SchedulerError::unsupported("timestep_spacing", other)),
        }
    }
}

/// Keys every scheduler class shares, resolved with that class's defaults.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub num_train_timesteps: usize,
    pub prediction_type: PredictionType,
    pub spacing: Spacing,
    pub steps_offset: usize,
    /// Float32 cumulative products of (1 - beta), as torch computes them.
    pub alphas_cumprod: Vec<f32>,
}

/// Far above any real model (1000); bounds the per-timestep tables a config can make us
/// allocate.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// Whether a class accepts `rescale_betas_zero_snr`, and how it then keeps sigmas finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZeroSnr {
    /// The class has no such key; from_config drops it.
    Ignored,
    /// Rescale the betas; alphas_cumprod ends at exactly 0.
    Rescale,
    /// Rescale, then set the last alphas_cumprod to 2^-24 so the first sigma is finite.
    RescaleClampLast,
}

/// Per-class defaults of the shared keys (they differ between diffusers classes).
pub(crate) struct ClassDefaults {
    pub beta_start: f64,
    pub beta_end: f64,
    pub spacing: Spacing,
    pub zero_snr: ZeroSnr,
    /// The class has a `thresholding` key (we support only its default, false).
    pub thresholding: bool,
}

impl ClassDefaults {
    /// Linear betas from 0.0001 to 0.02 and no `thresholding` key (most classes).
    pub(crate) const fn new(spacing: Spacing, zero_snr: ZeroSnr) -> Self {
        ClassDefaults {
            beta_start: 0.0001,
            beta_end: 0.02,
            spacing,
            zero_snr,
            thresholding: false,
        }
    }

    /// The class has a `thresholding` key.
    pub(crate) const fn with_thresholding(self) -> Self {
        ClassDefaults {
            thresholding: true,
            ..self
        }
    }

    /// The class defaults to other `beta_start` / `beta_end` values.
    pub(crate) const fn with_betas(self, beta_start: f64, beta_end: f64) -> Self {
        ClassDefaults {
            beta_start,
            beta_end,
            ..self
        }
    }
}

impl Common {
    /// [`Common::resolve`], then checks `num_inference_steps` against the training range.
    pub(crate) fn for_steps(
        cfg: &SchedulerConfig,
        defaults: &ClassDefaults,
        num_inference_steps: usize,
    ) -> Result<Self, SchedulerError> {
        let c = Common::resolve(cfg, defaults)?;
        super::check_steps(num_inference_steps, c.num_train_timesteps)?;
        Ok(c)
    }

    pub(crate) fn resolve(
        cfg: &SchedulerConfig,
        defaults: &ClassDefaults,
    ) -> Result<Self, SchedulerError> {
        let num_train_timesteps = cfg.num_train_timesteps.unwrap_or(1000);
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&num_train_timesteps) {
            return Err(SchedulerError::InvalidConfig(format!(
                "num_train_timesteps must be in 2..={MAX_TRAIN_TIMESTEPS}, got {num_train_timesteps}"
            )));
        }
        if defaults.thresholding && cfg.thresholding == Some(true) {
            return Err(SchedulerError::unsupported("thresholding", "true"));
        }
        let mut betas = super::common::betas(
            cfg,
            num_train_timesteps,
            defaults.beta_start,
            defaults.beta_end,
        )?;
        let rescale =
            defaults.zero_snr != ZeroSnr::Ignored && cfg.rescale_betas_zero_snr == Some(true);
        if rescale {
            betas = super::common::rescale_zero_terminal_snr(&betas);
        }
        let mut alphas_cumprod = super::common::cumprod_alphas(&betas);
        if rescale && defaults.zero_snr == ZeroSnr::RescaleClampLast {
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Ok(Common {
            num_train_timesteps,
            prediction_type: PredictionType::parse(cfg.prediction_type.as_deref())?,
            spacing: Spacing::parse(cfg.timestep_spacing.as_deref(), defaults.spacing)?,
            steps_offset: cfg.steps_offset.unwrap_or(0),
            alphas_cumprod,
        })
    }
}
