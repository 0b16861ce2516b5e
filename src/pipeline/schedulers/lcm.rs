//! LCM (diffusers `LCMScheduler`, Luo et al. 2023): the few-step sampler of latent
//! consistency models (LCM-distilled UNets, LCM-LoRAs merged into SD/SDXL models). Its
//! timesteps are picked from the distillation schedule (`original_inference_steps`, default
//! 50: every `num_train_timesteps / 50`-th step, ending at 999) at evenly spaced indices; each
//! step predicts x0, applies the consistency boundary condition (`c_skip`, `c_out` with
//! sigma_data 0.5 and `timestep_scaling` 10) and re-noises to the next timestep with fresh
//! noise from the NoiseSource (none after the last step). Float32 like diffusers' torch
//! scalars; `timestep_spacing` does not apply (diffusers ignores it for this class).

use candle_core::{Result, Tensor};

use super::alphas::{final_alpha_cumprod, predict_x0_eps, AlphaSchedule, Transition};
use super::bookkeeping::Bookkeeping;
use super::common::{mul, np_linspace, randn_like, Missing, StepIndex};
use super::config::{
    clip_range, ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr,
};
use super::{NoiseSource, Scheduler, SchedulerError};

/// diffusers' LCMScheduler defaults: scaled_linear betas from 0.00085 to 0.012.
const DEFAULTS: ClassDefaults = ClassDefaults::new(Spacing::Leading, ZeroSnr::Rescale)
    .with_thresholding()
    .with_betas(0.00085, 0.012);
const SIGMA_DATA: f32 = 0.5;

pub struct Lcm {
    prediction: PredictionType,
    a: AlphaSchedule,
    clip_sample: Option<f32>,
    timestep_scaling: f32,
    index: StepIndex,
}

/// The LCM inference timesteps: `[k - 1, 2k - 1, ..., original * k - 1]` reversed, read at
/// `floor(linspace(0, original, steps, endpoint=False))`.
pub(crate) fn lcm_timesteps(
    n_train: usize,
    original_steps: usize,
    steps: usize,
) -> std::result::Result<Vec<f64>, SchedulerError> {
    let k = n_train.checked_div(original_steps).unwrap_or(0);
    if k == 0 || steps == 0 || steps > original_steps {
        return Err(SchedulerError::InvalidConfig(format!(
            "LCM runs 1..={original_steps} steps of its {original_steps}-step distillation \
             schedule over {n_train} training timesteps, got {steps}"
        )));
    }
    let origin: Vec<usize> = (1..=original_steps).rev().map(|i| i * k - 1).collect();
    np_linspace(0.0, origin.len() as f64, steps + 1)
        .into_iter()
        .take(steps)
        .map(|x| {
            origin
                .get(x.floor() as usize)
                .map(|&t| t as f64)
                .ok_or_else(|| SchedulerError::InvalidConfig("LCM index out of range".into()))
        })
        .collect()
}

/// The consistency model's boundary-condition scalings at `timestep`.
fn boundary_scalings(timestep: f32, timestep_scaling: f32) -> (f32, f32) {
    let scaled = timestep * timestep_scaling;
    let denom = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
    (SIGMA_DATA * SIGMA_DATA / denom, scaled / denom.sqrt())
}

impl Lcm {
    pub fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let mut cfg = cfg.clone();
        if cfg.beta_schedule.is_none() && cfg.trained_betas.is_none() {
            cfg.beta_schedule = Some("scaled_linear".into());
        }
        let c = Common::for_steps(&cfg, &DEFAULTS, num_inference_steps)?;
        let original = cfg.original_inference_steps.unwrap_or(50);
        let timesteps = lcm_timesteps(c.num_train_timesteps, original, num_inference_steps)?;
        let scaling = cfg.timestep_scaling.unwrap_or(10.0);
        if !scaling.is_finite() || scaling <= 0.0 {
            return Err(SchedulerError::InvalidConfig(format!(
                "timestep_scaling must be positive, got {scaling}"
            )));
        }
        let final_alpha = final_alpha_cumprod(&cfg, &c, true);
        Ok(Lcm {
            prediction: c.prediction_type,
            a: AlphaSchedule::new(&c, timesteps, final_alpha, num_inference_steps)?,
            clip_sample: clip_range(&cfg, false),
            timestep_scaling: scaling as f32,
            index: StepIndex::default(),
        })
    }
}

impl Scheduler for Lcm {
    fn timesteps(&self) -> &[f64] {
        self.a.timesteps()
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn order(&self) -> usize {
        1
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let ts = self.a.timesteps();
        let i = self.index.current(ts, timestep, Missing::Error)?;
        let last = i + 1 >= ts.len();
        let prev_t = ts.get(i + 1).copied().unwrap_or(timestep);
        let t = self.a.train_index(timestep)? as i64;
        let Transition {
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t_prev,
            ..
        } = self.a.transition(t, self.a.train_index(prev_t)? as i64)?;
        let (c_skip, c_out) = boundary_scalings(t as f32, self.timestep_scaling);
        let (mut x0, _) = predict_x0_eps(self.prediction, model_output, sample, alpha_prod_t)?;
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        let denoised = (mul(&x0, c_out)? + mul(sample, c_skip)?)?;
        self.index.step = Some(i + 1);
        if last {
            return Ok(denoised);
        }
        let z = randn_like(noise, model_output)?;
        mul(&denoised, alpha_prod_t_prev.sqrt())? + mul(&z, beta_prod_t_prev.sqrt())?
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.a.add_noise(original, noise, timestep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Values computed by hand from the published LCMScheduler.set_timesteps formula
    /// (k = 1000 // 50 = 20; origin = 19, 39, ..., 999 reversed; indices floor(i * 50 / n)).
    #[test]
    fn timesteps_follow_the_distillation_schedule() {
        assert_eq!(
            lcm_timesteps(1000, 50, 4).unwrap(),
            vec![999.0, 759.0, 499.0, 259.0]
        );
        assert_eq!(lcm_timesteps(1000, 50, 1).unwrap(), vec![999.0]);
        assert_eq!(
            lcm_timesteps(1000, 50, 8).unwrap(),
            // floor(i * 6.25) = 0, 6, 12, 18, 25, 31, 37, 43
            vec![999.0, 879.0, 759.0, 639.0, 499.0, 379.0, 259.0, 139.0]
        );
        assert!(lcm_timesteps(1000, 50, 51).is_err());
        assert!(lcm_timesteps(1000, 0, 4).is_err());
    }

    /// c_skip = 0.25 / ((10 t)^2 + 0.25), c_out = 10 t / sqrt((10 t)^2 + 0.25).
    #[test]
    fn boundary_condition_scalings() {
        let (skip, out) = boundary_scalings(0.0, 10.0);
        assert_eq!((skip, out), (1.0, 0.0));
        let (skip, out) = boundary_scalings(999.0, 10.0);
        assert!((skip - 0.25 / (9990.0f32 * 9990.0 + 0.25)).abs() < 1e-12);
        assert!((out - 1.0).abs() < 1e-6);
    }

    /// One full run against the formula written out here with the same alphas_cumprod:
    /// a step re-noises with the drawn noise, the last returns the denoised sample.
    #[test]
    fn steps_match_the_formula() -> Result<()> {
        struct Fixed(Tensor);
        impl NoiseSource for Fixed {
            fn randn(&mut self, _: &[usize], _: &Device) -> Result<Tensor> {
                Ok(self.0.clone())
            }
        }
        let cfg = SchedulerConfig {
            beta_schedule: Some("scaled_linear".into()),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            ..Default::default()
        };
        let c = Common::resolve(&cfg, &DEFAULTS).expect("config");
        let mut s = Lcm::new(&cfg, 2).expect("lcm");
        assert_eq!(s.timesteps(), &[999.0, 499.0]);
        let dev = Device::Cpu;
        let x = Tensor::new(&[0.5f32, -1.0, 2.0], &dev)?;
        let eps = Tensor::new(&[0.1f32, 0.2, -0.3], &dev)?;
        let z = Tensor::new(&[1.0f32, -1.0, 0.5], &dev)?;
        let mut noise = Fixed(z.clone());
        let got = s.step(&eps, 999.0, &x, &mut noise)?.to_vec1::<f32>()?;
        let (a, a_prev) = (c.alphas_cumprod[999], c.alphas_cumprod[499]);
        let (skip, out) = boundary_scalings(999.0, 10.0);
        let xs = x.to_vec1::<f32>()?;
        let es = eps.to_vec1::<f32>()?;
        let zs = z.to_vec1::<f32>()?;
        for j in 0..3 {
            let x0 = (xs[j] - (1.0 - a).sqrt() * es[j]) / a.sqrt();
            let den = out * x0 + skip * xs[j];
            let want = a_prev.sqrt() * den + (1.0 - a_prev).sqrt() * zs[j];
            assert!((got[j] - want).abs() < 1e-5, "{j}: {} vs {want}", got[j]);
        }
        let got = s.step(&eps, 499.0, &x, &mut noise)?.to_vec1::<f32>()?;
        let (skip, out) = boundary_scalings(499.0, 10.0);
        for j in 0..3 {
            let x0 = (xs[j] - (1.0 - a_prev).sqrt() * es[j]) / a_prev.sqrt();
            let want = out * x0 + skip * xs[j];
            assert!(
                (got[j] - want).abs() < 1e-5,
                "last {j}: {} vs {want}",
                got[j]
            );
        }
        Ok(())
    }
}
