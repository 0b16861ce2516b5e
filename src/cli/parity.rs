//! `runai parity`: replays the golden cases of a fixtures manifest on a chosen device and dtype
//! (`cpu` or `cuda:N`, f32 or f16) with their recorded noise, compares the traced
//! intermediates and the 8-bit image with the golden files within the limits for that dtype,
//! prints one line per case and a `RESULT {json}` summary, and fails when any case is out of
//! its limits. The f32 limits are the ones the test suite enforces on the CPU
//! (tests/golden_parity.rs uses them); the f16 limits and their derivation are in
//! BENCHMARKS.md ("Golden parity in f16"). Reads the fixtures only; writes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::cli::bench::{parse_device, BenchDType};
use crate::cli::replay::{load_case, read_json, replay_case, GoldenCase};
use crate::pipeline::{RuntimeOptions, StableDiffusion};

/// How far one traced tensor may be from its golden one: the largest absolute difference may
/// reach `abs + rel * max|golden|`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) name: &'static str,
    pub(crate) abs: f32,
    pub(crate) rel: f32,
}

const fn abs(name: &'static str, abs: f32) -> Bound {
    Bound {
        name,
        abs,
        rel: 0.0,
    }
}

const fn rel(name: &'static str, rel: f32) -> Bound {
    Bound {
        name,
        abs: 0.0,
        rel,
    }
}

/// How far a replay may be from its golden case: one bound per compared tensor (tensors not
/// listed are not compared), and the largest per-channel level difference of the 8-bit image
/// against the reference PNG.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) tensors: &'static [Bound],
    pub(crate) png_levels: u8,
}

/// f32 on any device: the absolute tolerances of the parity issue (the VAE output is reported
/// only; the image it becomes is checked). Rounding to 8 bits may flip one level.
pub(crate) const F32_LIMITS: Limits = Limits {
    tensors: &[
        abs("prompt_embeds", 1e-4),
        abs("negative_prompt_embeds", 1e-4),
        abs("unet_out_0", 5e-4),
        abs("final_latents", 5e-3),
        abs("vae_decode_out", f32::INFINITY),
        abs("image", 2e-3),
    ],
    png_levels: 1,
};

/// f16 weights and activations in the text encoder and the UNet (the VAE stays f32, as SD's
/// `force_upcast` asks). f16 keeps 11 significant bits (unit roundoff u = 2^-11 = 4.9e-4), so
/// errors scale with the tensor's magnitude, and the final latents of the sigma-space
/// schedulers reach 43 where the DDIM ones stay near 3: the bounds are relative to
/// max|golden|. Each is 4x the worst error over the 25 cases with candle's f16 ops on the CPU
/// (the op graph the GPU runs, other kernels): text encoder 1.1e-3 (2u) -> 5e-3, first UNet
/// output 3.7e-3 -> 1.5e-2, final latents after 4 steps 7.3e-3 -> 3e-2, image 2.0e-2 ->
/// 8e-2 (20 of 255 levels). A wrong kernel errs by the order of the tensor itself (rel ~1).
/// Measurements: BENCHMARKS.md, "Golden parity in f16".
pub(crate) const F16_LIMITS: Limits = Limits {
    tensors: &[
        rel("prompt_embeds", 5e-3),
        rel("negative_prompt_embeds", 5e-3),
        rel("unet_out_0", 1.5e-2),
        rel("final_latents", 3e-2),
        abs("vae_decode_out", f32::INFINITY),
        abs("image", 8e-2),
    ],
    png_levels: 20,
};

/// The limits for `dtype`; bf16 (8 significant bits) has none derived yet.
pub(crate) fn limits_for(dtype: DType) -> anyhow::Result<&'static Limits> {
    match dtype {
        DType::F32 => Ok(&F32_LIMITS),
        DType::F16 => Ok(&F16_LIMITS),
        other => bail!("no golden parity limits for {other:?}: use f32 or f16"),
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ParityArgs {
    /// The fixtures manifest.json.
    #[arg(long)]
    pub(crate) manifest: PathBuf,
    /// Only the cases whose id starts with this (e.g. `tiny-sd1/`); all by default.
    #[arg(long, default_value = "")]
    pub(crate) cases: String,
    /// `cpu` or `cuda:N` (`cuda` = `cuda:0`; needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Weight and activation dtype of the UNet and text encoder (the VAE follows its config).
    #[arg(long, value_enum, default_value = "f32")]
    pub(crate) dtype: BenchDType,
}

/// What one case gave: each compared tensor's difference and its limit, the image's level
/// difference and every limit it broke.
#[derive(Debug)]
pub struct CaseReport {
    pub id: String,
    pub diffs: Vec<(&'static str, f32, f32)>,
    pub png_levels: u8,
    pub failures: Vec<String>,
}

/// Replays `case` on `model` and compares it with its golden files within `limits`.
pub(crate) fn check_case(
    model: &StableDiffusion,
    case: &GoldenCase,
    limits: &Limits,
) -> anyhow::Result<CaseReport> {
    let replay = replay_case(model, case)?;
    let golden = candle_core::safetensors::load(&case.tensors_path, &Device::Cpu)
        .with_context(|| format!("reading {}", case.tensors_path.display()))?;
    let mut report = CaseReport {
        id: case.id.clone(),
        diffs: Vec::new(),
        png_levels: 0,
        failures: Vec::new(),
    };
    for bound in limits.tensors {
        let name = bound.name;
        let (Some(ours), Some(theirs)) = (replay.trace.get(name), golden.get(name)) else {
            continue;
        };
        let d = max_abs_diff(ours, theirs).with_context(|| format!("{}: {name}", case.id))?;
        let limit = bound.abs + bound.rel * max_abs(theirs)?;
        report.diffs.push((name, d, limit));
        if d.is_nan() || d > limit {
            report
                .failures
                .push(format!("{} {name} {d:e} > {limit:e}", case.id));
        }
    }
    for name in ["prompt_embeds", "unet_out_0", "final_latents", "image"] {
        if replay.trace.get(name).is_none() {
            report
                .failures
                .push(format!("{}: {name} not traced", case.id));
        }
    }
    let image = replay
        .images
        .first()
        .ok_or_else(|| anyhow!("{}: no image", case.id))?;
    report.png_levels = png_levels(image, &case.tensors_path.with_extension("png"))?;
    if report.png_levels > limits.png_levels {
        report.failures.push(format!(
            "{} png differs by {} levels > {}",
            case.id, report.png_levels, limits.png_levels
        ));
    }
    Ok(report)
}

/// Replays every case of `manifest` whose id starts with `prefix` with `opts`, loading each
/// model once. A case that fails to run is a failed case, not an error.
pub fn check_manifest(
    manifest: &Path,
    prefix: &str,
    opts: &RuntimeOptions,
) -> anyhow::Result<Vec<CaseReport>> {
    let limits = limits_for(opts.dtype)?;
    let ids = case_ids(manifest, prefix)?;
    if ids.is_empty() {
        bail!("no case of {} starts with `{prefix}`", manifest.display());
    }
    let mut models: HashMap<PathBuf, StableDiffusion> = HashMap::new();
    let mut reports = Vec::with_capacity(ids.len());
    for id in ids {
        let case = load_case(manifest, &id)?;
        if !models.contains_key(&case.model_dir) {
            let model = StableDiffusion::load_folder(&case.model_dir, opts)
                .with_context(|| format!("loading {}", case.model_dir.display()))?;
            models.insert(case.model_dir.clone(), model);
        }
        let report =
            check_case(&models[&case.model_dir], &case, limits).unwrap_or_else(|e| CaseReport {
                id: id.clone(),
                diffs: Vec::new(),
                png_levels: 0,
                failures: vec![format!("{id}: {e:#}")],
            });
        reports.push(report);
    }
    Ok(reports)
}

/// The ids of the manifest's cases that start with `prefix`, in manifest order.
pub(crate) fn case_ids(manifest: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let doc = read_json(manifest)?;
    let cases = doc
        .get("cases")
        .and_then(|c| c.as_array())
        .ok_or_else(|| anyhow!("{} has no cases", manifest.display()))?;
    Ok(cases
        .iter()
        .filter_map(|c| c.get("id").and_then(|v| v.as_str()))
        .filter(|id| id.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// The CLI entry point: one line per case, then `RESULT {json}`; an error when any case broke
/// a limit.
pub fn run(args: ParityArgs) -> anyhow::Result<()> {
    let opts = RuntimeOptions {
        device: parse_device(&args.device)?,
        dtype: args.dtype.to_dtype(),
    };
    let reports = check_manifest(&args.manifest, &args.cases, &opts)?;
    // Per tensor: the largest difference and the largest fraction of its limit used.
    let mut worst: Vec<(&str, f32, f32)> = Vec::new();
    for r in &reports {
        let mut line = format!("{}:", r.id);
        for &(name, d, limit) in &r.diffs {
            line.push_str(&format!(" {name} {d:.2e}"));
            let used = if limit.is_finite() { d / limit } else { 0.0 };
            match worst.iter_mut().find(|(n, _, _)| *n == name) {
                Some(w) => {
                    w.1 = w.1.max(d);
                    w.2 = w.2.max(used);
                }
                None => worst.push((name, d, used)),
            }
        }
        line.push_str(&format!(" png {}", r.png_levels));
        if !r.failures.is_empty() {
            line.push_str("  FAIL");
        }
        println!("{line}");
    }
    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    let result = json!({
        "parity": format!("{:?}", opts.dtype).to_lowercase(),
        "device": args.device,
        "cases": reports.len(),
        "failed_cases": reports.iter().filter(|r| !r.failures.is_empty()).count(),
        "worst": worst.iter().map(|(n, d, _)| (n.to_string(), json!(d))).collect::<serde_json::Map<_, _>>(),
        "worst_of_limit": worst.iter().map(|(n, _, u)| (n.to_string(), json!(u))).collect::<serde_json::Map<_, _>>(),
        "worst_png_levels": reports.iter().map(|r| r.png_levels).max().unwrap_or(0),
    });
    println!("RESULT {result}");
    if !failures.is_empty() {
        bail!("{} parity failure(s): {failures:#?}", failures.len());
    }
    Ok(())
}

/// Largest absolute difference of two same-shaped tensors, compared in f32 on the CPU.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    if a.dims() != b.dims() {
        bail!("shape {:?} against golden {:?}", a.dims(), b.dims());
    }
    let f = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
    max_abs(&(f(a)? - f(b)?)?)
}

/// Largest absolute element of `t`, in f32.
fn max_abs(t: &Tensor) -> anyhow::Result<f32> {
    Ok(t.to_dtype(DType::F32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?)
}

/// The largest per-channel level difference between `ours` and the reference PNG at `png`.
fn png_levels(ours: &image::RgbImage, png: &Path) -> anyhow::Result<u8> {
    let theirs = image::open(png)
        .with_context(|| format!("opening {}", png.display()))?
        .to_rgb8();
    if ours.dimensions() != theirs.dimensions() {
        bail!(
            "image {:?} against reference {:?}",
            ours.dimensions(),
            theirs.dimensions()
        );
    }
    Ok(ours
        .as_raw()
        .iter()
        .zip(theirs.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest.json")
    }

    #[test]
    fn limits_exist_for_f32_and_f16_only() {
        assert!(limits_for(DType::F32).is_ok());
        assert!(limits_for(DType::F16).is_ok());
        assert!(limits_for(DType::BF16).is_err());
        // Both compare the same tensors.
        let names = |l: &Limits| l.tensors.iter().map(|b| b.name).collect::<Vec<_>>();
        assert_eq!(names(&F32_LIMITS), names(&F16_LIMITS));
    }

    #[test]
    fn unknown_prefix_is_an_error() {
        let err = check_manifest(&manifest(), "no-such-model/", &RuntimeOptions::default());
        assert!(err.is_err());
    }

    /// A case checked against limits of zero fails on every compared tensor that is not
    /// bit-identical, so the comparison cannot pass by accident.
    #[test]
    fn zero_limits_fail() {
        let case = load_case(&manifest(), "tiny-sd1/txt2img_ddim").unwrap();
        let model =
            StableDiffusion::load_folder(&case.model_dir, &RuntimeOptions::default()).unwrap();
        const STRICT: Limits = Limits {
            tensors: &[abs("unet_out_0", 0.0), abs("final_latents", 0.0)],
            png_levels: 0,
        };
        let r = check_case(&model, &case, &STRICT).unwrap();
        assert_eq!(r.diffs.len(), 2);
        let nonzero = r.diffs.iter().filter(|(_, d, _)| *d > 0.0).count();
        assert!(nonzero > 0, "expected float differences from the reference");
        assert!(r.failures.len() >= nonzero);
        let ok = check_case(&model, &case, &F32_LIMITS).unwrap();
        assert!(ok.failures.is_empty(), "{:?}", ok.failures);
    }

    /// The f16 path really runs in f16 (it misses the f32 limits) and stays within the f16
    /// limits, on candle's CPU f16 ops.
    #[test]
    fn f16_replay_fits_f16_limits_only() {
        let case = load_case(&manifest(), "tiny-sd2/txt2img_euler").unwrap();
        let opts = RuntimeOptions {
            device: Device::Cpu,
            dtype: DType::F16,
        };
        let model = StableDiffusion::load_folder(&case.model_dir, &opts).unwrap();
        let r16 = check_case(&model, &case, &F16_LIMITS).unwrap();
        assert!(r16.failures.is_empty(), "{:?}", r16.failures);
        let r32 = check_case(&model, &case, &F32_LIMITS).unwrap();
        assert!(
            !r32.failures.is_empty(),
            "f16 replay within the f32 limits: {r32:?}"
        );
    }
}
