//! DPM-Solver++ multistep (diffusers `DPMSolverMultistepScheduler`, algorithm dpmsolver++,
//! orders 1-2, midpoint or heun second-order form, lower_order_final), with or without
//! Karras sigmas. Deterministic; never draws noise.

use candle_core::{Error, Result, Tensor};

use super::bookkeeping::impl_scheduler;
use super::common::mul;
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::multistep::{
    alpha_sigma, data_prediction, lambda, multistep_schedule, solver_order, History,
};
use super::sigmas::SigmaSchedule;
use super::SchedulerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults =
    ClassDefaults::new(Spacing::Linspace, ZeroSnr::RescaleClampLast).with_thresholding();

pub(crate) struct DpmSolverMultistep {
    prediction: PredictionType,
    s: SigmaSchedule,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    history: History,
}

impl DpmSolverMultistep {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
        karras: bool,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        match cfg.algorithm_type.as_deref() {
            None | Some("dpmsolver++") => {}
            Some(other) => return Err(SchedulerError::unsupported("algorithm_type", other)),
        }
        let solver_type = match cfg.solver_type.as_deref() {
            None | Some("midpoint") => SolverType::Midpoint,
            Some("heun") => SolverType::Heun,
            Some(other) => return Err(SchedulerError::unsupported("solver_type", other)),
        };
        let solver_order = solver_order(cfg, 2)?;
        if let Some(v) = &cfg.variance_type {
            return Err(SchedulerError::unsupported("variance_type", v));
        }
        if let Some(v) = cfg.lambda_min_clipped {
            return Err(SchedulerError::unsupported(
                "lambda_min_clipped",
                &v.to_string(),
            ));
        }
        let karras = karras || cfg.use_karras_sigmas == Some(true);
        let s = multistep_schedule(&c, cfg, num_inference_steps, karras, false)?;
        let final_zero = matches!(cfg.final_sigmas_type.as_deref(), None | Some("zero"));
        Ok(DpmSolverMultistep {
            prediction: c.prediction_type,
            s,
            solver_order,
            solver_type,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            euler_at_final: cfg.euler_at_final.unwrap_or(false),
            final_zero,
            history: History::new(solver_order),
        })
    }

    fn first_order(&self, i: usize, x0: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.s.sigma(i + 1)?);
        let (alpha_s, sigma_s) = alpha_sigma(self.s.sigma(i)?);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        mul(sample, sigma_t / sigma_s)? - mul(x0, alpha_t * ((-h).exp() - 1.0))?
    }

    fn second_order(&self, i: usize, m0: &Tensor, m1: &Tensor, sample: &Tensor) -> Result<Tensor> {
        if i == 0 {
            return Err(Error::Msg("second-order step needs a previous step".into()));
        }
        let (alpha_t, sigma_t) = alpha_sigma(self.s.sigma(i + 1)?);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.s.sigma(i)?);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.s.sigma(i - 1)?);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = mul(&(m0 - m1)?, 1.0f32 / r0)?;
        let em1 = (-h).exp() - 1.0;
        let base = (mul(sample, sigma_t / sigma_s0)? - mul(m0, alpha_t * em1)?)?;
        match self.solver_type {
            SolverType::Midpoint => base - mul(&d1, 0.5f32 * (alpha_t * em1))?,
            SolverType::Heun => base + mul(&d1, alpha_t * (em1 / h + 1.0))?,
        }
    }

    fn update(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        let i = self.s.index(timestep)?;
        let n = self.s.timesteps.len();
        let lower_order_final = i + 1 == n
            && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_zero);
        // diffusers' lower_order_second only matters for order 3, which we do not build.

        let x0 = data_prediction(self.prediction, model_output, sample, self.s.sigma(i)?)?;
        self.history.push(x0.clone());

        let prev =
            if self.solver_order == 1 || self.history.lower_order_nums < 1 || lower_order_final {
                self.first_order(i, &x0, sample)?
            } else {
                self.second_order(i, &x0, self.history.get(1)?, sample)?
            };
        self.history.warm_up();
        self.s.advance(i);
        Ok(prev)
    }
}

impl_scheduler!(DpmSolverMultistep, s, order = 1, deterministic);
