//! LMS (diffusers `LMSDiscreteScheduler`, order 4): linear multistep in sigma space whose
//! coefficients integrate the Lagrange basis over each sigma interval (numerically, with
//! our own Gauss-Legendre rule in place of scipy's quad). Never draws noise.

use candle_core::{Result, Tensor};

use super::bookkeeping::impl_scheduler;
use super::common::{div, weighted_sum};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::quadrature::integrate;
use super::sigmas::{x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::SchedulerError;

const LMS_ORDER: usize = 4;

/// The optional sigma features the diffusers class reads.
const SIGMA_OPTIONS: SigmaOptions = SigmaOptions {
    karras: true,
    final_sigmas_type: false,
    sigma_bounds: false,
};

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults = ClassDefaults::new(Spacing::Linspace, ZeroSnr::Ignored);

pub(crate) struct Lms {
    prediction: PredictionType,
    s: SigmaSchedule,
    derivatives: Vec<Tensor>,
}

impl Lms {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        let s = SigmaSchedule::new(&c, cfg, num_inference_steps, &SIGMA_OPTIONS)?;
        Ok(Lms {
            prediction: c.prediction_type,
            s,
            derivatives: Vec::new(),
        })
    }

    /// Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial of
    /// `current` among the last `order` sigmas.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> Result<f64> {
        let sig = |i: usize| -> Result<f64> { Ok(self.s.sigma(i)? as f64) };
        let mut nodes = Vec::with_capacity(order);
        for k in 0..order {
            nodes.push(sig(t - k)?);
        }
        let center = nodes[current];
        let basis = |tau: f64| {
            nodes
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != current)
                .map(|(_, s)| (tau - s) / (center - s))
                .product::<f64>()
        };
        Ok(integrate(basis, sig(t)?, sig(t + 1)?))
    }

    fn update(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        let i = self.s.index(timestep)?;
        let sigma = self.s.sigma(i)?;
        self.s.sigma(i + 1)?;
        let x0 = x0_from_sigma(self.prediction, model_output, sample, sigma)?;
        let derivative = div(&(sample - x0)?, sigma)?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > LMS_ORDER {
            self.derivatives.remove(0);
        }
        // As in diffusers, the order follows the step index; mid-schedule starts (img2img)
        // pair the first coefficients with the few derivatives available.
        let order = (i + 1).min(LMS_ORDER);
        let mut weights = Vec::with_capacity(order);
        for current in 0..order.min(self.derivatives.len()) {
            weights.push(self.coefficient(order, i, current)? as f32);
        }
        let prev = match weighted_sum(weights.into_iter().zip(self.derivatives.iter().rev()))? {
            Some(sum) => (sample + sum)?,
            None => sample.clone(),
        };
        self.s.advance(i);
        Ok(prev)
    }
}

impl_scheduler!(Lms, s, order = 1, deterministic);
