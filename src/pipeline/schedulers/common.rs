//! Numerics shared by the schedulers, written to round like torch (float32 tensors) and
//! numpy (float64 arrays) do in diffusers: beta schedules, timestep spacing, `np.interp`,
//! Karras sigmas, and exact float32 scalar-times-tensor helpers. Never allocates model state.

use candle_core::{Error, Result, Tensor};

use super::config::{Common, SchedulerConfig, Spacing};
use super::{NoiseSource, SchedulerError};

/// `torch.linspace(start, end, steps, dtype=float32)` on CPU: the two halves are computed
/// from opposite ends so both endpoints are exact, and torch's compiled kernel fuses the
/// multiply-add (this reproduces diffusers' alphas_cumprod bit for bit).
fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// The squaredcos_cap_v2 (Glide cosine) schedule, float64 math then float32 like diffusers.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Betas from the config: trained_betas, or one of the named schedules.
pub(crate) fn betas(
    cfg: &SchedulerConfig,
    n: usize,
    default_start: f64,
    default_end: f64,
) -> std::result::Result<Vec<f32>, SchedulerError> {
    if let Some(trained) = &cfg.trained_betas {
        if trained.len() != n {
            return Err(SchedulerError::InvalidConfig(format!(
                "trained_betas has {} values, num_train_timesteps is {n}",
                trained.len()
            )));
        }
        return Ok(trained.iter().map(|b| *b as f32).collect());
    }
    let start = cfg.beta_start.unwrap_or(default_start);
    let end = cfg.beta_end.unwrap_or(default_end);
    let schedule = cfg.beta_schedule.as_deref().unwrap_or("linear");
    let betas = match schedule {
        "linear" => torch_linspace_f32(start as f32, end as f32, n),
        "scaled_linear" => {
            if start < 0.0 || end < 0.0 {
                return Err(SchedulerError::InvalidConfig(
                    "scaled_linear needs non-negative beta_start and beta_end".into(),
                ));
            }
            torch_linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        "squaredcos_cap_v2" => cosine_betas(n),
        other => return Err(SchedulerError::unsupported("beta_schedule", other)),
    };
    if betas
        .iter()
        .any(|b| !b.is_finite() || *b <= 0.0 || *b >= 1.0)
    {
        return Err(SchedulerError::InvalidConfig(
            "betas must lie strictly between 0 and 1".into(),
        ));
    }
    Ok(betas)
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1) in float32:
/// shifts and scales sqrt(alphas_cumprod) so the last timestep has zero SNR.
pub(crate) fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let ac = cumprod_alphas(betas);
    let mut sq: Vec<f32> = ac.iter().map(|a| a.sqrt()).collect();
    let (Some(&a0), Some(&at)) = (sq.first(), sq.last()) else {
        return betas.to_vec();
    };
    let scale = a0 / (a0 - at);
    for v in sq.iter_mut() {
        *v -= at;
        *v *= scale;
    }
    let bar: Vec<f32> = sq.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0f32 - bar[0]);
    for w in bar.windows(2) {
        out.push(1.0f32 - w[1] / w[0]);
    }
    out
}

/// `torch.cumprod(1 - betas)` in float32; torch's CPU kernel accumulates in double.
pub(crate) fn cumprod_alphas(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` as a float32 torch expression.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0f32 - a) / a).sqrt())
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)` in float64.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return f64::NAN;
    }
    let last = (n - 1) as f64;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    let xj = j as f64;
    if x == xj {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - xj) + fp[j] as f64
}

/// `np.linspace(start, stop, num)` (float64, exact endpoint).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    out[num - 1] = stop;
    out
}

/// `np.arange(start, 0, -step)` for a positive float step, capped at `count` values.
/// numpy's length `ceil(start / step)` overshoots by one for some step counts (61, 103,
/// ...), which makes diffusers emit an extra timestep -1; we deliberately drop it.
fn np_arange_down(start: f64, step: f64, count: usize) -> Vec<f64> {
    let len = ((start / step).ceil().max(0.0) as usize).min(count);
    (0..len).map(|i| start + i as f64 * -step).collect()
}

/// "linspace" spacing before rounding: `num` points from n_train - 1 down to 0.
fn linspace_down(n_train: usize, num: usize) -> impl Iterator<Item = f64> {
    np_linspace(0.0, (n_train - 1) as f64, num)
        .into_iter()
        .rev()
}

/// "trailing" spacing: `count` integer timesteps from n_train - 1 down by n_train / count.
fn trailing(n_train: usize, count: usize) -> Vec<f64> {
    let ratio = n_train as f64 / count as f64;
    np_arange_down(n_train as f64, ratio, count)
        .into_iter()
        .map(|t| t.round_ties_even() - 1.0)
        .collect()
}

/// Integer-valued spacing used by DDIM, DDPM and PNDM (descending; `count` timesteps).
/// PNDM wants the ascending list, so it reverses this.
pub(crate) fn integer_timesteps(c: &Common, count: usize) -> Vec<f64> {
    let n_train = c.num_train_timesteps;
    match c.spacing {
        Spacing::Linspace => linspace_down(n_train, count)
            .map(f64::round_ties_even)
            .collect(),
        Spacing::Leading => {
            let ratio = n_train / count;
            (0..count)
                .rev()
                .map(|i| (i * ratio).saturating_add(c.steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => trailing(n_train, count),
    }
}

/// The float32 timesteps of the sigma-space schedulers (Euler, Euler a, Heun, LMS).
pub(crate) fn float_timesteps(c: &Common, count: usize) -> Vec<f64> {
    let n_train = c.num_train_timesteps;
    let raw: Vec<f64> = match c.spacing {
        Spacing::Linspace => linspace_down(n_train, count).collect(),
        Spacing::Leading => {
            let ratio = n_train / count;
            (0..count)
                .rev()
                .map(|i| (i * ratio) as f64 + c.steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => trailing(n_train, count),
    };
    raw.into_iter().map(|t| t as f32 as f64).collect()
}

/// Timesteps of the multistep solvers (DPM-Solver++, UniPC): `count + 1` points with the
/// last dropped, rounded to integers.
pub(crate) fn multistep_timesteps(c: &Common, count: usize) -> Vec<f64> {
    let n_train = c.num_train_timesteps;
    match c.spacing {
        Spacing::Linspace => {
            let mut v: Vec<f64> = linspace_down(n_train, count + 1)
                .map(f64::round_ties_even)
                .collect();
            v.pop();
            v
        }
        Spacing::Leading => {
            let ratio = n_train / (count + 1);
            (1..=count)
                .rev()
                .map(|i| (i * ratio).saturating_add(c.steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => trailing(n_train, count),
    }
}

/// Karras et al. (2022) sigma ramp, float64 like diffusers' numpy code.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, count: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, count)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// diffusers' `_sigma_to_t`: interpolates a sigma back to a (fractional) training timestep
/// in log-sigma space. `log_sigmas` is the float32 `np.log` of the training sigmas.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    let low_idx = log_sigmas
        .iter()
        .rposition(|ls| log_sigma - *ls as f64 >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Float32 `np.log` of the training sigmas.
pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|s| (*s as f64).ln() as f32).collect()
}

/// `tensor * c` with a float32 scalar, rounded once like torch.
pub(crate) fn mul(t: &Tensor, c: f32) -> Result<Tensor> {
    t.affine(c as f64, 0.0)
}

/// `tensor / c` with a float32 scalar: a true division, not a multiply by the reciprocal.
pub(crate) fn div(t: &Tensor, c: f32) -> Result<Tensor> {
    let s = Tensor::new(c, t.device())?.to_dtype(t.dtype())?;
    t.broadcast_div(&s)
}

/// `sum_k w_k * t_k` in order (None for no terms), each term rounded like torch's
/// scalar-times-tensor.
pub(crate) fn weighted_sum<'a>(
    terms: impl IntoIterator<Item = (f32, &'a Tensor)>,
) -> Result<Option<Tensor>> {
    let mut acc: Option<Tensor> = None;
    for (w, t) in terms {
        let term = mul(t, w)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    Ok(acc)
}

/// A standard-normal draw shaped, placed and typed like `like` (the step noise of the
/// stochastic schedulers).
pub(crate) fn randn_like(noise: &mut dyn NoiseSource, like: &Tensor) -> Result<Tensor> {
    noise
        .randn(like.dims(), like.device())?
        .to_dtype(like.dtype())
}

/// Tracks diffusers' `_step_index` / `_begin_index` for the stateful schedulers.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepIndex {
    pub begin: Option<usize>,
    pub step: Option<usize>,
}

/// How a timestep that is absent from the schedule is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    Error,
    Last,
}

/// diffusers' `index_for_timestep`: the second match when the timestep is listed twice (so
/// img2img starting mid-schedule never skips a sigma).
pub(crate) fn index_for_timestep(timesteps: &[f64], t: f64, missing: Missing) -> Result<usize> {
    let found: Vec<usize> = timesteps
        .iter()
        .enumerate()
        .filter(|(_, x)| **x == t)
        .map(|(i, _)| i)
        .collect();
    match found.len() {
        0 => match missing {
            Missing::Last if !timesteps.is_empty() => Ok(timesteps.len() - 1),
            _ => Err(Error::Msg(format!(
                "timestep {t} is not in the scheduler's schedule"
            ))),
        },
        1 => Ok(found[0]),
        _ => Ok(found[1]),
    }
}

impl StepIndex {
    /// The index the next `step` will use (`_init_step_index` without mutating).
    pub(crate) fn current(&self, timesteps: &[f64], t: f64, missing: Missing) -> Result<usize> {
        match (self.step, self.begin) {
            (Some(s), _) => Ok(s),
            (None, Some(b)) => Ok(b),
            (None, None) => index_for_timestep(timesteps, t, missing),
        }
    }

    /// The index `add_noise` uses: diffusers reads begin_index/step_index when set.
    pub(crate) fn for_add_noise(
        &self,
        timesteps: &[f64],
        t: f64,
        missing: Missing,
    ) -> Result<usize> {
        match (self.begin, self.step) {
            (None, _) => index_for_timestep(timesteps, t, missing),
            (Some(_), Some(s)) => Ok(s),
            (Some(b), None) => Ok(b),
        }
    }
}

/// Bounds-checked slice access that reports instead of panicking.
pub(crate) fn at<T: Copy>(v: &[T], i: usize, what: &str) -> Result<T> {
    v.get(i)
        .copied()
        .ok_or_else(|| Error::Msg(format!("{what} index {i} out of range ({})", v.len())))
}

/// The integer training timestep a float timestep names (DDIM/DDPM/PNDM index by it).
pub(crate) fn train_index(t: f64, n_train: usize) -> Result<usize> {
    if !t.is_finite() || t < 0.0 || t.fract() != 0.0 || t as usize >= n_train {
        return Err(Error::Msg(format!(
            "timestep {t} is not an integer training timestep below {n_train}"
        )));
    }
    Ok(t as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_rules() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(np_interp(-1.0, &fp), 1.0);
        assert_eq!(np_interp(1.0, &fp), 3.0);
        assert_eq!(np_interp(1.25, &fp), 4.0);
        assert_eq!(np_interp(9.0, &fp), 7.0);
    }

    #[test]
    fn linspace_endpoints_are_exact() {
        let v = np_linspace(0.0, 999.0, 5);
        assert_eq!(v, vec![0.0, 249.75, 499.5, 749.25, 999.0]);
        let t = torch_linspace_f32(0.1, 0.7, 7);
        assert_eq!(t[0], 0.1);
        assert_eq!(t[6], 0.7);
    }

    #[test]
    fn trailing_never_overshoots() {
        // ceil(1000 / (1000 / 61)) is 62 in float64.
        assert_eq!(np_arange_down(1000.0, 1000.0 / 61.0, 61).len(), 61);
        assert_eq!(
            np_arange_down(1000.0, 250.0, 4),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
    }

    #[test]
    fn sigma_to_t_inverts_the_training_sigmas() {
        let betas: Vec<f32> = torch_linspace_f32(0.00085f32.sqrt(), 0.012f32.sqrt(), 1000)
            .into_iter()
            .map(|b| b * b)
            .collect();
        let sig = train_sigmas(&cumprod_alphas(&betas));
        let logs = log_sigmas(&sig);
        for t in [0usize, 1, 250, 999] {
            assert!((sigma_to_t(sig[t] as f64, &logs) - t as f64).abs() < 1e-3);
        }
        // Halfway in log space between two neighbours lands halfway in time.
        let mid = ((sig[500] as f64).ln() + (sig[501] as f64).ln()) / 2.0;
        assert!((sigma_to_t(mid.exp(), &logs) - 500.5).abs() < 1e-3);
        // Below the smallest sigma clamps to 0.
        assert_eq!(sigma_to_t(1e-6, &logs), 0.0);
    }

    #[test]
    fn karras_ramp_hits_both_ends() {
        let k = karras_sigmas(0.03, 14.6, 5);
        assert!((k[0] - 14.6).abs() < 1e-12);
        assert!((k[4] - 0.03).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }
}
