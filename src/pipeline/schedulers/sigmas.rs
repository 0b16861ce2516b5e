//! The sigma-space schedule shared by Euler, Euler ancestral, Heun, LMS, DPM-Solver++ and
//! UniPC: timesteps, float32 sigmas, the step / begin index diffusers tracks, and the
//! bookkeeping answers (input scaling, forward diffusion) that follow from a sigma. Builds
//! the k-diffusion schedule (fractional float32 timesteps, interpolated sigmas, optional
//! Karras ramp) and the sigma-to-x0 conversion. Its only per-run state is the step index.

use candle_core::{Result, Tensor};

use super::bookkeeping::Bookkeeping;
use super::common::{
    at, div, float_timesteps, karras_sigmas, log_sigmas, mul, np_interp, sigma_to_t, train_sigmas,
    Missing, StepIndex,
};
use super::config::{Common, PredictionType, SchedulerConfig, Spacing};
use super::multistep::add_noise_vp;
use super::SchedulerError;

/// How the sigmas parameterize the noisy sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// k-diffusion (Euler, Heun, LMS): `x = x0 + sigma * eps`; the UNet input is scaled by
    /// 1/sqrt(sigma^2 + 1) and a timestep outside the schedule is an error.
    Ve,
    /// Multistep solvers (DPM-Solver++, UniPC): `x = alpha * x0 + sigma_t * eps`; the UNet
    /// input is unscaled and a timestep outside the schedule means the last step.
    Vp,
}

/// Inference timesteps and their float32 sigmas (`sigmas.len() == timesteps.len() + 1`),
/// plus diffusers' `_step_index` / `_begin_index`.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f32>,
    pub init_noise_sigma: f64,
    form: Form,
    idx: StepIndex,
}

/// Which optional set_timesteps features a class has.
pub(crate) struct SigmaOptions {
    /// The class reads `use_karras_sigmas`.
    pub karras: bool,
    /// The class reads `final_sigmas_type` (else the last sigma is always zero).
    pub final_sigmas_type: bool,
    /// The class reads `sigma_min` / `sigma_max` for the Karras ramp.
    pub sigma_bounds: bool,
}

impl SigmaSchedule {
    pub(crate) fn new(
        c: &Common,
        cfg: &SchedulerConfig,
        count: usize,
        opts: &SigmaOptions,
    ) -> std::result::Result<Self, SchedulerError> {
        reject_flags(&[
            ("use_exponential_sigmas", cfg.use_exponential_sigmas),
            ("use_beta_sigmas", cfg.use_beta_sigmas),
        ])?;
        let train = train_sigmas(&c.alphas_cumprod);
        let mut timesteps = float_timesteps(c, count);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|t| np_interp(*t, &train)).collect();
        if opts.karras && cfg.use_karras_sigmas == Some(true) {
            let first = sigmas.first().copied().unwrap_or(0.0);
            let last = sigmas.last().copied().unwrap_or(0.0);
            let (cfg_min, cfg_max) = karras_bounds(cfg, opts.sigma_bounds);
            sigmas = karras_sigmas(cfg_min.unwrap_or(last), cfg_max.unwrap_or(first), count);
            let logs = log_sigmas(&train);
            timesteps = sigmas
                .iter()
                .map(|s| sigma_to_t(*s, &logs) as f32 as f64)
                .collect();
        }
        let last = match cfg.final_sigmas_type.as_deref() {
            _ if !opts.final_sigmas_type => 0.0f32,
            None | Some("zero") => 0.0f32,
            Some("sigma_min") => train[0],
            Some(other) => return Err(SchedulerError::unsupported("final_sigmas_type", other)),
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(last);
        let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let init_noise_sigma = match c.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        } as f64;
        SigmaSchedule::from_parts(timesteps, sigmas, init_noise_sigma, Form::Ve)
    }

    /// A schedule from already computed tables, at its first step; non-finite sigmas (a
    /// config whose alphas_cumprod reach 0) are an error.
    pub(crate) fn from_parts(
        timesteps: Vec<f64>,
        sigmas: Vec<f32>,
        init_noise_sigma: f64,
        form: Form,
    ) -> std::result::Result<Self, SchedulerError> {
        if sigmas.iter().any(|s| !s.is_finite()) {
            return Err(SchedulerError::InvalidConfig(
                "the scheduler config gives non-finite sigmas".into(),
            ));
        }
        Ok(SigmaSchedule {
            timesteps,
            sigmas,
            init_noise_sigma,
            form,
            idx: StepIndex::default(),
        })
    }

    fn missing(&self) -> Missing {
        match self.form {
            Form::Ve => Missing::Error,
            Form::Vp => Missing::Last,
        }
    }

    /// The index into `timesteps` / `sigmas` the next `step` at `timestep` uses.
    pub(crate) fn index(&self, timestep: f64) -> Result<usize> {
        self.idx.current(&self.timesteps, timestep, self.missing())
    }

    pub(crate) fn sigma(&self, i: usize) -> Result<f32> {
        at(&self.sigmas, i, "sigmas")
    }

    /// Records that the step at index `i` is done.
    pub(crate) fn advance(&mut self, i: usize) {
        self.idx.step = Some(i + 1);
    }
}

impl Bookkeeping for SigmaSchedule {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn set_begin_index(&mut self, index: usize) {
        self.idx.begin = Some(index);
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        match self.form {
            Form::Ve => scale_input(sample, self.sigma(self.index(timestep)?)?),
            Form::Vp => Ok(sample.clone()),
        }
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self
            .idx
            .for_add_noise(&self.timesteps, timestep, self.missing())?;
        let sigma = self.sigma(i)?;
        match self.form {
            Form::Ve => original + mul(noise, sigma)?,
            Form::Vp => add_noise_vp(original, noise, sigma),
        }
    }
}

/// Rejects the sigma options a class accepts but we do not implement, when set to true.
pub(crate) fn reject_flags(
    flags: &[(&'static str, Option<bool>)],
) -> std::result::Result<(), SchedulerError> {
    match flags.iter().find(|(_, v)| *v == Some(true)) {
        Some((key, _)) => Err(SchedulerError::unsupported(key, "true")),
        None => Ok(()),
    }
}

/// The config's `sigma_min` / `sigma_max` for the Karras ramp, if the class reads them.
pub(crate) fn karras_bounds(cfg: &SchedulerConfig, read: bool) -> (Option<f64>, Option<f64>) {
    if read {
        (cfg.sigma_min, cfg.sigma_max)
    } else {
        (None, None)
    }
}

/// `sample / sqrt(sigma^2 + 1)` (the k-diffusion input scaling).
fn scale_input(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    div(sample, (sigma * sigma + 1.0).sqrt())
}

/// x0 from a model output at noise level `sigma` (diffusers' sigma-space formulas).
pub(crate) fn x0_from_sigma(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => sample - mul(model_output, sigma)?,
        PredictionType::VPrediction => {
            let s2p1 = sigma * sigma + 1.0;
            mul(model_output, -sigma / s2p1.sqrt())? + div(sample, s2p1)?
        }
        PredictionType::Sample => Ok(model_output.clone()),
    }
}
