//! `runai bench`: times one phase of Stable Diffusion (text encode, one UNet step, VAE decode,
//! a whole txt2img; SDXL's phases in bench_xl.rs) on a diffusers folder exactly as `tools/bench_diffusers.py _phase` does
//! (same shapes, batch 2 for the UNet, 1 warm-up, N timed runs) and prints one
//! `RESULT {json}` line, so both implementations can be compared side by side.
//! Measures only: never writes files, never changes the model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;

use crate::pipeline::kernels::cpu::attention::attention;
use crate::pipeline::kernels::cpu::isa::{self, cpu_model, Preference};
use crate::pipeline::load::config::{ClipConfig, UNetConfig, VaeConfig};
use crate::pipeline::load::loader::{component_weights, read_json};
use crate::pipeline::load::tokenizer::{load_tokenizer_dir, prompt_ids};
use crate::pipeline::models::clip::ClipTextTransformer;
use crate::pipeline::models::unet::UNet;
use crate::pipeline::models::vae::Vae;
use crate::pipeline::params::{GenerateParams, SchedulerKind, Task};
use crate::pipeline::{RuntimeOptions, StableDiffusion};

use super::bench_xl::{measure_xl, XlPhase};

/// Image side of the SDXL phases (SDXL's native 1024x1024).
const XL_SIDE: usize = 1024;

/// Prompt pair of the reference tool (`PROMPT`, `NEG`).
pub(super) const PROMPT: &str = "a red fox in the snow";
pub(super) const NEG: &str = "blurry";
/// The timestep the reference tool feeds to its single UNet call.
pub(super) const UNET_TIMESTEP: f64 = 500.0;
/// SD1.x text encoder output width, the UNet's cross-attention context width (fallback when
/// the config does not say).
const CONTEXT_DIM: usize = 768;
pub(super) const TOKENS: usize = 77;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Phase {
    /// CLIP text encoder, batch 2 (negative + prompt) x 77 tokens.
    #[value(name = "text_encode")]
    TextEncode,
    /// One UNet call, batch 2 (CFG), 32x32 latents.
    #[value(name = "unet_256")]
    Unet256,
    /// One UNet call, batch 2 (CFG), 64x64 latents.
    #[value(name = "unet_512")]
    Unet512,
    /// VAE decode 1x4x32x32 -> 1x3x256x256.
    #[value(name = "vae_decode_256")]
    VaeDecode256,
    /// VAE decode 1x4x64x64 -> 1x3x512x512 (the GPU comparison of bench/gpu.sh).
    #[value(name = "vae_decode_512")]
    VaeDecode512,
    /// Whole pipeline: 256x256, 10 DDIM steps, CFG 7.5, to 8-bit RGB.
    #[value(name = "txt2img_256_ddim10")]
    Txt2Img256Ddim10,
    /// Whole pipeline: 512x512, 10 DDIM steps, CFG 7.5 (the plugin's size, CPU comparison;
    /// diffusers' side is `bench/diffusers_gpu.py` with `RUNAI_REF_DEVICE=cpu`).
    #[value(name = "txt2img_512_ddim10")]
    Txt2Img512Ddim10,
    /// Whole pipeline: 512x512, 50 DDIM steps, CFG 7.5 (the GPU comparison of bench/gpu.sh).
    #[value(name = "txt2img_512_ddim50")]
    Txt2Img512Ddim50,
    /// runai only, no reference counterpart: the UNet's first-level self-attention of a
    /// 512x512 image (q, k, v `[2, 4096, 320]`, 8 heads of 40), the op alone on random inputs.
    #[value(name = "attention_4096")]
    Attention4096,
    /// runai only, no model needed: the UNet's 3x3 convolution shapes, direct vs Winograd
    /// (`cli/bench_conv.rs`), one RESULT line per shape.
    #[value(name = "conv3x3")]
    Conv3x3,
    /// SDXL folder: both text encoders (penultimate states + pooled), uncond + cond.
    #[value(name = "sdxl_text_encode")]
    SdxlTextEncode,
    /// SDXL folder: one UNet call, batch 2 (CFG), 128x128 latents (1024x1024 image).
    #[value(name = "sdxl_unet_1024")]
    SdxlUnet1024,
    /// SDXL folder: VAE decode 1x4x128x128 -> 1x3x1024x1024.
    #[value(name = "sdxl_vae_decode_1024")]
    SdxlVaeDecode1024,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::TextEncode => "text_encode",
            Phase::Unet256 => "unet_256",
            Phase::Unet512 => "unet_512",
            Phase::VaeDecode256 => "vae_decode_256",
            Phase::VaeDecode512 => "vae_decode_512",
            Phase::Txt2Img256Ddim10 => "txt2img_256_ddim10",
            Phase::Txt2Img512Ddim10 => "txt2img_512_ddim10",
            Phase::Txt2Img512Ddim50 => "txt2img_512_ddim50",
            Phase::Attention4096 => "attention_4096",
            Phase::Conv3x3 => "conv3x3",
            Phase::SdxlTextEncode => "sdxl_text_encode",
            Phase::SdxlUnet1024 => "sdxl_unet_1024",
            Phase::SdxlVaeDecode1024 => "sdxl_vae_decode_1024",
        }
    }

    /// The SDXL phase this is, if any.
    fn xl(self) -> Option<XlPhase> {
        match self {
            Phase::SdxlTextEncode => Some(XlPhase::TextEncode),
            Phase::SdxlUnet1024 => Some(XlPhase::Unet),
            Phase::SdxlVaeDecode1024 => Some(XlPhase::VaeDecode),
            _ => None,
        }
    }

    /// Forward-pass cost of one run of the phase on the SD1.5 architecture, in GFLOP
    /// (multiply-add = 2 FLOP), as torch's FlopCounterMode counts the diffusers modules
    /// (convolutions and matmuls; norms and softmax not counted); the txt2img figures add
    /// their parts (text encodes, steps x one UNet call, one decode). None for the SDXL
    /// phases: no FlopCounterMode count of the SDXL modules has been made yet.
    fn gflop(self) -> Option<f64> {
        const TEXT: f64 = 26.6;
        const UNET_256: f64 = 360.2;
        const UNET_512: f64 = 1606.5;
        const VAE_256: f64 = 622.2;
        const VAE_512: f64 = 2514.5;
        Some(match self {
            Phase::TextEncode => TEXT,
            Phase::Unet256 => UNET_256,
            Phase::Unet512 => UNET_512,
            Phase::VaeDecode256 => VAE_256,
            Phase::VaeDecode512 => VAE_512,
            Phase::Txt2Img256Ddim10 => TEXT + 10.0 * UNET_256 + VAE_256,
            Phase::Txt2Img512Ddim10 => TEXT + 10.0 * UNET_512 + VAE_512,
            Phase::Txt2Img512Ddim50 => TEXT + 50.0 * UNET_512 + VAE_512,
            // q k^T and scores v: 2 x (2 batch x 8 heads x 4096^2 x 40) multiply-adds.
            Phase::Attention4096 => 4.0 * 2.0 * 8.0 * 4096.0 * 4096.0 * 40.0 / 1e9,
            Phase::SdxlTextEncode
            | Phase::SdxlUnet1024
            | Phase::SdxlVaeDecode1024
            | Phase::Conv3x3 => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchDType {
    F32,
    F16,
    Bf16,
}

impl BenchDType {
    pub(crate) fn to_dtype(self) -> DType {
        match self {
            BenchDType::F32 => DType::F32,
            BenchDType::F16 => DType::F16,
            BenchDType::Bf16 => DType::BF16,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// A diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// What to time.
    #[arg(long, value_enum)]
    pub(crate) phase: Phase,
    /// Timed runs after the one untimed warm-up.
    #[arg(long, default_value_t = 3)]
    pub(crate) repeats: usize,
    /// `cpu` or `cuda:N` (`cuda` = `cuda:0`; needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Weight dtype of UNet and text encoder (the SD VAE always runs in f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub(crate) dtype: BenchDType,
    /// CPU kernel copy: auto (AVX-512 where the CPU has it, else AVX2), avx512 or avx2; the
    /// server's `cpu_kernels` setting.
    #[arg(long, default_value = "auto")]
    pub(crate) cpu_kernels: String,
    /// UNet phases only: jobs sharing one call, as continuous batching forms it (batch 2 x
    /// jobs, each job its own CFG pair); the RESULT line's `gflop` scales with it.
    #[arg(long, default_value_t = 1)]
    pub(crate) jobs: usize,
}

/// Runs one phase and prints its `RESULT` line on stdout.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    if args.jobs > 1 && !matches!(args.phase, Phase::Unet256 | Phase::Unet512) {
        bail!("--jobs applies to unet_256 and unet_512 only");
    }
    let device = parse_device(&args.device)?;
    let pref = Preference::parse(&args.cpu_kernels).with_context(|| {
        format!(
            "bad --cpu-kernels `{}`: expected {}",
            args.cpu_kernels,
            Preference::NAMES
        )
    })?;
    isa::configure(pref).map_err(anyhow::Error::msg)?;
    if args.phase == Phase::Conv3x3 {
        return super::bench_conv::run(args.repeats, &device);
    }
    let dtype = args.dtype.to_dtype();
    let opts = RuntimeOptions {
        device: device.clone(),
        dtype,
    };
    let measured = measure(&args.model, args.phase, args.repeats, args.jobs, &opts)?;
    let times = measured.times;
    let median = median(&times);
    // Milliseconds as the reference prints them on CPU; GPU phases take a few ms, so keep
    // microseconds there.
    let digits = if device.is_cpu() { 3 } else { 6 };
    let gflop = args.phase.gflop().map(|g| g * args.jobs as f64);
    let result = json!({
        "phase": args.phase.name(),
        "impl": "runai",
        "jobs": args.jobs,
        "threads": candle_core::utils::get_num_threads(),
        "device": args.device,
        "dtype": format!("{dtype:?}").to_lowercase(),
        "load_s": round_to(measured.load_s, 3),
        "what": measured.what,
        "times_s": times.iter().map(|t| round_to(*t, digits)).collect::<Vec<_>>(),
        "median_s": round_to(median, digits),
        "gflop": gflop,
        "gflop_per_s": gflop.map(|g| (g / median * 10.0).round() / 10.0),
        "peak_rss_mb": peak_rss_mb().map(f64::round),
        "cpu": cpu_model().describe(),
        "cpu_kernels": isa::active_name(),
    });
    println!("RESULT {result}");
    Ok(())
}

pub(super) struct Measured {
    pub(super) load_s: f64,
    pub(super) what: String,
    pub(super) times: Vec<f64>,
}

fn measure(
    model: &Path,
    phase: Phase,
    repeats: usize,
    jobs: usize,
    opts: &RuntimeOptions,
) -> anyhow::Result<Measured> {
    if let Some(xl) = phase.xl() {
        return measure_xl(model, xl, XL_SIDE, repeats, opts);
    }
    let t0 = Instant::now();
    let dev = &opts.device;
    // Each arm loads only what the reference loads for that phase, so load_s and peak RSS
    // compare like with like.
    match phase {
        Phase::TextEncode => {
            let cfg = ClipConfig::from_json(&read_json(&model.join("text_encoder/config.json"))?)?;
            let vb = component_weights(&model.join("text_encoder"), opts.dtype, opts)?;
            let te = ClipTextTransformer::new(vb, &cfg)?;
            let (tok, pad) = load_tokenizer_dir(&model.join("tokenizer"))?;
            let mut ids = prompt_ids(&tok, NEG, pad)?;
            ids.extend(prompt_ids(&tok, PROMPT, pad)?);
            let ids = Tensor::from_vec(ids, (2, TOKENS), dev)?;
            let load_s = t0.elapsed().as_secs_f64();
            let times = time_runs(repeats, dev, || {
                te.forward(&ids, None)?;
                Ok(())
            })?;
            Ok(Measured {
                load_s,
                what: "CLIP text encoder, batch 2 (uncond+cond) x 77 tokens".into(),
                times,
            })
        }
        Phase::Unet256 | Phase::Unet512 => {
            let size = if phase == Phase::Unet256 { 256 } else { 512 };
            let cfg = UNetConfig::from_json(&read_json(&model.join("unet/config.json"))?)?;
            let vb = component_weights(&model.join("unet"), opts.dtype, opts)?;
            let unet = UNet::new(vb, &cfg)?;
            let load_s = t0.elapsed().as_secs_f64();
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let l = size / 8;
            let batch = 2 * jobs;
            let x = randn(&mut rng, &[batch, cfg.in_channels, l, l], dev)?;
            // SD1.x: 768; taken from the config so any SD-architecture folder works.
            let ctx_dim = cfg
                .cross_attention_dim
                .first()
                .copied()
                .unwrap_or(CONTEXT_DIM);
            let ctx = randn(&mut rng, &[batch, TOKENS, ctx_dim], dev)?;
            let times = time_runs(repeats, dev, || {
                unet.forward(&x, UNET_TIMESTEP, &ctx)?;
                Ok(())
            })?;
            Ok(Measured {
                load_s,
                what: if jobs == 1 {
                    format!("one UNet step, batch 2 (CFG), latents {l}x{l} (image {size}x{size})")
                } else {
                    format!(
                        "one UNet step shared by {jobs} jobs, batch {batch} (CFG each), \
                         latents {l}x{l} (image {size}x{size})"
                    )
                },
                times,
            })
        }
        Phase::VaeDecode256 | Phase::VaeDecode512 => {
            let size = if phase == Phase::VaeDecode256 {
                256
            } else {
                512
            };
            measure_vae_decode(model, size, repeats, opts, t0, "VAE decode")
        }
        Phase::SdxlTextEncode | Phase::SdxlUnet1024 | Phase::SdxlVaeDecode1024 => {
            bail!("SDXL phases are measured by bench_xl")
        }
        Phase::Conv3x3 => bail!("conv3x3 is measured by bench_conv"),
        Phase::Attention4096 => {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let (heads, d, t) = (8, 40, 4096);
            let q = randn(&mut rng, &[2, t, heads * d], dev)?;
            let k = randn(&mut rng, &[2, t, heads * d], dev)?;
            let v = randn(&mut rng, &[2, t, heads * d], dev)?;
            let scale = 1.0 / (d as f64).sqrt();
            let load_s = t0.elapsed().as_secs_f64();
            let times = time_runs(repeats, dev, || {
                attention(&q, &k, &v, heads, scale)?;
                Ok(())
            })?;
            Ok(Measured {
                load_s,
                what: "self-attention 2x4096 tokens x 320, 8 heads of 40 (UNet level 1 at 512x512)"
                    .into(),
                times,
            })
        }
        Phase::Txt2Img256Ddim10 | Phase::Txt2Img512Ddim10 | Phase::Txt2Img512Ddim50 => {
            let (size, steps) = match phase {
                Phase::Txt2Img256Ddim10 => (256, 10),
                Phase::Txt2Img512Ddim10 => (512, 10),
                _ => (512, 50),
            };
            let sd = StableDiffusion::load_folder(model, opts)?;
            let load_s = t0.elapsed().as_secs_f64();
            let params = GenerateParams {
                task: Task::Txt2Img,
                prompt: PROMPT.into(),
                negative_prompt: NEG.into(),
                steps,
                guidance_scale: 7.5,
                seed: 0,
                width: Some(size),
                height: Some(size),
                n_samples: 1,
                scheduler: SchedulerKind::Ddim,
                eta: 0.0,
                clip_skip: None,
                syntax: Default::default(),
                loras: Vec::new(),
                timestep_spacing: None,
                xl: Default::default(),
            };
            let times = time_runs(repeats, dev, || {
                let images = sd.generate(&params, &mut |_, _| true)?;
                if images.len() != 1 {
                    bail!("expected one image, got {}", images.len());
                }
                Ok(())
            })?;
            Ok(Measured {
                load_s,
                what: format!(
                    "StableDiffusion::generate {size}x{size}, {steps} DDIM steps, CFG 7.5, to 8-bit RGB"
                ),
                times,
            })
        }
    }
}

/// The VAE decode phase of any model family: one `1x4x(side/8)^2` latent, seeded, decoded
/// `repeats` times (in f32 when the config has `force_upcast`); load time counted from `t0`.
pub(super) fn measure_vae_decode(
    model: &Path,
    side: usize,
    repeats: usize,
    opts: &RuntimeOptions,
    t0: Instant,
    label: &str,
) -> anyhow::Result<Measured> {
    let dev = &opts.device;
    let cfg = VaeConfig::from_json(&read_json(&model.join("vae/config.json"))?)?;
    let vae_dtype = if cfg.force_upcast {
        DType::F32
    } else {
        opts.dtype
    };
    let vb = component_weights(&model.join("vae"), vae_dtype, opts)?;
    let vae = Vae::new(vb, &cfg)?;
    let load_s = t0.elapsed().as_secs_f64();
    let l = side / 8;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let z = randn(&mut rng, &[1, cfg.latent_channels, l, l], dev)?;
    let z = (z / cfg.scaling_factor)?.to_dtype(vae_dtype)?;
    let times = time_runs(repeats, dev, || {
        vae.decode(&z)?;
        Ok(())
    })?;
    Ok(Measured {
        load_s,
        what: format!("{label} 1x4x{l}x{l} -> 1x3x{side}x{side}"),
        times,
    })
}

/// One untimed warm-up (allocator growth, GPU kernel loading), then `repeats` timed runs.
/// The device is synchronized inside the timed region, so queued GPU work is counted.
pub(super) fn time_runs(
    repeats: usize,
    dev: &Device,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    f()?;
    dev.synchronize()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Standard-normal f32 inputs from a fixed seed. Values do not change the cost; a fixed seed
/// keeps runs repeatable.
pub(super) fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dev: &Device) -> anyhow::Result<Tensor> {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(data, shape, dev)?)
}

/// `cpu`, `cuda` or `cuda:N` as a candle device (CUDA needs a build with `--features cuda`).
pub(crate) fn parse_device(s: &str) -> anyhow::Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("bad device `{s}`: expected cpu, cuda or cuda:N"))?,
        None => bail!("bad device `{s}`: expected cpu, cuda or cuda:N"),
    };
    Device::new_cuda(ordinal).with_context(|| format!("opening {s} (built with --features cuda?)"))
}

/// The median as Python's `statistics.median` (mean of the two middle values when even).
pub(super) fn median(times: &[f64]) -> f64 {
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(super) fn round_to(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Peak resident set size of this process (`VmHWM`), the figure `ru_maxrss` reports.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_matches_python() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn devices_parse() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn txt2img_flops_add_up() {
        let t = Phase::Txt2Img256Ddim10.gflop().unwrap();
        assert!((t - (26.6 + 3602.0 + 622.2)).abs() < 1e-9);
        let t = Phase::Txt2Img512Ddim10.gflop().unwrap();
        assert!((t - (26.6 + 16065.0 + 2514.5)).abs() < 1e-6);
        // 2 products x 2 batch x 8 heads x 4096 x 4096 x 40 multiply-adds.
        let a = Phase::Attention4096.gflop().unwrap();
        assert!((a - 42.949_672_96).abs() < 1e-9);
        assert_eq!(Phase::SdxlUnet1024.gflop(), None);
    }

    /// Every phase runs end to end on the committed tiny SD1 fixture (same code path as the
    /// full-size model, tiny shapes) and yields one timing per repeat.
    #[test]
    fn phases_run_on_tiny_fixture() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-sd1");
        for phase in [
            Phase::TextEncode,
            Phase::Unet256,
            Phase::VaeDecode256,
            Phase::Txt2Img256Ddim10,
        ] {
            let m = measure(&model, phase, 2, 1, &RuntimeOptions::default()).unwrap();
            assert_eq!(m.times.len(), 2, "{phase:?}");
            assert!(m.times.iter().all(|t| *t > 0.0), "{phase:?}");
        }
    }

    #[test]
    fn missing_model_is_an_error() {
        let r = measure(
            Path::new("/nonexistent/model"),
            Phase::Unet256,
            1,
            1,
            &RuntimeOptions::default(),
        );
        assert!(r.is_err());
    }

    /// A call shared by two jobs runs the UNet at batch 4 on the tiny fixture.
    #[test]
    fn unet_phase_runs_shared_by_several_jobs() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-sd1");
        let m = measure(&model, Phase::Unet256, 1, 2, &RuntimeOptions::default()).unwrap();
        assert_eq!(m.times.len(), 1);
        assert!(m.what.contains("batch 4"), "{}", m.what);
    }

    fn args(phase: Phase, jobs: usize) -> BenchArgs {
        BenchArgs {
            model: PathBuf::from("/nonexistent/model"),
            phase,
            repeats: 1,
            device: "cpu".into(),
            dtype: BenchDType::F32,
            cpu_kernels: "auto".into(),
            jobs,
        }
    }

    /// `--jobs` is refused before anything loads when it is 0 or the phase has no UNet call.
    #[test]
    fn jobs_are_checked_first() {
        let zero = run(args(Phase::Unet256, 0)).unwrap_err().to_string();
        assert!(zero.contains("--jobs must be at least 1"), "{zero}");
        let vae = run(args(Phase::VaeDecode256, 2)).unwrap_err().to_string();
        assert!(vae.contains("unet_256 and unet_512 only"), "{vae}");
        // The same phase with one job gets past the check and fails on the missing model.
        let one = run(args(Phase::VaeDecode256, 1)).unwrap_err().to_string();
        assert!(!one.contains("--jobs"), "{one}");
    }
}
