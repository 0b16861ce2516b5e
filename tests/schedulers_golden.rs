//! Replays the diffusers golden cases through our schedulers: the recorded guided UNet
//! outputs are fed to `step`, and every scaled UNet input, per-step latent and final latent
//! is compared with what diffusers produced. Also hand-derived checks for DDPM and the
//! timestep spacings. Reads fixtures only; never writes anything.

mod fixture_common;

use std::collections::{HashMap, VecDeque};

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use fixture_common::fixtures;
use runai::pipeline::noise::NoiseSource;
use runai::pipeline::params::SchedulerKind;
use runai::pipeline::schedulers::{build, SchedulerError};
use serde_json::{json, Value};

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    // Python's json writes lambda_min_clipped as -Infinity, which is not JSON.
    serde_json::from_str(&text.replace("-Infinity", "null")).unwrap()
}

fn model_config(model: &str) -> Value {
    let p = fixtures().join(format!("models/{model}/scheduler/scheduler_config.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn kind_of(name: &str) -> SchedulerKind {
    match name {
        "ddim" => SchedulerKind::Ddim,
        "euler" => SchedulerKind::Euler,
        "euler_a" => SchedulerKind::EulerAncestral,
        "dpmpp_2m" => SchedulerKind::DpmPp2m,
        "dpmpp_2m_karras" => SchedulerKind::DpmPp2mKarras,
        "pndm" => SchedulerKind::Pndm,
        "lms" => SchedulerKind::Lms,
        "heun" => SchedulerKind::Heun,
        "unipc" => SchedulerKind::UniPc,
        other => panic!("unknown golden scheduler {other}"),
    }
}

/// Replays recorded draws in order; any extra draw is an error (a scheduler drawing noise
/// diffusers did not draw).
struct Replay(VecDeque<Tensor>);

impl NoiseSource for Replay {
    fn randn(&mut self, shape: &[usize], _device: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .0
            .pop_front()
            .ok_or_else(|| candle_core::Error::Msg("unexpected noise draw".into()))?;
        if t.dims() != shape {
            return Err(candle_core::Error::Msg(format!(
                "draw shape {:?} != requested {shape:?}",
                t.dims()
            )));
        }
        Ok(t)
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        bail!("shape {:?} != {:?}", a.dims(), b.dims());
    }
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn max_abs(a: &Tensor) -> Result<f32> {
    Ok(a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Tight tolerance: float32 rounding noise scaled by the tensor's magnitude.
fn check(what: &str, ours: &Tensor, golden: &Tensor, worst: &mut f32) -> Result<()> {
    let d = max_abs_diff(ours, golden)?;
    let tol = 1e-5 * max_abs(golden)?.max(1.0);
    *worst = worst.max(d);
    if std::env::var("SCHED_VERBOSE").is_ok() {
        println!("  {what}: {d:e}");
    }
    if d.is_nan() || d > tol {
        bail!("{what}: max abs diff {d:e} > {tol:e}");
    }
    Ok(())
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0])
}

/// Runs one golden case; returns the worst latent diff.
fn run_case(case: &Value) -> Result<f32> {
    let id = case["id"].as_str().unwrap();
    let model = case["model"].as_str().unwrap();
    let name = case["scheduler"]["name"].as_str().unwrap();
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let eta = case["scheduler_call_kwargs"]["eta"].as_f64().unwrap_or(0.0);
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixtures().join(case["files"]["tensors"].as_str().unwrap()),
        &Device::Cpu,
    )?;
    let get = |k: &str| {
        tensors
            .get(k)
            .cloned()
            .ok_or_else(|| anyhow!("{id}: no tensor {k}"))
    };

    let mut sched = build(kind_of(name), &model_config(model), steps, eta)?;
    let want_ts = f64s(&case["timesteps"]);
    if sched.timesteps() != want_ts.as_slice() {
        bail!("{id}: timesteps {:?} != {want_ts:?}", sched.timesteps());
    }
    let want_sigma = case["scheduler"]["init_noise_sigma"].as_f64().unwrap();
    if (sched.init_noise_sigma() - want_sigma).abs() > 1e-6 * want_sigma {
        bail!(
            "{id}: init_noise_sigma {} != {want_sigma}",
            sched.init_noise_sigma()
        );
    }
    if case["scheduler"]["order"].as_u64().unwrap() as usize != sched.order() {
        bail!("{id}: order {} mismatch", sched.order());
    }

    let unet_ts = f64s(&case["unet_timesteps"]);
    let n_calls = case["n_unet_calls"].as_u64().unwrap() as usize;
    if unet_ts.len() != n_calls || unet_ts.len() > want_ts.len() {
        bail!("{id}: bad unet_timesteps");
    }
    let begin = want_ts.len() - unet_ts.len();
    if sched.timesteps()[begin..] != unet_ts[..] {
        bail!("{id}: unet timesteps are not the schedule's tail");
    }
    let mut worst = 0f32;

    let mut latents = if case["task"] == "img2img" {
        sched.set_begin_index(begin);
        let t0 = scalar(&get("add_noise_timestep_0")?)?;
        if t0 != unet_ts[0] {
            bail!("{id}: add_noise timestep {t0} != first unet timestep");
        }
        let noised = sched.add_noise(
            &get("add_noise_original_0")?,
            &get("add_noise_noise_0")?,
            unet_ts[0],
        )?;
        check(
            &format!("{id} add_noise"),
            &noised,
            &get("add_noise_out_0")?,
            &mut worst,
        )?;
        noised
    } else {
        let sigma = sched.init_noise_sigma() as f32;
        get("init_noise")?.affine(sigma as f64, 0.0)?
    };

    // Only the draws the scheduler makes (not the VAE's or img2img's) are replayed.
    let draws: VecDeque<Tensor> = case["randn_draws_in_order"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["site"].as_str().unwrap().ends_with("_step"))
        .map(|d| get(d["key"].as_str().unwrap()))
        .collect::<Result<_>>()?;
    let mut noise = Replay(draws);

    for (k, t) in unet_ts.iter().enumerate() {
        let gt = scalar(&get(&format!("unet_t_{k}"))?)?;
        if gt != *t {
            bail!("{id}: unet_t_{k} = {gt} != {t}");
        }
        let x = sched.scale_model_input(&latents, *t)?;
        let unet_in =
            get(&format!("unet_in_{k}"))?
                .narrow(0, 0, 1)?
                .narrow(1, 0, latents.dim(1)?)?;
        check(&format!("{id} unet_in_{k}"), &x, &unet_in, &mut worst)?;
        let pred = get(&format!("noise_pred_{k}"))?;
        latents = sched.step(&pred, *t, &latents, &mut noise)?;
        check(
            &format!("{id} latents_after_step_{k}"),
            &latents,
            &get(&format!("latents_after_step_{k}"))?,
            &mut worst,
        )?;
    }
    check(
        &format!("{id} final_latents"),
        &latents,
        &get("final_latents")?,
        &mut worst,
    )?;
    if !noise.0.is_empty() {
        bail!("{id}: {} recorded draws were not used", noise.0.len());
    }
    Ok(worst)
}

fn run_named(names: &[&str]) {
    let m = manifest();
    let mut n = 0;
    let mut failures = Vec::new();
    for case in m["cases"].as_array().unwrap() {
        if !names.contains(&case["scheduler"]["name"].as_str().unwrap()) {
            continue;
        }
        n += 1;
        match run_case(case) {
            Ok(d) => println!("{}: max abs diff {d:e}", case["id"].as_str().unwrap()),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    assert!(n > 0, "no golden case for {names:?}");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn golden_ddim() {
    run_named(&["ddim"]);
}

#[test]
fn golden_euler() {
    run_named(&["euler"]);
}

#[test]
fn golden_euler_ancestral() {
    run_named(&["euler_a"]);
}

#[test]
fn golden_pndm() {
    run_named(&["pndm"]);
}

#[test]
fn golden_lms() {
    run_named(&["lms"]);
}

#[test]
fn golden_heun() {
    run_named(&["heun"]);
}

#[test]
fn golden_dpmpp_2m() {
    run_named(&["dpmpp_2m"]);
}

#[test]
fn golden_dpmpp_2m_karras() {
    run_named(&["dpmpp_2m_karras"]);
}

#[test]
fn golden_unipc() {
    run_named(&["unipc"]);
}

#[test]
fn every_golden_case_has_a_test() {
    let known = [
        "ddim",
        "euler",
        "euler_a",
        "pndm",
        "lms",
        "heun",
        "dpmpp_2m",
        "dpmpp_2m_karras",
        "unipc",
    ];
    let m = manifest();
    let cases = m["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 25);
    for case in cases {
        let name = case["scheduler"]["name"].as_str().unwrap();
        assert!(known.contains(&name), "golden case with scheduler {name}");
    }
}

fn sd1() -> Value {
    model_config("tiny-sd1")
}

fn ts(kind: SchedulerKind, cfg: &Value, steps: usize) -> Vec<f64> {
    build(kind, cfg, steps, 0.0).unwrap().timesteps().to_vec()
}

/// alphas_cumprod of the SD scaled_linear schedule, in float64 from the formula.
fn sd_alphas_cumprod() -> Vec<f64> {
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut acc = 1.0;
    (0..1000)
        .map(|i| {
            let beta = (a + (b - a) * i as f64 / 999.0).powi(2);
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

fn sd_sigma(t: usize) -> f64 {
    let ac = sd_alphas_cumprod()[t];
    ((1.0 - ac) / ac).sqrt()
}

#[test]
fn ddim_spacings() {
    let mut cfg = sd1();
    assert_eq!(
        ts(SchedulerKind::Ddim, &cfg, 4),
        vec![751.0, 501.0, 251.0, 1.0]
    );
    cfg["timestep_spacing"] = json!("trailing");
    // np.round(np.arange(1000, 0, -250)) - 1
    assert_eq!(
        ts(SchedulerKind::Ddim, &cfg, 4),
        vec![999.0, 749.0, 499.0, 249.0]
    );
    // 1000/3: arange -> 1000, 666.67, 333.33 -> round -> 1000, 667, 333, minus 1
    assert_eq!(ts(SchedulerKind::Ddim, &cfg, 3), vec![999.0, 666.0, 332.0]);
    cfg["timestep_spacing"] = json!("linspace");
    // np.linspace(0, 999, 4) = 0, 333, 666, 999
    assert_eq!(
        ts(SchedulerKind::Ddim, &cfg, 4),
        vec![999.0, 666.0, 333.0, 0.0]
    );
    // np.linspace(0, 999, 5) = 0, 249.75, 499.5, 749.25, 999 -> round half to even
    assert_eq!(
        ts(SchedulerKind::Ddim, &cfg, 5),
        vec![999.0, 749.0, 500.0, 250.0, 0.0]
    );
    let mut cfg = sd1();
    cfg["steps_offset"] = json!(0);
    assert_eq!(
        ts(SchedulerKind::Ddim, &cfg, 4),
        vec![750.0, 500.0, 250.0, 0.0]
    );
}

#[test]
fn euler_spacings_and_init_sigma() {
    let mut cfg = sd1();
    // Euler's class default is linspace: fractional timesteps for 5 steps.
    assert_eq!(
        ts(SchedulerKind::Euler, &cfg, 5),
        vec![999.0, 749.25, 499.5, 249.75, 0.0]
    );
    let lin = build(SchedulerKind::Euler, &cfg, 4, 0.0).unwrap();
    let want = sd_sigma(999);
    assert!((lin.init_noise_sigma() - want).abs() < 1e-5 * want);
    // Leading spacing: sigma of timestep 751, and init sigma sqrt(sigma^2 + 1).
    cfg["timestep_spacing"] = json!("leading");
    let s = build(SchedulerKind::Euler, &cfg, 4, 0.0).unwrap();
    assert_eq!(s.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
    let want = (sd_sigma(751).powi(2) + 1.0).sqrt();
    assert!((s.init_noise_sigma() - want).abs() < 1e-5 * want);
    cfg["timestep_spacing"] = json!("trailing");
    assert_eq!(
        ts(SchedulerKind::Euler, &cfg, 4),
        vec![999.0, 749.0, 499.0, 249.0]
    );
}

#[test]
fn euler_scale_and_step_match_hand_formula() {
    let cfg = sd1();
    let mut s = build(SchedulerKind::Euler, &cfg, 5, 0.0).unwrap();
    // sigma at the fractional timestep 749.25 interpolates linearly between 749 and 750.
    let t = s.timesteps()[1];
    s.set_begin_index(1);
    let sig = sd_sigma(749) * 0.75 + sd_sigma(750) * 0.25;
    let x = Tensor::ones((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let scaled = s.scale_model_input(&x, t).unwrap();
    let v = scaled.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    assert!((v - 1.0 / (sig * sig + 1.0).sqrt()).abs() < 1e-5);
    // eps = 0.5: prev = x + (x - (x - sig*eps))/sig * (sig_next - sig) = x + eps*(sig_next - sig)
    let eps = Tensor::full(0.5f32, (1, 4, 2, 2), &Device::Cpu).unwrap();
    let mut no_noise = Replay(VecDeque::new());
    let out = s.step(&eps, t, &x, &mut no_noise).unwrap();
    let sig_next = sd_sigma(499) * 0.5 + sd_sigma(500) * 0.5;
    let o = out.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    assert!((o - (1.0 + 0.5 * (sig_next - sig))).abs() < 1e-4);
}

#[test]
fn bad_configs_are_errors() {
    let mut cfg = sd1();
    assert!(matches!(
        build(SchedulerKind::Ddim, &cfg, 0, 0.0),
        Err(SchedulerError::InvalidSteps { .. })
    ));
    assert!(matches!(
        build(SchedulerKind::Euler, &cfg, 1001, 0.0),
        Err(SchedulerError::InvalidSteps { .. })
    ));
    cfg["beta_schedule"] = json!("nope");
    assert!(build(SchedulerKind::Ddim, &cfg, 4, 0.0).is_err());
    assert!(build(SchedulerKind::Euler, &cfg, 4, 0.0).is_err());
    let mut cfg = sd1();
    cfg["steps_offset"] = json!("one");
    assert!(matches!(
        build(SchedulerKind::Ddim, &cfg, 4, 0.0),
        Err(SchedulerError::InvalidConfig(_))
    ));
    assert!(build(SchedulerKind::Ddim, &json!([1, 2]), 4, 0.0).is_err());
    let mut cfg = sd1();
    cfg["trained_betas"] = json!([0.1, 0.2]);
    assert!(build(SchedulerKind::Ddim, &cfg, 4, 0.0).is_err());
    assert!(build(SchedulerKind::Ddim, &sd1(), 4, -1.0).is_err());
    let mut cfg = sd1();
    cfg["steps_offset"] = json!(400);
    assert!(build(SchedulerKind::Ddim, &cfg, 4, 0.0).is_err());
}

/// Noise source handing out constant-valued draws and counting them.
struct Constant {
    value: f32,
    draws: usize,
}

impl NoiseSource for Constant {
    fn randn(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        self.draws += 1;
        Tensor::full(self.value, shape, device)
    }
}

fn first(t: &Tensor) -> f64 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
}

fn full(v: f32) -> Tensor {
    Tensor::full(v, (1, 4, 2, 2), &Device::Cpu).unwrap()
}

#[test]
fn ddpm_matches_hand_derived_posterior() {
    let cfg = sd1();
    let ac = sd_alphas_cumprod();
    let mut s = build(SchedulerKind::Ddpm, &cfg, 4, 0.0).unwrap();
    // DDPM's class default spacing is leading; the model config adds steps_offset 1.
    assert_eq!(s.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
    assert_eq!(s.init_noise_sigma(), 1.0);
    let (x, eps, z) = (0.8f32, 0.3f32, -1.5f32);
    let mut noise = Constant { value: z, draws: 0 };
    let pairs = [
        (751, Some(501)),
        (501, Some(251)),
        (251, Some(1)),
        (1, None),
    ];
    for (t, prev) in pairs {
        let a_t = ac[t];
        let a_prev = prev.map(|p| ac[p]).unwrap_or(1.0);
        let x0 = (x as f64 - (1.0 - a_t).sqrt() * eps as f64) / a_t.sqrt();
        let beta_t = 1.0 - a_t / a_prev;
        let c_x0 = a_prev.sqrt() * beta_t / (1.0 - a_t);
        let c_x = (a_t / a_prev).sqrt() * (1.0 - a_prev) / (1.0 - a_t);
        let var = ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20);
        let want = c_x0 * x0 + c_x * x as f64 + var.sqrt() * z as f64;
        let got = first(&s.step(&full(eps), t as f64, &full(x), &mut noise).unwrap());
        assert!((got - want).abs() < 2e-5, "t={t}: {got} vs {want}");
    }
    // One draw per step: every timestep is above 0.
    assert_eq!(noise.draws, 4);
}

#[test]
fn ddpm_is_deterministic_for_the_same_noise() {
    let cfg = model_config("tiny-sd2");
    let run = || {
        let mut s = build(SchedulerKind::Ddpm, &cfg, 6, 0.0).unwrap();
        let mut noise = Constant {
            value: 0.25,
            draws: 0,
        };
        let mut x = full(1.0);
        for t in s.timesteps().to_vec() {
            x = s.step(&full(0.1), t, &x, &mut noise).unwrap();
        }
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let a = run();
    assert_eq!(a, run());
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn ddim_eta_draws_noise_with_the_ddim_variance() {
    let cfg = sd1();
    let ac = sd_alphas_cumprod();
    let eta = 0.7;
    let mut s = build(SchedulerKind::Ddim, &cfg, 4, eta).unwrap();
    let mut noise = Constant {
        value: 2.0,
        draws: 0,
    };
    let (x, eps) = (0.5f32, -0.4f32);
    let got = first(&s.step(&full(eps), 751.0, &full(x), &mut noise).unwrap());
    let (a_t, a_prev) = (ac[751], ac[501]);
    let var = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
    let std = eta * var.sqrt();
    let x0 = (x as f64 - (1.0 - a_t).sqrt() * eps as f64) / a_t.sqrt();
    let want = a_prev.sqrt() * x0 + (1.0 - a_prev - std * std).sqrt() * eps as f64 + std * 2.0;
    assert!((got - want).abs() < 2e-5, "{got} vs {want}");
    assert_eq!(noise.draws, 1);
    // eta = 0 never draws.
    let mut s = build(SchedulerKind::Ddim, &cfg, 4, 0.0).unwrap();
    s.step(&full(eps), 751.0, &full(x), &mut noise).unwrap();
    assert_eq!(noise.draws, 1);
}

#[test]
fn ddim_clip_sample_and_set_alpha_to_one() {
    let mut cfg = sd1();
    cfg["clip_sample"] = json!(true);
    cfg["set_alpha_to_one"] = json!(true);
    let ac = sd_alphas_cumprod();
    let mut s = build(SchedulerKind::Ddim, &cfg, 4, 0.0).unwrap();
    let mut noise = Constant {
        value: 0.0,
        draws: 0,
    };
    // Last step (t=1 -> prev -249): alpha_prev = 1, so the result is the clipped x0.
    let (x, eps) = (3.0f32, 0.01f32);
    let got = first(&s.step(&full(eps), 1.0, &full(x), &mut noise).unwrap());
    let x0 = (x as f64 - (1.0 - ac[1]).sqrt() * eps as f64) / ac[1].sqrt();
    assert!(x0 > 1.0);
    assert!((got - 1.0).abs() < 1e-6, "{got}");
}

#[test]
fn multistep_spacings() {
    for kind in [SchedulerKind::DpmPp2m, SchedulerKind::UniPc] {
        let mut cfg = sd1();
        assert_eq!(ts(kind, &cfg, 4), vec![999.0, 749.0, 500.0, 250.0]);
        cfg["timestep_spacing"] = json!("leading");
        // 1000 // 5 = 200: [800, 600, 400, 200] + steps_offset
        assert_eq!(ts(kind, &cfg, 4), vec![801.0, 601.0, 401.0, 201.0]);
        cfg["timestep_spacing"] = json!("trailing");
        assert_eq!(ts(kind, &cfg, 4), vec![999.0, 749.0, 499.0, 249.0]);
        let s = build(kind, &cfg, 4, 0.0).unwrap();
        assert_eq!(s.init_noise_sigma(), 1.0);
    }
}

#[test]
fn pndm_and_heun_schedules() {
    let mut cfg = sd1();
    assert_eq!(
        ts(SchedulerKind::Pndm, &cfg, 4),
        vec![751.0, 501.0, 501.0, 251.0, 1.0]
    );
    cfg["timestep_spacing"] = json!("linspace");
    assert_eq!(
        ts(SchedulerKind::Pndm, &cfg, 4),
        vec![999.0, 666.0, 666.0, 333.0, 0.0]
    );
    cfg["timestep_spacing"] = json!("trailing");
    assert_eq!(
        ts(SchedulerKind::Pndm, &cfg, 4),
        vec![999.0, 749.0, 749.0, 499.0, 249.0]
    );

    let heun = build(SchedulerKind::Heun, &sd1(), 3, 0.0).unwrap();
    assert_eq!(heun.order(), 2);
    assert_eq!(heun.timesteps(), &[999.0, 499.5, 499.5, 0.0, 0.0]);
}

#[test]
fn lms_first_step_is_euler() {
    // With a single derivative the LMS coefficient is the interval length, i.e. Euler.
    let cfg = sd1();
    let mut lms = build(SchedulerKind::Lms, &cfg, 4, 0.0).unwrap();
    let mut euler = build(SchedulerKind::Euler, &cfg, 4, 0.0).unwrap();
    let mut noise = Constant {
        value: 0.0,
        draws: 0,
    };
    let x = full(3.0);
    let eps = full(0.7);
    let a = first(&lms.step(&eps, 999.0, &x, &mut noise).unwrap());
    let b = first(&euler.step(&eps, 999.0, &x, &mut noise).unwrap());
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    assert_eq!(noise.draws, 0);
}

#[test]
fn img2img_add_noise_uses_the_begin_index() {
    // Euler: add_noise at the begin index scales the noise by that step's sigma.
    let mut s = build(SchedulerKind::Euler, &sd1(), 5, 0.0).unwrap();
    s.set_begin_index(2);
    let t = s.timesteps()[2];
    assert_eq!(t, 499.5);
    let out = first(&s.add_noise(&full(1.0), &full(1.0), t).unwrap());
    let sig = 0.5 * (sd_sigma(499) + sd_sigma(500));
    assert!((out - (1.0 + sig)).abs() < 1e-5);
    // DDIM: sqrt(alpha) * x + sqrt(1 - alpha) * noise at the integer timestep.
    let s = build(SchedulerKind::Ddim, &sd1(), 5, 0.0).unwrap();
    let ac = sd_alphas_cumprod()[401];
    let out = first(&s.add_noise(&full(2.0), &full(-1.0), 401.0).unwrap());
    assert!((out - (2.0 * ac.sqrt() - (1.0 - ac).sqrt())).abs() < 1e-5);
    // DPM-Solver++: alpha_t * x + sigma_t * noise from the sigma.
    let mut s = build(SchedulerKind::DpmPp2m, &sd1(), 4, 0.0).unwrap();
    s.set_begin_index(1);
    let sig = sd_sigma(749);
    let alpha = 1.0 / (sig * sig + 1.0).sqrt();
    let out = first(&s.add_noise(&full(1.0), &full(1.0), 749.0).unwrap());
    assert!((out - (alpha + sig * alpha)).abs() < 1e-5);
}

#[test]
fn unknown_timesteps_are_errors_not_panics() {
    let mut noise = Constant {
        value: 0.0,
        draws: 0,
    };
    let kinds = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::Heun,
        SchedulerKind::Lms,
        SchedulerKind::Ddpm,
    ];
    for kind in kinds {
        let mut s = build(kind, &sd1(), 4, 0.0).unwrap();
        assert!(
            s.step(&full(0.0), 1234.5, &full(0.0), &mut noise).is_err(),
            "{kind:?}"
        );
    }
}

#[test]
fn pndm_runge_kutta_warmup_schedule() {
    let mut cfg = sd1();
    cfg["skip_prk_steps"] = json!(false);
    assert_eq!(
        ts(SchedulerKind::Pndm, &cfg, 4),
        vec![751.0, 626.0, 626.0, 501.0, 501.0, 376.0, 376.0, 251.0, 251.0, 126.0, 126.0, 1.0, 1.0]
    );
    assert!(build(SchedulerKind::Pndm, &cfg, 1, 0.0).is_err());
}

/// Feeding the exact noise of a known x0 at every call must land each deterministic
/// alphas-cumprod sampler on sqrt(a_final) x0 + sqrt(1 - a_final) eps: the multistep
/// weights (PLMS, Runge-Kutta) all sum to one.
#[test]
fn exact_noise_keeps_deterministic_samplers_on_the_trajectory() {
    let ac = sd_alphas_cumprod();
    let (x0, e) = (0.6f64, -1.2f64);
    let mut prk = sd1();
    prk["skip_prk_steps"] = json!(false);
    let cases = [
        (SchedulerKind::Ddim, sd1(), 4),
        (SchedulerKind::Ddim, sd1(), 7),
        (SchedulerKind::Pndm, sd1(), 4),
        (SchedulerKind::Pndm, sd1(), 9),
        (SchedulerKind::Pndm, prk.clone(), 4),
        (SchedulerKind::Pndm, prk, 6),
    ];
    for (kind, cfg, steps) in cases {
        let mut s = build(kind, &cfg, steps, 0.0).unwrap();
        let t0 = s.timesteps()[0] as usize;
        let start = ac[t0].sqrt() * x0 + (1.0 - ac[t0]).sqrt() * e;
        let mut x = full(start as f32);
        let mut noise = Constant {
            value: 0.0,
            draws: 0,
        };
        for t in s.timesteps().to_vec() {
            x = s.step(&full(e as f32), t, &x, &mut noise).unwrap();
        }
        // set_alpha_to_one is false in the SD config: the final alpha is alphas_cumprod[0].
        let want = ac[0].sqrt() * x0 + (1.0 - ac[0]).sqrt() * e;
        let got = first(&x);
        assert!(
            (got - want).abs() < 1e-4,
            "{kind:?} {steps}: {got} vs {want}"
        );
        assert_eq!(noise.draws, 0);
    }
}

#[test]
fn zero_terminal_snr_rescale() {
    let mut cfg = sd1();
    cfg["rescale_betas_zero_snr"] = json!(true);
    cfg["timestep_spacing"] = json!("trailing");
    // DDIM keeps alphas_cumprod[999] = 0: noising at 999 is pure noise.
    let s = build(SchedulerKind::Ddim, &cfg, 4, 0.0).unwrap();
    assert_eq!(s.timesteps()[0], 999.0);
    let out = first(&s.add_noise(&full(5.0), &full(-0.5), 999.0).unwrap());
    assert!((out + 0.5).abs() < 1e-6, "{out}");
    // Euler clamps it to 2^-24, so sigma_max = sqrt((1 - 2^-24) / 2^-24) ~ 4096.
    let e = build(SchedulerKind::Euler, &cfg, 4, 0.0).unwrap();
    let want = ((1.0 - 2f64.powi(-24)) / 2f64.powi(-24)).sqrt();
    assert!((e.init_noise_sigma() - want).abs() < 1e-3 * want);
    // Heun has no such key: from_config drops it, the schedule is unchanged.
    let plain = build(SchedulerKind::Heun, &sd1(), 4, 0.0).unwrap();
    let mut h_cfg = sd1();
    h_cfg["rescale_betas_zero_snr"] = json!(true);
    let h = build(SchedulerKind::Heun, &h_cfg, 4, 0.0).unwrap();
    assert_eq!(plain.init_noise_sigma(), h.init_noise_sigma());
}

#[test]
fn karras_sigmas_on_sigma_schedulers() {
    let mut cfg = sd1();
    cfg["use_karras_sigmas"] = json!(true);
    for kind in [
        SchedulerKind::Euler,
        SchedulerKind::Heun,
        SchedulerKind::Lms,
    ] {
        let s = build(kind, &cfg, 6, 0.0).unwrap();
        let t = s.timesteps();
        // The ramp starts at sigma_max (timestep ~999) and ends at sigma_min (~0).
        assert!((t[0] - 999.0).abs() < 1e-2, "{kind:?} {t:?}");
        assert!(t[t.len() - 1].abs() < 1e-2, "{kind:?} {t:?}");
        assert!(t.windows(2).all(|w| w[0] >= w[1]), "{kind:?} {t:?}");
        assert!((s.init_noise_sigma() - sd_sigma(999)).abs() < 1e-3);
    }
}

#[test]
fn hostile_configs_error_instead_of_panicking() {
    let kinds = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Lms,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::Heun,
        SchedulerKind::DpmPp2m,
        SchedulerKind::DpmPp2mKarras,
        SchedulerKind::UniPc,
        SchedulerKind::Ddpm,
        SchedulerKind::Lcm,
    ];
    let patches = [
        json!({"num_train_timesteps": 1}),
        json!({"num_train_timesteps": 10_000_000_000u64}),
        json!({"steps_offset": u64::MAX}),
        json!({"beta_start": -1.0, "beta_schedule": "scaled_linear"}),
        json!({"beta_end": 2.0}),
        json!({"prediction_type": "flow"}),
        json!({"timestep_spacing": "sideways"}),
        json!({"solver_order": 0}),
        json!({"solver_order": 7}),
        json!({"trained_betas": [0.5]}),
        json!({"final_sigmas_type": "middle"}),
    ];
    for kind in kinds {
        // The plain SD config works for every scheduler.
        build(kind, &sd1(), 20, 0.0).unwrap();
        for patch in &patches {
            let mut cfg = sd1();
            for (k, v) in patch.as_object().unwrap() {
                cfg[k] = v.clone();
            }
            // Whatever a class makes of the key, it must not panic; keys a class reads
            // with a bad value must be errors.
            let _ = build(kind, &cfg, 20, 0.0);
        }
        let mut cfg = sd1();
        cfg["prediction_type"] = json!("flow");
        assert!(build(kind, &cfg, 4, 0.0).is_err(), "{kind:?}");
        let mut cfg = sd1();
        cfg["num_train_timesteps"] = json!(10_000_000_000u64);
        assert!(build(kind, &cfg, 4, 0.0).is_err(), "{kind:?}");
    }
}
