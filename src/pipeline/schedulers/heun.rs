//! Heun (diffusers `HeunDiscreteScheduler`): second-order sigma-space steps. Every inner
//! timestep is listed twice, as diffusers does; the first call of a pair takes an Euler
//! step and the second corrects it with the averaged derivative. Never draws noise.

use candle_core::{Error, Result, Tensor};

use super::bookkeeping::impl_scheduler;
use super::common::{div, mul};
use super::config::{
    clip_range, ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr,
};
use super::sigmas::{x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::SchedulerError;

/// The state kept between the two halves of a Heun step.
struct FirstHalf {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

/// The optional sigma features the diffusers class reads.
const SIGMA_OPTIONS: SigmaOptions = SigmaOptions {
    karras: true,
    final_sigmas_type: false,
    sigma_bounds: false,
};

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults =
    ClassDefaults::new(Spacing::Linspace, ZeroSnr::Ignored).with_betas(0.00085, 0.012);

pub(crate) struct Heun {
    prediction: PredictionType,
    clip_sample: Option<f32>,
    s: SigmaSchedule,
    first: Option<FirstHalf>,
}

impl Heun {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        let mut s = SigmaSchedule::new(&c, cfg, num_inference_steps, &SIGMA_OPTIONS)?;
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
        s.sigmas = sigmas;
        s.timesteps = timesteps;
        Ok(Heun {
            prediction: c.prediction_type,
            clip_sample: clip_range(cfg, false),
            s,
            first: None,
        })
    }

    /// dx/dsigma at `sigma` from the (optionally clipped) x0 prediction.
    fn derivative(&self, model_output: &Tensor, sample: &Tensor, sigma: f32) -> Result<Tensor> {
        let mut x0 = x0_from_sigma(self.prediction, model_output, sample, sigma)?;
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        div(&(sample - x0)?, sigma)
    }

    fn update(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        let i = self.s.index(timestep)?;
        let prev = match self.first.take() {
            None => {
                let sigma = self.s.sigma(i)?;
                let sigma_next = self.s.sigma(i + 1)?;
                if sigma <= 0.0 {
                    return Err(Error::Msg("heun step at sigma 0".into()));
                }
                let derivative = self.derivative(model_output, sample, sigma)?;
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
                let sigma_next = self.s.sigma(i)?;
                if i == 0 || sigma_next <= 0.0 {
                    return Err(Error::Msg("heun correction at sigma 0".into()));
                }
                let derivative = self.derivative(model_output, sample, sigma_next)?;
                let derivative = ((first.derivative + derivative)? / 2.0)?;
                (first.sample + mul(&derivative, first.dt)?)?
            }
        };
        self.s.advance(i);
        Ok(prev)
    }
}

impl_scheduler!(Heun, s, order = 2, deterministic);
