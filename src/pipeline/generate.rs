//! One generation request end to end, following diffusers' StableDiffusion(Img2Img|Inpaint)
//! Pipeline call order: text embeddings, scheduler set-up, initial latents (in diffusers' draw
//! order), the denoising loop with classifier-free guidance, VAE decode, 8-bit conversion.
//! Every random number comes from the caller's NoiseSource; nothing is written to disk.

use candle_core::{DType, Tensor};
use image::GrayImage;
use serde_json::Value;

use super::conditioning::text_context;
use super::conditioning::Context;
use super::denoise::{decode_rows, unet_parts};
use super::denoise::{Denoising, InpaintMode};
use super::error::{PipelineError, Result};
use super::images::{binarize_mask, decoded_to_unit, nearest_resize, rgb_to_tensor, unit_to_rgb};
use super::model::StableDiffusion;
use super::models::added_cond::AddedCond;
use super::noise::{NoiseSource, SeededNoise};
use super::params::{GenerateParams, GeneratedImage, Task};
use super::progress::Progress;
use super::schedulers::{self, Scheduler};
use super::trace::{record, Trace};
use super::xl_conditioning::xl_context;

/// Stops with [`PipelineError::Cancelled`] when `progress` says so between two phases.
fn proceed(progress: &mut dyn Progress) -> Result<()> {
    if progress.proceed() {
        Ok(())
    } else {
        Err(PipelineError::Cancelled)
    }
}

/// Generates `params.n_samples` images with seeded host noise (image i uses seed + i).
pub(crate) fn generate(
    sd: &StableDiffusion,
    params: &GenerateParams,
    progress: &mut dyn Progress,
) -> Result<Vec<GeneratedImage>> {
    let mut noise = SeededNoise::new(params.seed, params.n_samples);
    run_with_noise(sd, params, &mut noise, None, progress)
}

/// Generates with the given noise source and optional intermediate-tensor recorder,
/// using the model's own scheduler config.
pub(crate) fn run_with_noise(
    sd: &StableDiffusion,
    params: &GenerateParams,
    noise: &mut dyn NoiseSource,
    trace: Option<&mut Trace>,
    progress: &mut dyn Progress,
) -> Result<Vec<GeneratedImage>> {
    let cfg = sd.scheduler_config.clone();
    run_with_scheduler_config(sd, params, &cfg, noise, trace, progress)
}

/// As [`StableDiffusion::run_with_noise`] with an explicit scheduler config document (a
/// golden case records the exact config its scheduler was built from).
pub(crate) fn run_with_scheduler_config(
    sd: &StableDiffusion,
    params: &GenerateParams,
    scheduler_config: &Value,
    noise: &mut dyn NoiseSource,
    mut trace: Option<&mut Trace>,
    progress: &mut dyn Progress,
) -> Result<Vec<GeneratedImage>> {
    let n = params.n_samples;
    let shape = latent_shape(sd, params)?;
    let (width, height) = (
        shape[3] * sd.vae_scale_factor(),
        shape[2] * sd.vae_scale_factor(),
    );
    let started = std::time::Instant::now();
    let context = encode_context(sd, params, &mut trace)?;
    proceed(progress)?;
    let mut job = prepare_denoising(
        sd,
        params,
        scheduler_config,
        context,
        &shape,
        noise,
        &mut trace,
    )?;
    proceed(progress)?;

    let total = job.total_steps();
    while !job.is_done() {
        let i = job.steps_done();
        // One image per UNet call ([uncond, cond] for that image), as before batching.
        let mut preds = Vec::with_capacity(n);
        let mut uncond_outs = Vec::with_capacity(n);
        let mut cond_outs = Vec::with_capacity(n);
        for j in 0..n {
            let raw = unet_parts(sd, &[(&job, j..j + 1)])?.remove(0);
            preds.push(job.guide(&raw)?);
            if i == 0 {
                let rows = raw.dim(0)?;
                if rows == 2 {
                    uncond_outs.push(raw.narrow(0, 0, 1)?);
                }
                cond_outs.push(raw.narrow(0, rows - 1, 1)?);
            }
        }
        if i == 0 {
            uncond_outs.extend(cond_outs);
            record(&mut trace, "unet_out_0", &Tensor::cat(&uncond_outs, 0)?)?;
        }
        job.advance(&Tensor::cat(&preds, 0)?, noise)?;
        if !progress.step(i, total) {
            return Err(PipelineError::Cancelled);
        }
    }

    log::debug!(
        "denoised {n} image(s) {width}x{height}, {total} steps in {:.2?}",
        started.elapsed()
    );
    record(&mut trace, "final_latents", job.latents())?;
    let mut decoded = Vec::with_capacity(n);
    // One image at a time: the decoder's activations dominate memory at large sizes.
    for i in 0..n {
        proceed(progress)?;
        decoded.push(decode_rows(sd, &[(&job, i..i + 1)])?);
    }
    let decoded = Tensor::cat(&decoded, 0)?;
    record(&mut trace, "vae_decode_out", &decoded)?;
    let unit = decoded_to_unit(&decoded)?;
    record(&mut trace, "image", &unit)?;
    Ok(job.images(unit_to_rgb(&unit)?))
}

/// Text embeddings, `[uncond, cond]` when guidance is on, else `[cond]` (one UNet call
/// each when A1111 prompts of different lengths are not padded), and SDXL's added
/// conditioning with the same rows (both encoders: xl_conditioning.rs).
pub(crate) fn encode_context(
    sd: &StableDiffusion,
    params: &GenerateParams,
    trace: &mut Option<&mut Trace>,
) -> Result<(Context, Option<AddedCond>)> {
    let do_cfg = params.guidance_scale > 1.0;
    if let Some(xl) = &sd.xl {
        let size = resolve_size(sd, params)?;
        let (context, added) = xl_context(sd, xl, params, do_cfg, size, trace)?;
        return Ok((context, Some(added)));
    }
    Ok((text_context(sd, params, do_cfg, trace)?, None))
}

/// Scheduler set-up and initial latents (in diffusers' draw order) of a job whose text
/// embeddings are `context`: the state its denoising steps start from.
pub(crate) fn prepare_denoising(
    sd: &StableDiffusion,
    params: &GenerateParams,
    scheduler_config: &Value,
    (context, added): (Context, Option<AddedCond>),
    shape: &[usize; 4],
    noise: &mut dyn NoiseSource,
    trace: &mut Option<&mut Trace>,
) -> Result<Denoising> {
    let n = params.n_samples;
    let dev = sd.device.clone();
    let scheduler_config = schedulers::with_spacing(scheduler_config, params.timestep_spacing);
    let mut sched = schedulers::build(
        params.scheduler,
        &scheduler_config,
        params.steps,
        params.eta,
    )
    .map_err(|e| PipelineError::Scheduler(e.to_string()))?;
    let (timesteps, strength) = match &params.task {
        Task::Txt2Img => (sched.timesteps().to_vec(), None),
        Task::Img2Img { strength, .. } | Task::Inpaint { strength, .. } => {
            let (ts, begin) = strength_timesteps(sched.as_ref(), params.steps, *strength)?;
            sched.set_begin_index(begin);
            (ts, Some(*strength))
        }
    };
    let first_t = *timesteps
        .first()
        .ok_or_else(|| PipelineError::Scheduler("empty timestep schedule".into()))?;

    let (latents, inpaint) = match &params.task {
        Task::Txt2Img => {
            let init = noise.initial_latents(shape, &dev)?;
            ((init * sched.init_noise_sigma())?, None)
        }
        Task::Img2Img { init, .. } => {
            let image = rgb_to_tensor(init, &dev)?;
            let image_latents = encode_sample(sd, &image, n, noise)?;
            let eps = noise.randn(shape, &dev)?;
            (sched.add_noise(&image_latents, &eps, first_t)?, None)
        }
        Task::Inpaint { init, mask, .. } => {
            let full_strength = strength.is_some_and(|s| s >= 1.0);
            prepare_inpaint(
                sd,
                init,
                mask.as_ref(),
                shape,
                full_strength,
                first_t,
                sched.as_ref(),
                noise,
                trace,
            )?
        }
    };
    Ok(Denoising::new(
        params, context, added, sched, timesteps, latents, inpaint,
    ))
}

/// Checks what the model can run and returns the job's latent shape `[n, c, h, w]`.
pub(crate) fn latent_shape(sd: &StableDiffusion, params: &GenerateParams) -> Result<[usize; 4]> {
    let n = params.n_samples;
    if n == 0 {
        return Err(PipelineError::InvalidRequest(
            "n_samples must be at least 1".into(),
        ));
    }
    if !(params.guidance_scale.is_finite() && params.guidance_scale >= 0.0) {
        return Err(PipelineError::InvalidRequest(
            "guidance_scale must be finite and >= 0".into(),
        ));
    }
    let (width, height) = resolve_size(sd, params)?;
    let sf = sd.vae_scale_factor();
    let lc = sd.vae.config.latent_channels;
    if sd.unet.config.in_channels != lc && !matches!(params.task, Task::Inpaint { .. }) {
        return Err(PipelineError::InvalidRequest(format!(
            "this is an inpainting model ({}-channel UNet): it runs inpaint and outpaint only",
            sd.unet.config.in_channels
        )));
    }
    Ok([n, lc, height / sf, width / sf])
}

/// Request size, defaulting to the init image's size, else the model's native size;
/// both must be positive multiples of the VAE scale factor (8).
fn resolve_size(sd: &StableDiffusion, params: &GenerateParams) -> Result<(usize, usize)> {
    let init = match &params.task {
        Task::Txt2Img => None,
        Task::Img2Img { init, .. } | Task::Inpaint { init, .. } => Some(init),
    };
    let (nw, nh) = sd.native_size();
    let width = params.width.or(init.map(|i| i.width())).unwrap_or(nw) as usize;
    let height = params.height.or(init.map(|i| i.height())).unwrap_or(nh) as usize;
    let sf = sd.vae_scale_factor();
    if width == 0 || height == 0 || width % sf != 0 || height % sf != 0 {
        return Err(PipelineError::InvalidRequest(format!(
            "width and height must be positive multiples of {sf}, got {width}x{height}"
        )));
    }
    if let Some(img) = init {
        if img.width() as usize != width || img.height() as usize != height {
            return Err(PipelineError::InvalidRequest(format!(
                "init image is {}x{}, request is {width}x{height}",
                img.width(),
                img.height()
            )));
        }
    }
    if let Task::Inpaint { mask: Some(m), .. } = &params.task {
        if m.width() as usize != width || m.height() as usize != height {
            return Err(PipelineError::InvalidRequest(format!(
                "mask is {}x{}, request is {width}x{height}",
                m.width(),
                m.height()
            )));
        }
    }
    Ok((width, height))
}

/// VAE-encodes one image and draws n posterior samples (one per image stream), scaled by
/// the VAE scaling factor, as diffusers' `retrieve_latents(..., sample) * scaling_factor`.
fn encode_sample(
    sd: &StableDiffusion,
    image: &Tensor,
    n: usize,
    noise: &mut dyn NoiseSource,
) -> Result<Tensor> {
    let post = sd.vae.encode(&image.to_dtype(sd.vae_dtype())?)?;
    let mean = post.mean.to_dtype(DType::F32)?;
    let std = post.std.to_dtype(DType::F32)?;
    let (_, c, h, w) = mean.dims4()?;
    let eps = noise.randn(&[n, c, h, w], &sd.device)?;
    let sample = mean.broadcast_add(&std.broadcast_mul(&eps)?)?;
    Ok((sample * sd.vae_scaling_factor())?)
}

/// Initial latents and loop state for inpainting, in StableDiffusionInpaintPipeline's
/// order: image latents (4-channel UNet or partial strength), noise, masked-image latents.
#[allow(clippy::too_many_arguments)]
fn prepare_inpaint(
    sd: &StableDiffusion,
    init: &image::RgbImage,
    mask: Option<&GrayImage>,
    shape: &[usize; 4],
    full_strength: bool,
    first_t: f64,
    sched: &dyn Scheduler,
    noise: &mut dyn NoiseSource,
    trace: &mut Option<&mut Trace>,
) -> Result<(Tensor, Option<InpaintMode>)> {
    let dev = &sd.device;
    let [n, lc, lh, lw] = *shape;
    let (w, h) = (init.width() as usize, init.height() as usize);
    let in_ch = sd.unet.config.in_channels;
    let nine = if in_ch == lc {
        false
    } else if in_ch == 2 * lc + 1 {
        true
    } else {
        return Err(PipelineError::Config(format!(
            "unet with {in_ch} input channels cannot inpaint {lc}-channel latents"
        )));
    };
    let image = rgb_to_tensor(init, dev)?;
    let mask_px = match mask {
        Some(m) => binarize_mask(m),
        None => vec![1.0; w * h],
    };
    let mask_cond = Tensor::from_vec(mask_px.clone(), (1, 1, h, w), dev)?;

    let image_latents = if !nine || !full_strength {
        Some(encode_sample(sd, &image, n, noise)?)
    } else {
        None
    };
    let eps = if full_strength {
        noise.initial_latents(shape, dev)?
    } else {
        noise.randn(shape, dev)?
    };
    let latents = match (&image_latents, full_strength) {
        (Some(il), false) => sched.add_noise(il, &eps, first_t)?,
        _ => (&eps * sched.init_noise_sigma())?,
    };
    let mask_latent =
        Tensor::from_vec(nearest_resize(&mask_px, h, w, lh, lw), (1, 1, lh, lw), dev)?;
    record(trace, "mask_condition", &mask_cond)?;
    record(trace, "mask_latent", &mask_latent)?;

    let mode = if nine {
        let keep = mask_cond.lt(0.5)?.to_dtype(DType::F32)?;
        let masked_image = image.broadcast_mul(&keep)?;
        let masked_latents = encode_sample(sd, &masked_image, n, noise)?;
        record(trace, "masked_image_latents", &masked_latents)?;
        let mask_n = mask_latent.repeat((n, 1, 1, 1))?;
        InpaintMode::Concat {
            extra: Tensor::cat(&[&mask_n, &masked_latents], 1)?,
        }
    } else {
        // diffusers also VAE-encodes the masked image for 4-channel UNets (and discards
        // it); draw its noise anyway so later draws stay aligned with diffusers.
        let _ = noise.randn(shape, dev)?;
        let image_latents = image_latents
            .ok_or_else(|| PipelineError::Config("inpainting lost its image latents".into()))?;
        record(trace, "image_latents", &image_latents)?;
        InpaintMode::Blend {
            mask: mask_latent,
            image_latents,
            noise: eps,
        }
    };
    Ok((latents, Some(mode)))
}

/// diffusers' `get_timesteps`: run only the last `int(steps * strength)` steps. Returns the
/// remaining timesteps and the begin index into the full schedule.
fn strength_timesteps(
    sched: &dyn Scheduler,
    steps: usize,
    strength: f64,
) -> Result<(Vec<f64>, usize)> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(PipelineError::InvalidRequest(format!(
            "strength must be in [0, 1], got {strength}"
        )));
    }
    let init_timestep = ((steps as f64 * strength) as usize).min(steps);
    let t_start = steps - init_timestep;
    let begin = t_start * sched.order();
    let all = sched.timesteps();
    let rest = all.get(begin..).unwrap_or(&[]).to_vec();
    if rest.is_empty() {
        return Err(PipelineError::InvalidRequest(format!(
            "strength {strength} with {steps} steps leaves no denoising step"
        )));
    }
    Ok((rest, begin))
}
