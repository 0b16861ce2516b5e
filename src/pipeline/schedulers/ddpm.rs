//! DDPM (diffusers `DDPMScheduler`, fixed variances): the ancestral posterior step, with
//! its noise drawn from the NoiseSource at every timestep above 0. Float32 coefficients as
//! diffusers' torch scalars.

use candle_core::{Error, Result, Tensor};

use super::common::{at, integer_timesteps, mul, train_index};
use super::config::{ClassDefaults, Common, SchedulerConfig, Spacing, ZeroSnr};
use super::ddim::{add_noise_alphas, x0_and_eps};
use super::{NoiseSource, Scheduler, SchedulerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variance {
    /// "fixed_small"
    Small,
    /// "fixed_small_log"
    SmallLog,
    /// "fixed_large"
    Large,
}

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults =
    ClassDefaults::new(Spacing::Leading, ZeroSnr::Rescale).with_thresholding();

pub struct Ddpm {
    c: Common,
    clip_sample: Option<f32>,
    variance: Variance,
    timesteps: Vec<f64>,
}

/// The step coefficients of one DDPM transition t -> prev_t (all float32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpmCoefficients {
    pub alpha_prod_t: f32,
    pub alpha_prod_t_prev: f32,
    /// Multiplies the predicted x0.
    pub pred_original_sample_coeff: f32,
    /// Multiplies the current sample.
    pub current_sample_coeff: f32,
    /// Standard deviation of the added noise (0 at t = 0).
    pub noise_std: f32,
}

impl Ddpm {
    pub fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        let variance = match cfg.variance_type.as_deref() {
            None | Some("fixed_small") => Variance::Small,
            Some("fixed_small_log") => Variance::SmallLog,
            Some("fixed_large") => Variance::Large,
            Some(other) => return Err(SchedulerError::unsupported("variance_type", other)),
        };
        let clip_sample = if cfg.clip_sample.unwrap_or(true) {
            Some(cfg.clip_sample_range.unwrap_or(1.0) as f32)
        } else {
            None
        };
        let timesteps = integer_timesteps(&c, num_inference_steps);
        super::check_train_range(&timesteps, c.num_train_timesteps)?;
        Ok(Ddpm {
            c,
            clip_sample,
            variance,
            timesteps,
        })
    }

    /// The coefficients `step` uses at `timestep` (exposed for tests and diagnostics).
    pub fn coefficients(&self, timestep: f64) -> Result<DdpmCoefficients> {
        let t = train_index(timestep, self.c.num_train_timesteps)?;
        let pos = self
            .timesteps
            .iter()
            .position(|x| *x == timestep)
            .ok_or_else(|| Error::Msg(format!("timestep {timestep} is not in the schedule")))?;
        let ac = &self.c.alphas_cumprod;
        let alpha_prod_t = at(ac, t, "alphas_cumprod")?;
        let alpha_prod_t_prev = match self.timesteps.get(pos + 1) {
            Some(prev) => at(ac, train_index(*prev, ac.len())?, "alphas_cumprod")?,
            None => 1.0,
        };
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let beta_prod_t_prev = 1.0f32 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0f32 - current_alpha_t;
        let variance =
            ((1.0f32 - alpha_prod_t_prev) / (1.0f32 - alpha_prod_t) * current_beta_t).max(1e-20);
        let noise_std = if t == 0 {
            0.0
        } else {
            match self.variance {
                Variance::Small => variance.sqrt(),
                Variance::SmallLog => (0.5f32 * variance.ln()).exp(),
                Variance::Large => current_beta_t.sqrt(),
            }
        };
        Ok(DdpmCoefficients {
            alpha_prod_t,
            alpha_prod_t_prev,
            pred_original_sample_coeff: (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t,
            current_sample_coeff: current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t,
            noise_std,
        })
    }
}

impl Scheduler for Ddpm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn order(&self) -> usize {
        1
    }

    fn set_begin_index(&mut self, _index: usize) {}

    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let k = self.coefficients(timestep)?;
        let (mut x0, _) = x0_and_eps(self.c.prediction_type, model_output, sample, k.alpha_prod_t)?;
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        let prev =
            (mul(&x0, k.pred_original_sample_coeff)? + mul(sample, k.current_sample_coeff)?)?;
        if timestep > 0.0 {
            let z = noise
                .randn(model_output.dims(), model_output.device())?
                .to_dtype(model_output.dtype())?;
            return prev + mul(&z, k.noise_std)?;
        }
        Ok(prev)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise_alphas(&self.c.alphas_cumprod, original, noise, timestep)
    }
}
