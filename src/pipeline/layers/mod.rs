//! Building blocks the models share: attention (self, cross, spatial transformer), 2-D
//! convolution, group/layer norms and the resnet block. Each picks the host f32 kernel or
//! candle's op through `kernels::cpu::takes_host_f32`.

pub mod attention;
pub mod conv;
pub mod norm;
pub mod resnet;
pub mod time_rows;
