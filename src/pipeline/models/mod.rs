//! The networks: the CLIP text encoder, the UNet and the VAE, each assembled from `layers`.
//! A new model family adds its network here (and its config in `load::config`) without
//! touching the others.

pub mod added_cond;
pub mod clip;
pub mod clip_projection;
pub mod unet;
pub mod vae;
pub mod vae_blocks;
