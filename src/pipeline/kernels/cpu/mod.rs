//! Our f32 CPU kernels: gemm over checked views, direct and Winograd convolution, fused
//! attention, the text encoder's fused layers, and vectorised math picked at run time by CPU.
//!
//! [`takes_host_f32`] is the one place that decides whether a tensor goes through these
//! kernels or through candle's own ops: every layer asks it (for its weights when it is built,
//! for its input when it runs), so a new device or dtype path changes here only.

use candle_core::{DType, Device, Tensor};

pub mod attention;
pub(crate) mod clip;
pub(crate) mod conv;
pub(crate) mod fast_math;
pub(crate) mod gemm;
mod gemm_dispatch;
pub(crate) mod isa;
pub(crate) mod linear;
pub(crate) mod scratch;
pub(crate) mod shared_out;
pub(crate) mod winograd;

/// Whether our host kernels take this tensor: f32 values in host memory. Everything else
/// (CUDA, f16, bf16) runs on candle's ops.
pub(crate) fn takes_host_f32(t: &Tensor) -> bool {
    on_host_f32(t.device(), t.dtype())
}

/// [`takes_host_f32`] for every tensor of a fused op.
pub(crate) fn all_take_host_f32(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| takes_host_f32(t))
}

/// [`takes_host_f32`] for weights not loaded yet: where and in what dtype they will live.
pub(crate) fn on_host_f32(device: &Device, dtype: DType) -> bool {
    matches!(device, Device::Cpu) && dtype == DType::F32
}
