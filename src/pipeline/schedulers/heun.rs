//! Heun (diffusers `HeunDiscreteScheduler`): second-order sigma-space steps. Every inner
//! timestep is listed twice, as diffusers does; the first call of a pair takes an Euler
//! step and the second corrects it with the averaged derivative. Never draws noise.

use candle_core::{Error, Result, Tensor};

use super::common::{at, div, mul, Missing, StepIndex};
use super::config::{ClassDefaults, Common, SchedulerConfig, Spacing};
use super::sigmas::{add_noise_sigma, scale_input, x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::{NoiseSource, Scheduler, SchedulerError};

/// The state kept between the two halves of a Heun step.
struct FirstHalf {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

pub struct Heun {
    c: Common,
    clip_sample: Option<f32>,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    idx: StepIndex,
    first: Option<FirstHalf>,
}

impl Heun {
    pub fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::resolve(
            cfg,
            &ClassDefaults {
                beta_start: 0.00085,
                beta_end: 0.012,
                spacing: Spacing::Linspace,
            },
        )?;
        super::check_steps(num_inference_steps, c.num_train_timesteps)?;
        let s = SigmaSchedule::new(
            &c,
            cfg,
            num_inference_steps,
            &SigmaOptions {
                karras: true,
                final_sigmas_type: false,
                sigma_bounds: false,
            },
        )?;
        // [s0, s1, s1, s2, s2, ..., 0] and [t0, t1, t1, t2, t2, ...].
        let n = s.sigmas.len();
        let mut sigmas = vec![s.sigmas[0]];
        for v in &s.sigmas[1..n - 1] {
            sigmas.push(*v);
            sigmas.push(*v);
        }
        sigmas.push(s.sigmas[n - 1]);
        let mut timesteps = vec![s.timesteps[0]];
        for t in &s.timesteps[1..] {
            timesteps.push(*t);
            timesteps.push(*t);
        }
        let clip_sample = if cfg.clip_sample.unwrap_or(false) {
            Some(cfg.clip_sample_range.unwrap_or(1.0) as f32)
        } else {
            None
        };
        Ok(Heun {
            c,
            clip_sample,
            timesteps,
            sigmas,
            init_noise_sigma: s.init_noise_sigma,
            idx: StepIndex::default(),
            first: None,
        })
    }
}

impl Scheduler for Heun {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn order(&self) -> usize {
        2
    }

    fn set_begin_index(&mut self, index: usize) {
        self.idx.begin = Some(index);
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self
            .idx
            .current(&self.timesteps, timestep, Missing::Error)?;
        scale_input(sample, at(&self.sigmas, i, "sigmas")?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = self
            .idx
            .current(&self.timesteps, timestep, Missing::Error)?;
        let prev = match self.first.take() {
            None => {
                let sigma = at(&self.sigmas, i, "sigmas")?;
                let sigma_next = at(&self.sigmas, i + 1, "sigmas")?;
                if sigma <= 0.0 {
                    return Err(Error::Msg("heun step at sigma 0".into()));
                }
                let mut x0 = x0_from_sigma(self.c.prediction_type, model_output, sample, sigma)?;
                if let Some(r) = self.clip_sample {
                    x0 = x0.clamp(-r, r)?;
                }
                let derivative = div(&(sample - x0)?, sigma)?;
                let dt = sigma_next - sigma;
                let prev = (sample + mul(&derivative, dt)?)?;
                self.first = Some(FirstHalf {
                    derivative,
                    dt,
                    sample: sample.clone(),
                });
                prev
            }
            Some(first) => {
                let sigma_next = at(&self.sigmas, i, "sigmas")?;
                if i == 0 || sigma_next <= 0.0 {
                    return Err(Error::Msg("heun correction at sigma 0".into()));
                }
                let mut x0 =
                    x0_from_sigma(self.c.prediction_type, model_output, sample, sigma_next)?;
                if let Some(r) = self.clip_sample {
                    x0 = x0.clamp(-r, r)?;
                }
                let derivative = div(&(sample - x0)?, sigma_next)?;
                let derivative = ((first.derivative + derivative)? / 2.0)?;
                (first.sample + mul(&derivative, first.dt)?)?
            }
        };
        self.idx.step = Some(i + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self
            .idx
            .for_add_noise(&self.timesteps, timestep, Missing::Error)?;
        add_noise_sigma(original, noise, at(&self.sigmas, i, "sigmas")?)
    }
}
