//! DDPM (diffusers `DDPMScheduler`, fixed variances): the ancestral posterior step, with
//! its noise drawn from the NoiseSource at every timestep above 0. Float32 coefficients as
//! diffusers' torch scalars.

use candle_core::{Error, Result, Tensor};

use super::alphas::{predict_x0_eps, AlphaSchedule, Transition};
use super::bookkeeping::impl_scheduler;
use super::common::{integer_timesteps, mul, randn_like};
use super::config::{
    clip_range, ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr,
};
use super::{NoiseSource, SchedulerError};

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

pub(crate) struct Ddpm {
    prediction: PredictionType,
    a: AlphaSchedule,
    clip_sample: Option<f32>,
    variance: Variance,
}

/// The step coefficients of one DDPM transition t -> prev_t (all float32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DdpmCoefficients {
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
    pub(crate) fn new(
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
        let timesteps = integer_timesteps(&c, num_inference_steps);
        // The last step lands on alpha_prod 1 (diffusers' `self.one`).
        let a = AlphaSchedule::new(&c, timesteps, 1.0, num_inference_steps)?;
        Ok(Ddpm {
            prediction: c.prediction_type,
            a,
            clip_sample: clip_range(cfg, true),
            variance,
        })
    }

    /// The coefficients `step` uses at `timestep` (exposed for tests and diagnostics).
    pub(crate) fn coefficients(&self, timestep: f64) -> Result<DdpmCoefficients> {
        let t = self.a.train_index(timestep)?;
        let pos = self
            .a
            .timesteps
            .iter()
            .position(|x| *x == timestep)
            .ok_or_else(|| Error::Msg(format!("timestep {timestep} is not in the schedule")))?;
        // diffusers' previous_timestep: the next listed timestep, -1 after the last.
        let prev_t = match self.a.timesteps.get(pos + 1) {
            Some(prev) => self.a.train_index(*prev)? as i64,
            None => -1,
        };
        let Transition {
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t,
            beta_prod_t_prev,
        } = self.a.transition(t as i64, prev_t)?;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0f32 - current_alpha_t;
        let variance = (beta_prod_t_prev / beta_prod_t * current_beta_t).max(1e-20);
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

    fn update(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let k = self.coefficients(timestep)?;
        let (mut x0, _) = predict_x0_eps(self.prediction, model_output, sample, k.alpha_prod_t)?;
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        let prev =
            (mul(&x0, k.pred_original_sample_coeff)? + mul(sample, k.current_sample_coeff)?)?;
        if timestep > 0.0 {
            let z = randn_like(noise, model_output)?;
            return prev + mul(&z, k.noise_std)?;
        }
        Ok(prev)
    }
}

impl_scheduler!(Ddpm, a, order = 1, stochastic);
