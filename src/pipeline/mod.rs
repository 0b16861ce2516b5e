//! Stable Diffusion on candle: text encoder, UNet, VAE, schedulers, noise, image conversion.
//! Plain Rust; knows nothing of actors or the wire.

pub mod model_parts;
pub mod noise;
pub mod params;
pub mod schedulers;
