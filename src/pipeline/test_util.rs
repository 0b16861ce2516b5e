//! Helpers shared by the pipeline's unit tests. Compiled for tests only.

use candle_core::Tensor;

/// Largest absolute element-wise difference of two tensors of the same shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of the same shape and dtype")
}
