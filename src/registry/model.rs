//! What the registry knows about one model on disk, once identified.

use std::path::PathBuf;

use serde::Serialize;

/// Stable Diffusion family, detected from the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ModelVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
    /// SDXL base and fine-tunes (two text encoders, `text_time` added conditioning).
    #[serde(rename = "sdxl")]
    Xl,
}

/// txt2img (4-channel UNet) or inpaint (9-channel UNet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ModelKind {
    #[serde(rename = "txt2img")]
    Txt2Img,
    #[serde(rename = "inpaint")]
    Inpaint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ModelFormat {
    #[serde(rename = "diffusers")]
    Diffusers,
    #[serde(rename = "safetensors")]
    Safetensors,
    #[serde(rename = "ckpt")]
    Ckpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Prediction {
    #[serde(rename = "epsilon")]
    Epsilon,
    #[serde(rename = "v_prediction")]
    VPrediction,
}

/// A model resolved to files on disk, ready for the worker to load (or find in its cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResolvedModel {
    /// Display name: the path relative to its root.
    pub name: String,
    /// Canonical path of the folder or file; the cache key.
    pub path: PathBuf,
    pub version: ModelVersion,
    pub kind: ModelKind,
    pub format: ModelFormat,
    pub prediction: Prediction,
}
