//! LMS (diffusers `LMSDiscreteScheduler`, order 4): linear multistep in sigma space whose
//! coefficients integrate the Lagrange basis over each sigma interval (numerically, with
//! our own Gauss-Legendre rule in place of scipy's quad). Never draws noise.

use candle_core::{Result, Tensor};

use super::common::{at, div, mul, Missing, StepIndex};
use super::config::{ClassDefaults, Common, SchedulerConfig, Spacing};
use super::quadrature::integrate;
use super::sigmas::{add_noise_sigma, scale_input, x0_from_sigma, SigmaOptions, SigmaSchedule};
use super::{NoiseSource, Scheduler, SchedulerError};

const LMS_ORDER: usize = 4;

pub struct Lms {
    c: Common,
    s: SigmaSchedule,
    idx: StepIndex,
    derivatives: Vec<Tensor>,
}

impl Lms {
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
                karras: true,
                final_sigmas_type: false,
                sigma_bounds: false,
            },
        )?;
        Ok(Lms {
            c,
            s,
            idx: StepIndex::default(),
            derivatives: Vec::new(),
        })
    }

    /// Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial of
    /// `current` among the last `order` sigmas.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> Result<f64> {
        let sig = |i: usize| -> Result<f64> { Ok(at(&self.s.sigmas, i, "sigmas")? as f64) };
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
}

impl Scheduler for Lms {
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
        at(&self.s.sigmas, i + 1, "sigmas")?;
        let x0 = x0_from_sigma(self.c.prediction_type, model_output, sample, sigma)?;
        let derivative = div(&(sample - x0)?, sigma)?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > LMS_ORDER {
            self.derivatives.remove(0);
        }
        // As in diffusers, the order follows the step index; mid-schedule starts (img2img)
        // pair the first coefficients with the few derivatives available.
        let order = (i + 1).min(LMS_ORDER);
        let mut prev = sample.clone();
        let mut sum: Option<Tensor> = None;
        for (current, d) in (0..order).zip(self.derivatives.iter().rev()) {
            let term = mul(d, self.coefficient(order, i, current)? as f32)?;
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        if let Some(s) = sum {
            prev = (prev + s)?;
        }
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
