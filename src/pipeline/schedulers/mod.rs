//! Diffusion schedulers, reproducing diffusers 0.42 numerics (fractional sigma-space
//! timesteps, epsilon and v-prediction, leading/linspace/trailing spacing).
//! Plain candle tensor math; no model code here.

use candle_core::{Result, Tensor};

use super::noise::NoiseSource;

/// The contract the denoising loop drives, mirroring diffusers' scheduler API:
///
/// ```text
/// set up with num_inference_steps  ->  timesteps()
/// img2img: skip the first t_start*order() timesteps, set_begin_index(t_start*order())
///          latents = add_noise(init_latents, noise, timesteps()[begin])
/// txt2img: latents = noise * init_noise_sigma()
/// for (i, t) in timesteps()[begin..]:
///     x = scale_model_input(latents, t)        // per UNet call
///     out = unet(x, t); guidance
///     latents = step(out, t, latents, noise)
/// ```
/// A second-order scheduler (Heun) lists each inner timestep twice, as diffusers does; the
/// loop calls the UNet once per listed timestep.
pub trait Scheduler: Send {
    /// Timesteps the UNet is called with (floats; some schedulers use fractional values).
    fn timesteps(&self) -> &[f64];
    /// Scale applied to the initial noise in txt2img.
    fn init_noise_sigma(&self) -> f64;
    /// 2 for Heun, else 1 (used when slicing timesteps for img2img).
    fn order(&self) -> usize;
    /// Start the schedule at this index into `timesteps()` (img2img/inpaint strength).
    fn set_begin_index(&mut self, index: usize);
    /// Input scaling before the UNet call (sigma-space schedulers divide by sqrt(sigma^2+1)).
    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor>;
    /// One denoising step: returns the previous (less noisy) sample. Ancestral/stochastic
    /// schedulers draw their noise from `noise`.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;
    /// Forward diffusion to `timestep` (img2img start latents, inpaint latent blending).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor>;
}
