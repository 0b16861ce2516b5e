//! 2-D convolution layer for the UNet and VAE. On the CPU with f32 data it lowers the
//! convolution itself (see `conv_cpu`): the weight is used in place as the `[c_out, c_in*k*k]`
//! matrix it already is, where candle 0.11.1 re-lays the whole kernel and the input on every
//! call, single-threaded, and then runs many small gemms. Other devices, dtypes and shapes keep
//! candle's `Conv2d`. Never changes parameter names or what is computed beyond summation order.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::conv_cpu::{ConvGeometry, ConvOp};
use super::error::Result;

/// A convolution with candle's weight layout (c_out, c_in, k, k) and optional bias (c_out,).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    cfg: Conv2dConfig,
    /// Host copy of the bias for the CPU kernel (a few KiB; the weight is never copied).
    host_bias: Option<Vec<f32>>,
    fallback: candle_nn::Conv2d,
}

/// Loads `weight` and `bias` like `candle_nn::conv2d`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get(
        (
            out_channels,
            in_channels / cfg.groups.max(1),
            kernel_size,
            kernel_size,
        ),
        "weight",
    )?;
    let bias = vb.get(out_channels, "bias")?;
    Conv2d::new(weight, Some(bias), cfg)
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Result<Self> {
        let host_bias = match &bias {
            Some(b) if uses_cpu_kernel(&weight, &cfg) => Some(b.to_vec1::<f32>()?),
            _ => None,
        };
        let fallback = candle_nn::Conv2d::new(weight.clone(), bias, cfg);
        Ok(Conv2d {
            weight,
            cfg,
            host_bias,
            fallback,
        })
    }
}

/// The CPU kernel handles plain convolutions (no groups, no dilation, square padding and
/// stride, as every SD conv is) on contiguous f32 weights.
fn uses_cpu_kernel(weight: &Tensor, cfg: &Conv2dConfig) -> bool {
    matches!(weight.device(), Device::Cpu)
        && weight.dtype() == DType::F32
        && weight.rank() == 4
        && weight.is_contiguous()
        && cfg.groups == 1
        && cfg.dilation == 1
        && cfg.stride >= 1
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let cpu_ok = uses_cpu_kernel(&self.weight, &self.cfg)
            && matches!(xs.device(), Device::Cpu)
            && xs.dtype() == DType::F32
            && xs.rank() == 4;
        if !cpu_ok {
            return self.fallback.forward(xs);
        }
        let (_, _, k, k2) = self.weight.dims4()?;
        if k != k2 {
            return self.fallback.forward(xs);
        }
        let xs = xs.contiguous()?;
        let op = ConvOp {
            geometry: ConvGeometry {
                kernel: k,
                stride: self.cfg.stride,
                padding: self.cfg.padding,
            },
            bias: self.host_bias.as_deref(),
        };
        xs.apply_op2_no_bwd(&self.weight, &op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    fn check(b: usize, cin: usize, cout: usize, hw: (usize, usize), k: usize, s: usize, p: usize) {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (b, cin, hw.0, hw.1), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.2, (cout, cin, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        let cfg = Conv2dConfig {
            padding: p,
            stride: s,
            ..Default::default()
        };
        let ours = Conv2d::new(w.clone(), Some(bias.clone()), cfg).unwrap();
        let theirs = candle_nn::Conv2d::new(w, Some(bias), cfg);
        let a = ours.forward(&xs).unwrap();
        let e = theirs.forward(&xs).unwrap();
        assert_eq!(
            a.dims(),
            e.dims(),
            "shape b{b} c{cin}->{cout} {hw:?} k{k} s{s} p{p}"
        );
        let diff = (a - &e)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff < 1e-4,
            "b{b} c{cin}->{cout} {hw:?} k{k} s{s} p{p}: max diff {diff}"
        );
        // The output must not be all zeros (a kernel that wrote nothing would still "match" a
        // zero reference only by accident; the reference here is never zero).
        let e0 = e.i(0).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(e0.to_scalar::<f32>().unwrap() > 0.0);
    }

    #[test]
    fn matches_candle_on_sd_shapes() {
        check(2, 4, 8, (8, 8), 3, 1, 1); // conv_in
        check(2, 8, 8, (8, 8), 3, 2, 1); // downsample
        check(1, 8, 6, (5, 7), 3, 2, 1); // downsample, odd sizes
        check(2, 8, 12, (6, 10), 1, 1, 0); // 1x1 shortcut / proj_in
        check(1, 3, 5, (9, 4), 3, 1, 1); // odd spatial
        check(2, 16, 16, (2, 2), 3, 1, 1); // lowest level: batch folded into columns
        check(1, 4, 4, (3, 3), 3, 1, 0); // no padding
    }

    #[test]
    fn large_images_are_tiled_like_small_ones() {
        // Enough columns that the im2col matrix is split into row tiles.
        check(1, 64, 8, (96, 96), 3, 1, 1);
        check(2, 32, 8, (72, 72), 3, 2, 1);
    }

    #[test]
    fn no_bias_and_non_contiguous_input() {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (1, 6, 5, 4), &dev)
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let w = Tensor::randn(0f32, 0.2, (3, 6, 3, 3), &dev).unwrap();
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let a = Conv2d::new(w.clone(), None, cfg)
            .unwrap()
            .forward(&xs)
            .unwrap();
        let e = candle_nn::Conv2d::new(w, None, cfg).forward(&xs).unwrap();
        let diff: f32 = (a - e)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-4, "max diff {diff}");
    }
}
