//! UniPC multistep (diffusers `UniPCMultistepScheduler`, predict_x0, bh1/bh2): a
//! predictor step after each model call, preceded by a corrector that refines the previous
//! step's result with the new model output. Float32 coefficients as in diffusers; never
//! draws noise.

use candle_core::{Error, Result, Tensor};

use super::bookkeeping::impl_scheduler;
use super::common::{div, mul, weighted_sum};
use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, Spacing, ZeroSnr};
use super::multistep::{
    alpha_sigma, data_prediction, lambda, multistep_schedule, solver_order, History,
};
use super::sigmas::SigmaSchedule;
use super::SchedulerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bh1,
    Bh2,
}

/// The diffusers class defaults of the shared config keys.
const DEFAULTS: ClassDefaults =
    ClassDefaults::new(Spacing::Linspace, ZeroSnr::RescaleClampLast).with_thresholding();

pub(crate) struct UniPc {
    prediction: PredictionType,
    s: SigmaSchedule,
    solver_order: usize,
    variant: Variant,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    history: History,
    last_sample: Option<Tensor>,
    this_order: usize,
}

/// Solves `a x = b` by LU with partial pivoting in float32 (as LAPACK's sgesv does).
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Result<Vec<f32>> {
    let n = b.len();
    let singular = || Error::Msg("unipc: singular coefficient system".into());
    for col in 0..n {
        let mut piv = col;
        for r in col + 1..n {
            if a[r][col].abs() > a[piv][col].abs() {
                piv = r;
            }
        }
        if a[piv][col] == 0.0 || !a[piv][col].is_finite() {
            return Err(singular());
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let inv = 1.0f32 / a[col][col];
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        let b_col = b[col];
        for (row, b_r) in lower.iter_mut().zip(b[col + 1..].iter_mut()) {
            let l = row[col] * inv;
            row[col] = l;
            for (x, p) in row[col + 1..].iter_mut().zip(&pivot_row[col + 1..]) {
                *x -= l * p;
            }
            *b_r -= l * b_col;
        }
    }
    let mut x = vec![0f32; n];
    for r in (0..n).rev() {
        let mut s = b[r];
        for (a_rc, x_c) in a[r][r + 1..].iter().zip(&x[r + 1..]) {
            s -= a_rc * x_c;
        }
        x[r] = s / a[r][r];
    }
    Ok(x)
}

/// The shared UniPC coefficient setup: hh = -h, h*phi_1, B(h), and the linear system.
struct Coeffs {
    h_phi_1: f32,
    b_h: f32,
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

fn coeffs(h: f32, rks: &[f32], order: usize, variant: Variant) -> Coeffs {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial_i: u64 = 1;
    let b_h = match variant {
        Variant::Bh1 => hh,
        Variant::Bh2 => hh.exp_m1(),
    };
    let mut r = Vec::with_capacity(order);
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
        b.push(h_phi_k * factorial_i as f32 / b_h);
        factorial_i *= i as u64 + 1;
        h_phi_k = h_phi_k / hh - (1.0f64 / factorial_i as f64) as f32;
    }
    Coeffs { h_phi_1, b_h, r, b }
}

impl UniPc {
    pub(crate) fn new(
        cfg: &SchedulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, SchedulerError> {
        let c = Common::for_steps(cfg, &DEFAULTS, num_inference_steps)?;
        if cfg.predict_x0 == Some(false) {
            return Err(SchedulerError::unsupported("predict_x0", "false"));
        }
        let variant = match cfg.solver_type.as_deref() {
            None | Some("bh2") => Variant::Bh2,
            Some("bh1") => Variant::Bh1,
            Some(other) => return Err(SchedulerError::unsupported("solver_type", other)),
        };
        let solver_order = solver_order(cfg, 3)?;
        let karras = cfg.use_karras_sigmas == Some(true);
        let s = multistep_schedule(&c, cfg, num_inference_steps, karras, true)?;
        Ok(UniPc {
            prediction: c.prediction_type,
            s,
            solver_order,
            variant,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            disable_corrector: cfg.disable_corrector.clone().unwrap_or_default(),
            history: History::new(solver_order),
            last_sample: None,
            this_order: 1,
        })
    }

    fn lambda_at(&self, i: usize) -> Result<f32> {
        let (a, s) = alpha_sigma(self.s.sigma(i)?);
        Ok(lambda(a, s))
    }

    /// Differences to older predictions (at indices `s0 - k`), scaled by their log-SNR
    /// ratio to the step size `h`.
    fn differences(&self, s0: usize, order: usize, h: f32) -> Result<(Vec<f32>, Vec<Tensor>)> {
        let m0 = self.history.get(0)?;
        let lambda_s0 = self.lambda_at(s0)?;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for k in 1..order {
            let si = s0
                .checked_sub(k)
                .ok_or_else(|| Error::Msg("unipc step index underflow".into()))?;
            let mi = self.history.get(k)?;
            let rk = (self.lambda_at(si)? - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div(&(mi - m0)?, rk)?);
        }
        rks.push(1.0);
        Ok((rks, d1s))
    }

    fn predictor(&self, i: usize, x: &Tensor, order: usize) -> Result<Tensor> {
        let m0 = self.history.get(0)?;
        let (alpha_t, sigma_t) = alpha_sigma(self.s.sigma(i + 1)?);
        let (_, sigma_s0) = alpha_sigma(self.s.sigma(i)?);
        let h = lambda(alpha_t, sigma_t) - self.lambda_at(i)?;
        let (rks, d1s) = self.differences(i, order, h)?;
        let k = coeffs(h, &rks, order, self.variant);
        let x_t_ = (mul(x, sigma_t / sigma_s0)? - mul(m0, alpha_t * k.h_phi_1)?)?;
        if d1s.is_empty() {
            return Ok(x_t_);
        }
        let rhos_p = if order == 2 {
            vec![0.5f32]
        } else {
            let r: Vec<Vec<f32>> = k.r[..order - 1]
                .iter()
                .map(|row| row[..order - 1].to_vec())
                .collect();
            solve(r, k.b[..order - 1].to_vec())?
        };
        match weighted_sum(rhos_p.iter().copied().zip(&d1s))? {
            Some(res) => x_t_ - mul(&res, alpha_t * k.b_h)?,
            None => Ok(x_t_),
        }
    }

    fn corrector(
        &self,
        i: usize,
        model_t: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        if i == 0 {
            return Err(Error::Msg("unipc corrector at the first step".into()));
        }
        let m0 = self.history.get(0)?;
        let (alpha_t, sigma_t) = alpha_sigma(self.s.sigma(i)?);
        let (_, sigma_s0) = alpha_sigma(self.s.sigma(i - 1)?);
        let h = lambda(alpha_t, sigma_t) - self.lambda_at(i - 1)?;
        let (rks, d1s) = self.differences(i - 1, order, h)?;
        let k = coeffs(h, &rks, order, self.variant);
        let rhos_c = if order == 1 {
            vec![0.5f32]
        } else {
            solve(k.r.clone(), k.b.clone())?
        };
        let x_t_ = (mul(last_sample, sigma_t / sigma_s0)? - mul(m0, alpha_t * k.h_phi_1)?)?;
        let last = *rhos_c
            .last()
            .ok_or_else(|| Error::Msg("unipc: empty corrector weights".into()))?;
        let d1_t = (model_t - m0)?;
        let mut corr = mul(&d1_t, last)?;
        if let Some(res) = weighted_sum(rhos_c[..rhos_c.len() - 1].iter().copied().zip(&d1s))? {
            corr = (res + corr)?;
        }
        x_t_ - mul(&corr, alpha_t * k.b_h)?
    }

    fn update(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<Tensor> {
        let i = self.s.index(timestep)?;
        let n = self.s.timesteps.len();
        if i >= n {
            return Err(Error::Msg(format!(
                "unipc step index {i} past the schedule"
            )));
        }
        let x0 = data_prediction(self.prediction, model_output, sample, self.s.sigma(i)?)?;
        let use_corrector = i > 0 && !self.disable_corrector.contains(&(i - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(i, &x0, last, self.this_order)?,
            _ => sample.clone(),
        };
        self.history.push(x0);
        let mut order = if self.lower_order_final {
            self.solver_order.min(n - i)
        } else {
            self.solver_order
        };
        order = order.min(self.history.lower_order_nums + 1);
        self.this_order = order;
        let prev = self.predictor(i, &sample, order)?;
        self.last_sample = Some(sample);
        self.history.warm_up();
        self.s.advance(i);
        Ok(prev)
    }
}

impl_scheduler!(UniPc, s, order = 1, deterministic);
