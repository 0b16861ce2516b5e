//! Building blocks the models share: attention (self, cross, spatial transformer), 2-D
//! convolution, the fully connected layer, group/layer norms and the resnet block. Each picks the host f32 kernel or
//! candle's op through `kernels::cpu::takes_host_f32`.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod resnet;
pub(crate) mod time_rows;

#[cfg(test)]
mod batch_invariance;
