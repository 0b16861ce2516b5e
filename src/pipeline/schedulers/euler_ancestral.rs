//! Euler ancestral (diffusers `EulerAncestralDiscreteScheduler`): an Euler step down to
//! sigma_down plus fresh noise of size sigma_up, drawn from the NoiseSource every step
//! (also the last, where sigma_up is 0, to keep the draw order of diffusers).

use candle_core::{Error, Result, Tensor};

use super::bookkeeping::impl_scheduler;
use super::common::{div, mul, randn_like};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::sigmas::{x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::{NoiseSource, SchedulerError};

/// The optional sigma features the diffusers class reads.
const SIGMA_OPTIONS: SigmaOptions = SigmaOptions {
    karras: false,
    final_sigmas_type: false,
    sigma_bounds: false,
};

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults = ClassDefaults::new(Spacing::Linspace, ZeroSnr::RescaleClampLast);

pub(crate) struct EulerAncestral {
    prediction: PredictionType,
    s: SigmaSchedule,
}

impl EulerAncestral {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        let s = SigmaSchedule::new(&c, cfg, num_inference_steps, &SIGMA_OPTIONS)?;
        Ok(EulerAncestral {
            prediction: c.prediction_type,
            s,
        })
    }

    fn update(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = self.s.index(timestep)?;
        let sigma = self.s.sigma(i)?;
        let sigma_to = self.s.sigma(i + 1)?;
        if sigma <= 0.0 {
            return Err(Error::Msg("euler ancestral step at sigma 0".into()));
        }
        let x0 = x0_from_sigma(self.prediction, model_output, sample, sigma)?;
        let sigma_from = sigma;
        let to2 = sigma_to * sigma_to;
        let from2 = sigma_from * sigma_from;
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = div(&(sample - x0)?, sigma)?;
        let dt = sigma_down - sigma;
        let prev = (sample + mul(&derivative, dt)?)?;
        let z = randn_like(noise, model_output)?;
        let prev = (prev + mul(&z, sigma_up)?)?;
        self.s.advance(i);
        Ok(prev)
    }
}

impl_scheduler!(EulerAncestral, s, order = 1, stochastic);
