//! The networks: the CLIP text encoder, the UNet and the VAE, each assembled from `layers`.
//! A new model family adds its network here (and its config in `load::config`) without
//! touching the others.

pub(crate) mod added_cond;
pub(crate) mod clip;
pub(crate) mod clip_projection;
pub(crate) mod unet;
pub(crate) mod vae;
pub(crate) mod vae_blocks;
