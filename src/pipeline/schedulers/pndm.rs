//! PNDM with `skip_prk_steps` (diffusers `PNDMScheduler` in its PLMS mode, as every Stable
//! Diffusion config sets it): linear multistep over the last four model outputs, with the
//! second timestep repeated for the warm-up. Never draws noise.

use candle_core::{Error, Result, Tensor};

use super::common::{at, div, integer_timesteps, mul, train_index};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing};
use super::ddim::add_noise_alphas;
use super::{NoiseSource, Scheduler, SchedulerError};

pub struct Pndm {
    c: Common,
    final_alpha_cumprod: f32,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
}

impl Pndm {
    pub fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::resolve(
            cfg,
            &ClassDefaults {
                beta_start: 0.0001,
                beta_end: 0.02,
                spacing: Spacing::Leading,
            },
        )?;
        super::check_steps(num_inference_steps, c.num_train_timesteps)?;
        if !cfg.skip_prk_steps.unwrap_or(false) {
            // The Runge-Kutta warm-up is never used by Stable Diffusion configs.
            return Err(SchedulerError::unsupported("skip_prk_steps", "false"));
        }
        if c.prediction_type == PredictionType::Sample {
            return Err(SchedulerError::unsupported("prediction_type", "sample"));
        }
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            c.alphas_cumprod[0]
        };
        // diffusers builds the ascending list, repeats its second-to-last entry, reverses.
        let mut asc = integer_timesteps(&c, num_inference_steps);
        asc.reverse();
        let mut plms: Vec<f64> = asc[..asc.len() - 1].to_vec();
        if asc.len() >= 2 {
            plms.push(asc[asc.len() - 2]);
        }
        plms.push(asc[asc.len() - 1]);
        plms.reverse();
        super::check_train_range(&plms, c.num_train_timesteps)?;
        Ok(Pndm {
            c,
            final_alpha_cumprod,
            num_inference_steps,
            timesteps: plms,
            ets: Vec::new(),
            counter: 0,
            cur_sample: None,
        })
    }

    fn prev_sample(
        &self,
        sample: &Tensor,
        t: i64,
        prev_t: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        let ac = &self.c.alphas_cumprod;
        if t < 0 {
            return Err(Error::Msg(format!("pndm timestep {t} is negative")));
        }
        let alpha_prod_t = at(ac, t as usize, "alphas_cumprod")?;
        let alpha_prod_t_prev = if prev_t >= 0 {
            at(ac, prev_t as usize, "alphas_cumprod")?
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let beta_prod_t_prev = 1.0f32 - alpha_prod_t_prev;
        let model_output = match self.c.prediction_type {
            PredictionType::VPrediction => {
                (mul(model_output, alpha_prod_t.sqrt())? + mul(sample, beta_prod_t.sqrt())?)?
            }
            _ => model_output.clone(),
        };
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_t_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        let rhs = div(
            &mul(&model_output, alpha_prod_t_prev - alpha_prod_t)?,
            denom,
        )?;
        mul(sample, sample_coeff)? - rhs
    }
}

impl Scheduler for Pndm {
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let ratio = (self.c.num_train_timesteps / self.num_inference_steps) as i64;
        let mut t = train_index(timestep, self.c.num_train_timesteps)? as i64;
        let mut prev_t = t - ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let n = self.ets.len();
        let e = |i: usize| -> Result<&Tensor> {
            self.ets
                .get(n.wrapping_sub(i))
                .ok_or_else(|| Error::Msg("pndm history is empty".into()))
        };
        let mut sample = sample.clone();
        let combined = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if n == 1 && self.counter == 1 {
            let combined = ((model_output + e(1)?)? / 2.0)?;
            sample = self
                .cur_sample
                .take()
                .ok_or_else(|| Error::Msg("pndm warm-up sample missing".into()))?;
            combined
        } else if n == 2 {
            div(&(mul(e(1)?, 3.0)? - e(2)?)?, 2.0)?
        } else if n == 3 {
            let s = ((mul(e(1)?, 23.0)? - mul(e(2)?, 16.0)?)? + mul(e(3)?, 5.0)?)?;
            div(&s, 12.0)?
        } else {
            let s = (((mul(e(1)?, 55.0)? - mul(e(2)?, 59.0)?)? + mul(e(3)?, 37.0)?)?
                - mul(e(4)?, 9.0)?)?;
            mul(&s, (1.0f64 / 24.0) as f32)?
        };
        let prev = self.prev_sample(&sample, t, prev_t, &combined)?;
        self.counter += 1;
        Ok(prev)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise_alphas(&self.c.alphas_cumprod, original, noise, timestep)
    }
}
