//! Stable Diffusion on candle: text encoder, UNet, VAE, schedulers, noise, image conversion.
//! Plain Rust; knows nothing of actors or the wire.
//!
//! Laid out by concern:
//! - `models/`: the networks (text encoder, UNet, VAE) assembled from layers;
//! - `layers/`: building blocks the models share (attention, convolution, norms, resnet);
//! - `kernels/cpu/`: our hand-written f32 CPU kernels, and the one place that decides whether a
//!   tensor takes them or candle's own ops;
//! - `load/`: reading weights (safetensors, pickle checkpoints), configs and tokenizers;
//! - `schedulers/`, `safety/`: the samplers and the safety checker;
//! - at the top, orchestration: the loaded model (`model`), the denoising loop (`generate`),
//!   noise, image conversion, request parameters, progress and tracing, and SDXL's text
//!   conditioning (`xl_conditioning`).

pub(crate) mod kernels;
pub(crate) mod layers;
pub mod load;
pub(crate) mod models;

pub(crate) mod error;
pub(crate) mod generate;
pub mod images;
pub(crate) mod model;
pub mod noise;
pub(crate) mod options;
pub mod params;
pub(crate) mod progress;
pub mod safety;
pub mod schedulers;
pub mod trace;
pub mod xl_conditioning;

#[cfg(test)]
mod test_util;

pub use error::PipelineError;
pub use model::StableDiffusion;
pub use options::RuntimeOptions;
pub use progress::Progress;
