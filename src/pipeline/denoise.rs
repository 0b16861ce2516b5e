//! The denoising loop cut at step boundaries, so that several jobs can share one model call
//! (continuous batching): [`Denoising`] is one job's state between two steps (its own
//! scheduler, timesteps, text embeddings, guidance scale and latents; its noise stays with the
//! caller), and the functions here (behind `StableDiffusion`'s batch methods) run one shared
//! UNet call for the current step of many jobs, one batched text-encoder call for jobs
//! starting together, and one batched VAE decode for jobs finishing together.
//!
//! Every row of a shared call is computed on its own: the UNet takes one timestep and one
//! context row per sample, and the CPU kernels keep a sample's summation order independent
//! of the other rows (time embedding never on a single row, attention blocks independent of
//! the batch size, gemm's depth blocking independent of the row count), so a job's images are
//! bit-identical alone or mixed with other users' jobs. That guarantee is the CPU f32 path's
//! (tests/pipeline_batching.rs); on CUDA, cuBLAS picks its kernels by shape, so a mixed job
//! may differ from its solo run in the last bits there. Never decides who shares a batch
//! (the worker does) and never touches the wire.

use std::ops::Range;

use candle_core::{DType, Tensor};
use serde_json::Value;

use super::conditioning::Context;
use super::error::{PipelineError, Result};
use super::generate::{encode_context, latent_shape, prepare_denoising};
use super::images::{decoded_to_unit, unit_to_rgb};
use super::model::StableDiffusion;
use super::models::added_cond::AddedCond;
use super::noise::{NoiseSource, SeededNoise};
use super::params::{GenerateParams, GeneratedImage};
use super::prompt::PromptSyntax;
use super::schedulers::Scheduler;

/// Inpainting state that the denoising loop needs.
pub(crate) enum InpaintMode {
    /// 9-channel UNet: `[mask, masked image latents]` per image (`[n, 5, h, w]`).
    Concat { extra: Tensor },
    /// 4-channel UNet: blend the known region back after every step.
    Blend {
        mask: Tensor,
        image_latents: Tensor,
        noise: Tensor,
    },
}

/// UNet inputs of some rows of one job, all with one context length: one timestep, context
/// row and added row per row.
struct ModelInputs {
    xs: Tensor,
    timesteps: Vec<f64>,
    context: Tensor,
    added: Option<AddedCond>,
}

/// One job between two denoising steps.
pub struct Denoising {
    n: usize,
    guidance: f64,
    /// `[uncond, cond]` when guidance is on, else `[cond]` (or one of each, of different
    /// lengths: A1111 prompts not padded to the same chunk count).
    context: Context,
    /// SDXL's added conditioning, rows as `context`'s.
    added: Option<AddedCond>,
    sched: Box<dyn Scheduler>,
    timesteps: Vec<f64>,
    next: usize,
    latents: Tensor,
    inpaint: Option<InpaintMode>,
    seed: u64,
}

impl Denoising {
    pub(crate) fn new(
        params: &GenerateParams,
        context: Context,
        added: Option<AddedCond>,
        sched: Box<dyn Scheduler>,
        timesteps: Vec<f64>,
        latents: Tensor,
        inpaint: Option<InpaintMode>,
    ) -> Self {
        Denoising {
            n: params.n_samples,
            guidance: params.guidance_scale,
            context,
            added,
            sched,
            timesteps,
            next: 0,
            latents,
            inpaint,
            seed: params.seed,
        }
    }

    fn do_cfg(&self) -> bool {
        self.guidance > 1.0
    }

    pub fn steps_done(&self) -> usize {
        self.next
    }

    pub fn total_steps(&self) -> usize {
        self.timesteps.len()
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.timesteps.len()
    }

    /// Images this job makes.
    pub fn images_count(&self) -> usize {
        self.n
    }

    /// Rows this job adds to a UNet call: one per image, two with guidance.
    pub fn unet_rows(&self) -> usize {
        self.n * if self.do_cfg() { 2 } else { 1 }
    }

    /// `(channels, height, width)` of one UNet input row (inpainting's extra channels
    /// included): jobs share a call only when these match.
    pub fn unet_input_dims(&self) -> Result<(usize, usize, usize)> {
        let (_, c, h, w) = self.latents.dims4()?;
        let extra = match &self.inpaint {
            Some(InpaintMode::Concat { extra }) => extra.dim(1)?,
            _ => 0,
        };
        Ok((c + extra, h, w))
    }

    /// Tokens of the text context's longest row (77 per prompt chunk): jobs share a call
    /// only when equal.
    pub fn context_len(&self) -> Result<usize> {
        self.context.max_len()
    }

    pub fn latents(&self) -> &Tensor {
        &self.latents
    }

    fn timestep(&self) -> Result<f64> {
        self.timesteps
            .get(self.next)
            .copied()
            .ok_or_else(|| PipelineError::Scheduler("denoising past the last timestep".into()))
    }

    /// UNet inputs of images `images` at the current step: latents (twice with guidance),
    /// scaled by the scheduler, with inpainting's extra channels; one timestep and one
    /// context row per input row. One segment per context length, rows in `[u, c]` order per
    /// image as [`Denoising::guide`] reads them.
    fn model_inputs(&self, images: Range<usize>) -> Result<Vec<ModelInputs>> {
        let t = self.timestep()?;
        let count = images.len();
        let per_image = if self.do_cfg() { 2 } else { 1 };
        let mut rows = Vec::with_capacity(count);
        for j in images {
            let lat = self.latents.narrow(0, j, 1)?;
            let model_in = if self.do_cfg() {
                Tensor::cat(&[&lat, &lat], 0)?
            } else {
                lat
            };
            let mut model_in = self.sched.scale_model_input(&model_in, t)?;
            if let Some(InpaintMode::Concat { extra }) = &self.inpaint {
                let e = extra.narrow(0, j, 1)?.repeat((per_image, 1, 1, 1))?;
                model_in = Tensor::cat(&[&model_in, &e], 1)?;
            }
            rows.push(model_in);
        }
        let xs = Tensor::cat(&rows, 0)?;
        match &self.context {
            Context::Joint(context) => Ok(vec![ModelInputs {
                xs,
                timesteps: vec![t; count * per_image],
                context: context.repeat((count, 1, 1))?,
                added: self.added.as_ref().map(|a| a.repeat(count)).transpose()?,
            }]),
            Context::Split { uncond, cond } => {
                // Only with guidance: each image's uncond row and cond row, one segment each.
                let mut segments = Vec::with_capacity(2 * count);
                for r in 0..count * per_image {
                    let side = r % 2;
                    segments.push(ModelInputs {
                        xs: xs.narrow(0, r, 1)?,
                        timesteps: vec![t],
                        context: if side == 0 { uncond } else { cond }.clone(),
                        added: self.added.as_ref().map(|a| a.narrow(side, 1)).transpose()?,
                    });
                }
                Ok(segments)
            }
        }
    }

    /// Classifier-free guidance over raw UNet rows (`[u, c]` per image, or `[c]`): one
    /// prediction per image.
    pub(crate) fn guide(&self, raw: &Tensor) -> Result<Tensor> {
        if !self.do_cfg() {
            return Ok(raw.clone());
        }
        let mut preds = Vec::with_capacity(raw.dim(0)? / 2);
        for j in 0..raw.dim(0)? / 2 {
            let u = raw.narrow(0, 2 * j, 1)?;
            let c = raw.narrow(0, 2 * j + 1, 1)?;
            preds.push((&u + ((&c - &u)? * self.guidance)?)?);
        }
        Ok(Tensor::cat(&preds, 0)?)
    }

    /// This job's own update after the model call: the scheduler step with `pred` (one row
    /// per image), inpainting's blend, then the next timestep. Needs no model.
    pub fn advance(&mut self, pred: &Tensor, noise: &mut dyn NoiseSource) -> Result<()> {
        let t = self.timestep()?;
        let mut latents = self.sched.step(pred, t, &self.latents, noise)?;
        if let Some(InpaintMode::Blend {
            mask,
            image_latents,
            noise: eps,
        }) = &self.inpaint
        {
            let known = match self.timesteps.get(self.next + 1) {
                Some(&next_t) => self.sched.add_noise(image_latents, eps, next_t)?,
                None => image_latents.clone(),
            };
            let keep = (1.0 - mask)?;
            latents = (known.broadcast_mul(&keep)? + latents.broadcast_mul(mask)?)?;
        }
        self.latents = latents;
        self.next += 1;
        Ok(())
    }

    /// The job's images from its decoded pixels (`[n, 3, h, w]` in [0, 1]).
    pub(crate) fn images(&self, rgb: Vec<image::RgbImage>) -> Vec<GeneratedImage> {
        rgb.into_iter()
            .enumerate()
            .map(|(i, image)| GeneratedImage {
                image,
                seed: self.seed.wrapping_add(i as u64),
                nsfw: None,
            })
            .collect()
    }
}

const MIB: u64 = 1 << 20;

/// Rough activation memory of `job`'s rows in one UNet call, in MiB: per row the skip
/// connections kept for the up path plus the widest level's working set (a resnet's
/// inputs, outputs and temporaries, the transformer's feed-forward `[tokens, 8 x
/// channels]`), in the model's dtype. An estimate for the batch limit, not an account.
pub(crate) fn unet_activation_mib(sd: &StableDiffusion, job: &Denoising) -> Result<u64> {
    let (_, h, w) = job.unet_input_dims()?;
    let cfg = &sd.unet.config;
    let (mut skips, mut widest) = (0usize, 0usize);
    let (mut lh, mut lw) = (h, w);
    for (i, &ch) in cfg.block_out_channels.iter().enumerate() {
        let plane = lh * lw;
        skips += ch * plane * (cfg.layers_per_block.get(i).copied().unwrap_or(2) + 1);
        widest = widest.max(ch * plane);
        lh = lh.div_ceil(2);
        lw = lw.div_ceil(2);
    }
    let row = (skips + 14 * widest) * sd.dtype.size_in_bytes();
    Ok((row as u64 * job.unet_rows() as u64).div_ceil(MIB))
}

/// Rough activation memory of decoding `job`'s images together, in MiB: about ten live
/// full-resolution tensors of the decoder's last width per image.
pub(crate) fn decode_activation_mib(sd: &StableDiffusion, job: &Denoising) -> Result<u64> {
    let (_, h, w) = job.unet_input_dims()?;
    let sf = sd.vae_scale_factor();
    let ch = sd
        .vae
        .config
        .block_out_channels
        .first()
        .copied()
        .unwrap_or(128);
    let per_image = 10 * ch * (h * sf) * (w * sf) * sd.vae_dtype().size_in_bytes();
    Ok((per_image as u64 * job.images_count() as u64).div_ceil(MIB))
}

/// Raw UNet output (f32) of several jobs' images, split back per part: one UNet call per
/// context length among them (every row is computed on its own, so grouping changes no
/// row's result).
pub(crate) fn unet_parts(
    sd: &StableDiffusion,
    parts: &[(&Denoising, Range<usize>)],
) -> Result<Vec<Tensor>> {
    let mut segments: Vec<(usize, ModelInputs)> = Vec::new();
    for (p, (job, images)) in parts.iter().enumerate() {
        segments.extend(
            job.model_inputs(images.clone())?
                .into_iter()
                .map(|s| (p, s)),
        );
    }
    let lens = segments
        .iter()
        .map(|(_, s)| s.context.dim(1))
        .collect::<candle_core::Result<Vec<usize>>>()?;
    let mut distinct = lens.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut outs: Vec<Option<Tensor>> = vec![None; segments.len()];
    for len in distinct {
        let members: Vec<usize> = (0..segments.len()).filter(|&i| lens[i] == len).collect();
        let inputs: Vec<&ModelInputs> = members.iter().map(|&i| &segments[i].1).collect();
        let out = unet_call(sd, &inputs)?;
        let mut start = 0;
        for (&i, input) in members.iter().zip(&inputs) {
            let rows = input.xs.dim(0)?;
            outs[i] = Some(out.narrow(0, start, rows)?);
            start += rows;
        }
    }
    let mut per_part: Vec<Vec<Tensor>> = vec![Vec::new(); parts.len()];
    for ((p, _), out) in segments.iter().zip(outs) {
        per_part[*p]
            .push(out.ok_or_else(|| PipelineError::Config("a UNet row without an output".into()))?);
    }
    per_part
        .iter()
        .map(|rows| Ok(Tensor::cat(rows, 0)?))
        .collect()
}

/// One UNet call over segments of equal context length (f32 output, rows in order).
fn unet_call(sd: &StableDiffusion, inputs: &[&ModelInputs]) -> Result<Tensor> {
    let xs: Vec<&Tensor> = inputs.iter().map(|s| &s.xs).collect();
    let ctx: Vec<&Tensor> = inputs.iter().map(|s| &s.context).collect();
    let ts: Vec<f64> = inputs
        .iter()
        .flat_map(|s| s.timesteps.iter().copied())
        .collect();
    let added: Vec<&AddedCond> = inputs.iter().filter_map(|s| s.added.as_ref()).collect();
    let added = if added.is_empty() {
        None
    } else if added.len() == inputs.len() {
        Some(AddedCond::cat(&added)?)
    } else {
        return Err(PipelineError::Config(
            "jobs with and without added conditioning in one UNet call".into(),
        ));
    };
    Ok(sd
        .unet
        .forward_per_sample(
            &Tensor::cat(&xs, 0)?,
            &ts,
            &Tensor::cat(&ctx, 0)?,
            added.as_ref(),
        )?
        .to_dtype(DType::F32)?)
}

/// One shared UNet call for the current step of every job in `jobs` (all with the same
/// UNet input dims and context length): each job's guided prediction, ready for its
/// [`Denoising::advance`].
pub(crate) fn predict_batch(sd: &StableDiffusion, jobs: &[&Denoising]) -> Result<Vec<Tensor>> {
    let parts: Vec<(&Denoising, Range<usize>)> = jobs.iter().map(|j| (*j, 0..j.n)).collect();
    let raw = unet_parts(sd, &parts)?;
    jobs.iter().zip(&raw).map(|(j, r)| j.guide(r)).collect()
}

/// VAE decode (f32, `[rows, 3, h, w]` in [-1, 1]) of several jobs' images in one call.
pub(crate) fn decode_rows(
    sd: &StableDiffusion,
    parts: &[(&Denoising, Range<usize>)],
) -> Result<Tensor> {
    let mut z = Vec::with_capacity(parts.len());
    for (job, images) in parts {
        z.push(job.latents.narrow(0, images.start, images.len())?);
    }
    let z = (Tensor::cat(&z, 0)? / sd.vae_scaling_factor())?.to_dtype(sd.vae_dtype())?;
    Ok(sd.vae.decode(&z)?.to_dtype(DType::F32)?)
}

/// Decodes finished jobs together (one VAE call) into each job's images.
pub(crate) fn decode_batch(
    sd: &StableDiffusion,
    jobs: &[&Denoising],
) -> Result<Vec<Vec<GeneratedImage>>> {
    let parts: Vec<(&Denoising, Range<usize>)> = jobs.iter().map(|j| (*j, 0..j.n)).collect();
    let decoded = decode_rows(sd, &parts)?;
    let rgb = unit_to_rgb(&decoded_to_unit(&decoded)?)?;
    let mut rgb = rgb.into_iter();
    Ok(jobs
        .iter()
        .map(|j| j.images(rgb.by_ref().take(j.n).collect()))
        .collect())
}

/// Starts several jobs together: text embeddings of every job that uses the last
/// encoder layer in one encoder call (rows are independent), then each job's scheduler
/// and seeded initial latents. One result per job; a bad job fails alone.
pub(crate) fn start_batch(
    sd: &StableDiffusion,
    jobs: &[&GenerateParams],
) -> Vec<Result<(Denoising, SeededNoise)>> {
    let shared = shared_contexts(sd, jobs);
    let cfg: Value = sd.scheduler_config.clone();
    jobs.iter()
        .zip(shared)
        .map(|(params, context)| {
            let shape = latent_shape(sd, params)?;
            let context = match context {
                Some(c) => (Context::Joint(c?), None),
                None => encode_context(sd, params, &mut None)?,
            };
            let mut noise = SeededNoise::new(params.seed, params.n_samples);
            let job = prepare_denoising(sd, params, &cfg, context, &shape, &mut noise, &mut None)?;
            Ok((job, noise))
        })
        .collect()
}

/// Contexts of the jobs with literal prompts and no clip skip, from one encoder call
/// (None for the others, which are encoded alone). A failed call fails each of its jobs with the same error.
fn shared_contexts(sd: &StableDiffusion, jobs: &[&GenerateParams]) -> Vec<Option<Result<Tensor>>> {
    if sd.xl.is_some() {
        // SDXL's two encoders and pooled embeddings: each job on its own.
        return jobs.iter().map(|_| None).collect();
    }
    let mut prompts: Vec<&str> = Vec::new();
    let mut spans = Vec::with_capacity(jobs.len());
    for p in jobs {
        let mine: Vec<&str> = if p.guidance_scale > 1.0 {
            vec![&p.negative_prompt, &p.prompt]
        } else {
            vec![&p.prompt]
        };
        // A job whose prompt does not tokenize is encoded alone and fails alone.
        let tokenizes = mine.iter().all(|t| sd.prompt_ids(t).is_ok());
        // A1111 prompts (chunks, weights, embeddings) are encoded job by job.
        let literal = matches!(p.syntax, PromptSyntax::Literal);
        if p.clip_skip.unwrap_or(0) != 0 || !tokenizes || !literal {
            spans.push(None);
            continue;
        }
        let start = prompts.len();
        prompts.extend(mine);
        spans.push(Some(start..prompts.len()));
    }
    if prompts.is_empty() {
        return spans.iter().map(|_| None).collect();
    }
    let all = sd.encode_prompts(&prompts, None);
    spans
        .into_iter()
        .map(|span| {
            let span = span?;
            Some(match &all {
                Ok(t) => t
                    .narrow(0, span.start, span.len())
                    .map_err(PipelineError::from),
                Err(e) => Err(PipelineError::Candle(candle_core::Error::Msg(format!(
                    "text encoder: {e}"
                )))),
            })
        })
        .collect()
}
