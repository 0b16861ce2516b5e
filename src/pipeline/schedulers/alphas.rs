//! The alphas_cumprod-space schedule shared by DDIM, DDPM and PNDM: integer timesteps,
//! alphas_cumprod lookups for a transition t -> prev_t (with the class's final value below
//! timestep 0), the prediction-type conversions to x0 / epsilon, and the bookkeeping
//! answers (unscaled input, forward diffusion). Float32 like diffusers' torch scalars.
//! Holds no per-run state; never computes an update step.

use candle_core::{Result, Tensor};

use super::bookkeeping::Bookkeeping;
use super::common::{at, div, mul, train_index};
use super::config::{Common, PredictionType, SchedulerConfig};
use super::SchedulerError;

#[derive(Debug, Clone)]
pub(crate) struct AlphaSchedule {
    alphas_cumprod: Vec<f32>,
    pub timesteps: Vec<f64>,
    /// What `alpha_prod` answers below timestep 0 (diffusers' `final_alpha_cumprod`).
    final_alpha_cumprod: f32,
    /// `num_train_timesteps // num_inference_steps`, diffusers' step to the previous timestep.
    pub step_ratio: usize,
}

/// The alphas_cumprod of one transition t -> prev_t and their complements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transition {
    pub alpha_prod_t: f32,
    pub alpha_prod_t_prev: f32,
    pub beta_prod_t: f32,
    pub beta_prod_t_prev: f32,
}

impl AlphaSchedule {
    /// Rejects timesteps outside the training range, so every later lookup is in bounds.
    pub(crate) fn new(
        c: &Common,
        timesteps: Vec<f64>,
        final_alpha_cumprod: f32,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        super::check_train_range(&timesteps, c.num_train_timesteps)?;
        Ok(AlphaSchedule {
            alphas_cumprod: c.alphas_cumprod.clone(),
            timesteps,
            final_alpha_cumprod,
            step_ratio: c.num_train_timesteps / num_inference_steps,
        })
    }

    /// The integer training timestep a (float) schedule timestep names.
    pub(crate) fn train_index(&self, timestep: f64) -> Result<usize> {
        train_index(timestep, self.alphas_cumprod.len())
    }

    /// alphas_cumprod at `t`, or the final value for `t < 0`.
    pub(crate) fn alpha_prod(&self, t: i64) -> Result<f32> {
        if t < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        at(&self.alphas_cumprod, t as usize, "alphas_cumprod")
    }

    pub(crate) fn transition(&self, t: i64, prev_t: i64) -> Result<Transition> {
        let alpha_prod_t = self.alpha_prod(t)?;
        let alpha_prod_t_prev = self.alpha_prod(prev_t)?;
        Ok(Transition {
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t: 1.0f32 - alpha_prod_t,
            beta_prod_t_prev: 1.0f32 - alpha_prod_t_prev,
        })
    }
}

impl Bookkeeping for AlphaSchedule {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// diffusers' alpha-space classes have no begin index: they look timesteps up directly.
    fn set_begin_index(&mut self, _index: usize) {}

    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// `sqrt(a) * original + sqrt(1 - a) * noise` with a = alphas_cumprod[timestep].
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let a = at(
            &self.alphas_cumprod,
            self.train_index(timestep)?,
            "alphas_cumprod",
        )?;
        let sqrt_a = a.sqrt();
        let sqrt_1ma = (1.0f32 - a).sqrt();
        mul(original, sqrt_a)? + mul(noise, sqrt_1ma)?
    }
}

/// `set_alpha_to_one` (class default `default`): the last step lands on alpha_prod 1, or
/// else on alphas_cumprod[0].
pub(crate) fn final_alpha_cumprod(cfg: &SchedulerConfig, c: &Common, default: bool) -> f32 {
    if cfg.set_alpha_to_one.unwrap_or(default) {
        1.0
    } else {
        c.alphas_cumprod[0]
    }
}

/// epsilon from a v-prediction: `sqrt(a) * v + sqrt(1 - a) * sample`.
fn eps_from_v(model_output: &Tensor, sample: &Tensor, sa: f32, sb: f32) -> Result<Tensor> {
    mul(model_output, sa)? + mul(sample, sb)?
}

/// (x0, epsilon) from the model output at `alpha_prod_t` (DDIM, DDPM).
pub(crate) fn predict_x0_eps(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod_t: f32,
) -> Result<(Tensor, Tensor)> {
    let beta_prod_t = 1.0f32 - alpha_prod_t;
    let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
    Ok(match prediction {
        PredictionType::Epsilon => {
            let x0 = div(&(sample - mul(model_output, sb)?)?, sa)?;
            (x0, model_output.clone())
        }
        PredictionType::Sample => {
            let eps = div(&(sample - mul(model_output, sa)?)?, sb)?;
            (model_output.clone(), eps)
        }
        PredictionType::VPrediction => {
            let x0 = (mul(sample, sa)? - mul(model_output, sb)?)?;
            (x0, eps_from_v(model_output, sample, sa, sb)?)
        }
    })
}

/// epsilon alone (PNDM); computes no x0.
pub(crate) fn predict_eps(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod_t: f32,
) -> Result<Tensor> {
    let (sa, sb) = (alpha_prod_t.sqrt(), (1.0f32 - alpha_prod_t).sqrt());
    match prediction {
        PredictionType::Epsilon => Ok(model_output.clone()),
        PredictionType::Sample => div(&(sample - mul(model_output, sa)?)?, sb),
        PredictionType::VPrediction => eps_from_v(model_output, sample, sa, sb),
    }
}
