//! The half of the [`super::Scheduler`] contract that depends only on a schedule, not on an
//! update rule: timesteps, initial noise scale, begin index, UNet input scaling and forward
//! diffusion. Each schedule family (sigma space, alphas_cumprod space) implements
//! [`Bookkeeping`] once; [`impl_scheduler!`] wires one into a scheduler next to its own
//! `update`. Never holds model state and never computes an update step.

use candle_core::{Result, Tensor};

/// What a schedule answers for the scheduler that owns it.
pub(crate) trait Bookkeeping {
    fn timesteps(&self) -> &[f64];
    fn init_noise_sigma(&self) -> f64;
    fn set_begin_index(&mut self, index: usize);
    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor>;
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor>;
}

/// `impl Scheduler for $ty`: bookkeeping delegated to the [`Bookkeeping`] field `$field`,
/// `step` to the type's inherent `update`. A `deterministic` scheduler's
/// `fn update(&mut self, model_output, timestep, sample)` cannot reach the noise source; a
/// `stochastic` one's `update` takes it as a fourth argument.
macro_rules! impl_scheduler {
    // `step`'s body; its parameter names are passed in so they resolve despite hygiene.
    (@update deterministic, $s:ident, $out:ident, $t:ident, $x:ident, $noise:ident) => {{
        let _ = $noise;
        $s.update($out, $t, $x)
    }};
    (@update stochastic, $s:ident, $out:ident, $t:ident, $x:ident, $noise:ident) => {
        $s.update($out, $t, $x, $noise)
    };
    ($ty:ty, $field:ident, order = $order:expr, $kind:ident) => {
        impl $crate::pipeline::schedulers::Scheduler for $ty {
            fn timesteps(&self) -> &[f64] {
                $crate::pipeline::schedulers::bookkeeping::Bookkeeping::timesteps(&self.$field)
            }

            fn init_noise_sigma(&self) -> f64 {
                $crate::pipeline::schedulers::bookkeeping::Bookkeeping::init_noise_sigma(
                    &self.$field,
                )
            }

            fn order(&self) -> usize {
                $order
            }

            fn set_begin_index(&mut self, index: usize) {
                $crate::pipeline::schedulers::bookkeeping::Bookkeeping::set_begin_index(
                    &mut self.$field,
                    index,
                )
            }

            fn scale_model_input(
                &self,
                sample: &candle_core::Tensor,
                timestep: f64,
            ) -> candle_core::Result<candle_core::Tensor> {
                $crate::pipeline::schedulers::bookkeeping::Bookkeeping::scale_model_input(
                    &self.$field,
                    sample,
                    timestep,
                )
            }

            fn step(
                &mut self,
                model_output: &candle_core::Tensor,
                timestep: f64,
                sample: &candle_core::Tensor,
                noise: &mut dyn $crate::pipeline::noise::NoiseSource,
            ) -> candle_core::Result<candle_core::Tensor> {
                impl_scheduler!(@update $kind, self, model_output, timestep, sample, noise)
            }

            fn add_noise(
                &self,
                original: &candle_core::Tensor,
                noise: &candle_core::Tensor,
                timestep: f64,
            ) -> candle_core::Result<candle_core::Tensor> {
                $crate::pipeline::schedulers::bookkeeping::Bookkeeping::add_noise(
                    &self.$field,
                    original,
                    noise,
                    timestep,
                )
            }
        }
    };
}

pub(crate) use impl_scheduler;
