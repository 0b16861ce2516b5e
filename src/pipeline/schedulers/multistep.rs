//! What the multistep solvers (DPM-Solver++ and UniPC) share: their schedule (integer
//! timesteps, float32 sigmas, optionally the Karras ramp), the history of data
//! predictions, the VP alpha/sigma of a sigma, and the data (x0) prediction. Never computes
//! a solver update.

use candle_core::{Error, Result, Tensor};

use super::common::{
    div, karras_sigmas, log_sigmas, mul, multistep_timesteps, np_interp, sigma_to_t, train_sigmas,
};
use super::config::{Common, PredictionType, SchedulerConfig};
use super::sigmas::{karras_bounds, reject_flags, Form, SigmaSchedule};
use super::SchedulerError;

/// The solvers' sigma schedule: `timesteps.len() + 1` float32 sigmas, the last being the
/// final sigma; VP form, so the initial noise is unscaled.
pub(crate) fn multistep_schedule(
    c: &Common,
    cfg: &SchedulerConfig,
    count: usize,
    karras: bool,
    sigma_bounds: bool,
) -> std::result::Result<SigmaSchedule, SchedulerError> {
    reject_flags(&[
        ("use_exponential_sigmas", cfg.use_exponential_sigmas),
        ("use_beta_sigmas", cfg.use_beta_sigmas),
        ("use_lu_lambdas", cfg.use_lu_lambdas),
        ("use_flow_sigmas", cfg.use_flow_sigmas),
        ("use_dynamic_shifting", cfg.use_dynamic_shifting),
    ])?;
    let train = train_sigmas(&c.alphas_cumprod);
    let final_zero = match cfg.final_sigmas_type.as_deref() {
        None | Some("zero") => true,
        Some("sigma_min") => false,
        Some(other) => return Err(SchedulerError::unsupported("final_sigmas_type", other)),
    };
    let (timesteps, mut sigmas) = if karras {
        let logs = log_sigmas(&train);
        // Only classes with sigma_min/sigma_max config keys (UniPC) read them.
        let (cfg_min, cfg_max) = karras_bounds(cfg, sigma_bounds);
        let sigma_min = cfg_min.unwrap_or(train[0] as f64);
        let sigma_max = cfg_max.unwrap_or(train[train.len() - 1] as f64);
        let ks = karras_sigmas(sigma_min, sigma_max, count);
        let ts: Vec<f64> = ks
            .iter()
            .map(|s| sigma_to_t(*s, &logs).round_ties_even())
            .collect();
        let last = if final_zero {
            0.0
        } else {
            ks.last().copied().unwrap_or(0.0) as f32
        };
        let mut sig: Vec<f32> = ks.into_iter().map(|s| s as f32).collect();
        sig.push(last);
        (ts, sig)
    } else {
        let ts = multistep_timesteps(c, count);
        let mut sig: Vec<f32> = ts.iter().map(|t| np_interp(*t, &train) as f32).collect();
        let last = if final_zero { 0.0 } else { train[0] };
        sig.push(last);
        (ts, sig)
    };
    super::check_train_range(&timesteps, c.num_train_timesteps)?;
    sigmas.shrink_to_fit();
    SigmaSchedule::from_parts(timesteps, sigmas, 1.0, Form::Vp)
}

/// `solver_order` (default 2), of which we implement 1 through `max`.
pub(crate) fn solver_order(
    cfg: &SchedulerConfig,
    max: usize,
) -> std::result::Result<usize, SchedulerError> {
    let order = cfg.solver_order.unwrap_or(2);
    if !(1..=max).contains(&order) {
        return Err(SchedulerError::unsupported(
            "solver_order",
            &order.to_string(),
        ));
    }
    Ok(order)
}

/// diffusers' `model_outputs` (the last `solver_order` data predictions, oldest first) and
/// `lower_order_nums` (how many steps have warmed the history up, capped at the order).
#[derive(Debug, Clone)]
pub(crate) struct History {
    outputs: Vec<Option<Tensor>>,
    pub lower_order_nums: usize,
}

impl History {
    pub(crate) fn new(solver_order: usize) -> Self {
        History {
            outputs: vec![None; solver_order],
            lower_order_nums: 0,
        }
    }

    /// Shifts the newest data prediction in, dropping the oldest.
    pub(crate) fn push(&mut self, x0: Tensor) {
        self.outputs.remove(0);
        self.outputs.push(Some(x0));
    }

    /// The k-th most recent stored data prediction (k = 0: newest).
    pub(crate) fn get(&self, k: usize) -> Result<&Tensor> {
        let n = self.outputs.len();
        self.outputs
            .get(n.wrapping_sub(k + 1))
            .and_then(|m| m.as_ref())
            .ok_or_else(|| Error::Msg("multistep solver history is too short".into()))
    }

    /// Counts a finished step towards the warm-up.
    pub(crate) fn warm_up(&mut self) {
        if self.lower_order_nums < self.outputs.len() {
            self.lower_order_nums += 1;
        }
    }
}

/// diffusers' `_sigma_to_alpha_sigma_t` (float32).
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0f32 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// log(alpha) - log(sigma) (float32; +inf at sigma 0).
pub(crate) fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// The data prediction x0 of the solvers' `convert_model_output`.
pub(crate) fn data_prediction(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    match prediction {
        PredictionType::Epsilon => div(&(sample - mul(model_output, sigma_t)?)?, alpha_t),
        PredictionType::Sample => Ok(model_output.clone()),
        PredictionType::VPrediction => mul(sample, alpha_t)? - mul(model_output, sigma_t)?,
    }
}

/// VP forward diffusion at a sigma: `alpha * x0 + sigma * noise`.
pub(crate) fn add_noise_vp(original: &Tensor, noise: &Tensor, sigma: f32) -> Result<Tensor> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    mul(original, alpha_t)? + mul(noise, sigma_t)?
}
