//! Our f32 CPU kernels: gemm over checked views, direct and Winograd convolution, fused
//! attention, the text encoder's fused layers, and vectorised math picked at run time by CPU.

pub mod attention;
pub(crate) mod clip;
pub(crate) mod conv;
pub mod fast_math;
pub(crate) mod gemm;
pub(crate) mod winograd;
