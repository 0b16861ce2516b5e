//! Where every random number of a generation comes from. The pipeline never calls a device
//! RNG: noise is drawn on the host from a seeded source and uploaded, so the same seed gives
//! the same image. Golden replays substitute the recorded draws.

use candle_core::{Device, Result, Tensor};

/// A source of standard-normal draws, consumed in the order diffusers consumes them
/// (VAE posterior sample, img2img/inpaint noise, ancestral step noise, ...).
pub trait NoiseSource {
    /// Draws a float32 tensor of `shape` with i.i.d. N(0, 1) entries, on `device`.
    fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor>;

    /// The initial latent noise of txt2img / full-strength inpaint (diffusers' `latents`
    /// argument). Recorded replays supply it separately; an RNG just draws it in order.
    fn initial_latents(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        self.randn(shape, device)
    }
}

/// Seeded host noise: one ChaCha20 stream per image, image `i` seeded with `seed + i`
/// (wrapping). A draw of shape `[n, ...]` takes row `i` from stream `i`, so an image is the
/// same whether generated alone or inside a batch. Same seed => bit-identical draws.
pub struct SeededNoise {
    streams: Vec<rand_chacha::ChaCha20Rng>,
}

impl SeededNoise {
    /// `n` streams for seeds `seed, seed+1, ..., seed+n-1`.
    pub fn new(seed: u64, n: usize) -> SeededNoise {
        use rand::SeedableRng;
        let streams = (0..n as u64)
            .map(|i| rand_chacha::ChaCha20Rng::seed_from_u64(seed.wrapping_add(i)))
            .collect();
        SeededNoise { streams }
    }
}

impl NoiseSource for SeededNoise {
    fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        use rand::Rng;
        let rows = shape.first().copied().unwrap_or(1);
        if rows != self.streams.len() {
            return Err(candle_core::Error::Msg(format!(
                "noise for {rows} images requested from {} seeded streams",
                self.streams.len()
            )));
        }
        let per_row: usize = shape.iter().skip(1).product();
        let mut data = Vec::with_capacity(rows * per_row);
        for stream in &mut self.streams {
            data.extend((0..per_row).map(|_| -> f32 { stream.sample(rand_distr::StandardNormal) }));
        }
        Tensor::from_vec(data, shape, device)
    }
}
