//! DDIM (diffusers `DDIMScheduler`): deterministic for eta = 0, stochastic (noise from the
//! NoiseSource) for eta > 0. Coefficients are float32 like diffusers' torch scalars.
//! Never draws noise when eta is 0.

use candle_core::{Result, Tensor};

use super::common::{at, div, integer_timesteps, mul, train_index};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::{NoiseSource, Scheduler, SchedulerError};

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults =
    ClassDefaults::new(Spacing::Leading, ZeroSnr::Rescale).with_thresholding();

pub struct Ddim {
    c: Common,
    final_alpha_cumprod: f32,
    clip_sample: Option<f32>,
    eta: f32,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
}

/// Forward diffusion shared by the alphas-cumprod schedulers (DDIM, DDPM, PNDM).
pub(crate) fn add_noise_alphas(
    alphas_cumprod: &[f32],
    original: &Tensor,
    noise: &Tensor,
    t: f64,
) -> Result<Tensor> {
    let a = at(
        alphas_cumprod,
        train_index(t, alphas_cumprod.len())?,
        "alphas_cumprod",
    )?;
    let sqrt_a = a.sqrt();
    let sqrt_1ma = (1.0f32 - a).sqrt();
    mul(original, sqrt_a)? + mul(noise, sqrt_1ma)?
}

/// (x0, eps) from the model output at `alpha_prod_t`, as DDIM/DDPM compute them.
pub(crate) fn x0_and_eps(
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
            let eps = (mul(model_output, sa)? + mul(sample, sb)?)?;
            (x0, eps)
        }
    })
}

impl Ddim {
    pub fn new(
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
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            c.alphas_cumprod[0]
        };
        let clip_sample = if cfg.clip_sample.unwrap_or(true) {
            Some(cfg.clip_sample_range.unwrap_or(1.0) as f32)
        } else {
            None
        };
        let timesteps = integer_timesteps(&c, num_inference_steps);
        super::check_train_range(&timesteps, c.num_train_timesteps)?;
        Ok(Ddim {
            c,
            final_alpha_cumprod,
            clip_sample,
            eta: eta as f32,
            num_inference_steps,
            timesteps,
        })
    }
}

impl Scheduler for Ddim {
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
        let n_train = self.c.num_train_timesteps;
        let t = train_index(timestep, n_train)?;
        let prev = t as i64 - (n_train / self.num_inference_steps) as i64;
        let alpha_prod_t = at(&self.c.alphas_cumprod, t, "alphas_cumprod")?;
        let alpha_prod_t_prev = if prev >= 0 {
            at(&self.c.alphas_cumprod, prev as usize, "alphas_cumprod")?
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let beta_prod_t_prev = 1.0f32 - alpha_prod_t_prev;

        let (mut x0, eps) = x0_and_eps(self.c.prediction_type, model_output, sample, alpha_prod_t)?;
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
            let z = noise
                .randn(model_output.dims(), model_output.device())?
                .to_dtype(model_output.dtype())?;
            return prev_sample + mul(&z, std_dev_t)?;
        }
        Ok(prev_sample)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise_alphas(&self.c.alphas_cumprod, original, noise, timestep)
    }
}
