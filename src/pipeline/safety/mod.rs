//! The CompVis safety checker (diffusers' `StableDiffusionSafetyChecker`): folder configs,
//! CLIPImageProcessor preprocessing, the CLIP vision tower, the concept scores, and what a
//! server does with a flagged image. Pure candle and image code.

pub mod checker;
pub mod config;
pub(crate) mod filter;
pub mod preprocess;
pub(crate) mod vision;

pub use checker::{SafetyChecker, SafetyReport};
pub use filter::SafetyMode;
