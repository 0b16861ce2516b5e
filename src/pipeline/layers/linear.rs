//! Fully connected layer of the UNet and VAE: candle_nn's parameter names and constructors,
//! but with host f32 weights the product runs through our gemm (`kernels::cpu::linear`: the
//! microkernels chosen by CPU, the bias as the gemm's starting value). Other devices and
//! dtypes use candle's `Linear`; the text encoders have their own (`models::clip`).

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::pipeline::kernels::cpu::linear::LinearOp;
use crate::pipeline::kernels::cpu::takes_host_f32;

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    inner: candle_nn::Linear,
    /// Host copy of the bias for the CPU kernel (a few KiB); None off the host path.
    host_bias: Option<Arc<[f32]>>,
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let host_bias = match &bias {
            Some(b) if takes_host_f32(&weight) => Some(b.to_vec1::<f32>()?.into()),
            _ => None,
        };
        Ok(Linear {
            inner: candle_nn::Linear::new(weight, bias),
            host_bias,
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.inner.weight();
        if takes_host_f32(xs) && takes_host_f32(w) {
            let op = LinearOp {
                bias: self.host_bias.clone(),
            };
            return xs.contiguous()?.apply_op2_no_bwd(w, &op);
        }
        self.inner.forward(xs)
    }
}

/// `in_dim -> out_dim` with bias (`weight`, `bias` under `vb`).
pub(crate) fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let l = candle_nn::linear(in_dim, out_dim, vb)?;
    Linear::new(l.weight().clone(), l.bias().cloned())
}

/// `in_dim -> out_dim` without bias.
pub(crate) fn linear_no_bias(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    let l = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
    Linear::new(l.weight().clone(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_util::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn host_path_matches_candle_with_and_without_bias() {
        let dev = Device::Cpu;
        let (cin, cout) = (96, 130);
        let w = Tensor::randn(0f32, 0.1, (cout, cin), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, cout, &dev).unwrap();
        for xs_shape in [vec![2usize, 77, cin], vec![5, cin], vec![1, 1, cin]] {
            let xs = Tensor::randn(0f32, 1.0, xs_shape.as_slice(), &dev).unwrap();
            for bias in [Some(b.clone()), None] {
                let ours = Linear::new(w.clone(), bias.clone()).unwrap();
                assert_eq!(ours.host_bias.is_some(), bias.is_some());
                let want = candle_nn::Linear::new(w.clone(), bias)
                    .forward(&xs)
                    .unwrap();
                let got = ours.forward(&xs).unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = max_abs_diff(&want, &got);
                assert!(diff < 1e-5, "{xs_shape:?}: {diff}");
            }
        }
    }

    #[test]
    fn a_zero_width_layer_gives_an_empty_result() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((0, 3), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(0, candle_core::DType::F32, &dev).unwrap();
        let l = Linear::new(w, Some(b)).unwrap();
        let xs = Tensor::ones((2, 3), candle_core::DType::F32, &dev).unwrap();
        assert_eq!(l.forward(&xs).unwrap().dims(), &[2, 0]);
    }

    #[test]
    fn a_mismatched_input_is_an_error() {
        let dev = Device::Cpu;
        let l = Linear::new(
            Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap(),
            None,
        )
        .unwrap();
        let xs = Tensor::zeros((2, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(l.forward(&xs).is_err());
    }
}
