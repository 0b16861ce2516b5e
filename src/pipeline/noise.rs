//! Where every random number of a generation comes from. The pipeline never calls a device
//! RNG: noise is drawn on the host from a seeded source and uploaded, so the same seed gives
//! the same image. Golden replays substitute the recorded draws.

use candle_core::{Device, Result, Tensor};

/// A source of standard-normal draws, consumed in the order diffusers consumes them
/// (VAE posterior sample, img2img/inpaint noise, ancestral step noise, ...).
pub trait NoiseSource {
    /// Draws a float32 tensor of `shape` with i.i.d. N(0, 1) entries, on `device`.
    fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor>;
}
