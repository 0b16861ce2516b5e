//! Euler (diffusers `EulerDiscreteScheduler`, s_churn = 0): one first-order ODE step per
//! UNet call in sigma space. Deterministic; never draws noise.

use candle_core::{Error, Result, Tensor};

use super::common::{at, div, mul, Missing, StepIndex};
use super::config::{ClassDefaults, Common, SchedulerConfig, Spacing};
use super::sigmas::{add_noise_sigma, scale_input, x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::{NoiseSource, Scheduler, SchedulerError};

pub struct Euler {
    c: Common,
    s: SigmaSchedule,
    idx: StepIndex,
}

impl Euler {
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
        match cfg.interpolation_type.as_deref() {
            None | Some("linear") => {}
            Some(other) => return Err(SchedulerError::unsupported("interpolation_type", other)),
        }
        match cfg.timestep_type.as_deref() {
            None | Some("discrete") => {}
            Some(other) => return Err(SchedulerError::unsupported("timestep_type", other)),
        }
        let s = SigmaSchedule::new(
            &c,
            cfg,
            num_inference_steps,
            &SigmaOptions {
                karras: true,
                final_sigmas_type: true,
                sigma_bounds: true,
            },
        )?;
        Ok(Euler {
            c,
            s,
            idx: StepIndex::default(),
        })
    }
}

impl Scheduler for Euler {
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = self
            .idx
            .current(&self.s.timesteps, timestep, Missing::Error)?;
        let sigma = at(&self.s.sigmas, i, "sigmas")?;
        let sigma_next = at(&self.s.sigmas, i + 1, "sigmas")?;
        if sigma <= 0.0 {
            return Err(Error::Msg("euler step at sigma 0".into()));
        }
        // s_churn = 0 makes gamma 0, so sigma_hat == sigma.
        let sigma_hat = sigma;
        let x0 = x0_from_sigma(self.c.prediction_type, model_output, sample, sigma_hat)?;
        let derivative = div(&(sample - x0)?, sigma_hat)?;
        let dt = sigma_next - sigma_hat;
        let prev = (sample + mul(&derivative, dt)?)?;
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
