//! Fully connected layer of the UNet and VAE: candle_nn's parameter names and constructors,
//! but with host f32 weights the product runs through our gemm (`kernels::cpu::linear`: the
//! microkernels chosen by CPU, the bias as the gemm's starting value). Other devices and
//! dtypes use candle's `Linear`; the text encoders have their own (`models::clip`).

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::pipeline::kernels::cpu::linear::{transposed, LinearOp};
use crate::pipeline::kernels::cpu::takes_host_f32;

#[derive(Debug, Clone)]
pub(crate) enum Linear {
    /// Host f32: the weight transposed once at load to `[in, out]` (the layout gemm reads
    /// without packing, see `kernels::cpu::linear`) and a host copy of the bias (a few KiB).
    /// The checkpoint's `[out, in]` copy is not kept.
    Host {
        weight_t: Tensor,
        bias: Option<Arc<[f32]>>,
    },
    /// Other devices and dtypes: candle's layer.
    Candle(candle_nn::Linear),
}

impl Linear {
    /// From a checkpoint's `[out, in]` weight and optional `[out]` bias.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        if !takes_host_f32(&weight) {
            return Ok(Linear::Candle(candle_nn::Linear::new(weight, bias)));
        }
        let bias = match bias {
            Some(b) => Some(b.to_vec1::<f32>()?.into()),
            None => None,
        };
        // A weight that is not one contiguous block (never the case for a loaded one) goes
        // through candle's strided copy.
        let weight_t = match weight.is_contiguous() {
            true => transposed(&weight)?,
            false => weight.t()?.contiguous()?,
        };
        Ok(Linear::Host { weight_t, bias })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Host { weight_t, bias } => {
                if !takes_host_f32(xs) {
                    candle_core::bail!(
                        "linear: host f32 weights, input {:?} on {:?}",
                        xs.dtype(),
                        xs.device()
                    );
                }
                let op = LinearOp { bias: bias.clone() };
                xs.contiguous()?.apply_op2_no_bwd(weight_t, &op)
            }
            Linear::Candle(inner) => inner.forward(xs),
        }
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
                match &ours {
                    Linear::Host { weight_t, bias: b } => {
                        assert_eq!(weight_t.dims(), &[cin, cout]);
                        assert_eq!(b.is_some(), bias.is_some());
                    }
                    Linear::Candle(_) => panic!("f32 on the CPU takes the host path"),
                }
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

    /// A weight handed over as a strided view (not one contiguous block) gives the same layer.
    #[test]
    fn a_strided_weight_gives_the_same_layer() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (24, 40), &dev).unwrap();
        let strided = w.t().unwrap().contiguous().unwrap().t().unwrap();
        assert!(!strided.is_contiguous());
        let xs = Tensor::randn(0f32, 1.0, (3, 40), &dev).unwrap();
        let a = Linear::new(w, None).unwrap().forward(&xs).unwrap();
        let b = Linear::new(strided, None).unwrap().forward(&xs).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
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
