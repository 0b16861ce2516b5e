//! The validated, typed generation request the pipeline runs. Built once at the edge
//! (protocol validation); the pipeline trusts it and never sees raw client input.

use image::{GrayImage, RgbImage};

pub use super::schedulers::config::Spacing;

/// Scheduler names the server accepts (plugin names and Part 2 additions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Ddim,
    Pndm,
    Lms,
    Euler,
    EulerAncestral,
    Heun,
    DpmPp2m,
    DpmPp2mKarras,
    UniPc,
    Ddpm,
    /// Latent consistency models (LCM-distilled UNets, LCM-LoRAs): 1-8 steps.
    Lcm,
}

impl SchedulerKind {
    /// Every accepted name with its scheduler; plugin names first.
    pub(crate) const NAMES: &'static [(&'static str, SchedulerKind)] = &[
        ("euler_a", SchedulerKind::EulerAncestral),
        ("euler", SchedulerKind::Euler),
        ("ddpm", SchedulerKind::Ddpm),
        ("ddim", SchedulerKind::Ddim),
        ("plms", SchedulerKind::Pndm),
        ("lms", SchedulerKind::Lms),
        ("dpm", SchedulerKind::DpmPp2m),
        ("heun", SchedulerKind::Heun),
        ("dpm++_2m", SchedulerKind::DpmPp2m),
        ("dpmpp_2m", SchedulerKind::DpmPp2m),
        ("dpm++_2m_karras", SchedulerKind::DpmPp2mKarras),
        ("dpmpp_2m_karras", SchedulerKind::DpmPp2mKarras),
        ("unipc", SchedulerKind::UniPc),
        ("pndm", SchedulerKind::Pndm),
        ("euler_ancestral", SchedulerKind::EulerAncestral),
        ("lcm", SchedulerKind::Lcm),
    ];

    /// Parses a client's scheduler name (case-insensitive).
    pub(crate) fn from_name(name: &str) -> Option<SchedulerKind> {
        let lower = name.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, k)| *k)
    }

    /// The accepted names, for help texts and error messages.
    pub(crate) fn names() -> Vec<&'static str> {
        Self::NAMES.iter().map(|(n, _)| *n).collect()
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub enum Task {
    Txt2Img,
    /// `strength` in [0, 1]: the fraction of the schedule that is run.
    Img2Img {
        init: RgbImage,
        strength: f64,
    },
    /// Inpaint and outpaint. `mask`: white (>= 0.5) = repaint; `None` = repaint everything.
    /// Image and mask already have the request's width x height.
    Inpaint {
        init: RgbImage,
        mask: Option<GrayImage>,
        strength: f64,
    },
}

/// A fully validated request: every field is in range.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub task: Task,
    pub prompt: String,
    pub negative_prompt: String,
    /// 1..=max_steps.
    pub steps: usize,
    /// Finite, >= 0. <= 1.0 skips the unconditional pass.
    pub guidance_scale: f64,
    /// Seed of the first image; image i uses seed + i (wrapping).
    pub seed: u64,
    /// Multiples of 8. `None` = the model's native size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// 1..=max_samples.
    pub n_samples: usize,
    pub scheduler: SchedulerKind,
    /// DDIM eta (0 = deterministic DDIM).
    pub eta: f64,
    /// CLIP skip as diffusers defines it (None or 0 = last layer).
    pub clip_skip: Option<usize>,
    /// The request's timestep spacing (`trailing` for SDXL Turbo/Lightning); None = the
    /// model's scheduler config.
    pub timestep_spacing: Option<Spacing>,
    /// SDXL micro-conditioning and empty-negative semantics; ignored by SD1/SD2 models.
    pub xl: XlOptions,
}

/// What an empty negative prompt means to a model whose config asks for zeros
/// (`force_zeros_for_empty_prompt`, SDXL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptyNegative {
    /// All-zero negative embeddings (diffusers' `negative_prompt=None`, AUTOMATIC1111's `""`).
    #[default]
    Zeros,
    /// `""` is encoded like any prompt (diffusers' `negative_prompt=""`).
    Encode,
}

/// SDXL's `add_time_ids` micro-conditioning: sizes as (width, height), `None` = the request's
/// size; the crop as diffusers' `crops_coords_top_left` (top, left), default (0, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XlOptions {
    pub original_size: Option<(u32, u32)>,
    pub crop_top_left: (u32, u32),
    pub target_size: Option<(u32, u32)>,
    pub empty_negative: EmptyNegative,
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub image: RgbImage,
    pub seed: u64,
    /// The safety checker's verdict; None when no checker ran.
    pub nsfw: Option<bool>,
}
