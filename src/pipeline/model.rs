//! A loaded Stable Diffusion model: text encoder, tokenizer, UNet, VAE and the scheduler
//! config, built once from [`ModelParts`] and reused for every request. Holds no per-request
//! state. The type's one `impl`: construction and the model-level calls here; the methods
//! that run a request delegate to the modules that hold each concern (generate.rs: a whole
//! request; denoise.rs: step-level batching; conditioning.rs and xl_conditioning.rs: text
//! conditioning; lora/: LoRA-merged copies).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::denoise::{self, Denoising};
use super::error::{PipelineError, Result};
use super::load::config::{ClipConfig, UNetConfig, VaeConfig};
use super::load::embedding::TextualInversion;
use super::load::loader::load_diffusers_folder;
use super::load::model_parts::ModelParts;
use super::load::tokenizer::{prompt_ids, MAX_LENGTH};
use super::lora::{self, AppliedLora};
use super::models::clip::ClipTextTransformer;
use super::models::unet::UNet;
use super::models::vae::Vae;
use super::noise::{NoiseSource, SeededNoise};
use super::options::RuntimeOptions;
use super::params::{GenerateParams, GeneratedImage};
use super::progress::Progress;
use super::prompt::encode::Tower;
use super::trace::Trace;
use super::xl_conditioning::XlText;
use super::{conditioning, generate};

pub struct StableDiffusion {
    pub(crate) text_encoder: ClipTextTransformer,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) pad_token_id: u32,
    pub(crate) unet: UNet,
    pub(crate) vae: Vae,
    pub(crate) scheduler_config: Value,
    /// Textual-inversion embeddings usable in A1111 prompts (none until set).
    pub(crate) embeddings: Vec<TextualInversion>,
    /// SDXL's second text tower; None for SD1/SD2.
    pub(crate) xl: Option<XlText>,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
}

impl StableDiffusion {
    /// Builds every module from the JSON configs in `parts`. UNet and text encoder use
    /// `opts.dtype`; the VAE runs in f32 when its config has `force_upcast` (the default).
    pub fn from_parts(parts: ModelParts, opts: &RuntimeOptions) -> Result<StableDiffusion> {
        let unet_cfg = UNetConfig::from_json(&parts.unet_config)?;
        let vae_cfg = VaeConfig::from_json(&parts.vae_config)?;
        let clip_cfg = ClipConfig::from_json(&parts.text_encoder_config)?;
        let vae_dtype = if vae_cfg.force_upcast {
            DType::F32
        } else {
            opts.dtype
        };
        // The UNet (most of the bytes) is read and built on its own thread while the VAE and the
        // text encoder load here: on a warm page cache loading is CPU-bound (copies, page
        // faults, weight re-layouts), so this roughly halves the time to a ready model.
        let (unet, vae, text_encoder) = std::thread::scope(|scope| {
            let unet = std::thread::Builder::new()
                .name("runai-load-unet".into())
                .spawn_scoped(scope, || {
                    UNet::new(parts.unet.set_dtype(opts.dtype), &unet_cfg)
                })
                .map_err(|e| PipelineError::Config(format!("cannot start a loader thread: {e}")))?;
            let vae = Vae::new(parts.vae.set_dtype(vae_dtype), &vae_cfg);
            let text_encoder =
                ClipTextTransformer::new(parts.text_encoder.set_dtype(opts.dtype), &clip_cfg);
            let unet = unet
                .join()
                .map_err(|_| PipelineError::Config("the UNet loader thread panicked".into()))?;
            Ok::<_, PipelineError>((unet?, vae?, text_encoder?))
        })?;
        let xl = match parts.xl {
            Some(xl) => Some(XlText::from_parts(xl, opts)?),
            None => None,
        };
        if unet_cfg.addition.is_some() != xl.is_some() {
            return Err(PipelineError::Config(
                "the UNet's added text_time embedding and a second text encoder come together \
                 (SDXL); this model has only one of them"
                    .into(),
            ));
        }
        if unet_cfg.out_channels != vae_cfg.latent_channels {
            return Err(PipelineError::Config(format!(
                "unet predicts {} channels but the vae has {} latent channels",
                unet_cfg.out_channels, vae_cfg.latent_channels
            )));
        }
        Ok(StableDiffusion {
            text_encoder,
            tokenizer: parts.tokenizer,
            pad_token_id: parts.pad_token_id,
            unet,
            vae,
            scheduler_config: parts.scheduler_config,
            embeddings: Vec::new(),
            xl,
            device: opts.device.clone(),
            dtype: opts.dtype,
        })
    }

    /// Loads and builds a diffusers folder in one go.
    pub fn load_folder(path: &Path, opts: &RuntimeOptions) -> Result<StableDiffusion> {
        StableDiffusion::from_parts(load_diffusers_folder(path, opts)?, opts)
    }

    /// Replaces the textual-inversion embeddings A1111 prompts can name; those made for
    /// another model family (other tower widths) are left out. Returns how many were kept.
    pub(crate) fn set_embeddings(&mut self, embeddings: Vec<TextualInversion>) -> usize {
        let widths = self.tower_widths();
        self.embeddings = embeddings.into_iter().filter(|e| e.fits(&widths)).collect();
        self.embeddings.len()
    }

    /// The hidden width of each text encoder, in tower order (`[clip_l]`, or `[clip_l,
    /// clip_g]` for SDXL).
    pub(crate) fn tower_widths(&self) -> Vec<usize> {
        let mut widths = vec![self.text_encoder.hidden_size()];
        if let Some(xl) = &self.xl {
            widths.push(xl.encoder_2.text().hidden_size());
        }
        widths
    }

    /// Pixels per latent cell (8 for SD).
    pub(crate) fn vae_scale_factor(&self) -> usize {
        self.vae.config.scale_factor()
    }

    /// The size the model was trained at: unet sample_size * vae scale factor, (width, height).
    pub(crate) fn native_size(&self) -> (u32, u32) {
        let s = self.unet.config.sample_size * self.vae_scale_factor();
        let s = u32::try_from(s).unwrap_or(u32::MAX);
        (s, s)
    }

    /// True for SDXL models (two text encoders, added conditioning).
    pub fn is_xl(&self) -> bool {
        self.xl.is_some()
    }

    /// Token ids (77, padded with the model's pad token) for `prompt`.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        prompt_ids(&self.tokenizer, prompt, self.pad_token_id)
    }

    /// `[1, 77, hidden]` text embeddings of `prompt` (last hidden state after final LN).
    pub fn encode_prompt(&self, prompt: &str, clip_skip: Option<usize>) -> Result<Tensor> {
        let ids = self.prompt_ids(prompt)?;
        self.encode_ids(&ids, clip_skip)
    }

    /// `[prompts.len(), 77, hidden]` embeddings of several prompts in one encoder call (one
    /// batch instead of one pass per prompt; each row is computed independently).
    pub(crate) fn encode_prompts(
        &self,
        prompts: &[&str],
        clip_skip: Option<usize>,
    ) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(prompts.len() * MAX_LENGTH);
        for prompt in prompts {
            ids.extend(self.prompt_ids(prompt)?);
        }
        // prompt_ids always gives MAX_LENGTH ids; from_vec re-checks the total.
        let ids = Tensor::from_vec(ids, (prompts.len(), MAX_LENGTH), &self.device)?;
        self.text_encoder.forward(&ids, clip_skip)
    }

    /// Text embeddings of already tokenized ids.
    pub fn encode_ids(&self, ids: &[u32], clip_skip: Option<usize>) -> Result<Tensor> {
        let ids = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        self.text_encoder.forward(&ids, clip_skip)
    }

    /// One UNet call (for component tests and tools): returns the raw prediction.
    pub fn unet_forward(&self, xs: &Tensor, timestep: f64, context: &Tensor) -> Result<Tensor> {
        self.unet.forward(xs, timestep, context)
    }

    /// One UNet call with a timestep per row (for tests and tools).
    pub fn unet_forward_per_sample(
        &self,
        xs: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
    ) -> Result<Tensor> {
        self.unet.forward_per_sample(xs, timesteps, context, None)
    }

    /// VAE decode of unscaled latents (for component tests and tools).
    pub fn vae_decode(&self, z: &Tensor) -> Result<Tensor> {
        self.vae.decode(&z.to_dtype(self.vae_dtype())?)
    }

    /// VAE posterior (mean, std) of pixels in [-1, 1] (for component tests and tools).
    pub fn vae_posterior(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let post = self.vae.encode(&pixels.to_dtype(self.vae_dtype())?)?;
        Ok((post.mean, post.std))
    }

    pub(crate) fn vae_dtype(&self) -> DType {
        if self.vae.config.force_upcast {
            DType::F32
        } else {
            self.dtype
        }
    }

    /// The VAE's scaling factor (0.18215 for SD1/SD2).
    pub(crate) fn vae_scaling_factor(&self) -> f64 {
        self.vae.config.scaling_factor
    }

    /// Builds the model of `parts` with `loras` merged into the UNet and text-encoder
    /// weights (see `lora`); the loaded model is not changed.
    pub(crate) fn with_loras(
        parts: &ModelParts,
        loras: &[AppliedLora],
        opts: &RuntimeOptions,
    ) -> Result<StableDiffusion> {
        lora::with_loras(parts, loras, opts)
    }

    /// Generates `params.n_samples` images with seeded host noise (image i uses seed + i),
    /// the whole request end to end (generate.rs).
    pub fn generate(
        &self,
        params: &GenerateParams,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>> {
        generate::generate(self, params, progress)
    }

    /// Generates with the given noise source and optional intermediate-tensor recorder,
    /// using the model's own scheduler config.
    pub fn run_with_noise(
        &self,
        params: &GenerateParams,
        noise: &mut dyn NoiseSource,
        trace: Option<&mut Trace>,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>> {
        generate::run_with_noise(self, params, noise, trace, progress)
    }

    /// As [`StableDiffusion::run_with_noise`] with an explicit scheduler config document.
    pub(crate) fn run_with_scheduler_config(
        &self,
        params: &GenerateParams,
        scheduler_config: &Value,
        noise: &mut dyn NoiseSource,
        trace: Option<&mut Trace>,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>> {
        generate::run_with_scheduler_config(self, params, scheduler_config, noise, trace, progress)
    }

    /// Starts several jobs together for continuous batching (denoise.rs): one result per
    /// job, a bad job failing alone.
    pub fn start_batch(&self, jobs: &[&GenerateParams]) -> Vec<Result<(Denoising, SeededNoise)>> {
        denoise::start_batch(self, jobs)
    }

    /// One shared UNet call for the current step of every job in `jobs`: each job's guided
    /// prediction, ready for its [`Denoising::advance`].
    pub fn predict_batch(&self, jobs: &[&Denoising]) -> Result<Vec<Tensor>> {
        denoise::predict_batch(self, jobs)
    }

    /// Decodes finished jobs together (one VAE call) into each job's images.
    pub fn decode_batch(&self, jobs: &[&Denoising]) -> Result<Vec<Vec<GeneratedImage>>> {
        denoise::decode_batch(self, jobs)
    }

    /// Estimated activation memory of `job`'s rows in one UNet call, in MiB.
    pub fn unet_activation_mib(&self, job: &Denoising) -> Result<u64> {
        denoise::unet_activation_mib(self, job)
    }

    /// Estimated activation memory of decoding `job`'s images together, in MiB.
    pub fn decode_activation_mib(&self, job: &Denoising) -> Result<u64> {
        denoise::decode_activation_mib(self, job)
    }

    /// The model's text towers for A1111 encoding (conditioning.rs).
    pub(crate) fn towers(&self) -> Result<Vec<Tower<'_>>> {
        conditioning::towers(self)
    }
}
