//! The validated, typed generation request the pipeline runs. Built once at the edge
//! (protocol validation); the pipeline trusts it and never sees raw client input.

use image::{GrayImage, RgbImage};

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
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub image: RgbImage,
    pub seed: u64,
    /// The safety checker's verdict; None when no checker ran.
    pub nsfw: Option<bool>,
}
