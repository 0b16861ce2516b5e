//! Euler ancestral (diffusers `EulerAncestralDiscreteScheduler`): an Euler step down to
//! sigma_down plus fresh noise of size sigma_up, drawn from the NoiseSource every step
//! (also the last, where sigma_up is 0, to keep the draw order of diffusers).

use candle_core::{Error, Result, Tensor};

use super::common::{at, div, mul, Missing, StepIndex};
use super::config::{ClassDefaults, Common, SchedulerConfig, Spacing};
use super::sigmas::{add_noise_sigma, scale_input, x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::{NoiseSource, Scheduler, SchedulerError};

pub struct EulerAncestral {
    c: Common,
    s: SigmaSchedule,
    idx: StepIndex,
}

impl EulerAncestral {
    pub fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::resolve(
            cfg,
            &ClassDefaults {
                beta_start: 0.0001,
                beta_end: 0.02,
                spacing: Spacing::Linspace,
            },
        )?;
        super::check_steps(num_inference_steps, c.num_train_timesteps)?;
        let s = SigmaSchedule::new(
            &c,
            cfg,
            num_inference_steps,
            &SigmaOptions {
                karras: false,
                final_sigmas_type: false,
                sigma_bounds: false,
            },
        )?;
        Ok(EulerAncestral {
            c,
            s,
            idx: StepIndex::default(),
        })
    }
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[f64] {
        &self.s.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.s.init_noise_sigma
    }

    fn order(&self) -> usize {
        1
    }

    fn set_begin_index(&mut self, index: usize) {
        self.idx.begin = Some(index);
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self
            .idx
            .current(&self.s.timesteps, timestep, Missing::Error)?;
        scale_input(sample, at(&self.s.sigmas, i, "sigmas")?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = self
            .idx
            .current(&self.s.timesteps, timestep, Missing::Error)?;
        let sigma = at(&self.s.sigmas, i, "sigmas")?;
        let sigma_to = at(&self.s.sigmas, i + 1, "sigmas")?;
        if sigma <= 0.0 {
            return Err(Error::Msg("euler ancestral step at sigma 0".into()));
        }
        let x0 = x0_from_sigma(self.c.prediction_type, model_output, sample, sigma)?;
        let sigma_from = sigma;
        let to2 = sigma_to * sigma_to;
        let from2 = sigma_from * sigma_from;
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = div(&(sample - x0)?, sigma)?;
        let dt = sigma_down - sigma;
        let prev = (sample + mul(&derivative, dt)?)?;
        let z = noise
            .randn(model_output.dims(), model_output.device())?
            .to_dtype(model_output.dtype())?;
        let prev = (prev + mul(&z, sigma_up)?)?;
        self.idx.step = Some(i + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self
            .idx
            .for_add_noise(&self.s.timesteps, timestep, Missing::Error)?;
        add_noise_sigma(original, noise, at(&self.s.sigmas, i, "sigmas")?)
    }
}
