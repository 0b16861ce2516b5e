//! Diffusion schedulers, reproducing diffusers 0.42 numerics (fractional sigma-space
//! timesteps, epsilon and v-prediction, leading/linspace/trailing spacing, the latter
//! selectable per request through [`with_spacing`]; LCM for few-step models).
//! Plain candle tensor math; no model code here, and never a panic on a bad config.
//!
//! [`build`] is `Class.from_config(model_config)` + `set_timesteps(steps)`: each class
//! reads the keys it has (with its own defaults) and ignores the rest. Scalar coefficients
//! follow diffusers' dtypes: float32 where diffusers uses torch scalars, float64 where it
//! uses numpy (timestep spacing, `np.interp`, Karras ramp, LMS integrals).
//!
//! Options that diffusers supports but we reject with [`SchedulerError::Unsupported`]
//! (never silently approximated): thresholding, learned DDPM variances, DPM-Solver
//! algorithms other than dpmsolver++ and orders above 2, UniPC with predict_x0 false,
//! exponential/beta/flow sigmas, dynamic shifting, Euler log_linear interpolation and
//! continuous timesteps. Deliberate deviation: trailing spacing never yields more than
//! `steps` timesteps (numpy's arange overshoots for a few counts, e.g. 61, and diffusers
//! then emits a timestep of -1).

use candle_core::{Result, Tensor};

use super::noise::NoiseSource;
use super::params::SchedulerKind;

mod alphas;
mod bookkeeping;
mod common;
pub(crate) mod config;
pub(crate) mod ddim;
pub(crate) mod ddpm;
pub(crate) mod dpm_solver;
pub(crate) mod euler;
pub(crate) mod euler_ancestral;
pub(crate) mod heun;
pub(crate) mod lcm;
pub(crate) mod lms;
mod multistep;
pub(crate) mod pndm;
mod quadrature;
mod sigmas;
pub(crate) mod unipc;

pub use config::SchedulerConfig;

/// Why a scheduler could not be set up from a model's config and the request.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid scheduler config: {0}")]
    InvalidConfig(String),
    #[error("unsupported scheduler option {key} = {value}")]
    Unsupported { key: &'static str, value: String },
    #[error("num_inference_steps must be between 1 and {max}, got {steps}")]
    InvalidSteps { steps: usize, max: usize },
}

impl SchedulerError {
    pub(crate) fn unsupported(key: &'static str, value: &str) -> Self {
        SchedulerError::Unsupported {
            key,
            value: value.to_string(),
        }
    }
}

pub(crate) fn check_steps(
    steps: usize,
    num_train_timesteps: usize,
) -> std::result::Result<(), SchedulerError> {
    if steps == 0 || steps > num_train_timesteps {
        return Err(SchedulerError::InvalidSteps {
            steps,
            max: num_train_timesteps,
        });
    }
    Ok(())
}

/// Rejects schedules that would index outside the training range (e.g. a large
/// steps_offset), which diffusers would only notice mid-run.
pub(crate) fn check_train_range(
    timesteps: &[f64],
    num_train_timesteps: usize,
) -> std::result::Result<(), SchedulerError> {
    if timesteps
        .iter()
        .any(|t| *t < 0.0 || *t >= num_train_timesteps as f64)
    {
        return Err(SchedulerError::InvalidConfig(format!(
            "timesteps {timesteps:?} fall outside 0..{num_train_timesteps} (check steps_offset)"
        )));
    }
    Ok(())
}

/// Builds a scheduler like diffusers' `Class.from_config(model_config)` followed by
/// `set_timesteps(num_inference_steps)`: keys the class accepts come from the model's
/// config, the rest take the class defaults. `eta` is only read by DDIM.
pub fn build(
    kind: SchedulerKind,
    model_scheduler_config: &serde_json::Value,
    num_inference_steps: usize,
    eta: f64,
) -> std::result::Result<Box<dyn Scheduler>, SchedulerError> {
    let cfg = SchedulerConfig::from_value(model_scheduler_config)?;
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(&cfg, num_inference_steps, eta)?),
        SchedulerKind::Euler => Box::new(euler::Euler::new(&cfg, num_inference_steps)?),
        SchedulerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(
            &cfg,
            num_inference_steps,
        )?),
        SchedulerKind::Pndm => Box::new(pndm::Pndm::new(&cfg, num_inference_steps)?),
        SchedulerKind::Lms => Box::new(lms::Lms::new(&cfg, num_inference_steps)?),
        SchedulerKind::Heun => Box::new(heun::Heun::new(&cfg, num_inference_steps)?),
        SchedulerKind::DpmPp2m => Box::new(dpm_solver::DpmSolverMultistep::new(
            &cfg,
            num_inference_steps,
            false,
        )?),
        SchedulerKind::DpmPp2mKarras => Box::new(dpm_solver::DpmSolverMultistep::new(
            &cfg,
            num_inference_steps,
            true,
        )?),
        SchedulerKind::UniPc => Box::new(unipc::UniPc::new(&cfg, num_inference_steps)?),
        SchedulerKind::Ddpm => Box::new(ddpm::Ddpm::new(&cfg, num_inference_steps)?),
        SchedulerKind::Lcm => Box::new(lcm::Lcm::new(&cfg, num_inference_steps)?),
    })
}

/// The model's scheduler config with a request's `timestep_spacing` (e.g. `trailing` for
/// SDXL Turbo/Lightning), or unchanged without one.
pub fn with_spacing(
    model_scheduler_config: &serde_json::Value,
    spacing: Option<config::Spacing>,
) -> std::borrow::Cow<'_, serde_json::Value> {
    match spacing {
        None => std::borrow::Cow::Borrowed(model_scheduler_config),
        Some(s) => {
            let mut cfg = model_scheduler_config.clone();
            if let Some(obj) = cfg.as_object_mut() {
                obj.insert("timestep_spacing".into(), s.config_name().into());
            }
            std::borrow::Cow::Owned(cfg)
        }
    }
}

/// The contract the denoising loop drives, mirroring diffusers' scheduler API:
///
/// ```text
/// set up with num_inference_steps  ->  timesteps()
/// img2img: skip the first t_start*order() timesteps, set_begin_index(t_start*order())
///          latents = add_noise(init_latents, noise, timesteps()[begin])
/// txt2img: latents = noise * init_noise_sigma()
/// for (i, t) in timesteps()[begin..]:
///     x = scale_model_input(latents, t)        // per UNet call
///     out = unet(x, t); guidance
///     latents = step(out, t, latents, noise)
/// ```
/// A second-order scheduler (Heun) lists each inner timestep twice, as diffusers does; the
/// loop calls the UNet once per listed timestep.
pub trait Scheduler: Send {
    /// Timesteps the UNet is called with (floats; some schedulers use fractional values).
    fn timesteps(&self) -> &[f64];
    /// Scale applied to the initial noise in txt2img.
    fn init_noise_sigma(&self) -> f64;
    /// 2 for Heun, else 1 (used when slicing timesteps for img2img).
    fn order(&self) -> usize;
    /// Start the schedule at this index into `timesteps()` (img2img/inpaint strength).
    fn set_begin_index(&mut self, index: usize);
    /// Input scaling before the UNet call (sigma-space schedulers divide by sqrt(sigma^2+1)).
    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor>;
    /// One denoising step: returns the previous (less noisy) sample. Ancestral/stochastic
    /// schedulers draw their noise from `noise`.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;
    /// Forward diffusion to `timestep` (img2img start latents, inpaint latent blending).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// diffusers' trailing formula, `round(arange(1000, 0, -1000 / n)) - 1`, worked out by
    /// hand for 4 steps: a request's spacing replaces the model's `leading`.
    #[test]
    fn a_request_spacing_overrides_the_model_config() {
        let sdxl = json!({
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "steps_offset": 1, "timestep_spacing": "leading", "num_train_timesteps": 1000,
        });
        let leading = build(SchedulerKind::Euler, &with_spacing(&sdxl, None), 4, 0.0).unwrap();
        assert_eq!(leading.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
        let spaced = with_spacing(&sdxl, config::Spacing::from_name("sgm_uniform"));
        for kind in [
            SchedulerKind::Euler,
            SchedulerKind::Ddim,
            SchedulerKind::DpmPp2m,
        ] {
            let s = build(kind, &spaced, 4, 0.0).unwrap();
            assert_eq!(s.timesteps(), &[999.0, 749.0, 499.0, 249.0], "{kind:?}");
        }
        // LCM keeps its own distillation schedule whatever the spacing.
        let lcm = build(SchedulerKind::Lcm, &spaced, 4, 0.0).unwrap();
        assert_eq!(lcm.timesteps(), &[999.0, 759.0, 499.0, 259.0]);
    }
}
