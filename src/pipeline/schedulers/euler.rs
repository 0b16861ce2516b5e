//! Euler (diffusers `EulerDiscreteScheduler`, s_churn = 0): one first-order ODE step per
//! UNet call in sigma space. Deterministic; never draws noise.

use candle_core::{Error, Result, Tensor};

use super::bookkeeping::impl_scheduler;
use super::common::{div, mul};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::sigmas::{x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::SchedulerError;

/// The optional sigma features the diffusers class reads.
const SIGMA_OPTIONS: SigmaOptions = SigmaOptions {
    karras: true,
    final_sigmas_type: true,
    sigma_bounds: true,
};

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults = ClassDefaults::new(Spacing::Linspace, ZeroSnr::RescaleClampLast);

pub(crate) struct Euler {
    prediction: PredictionType,
    s: SigmaSchedule,
}

impl Euler {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        match cfg.interpolation_type.as_deref() {
            None | Some("linear") => {}
            Some(other) => return Err(SchedulerError::unsupported("interpolation_type", other)),
        }
        match cfg.timestep_type.as_deref() {
            None | Some("discrete") => {}
            Some(other) => return Err(SchedulerError::unsupported("timestep_type", other)),
        }
        let s = SigmaSchedule::new(&c, cfg, num_inference_steps, &SIGMA_OPTIONS)?;
        Ok(Euler {
            prediction: c.prediction_type,
            s,
        })
    }

    fn update(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        let i = self.s.index(timestep)?;
        let sigma = self.s.sigma(i)?;
        let sigma_next = self.s.sigma(i + 1)?;
        if sigma <= 0.0 {
            return Err(Error::Msg("euler step at sigma 0".into()));
        }
        // s_churn = 0 makes gamma 0, so sigma_hat == sigma.
        let sigma_hat = sigma;
        let x0 = x0_from_sigma(self.prediction, model_output, sample, sigma_hat)?;
        let derivative = div(&(sample - x0)?, sigma_hat)?;
        let dt = sigma_next - sigma_hat;
        let prev = (sample + mul(&derivative, dt)?)?;
        self.s.advance(i);
        Ok(prev)
    }
}

impl_scheduler!(Euler, s, order = 1, deterministic);
