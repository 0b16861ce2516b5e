//! PNDM (diffusers `PNDMScheduler`): PLMS linear multistep over the last four model
//! outputs. With `skip_prk_steps` (every Stable Diffusion config) the warm-up repeats the
//! second timestep; without it, a Runge-Kutta warm-up of 4-call groups comes first, as in
//! diffusers. Never draws noise.

use candle_core::{Error, Result, Tensor};

use super::alphas::{final_alpha_cumprod, predict_eps, AlphaSchedule, Transition};
use super::bookkeeping::impl_scheduler;
use super::common::{at, div, integer_timesteps, mul};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::SchedulerError;

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults = ClassDefaults::new(Spacing::Leading, ZeroSnr::Ignored);

pub(crate) struct Pndm {
    prediction: PredictionType,
    a: AlphaSchedule,
    /// Number of leading Runge-Kutta timesteps (0 with skip_prk_steps).
    prk_len: usize,
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
    /// Runge-Kutta accumulator of the current 4-call group.
    cur_model_output: Option<Tensor>,
}

impl Pndm {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        if c.prediction_type == PredictionType::Sample {
            return Err(SchedulerError::unsupported("prediction_type", "sample"));
        }
        let final_alpha_cumprod = final_alpha_cumprod(cfg, &c, false);
        let mut asc = integer_timesteps(&c, num_inference_steps);
        asc.reverse();
        let n = asc.len();
        let (prk, mut plms) = if cfg.skip_prk_steps.unwrap_or(false) {
            // The ascending list with its second-to-last entry repeated, reversed.
            let mut plms: Vec<f64> = asc[..n - 1].to_vec();
            if n >= 2 {
                plms.push(asc[n - 2]);
            }
            plms.push(asc[n - 1]);
            (Vec::new(), plms)
        } else {
            let half = (c.num_train_timesteps / num_inference_steps / 2) as f64;
            let pairs: Vec<f64> = asc[n.saturating_sub(4)..]
                .iter()
                .flat_map(|t| [*t, *t + half])
                .collect();
            let doubled: Vec<f64> = pairs[..pairs.len() - 1]
                .iter()
                .flat_map(|t| [*t, *t])
                .collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            (prk, asc[..n.saturating_sub(3)].to_vec())
        };
        plms.reverse();
        let prk_len = prk.len();
        let mut timesteps = prk;
        timesteps.extend(plms);
        if timesteps.is_empty() {
            return Err(SchedulerError::InvalidConfig(
                "PNDM with the Runge-Kutta warm-up (skip_prk_steps false) needs 2+ steps".into(),
            ));
        }
        let a = AlphaSchedule::new(&c, timesteps, final_alpha_cumprod, num_inference_steps)?;
        Ok(Pndm {
            prediction: c.prediction_type,
            a,
            prk_len,
            ets: Vec::new(),
            counter: 0,
            cur_sample: None,
            cur_model_output: None,
        })
    }

    /// One call of the Runge-Kutta warm-up (diffusers `step_prk`).
    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            (self.a.step_ratio / 2) as i64
        };
        let prev_t = self.a.train_index(timestep)? as i64 - diff_to_prev;
        let t = at(&self.a.timesteps, self.counter / 4 * 4, "timesteps")? as i64;
        let add = |acc: Option<Tensor>, term: Tensor| -> Result<Tensor> {
            match acc {
                None => Ok(term),
                Some(a) => a + term,
            }
        };
        let sixth = (1.0f64 / 6.0) as f32;
        let third = (1.0f64 / 3.0) as f32;
        let model_output = match self.counter % 4 {
            0 => {
                let acc = add(self.cur_model_output.take(), mul(model_output, sixth)?)?;
                self.cur_model_output = Some(acc);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                let acc = add(self.cur_model_output.take(), mul(model_output, third)?)?;
                self.cur_model_output = Some(acc);
                model_output.clone()
            }
            _ => add(self.cur_model_output.take(), mul(model_output, sixth)?)?,
        };
        let cur_sample = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev = self.prev_sample(&cur_sample, t, prev_t, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    fn prev_sample(
        &self,
        sample: &Tensor,
        t: i64,
        prev_t: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        if t < 0 {
            return Err(Error::Msg(format!("pndm timestep {t} is negative")));
        }
        let Transition {
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t,
            beta_prod_t_prev,
        } = self.a.transition(t, prev_t)?;
        let model_output = predict_eps(self.prediction, model_output, sample, alpha_prod_t)?;
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_t_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        let rhs = div(
            &mul(&model_output, alpha_prod_t_prev - alpha_prod_t)?,
            denom,
        )?;
        mul(sample, sample_coeff)? - rhs
    }

    fn update(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        if self.counter < self.prk_len {
            return self.step_prk(model_output, timestep, sample);
        }
        if self.prk_len > 0 && self.ets.len() < 3 {
            return Err(Error::Msg(
                "pndm: the Runge-Kutta warm-up did not run before PLMS".into(),
            ));
        }
        let ratio = self.a.step_ratio as i64;
        let mut t = self.a.train_index(timestep)? as i64;
        let mut prev_t = t - ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let n = self.ets.len();
        let e = |i: usize| -> Result<&Tensor> {
            self.ets
                .get(n.wrapping_sub(i))
                .ok_or_else(|| Error::Msg("pndm history is empty".into()))
        };
        let mut sample = sample.clone();
        let combined = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if n == 1 && self.counter == 1 {
            let combined = ((model_output + e(1)?)? / 2.0)?;
            sample = self
                .cur_sample
                .take()
                .ok_or_else(|| Error::Msg("pndm warm-up sample missing".into()))?;
            combined
        } else if n == 2 {
            div(&(mul(e(1)?, 3.0)? - e(2)?)?, 2.0)?
        } else if n == 3 {
            let s = ((mul(e(1)?, 23.0)? - mul(e(2)?, 16.0)?)? + mul(e(3)?, 5.0)?)?;
            div(&s, 12.0)?
        } else {
            let s = (((mul(e(1)?, 55.0)? - mul(e(2)?, 59.0)?)? + mul(e(3)?, 37.0)?)?
                - mul(e(4)?, 9.0)?)?;
            mul(&s, (1.0f64 / 24.0) as f32)?
        };
        let prev = self.prev_sample(&sample, t, prev_t, &combined)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl_scheduler!(Pndm, a, order = 1, deterministic);
