//! Stable Diffusion on candle: text encoder, UNet, VAE, schedulers, noise, image conversion.
//! Plain Rust; knows nothing of actors or the wire.

pub mod attention;
mod attention_cpu;
pub mod clip;
mod clip_cpu;
pub mod config;
pub mod conv;
mod conv_cpu;
mod conv_winograd;
mod cpu_gemm;
pub mod error;
pub mod fast_math;
pub mod generate;
pub mod images;
pub mod loader;
pub mod model;
pub mod model_parts;
pub mod noise;
pub mod norm;
pub mod options;
pub mod params;
pub mod pickle;
pub mod progress;
pub mod resnet;
pub mod safety;
pub mod schedulers;
pub mod tokenizer;
pub mod trace;
pub mod unet;
pub mod vae;
pub mod vae_blocks;
pub mod weights;

#[cfg(test)]
mod test_util;

pub use error::PipelineError;
pub use model::StableDiffusion;
pub use options::RuntimeOptions;
pub use progress::Progress;
