//! DDIM (diffusers `DDIMScheduler`): deterministic for eta = 0, stochastic (noise from the
//! NoiseSource) for eta > 0. Coefficients are float32 like diffusers' torch scalars.
//! Never draws noise when eta is 0.

use candle_core::{Result, Tensor};

use super::alphas::{final_alpha_cumprod, predict_x0_eps, AlphaSchedule, Transition};
use super::bookkeeping::impl_scheduler;
use super::common::{integer_timesteps, mul, randn_like};
use super::config::{
    clip_range, ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr,
};
use super::{NoiseSource, SchedulerError};

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults =
    ClassDefaults::new(Spacing::Leading, ZeroSnr::Rescale).with_thresholding();

pub(crate) struct Ddim {
    prediction: PredictionType,
    a: AlphaSchedule,
    clip_sample: Option<f32>,
    eta: f32,
}

impl Ddim {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
        eta: f64,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        if !eta.is_finite() || eta < 0.0 {
            return Err(SchedulerError::InvalidConfig(format!(
                "eta must be finite and >= 0, got {eta}"
            )));
        }
        let final_alpha_cumprod = final_alpha_cumprod(cfg, &c, true);
        let timesteps = integer_timesteps(&c, num_inference_steps);
        let a = AlphaSchedule::new(&c, timesteps, final_alpha_cumprod, num_inference_steps)?;
        Ok(Ddim {
            prediction: c.prediction_type,
            a,
            clip_sample: clip_range(cfg, true),
            eta: eta as f32,
        })
    }

    fn update(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let t = self.a.train_index(timestep)? as i64;
        let Transition {
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t,
            beta_prod_t_prev,
        } = self.a.transition(t, t - self.a.step_ratio as i64)?;

        let (mut x0, eps) = predict_x0_eps(self.prediction, model_output, sample, alpha_prod_t)?;
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        let variance =
            (beta_prod_t_prev / beta_prod_t) * (1.0f32 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = self.eta * variance.sqrt();
        let direction = mul(
            &eps,
            (1.0f32 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt(),
        )?;
        let prev_sample = (mul(&x0, alpha_prod_t_prev.sqrt())? + direction)?;
        if self.eta > 0.0 {
            let z = randn_like(noise, model_output)?;
            return prev_sample + mul(&z, std_dev_t)?;
        }
        Ok(prev_sample)
    }
}

impl_scheduler!(Ddim, a, order = 1, stochastic);
