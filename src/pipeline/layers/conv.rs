//! 2-D convolution layer for the UNet and VAE. On the CPU with f32 data it lowers the
//! convolution itself (see `conv_cpu`): the weight is used in place as the `[c_out, c_in*k*k]`
//! matrix it already is, where candle 0.11.1 re-lays the whole kernel and the input on every
//! call, single-threaded, and then runs many small gemms. 3x3 / stride 1 / padding 1 layers go
//! through Winograd F(4x4, 3x3) where `winograd::applies` to the call's image size (chosen per
//! image, never per batch). Other devices, dtypes and shapes keep candle's `Conv2d`. Never
//! changes parameter names or what is computed beyond rounding.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::pipeline::error::Result;
use crate::pipeline::kernels::cpu::conv::{ConvGeometry, ConvOp};
use crate::pipeline::kernels::cpu::takes_host_f32;
use crate::pipeline::kernels::cpu::winograd::{self, WinogradOp};

/// A convolution with candle's weight layout (c_out, c_in, k, k) and optional bias (c_out,).
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    kernel: Kernel,
    cfg: Conv2dConfig,
    /// Host copy of the bias for the CPU kernels (a few KiB).
    host_bias: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
enum Kernel {
    /// candle's layer: other devices and dtypes.
    Candle(candle_nn::Conv2d),
    /// Our kernels over the weight as stored: Winograd where `winograd` is set (a 3x3 /
    /// stride 1 / padding 1 layer) and [`winograd::applies`] to the call's image size, else
    /// the im2col lowering.
    Host { weight: Tensor, winograd: bool },
}

/// Loads `weight` and `bias` like `candle_nn::conv2d`.
pub(crate) fn conv2d(
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
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Result<Self> {
        Self::build(weight, bias, cfg, true)
    }

    /// `winograd: false` keeps the direct lowering for every shape (tests compare the two).
    fn build(
        weight: Tensor,
        bias: Option<Tensor>,
        cfg: Conv2dConfig,
        winograd: bool,
    ) -> Result<Self> {
        if !uses_cpu_kernel(&weight, &cfg) {
            return Ok(Conv2d {
                kernel: Kernel::Candle(candle_nn::Conv2d::new(weight, bias, cfg)),
                cfg,
                host_bias: None,
            });
        }
        let host_bias = match &bias {
            Some(b) => Some(b.to_vec1::<f32>()?),
            None => None,
        };
        let (_, _, k, k2) = weight.dims4()?;
        let wino_shape = k == 3 && k2 == 3 && cfg.stride == 1 && cfg.padding == 1;
        Ok(Conv2d {
            kernel: Kernel::Host {
                weight,
                winograd: winograd && wino_shape,
            },
            cfg,
            host_bias,
        })
    }
}

/// The CPU kernels handle plain convolutions (no groups, no dilation, square kernel, padding
/// and stride, as every SD conv is) on contiguous f32 weights.
fn uses_cpu_kernel(weight: &Tensor, cfg: &Conv2dConfig) -> bool {
    takes_host_f32(weight)
        && weight.rank() == 4
        && weight.is_contiguous()
        && weight.dim(2).ok() == weight.dim(3).ok()
        && cfg.groups == 1
        && cfg.dilation == 1
        && cfg.stride >= 1
}

impl Conv2d {
    /// `forward(upsample_nearest2d(xs, 2h, 2w))`; the Winograd kernel reads the half-size
    /// input directly instead of materialising the upsampled tensor.
    pub(crate) fn forward_upsampled_2x(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        match &self.kernel {
            Kernel::Host { weight, .. } if self.takes_winograd(2 * h, 2 * w)? => {
                self.winograd(weight, xs, true)
            }
            _ => self.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?),
        }
    }

    /// Whether this layer runs Winograd on images of this (output) size.
    fn takes_winograd(&self, h: usize, w: usize) -> candle_core::Result<bool> {
        match &self.kernel {
            Kernel::Host {
                weight,
                winograd: true,
            } => {
                let (c_out, c_in, _, _) = weight.dims4()?;
                Ok(winograd::applies(c_in, c_out, h, w))
            }
            _ => Ok(false),
        }
    }

    fn winograd(
        &self,
        weight: &Tensor,
        xs: &Tensor,
        upsample2x: bool,
    ) -> candle_core::Result<Tensor> {
        cpu_input(xs)?.apply_op2_no_bwd(
            weight,
            &WinogradOp {
                bias: self.host_bias.as_deref(),
                upsample2x,
            },
        )
    }
}

/// The contiguous 4-d f32 CPU input our kernels need (their weights were prepared for it).
fn cpu_input(xs: &Tensor) -> candle_core::Result<Tensor> {
    if !takes_host_f32(xs) || xs.rank() != 4 {
        candle_core::bail!(
            "conv: weights are prepared for 4-d f32 CPU inputs, got {:?} {:?} on {:?}",
            xs.dims(),
            xs.dtype(),
            xs.device().location()
        );
    }
    xs.contiguous()
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kernel {
            Kernel::Candle(conv) => conv.forward(xs),
            Kernel::Host { weight, .. } => {
                let (_, _, h, w) = xs.dims4()?;
                if self.takes_winograd(h, w)? {
                    return self.winograd(weight, xs, false);
                }
                let op = ConvOp {
                    geometry: ConvGeometry {
                        kernel: weight.dim(2)?,
                        stride: self.cfg.stride,
                        padding: self.cfg.padding,
                    },
                    bias: self.host_bias.as_deref(),
                };
                cpu_input(xs)?.apply_op2_no_bwd(weight, &op)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_util::max_abs_diff;
    use candle_core::Device;
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
        let theirs = candle_nn::Conv2d::new(w.clone(), Some(bias.clone()), cfg);
        let e = theirs.forward(&xs).unwrap();
        for winograd in [false, true] {
            let ours = Conv2d::build(w.clone(), Some(bias.clone()), cfg, winograd).unwrap();
            let a = ours.forward(&xs).unwrap();
            compare(
                &a,
                &e,
                &format!("b{b} c{cin}->{cout} {hw:?} k{k} s{s} p{p} wino {winograd}"),
                ours.takes_winograd(hw.0, hw.1).unwrap(),
            );
        }
    }

    /// `via_winograd`: the layer took the Winograd path, whose F(4x4, 3x3) rounding is about
    /// 1e-5 of the output's scale, so its bound is relative to that scale; the direct path
    /// keeps the absolute bound.
    fn compare(a: &Tensor, e: &Tensor, what: &str, via_winograd: bool) {
        assert_eq!(a.dims(), e.dims(), "shape {what}");
        let diff = max_abs_diff(a, e);
        let scale = e
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let bound = if via_winograd {
            5e-5 * scale.max(1.0)
        } else {
            1e-4
        };
        assert!(
            diff < bound,
            "{what}: max diff {diff} at scale {scale} (winograd {via_winograd})"
        );
        // The reference is never all zeros, so a kernel that wrote nothing cannot pass.
        let e0: f32 = e
            .i(0)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(e0 > 0.0, "{what}: degenerate reference");
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
        // Winograd (sides of at least winograd::MIN_SIDE) with chunks of tiles that split one
        // image and straddle two.
        check(3, 128, 8, (50, 50), 3, 1, 1);
        check(1, 8, 8, (32, 35), 3, 1, 1);
    }

    #[test]
    fn fused_upsample_matches_upsample_then_conv() {
        let dev = Device::Cpu;
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        // The last shape upsamples to 32x34, where the Winograd path applies (asserted below).
        for (cin, cout, h, w) in [(8, 6, 5, 7), (16, 16, 4, 4), (4, 8, 1, 3), (4, 8, 16, 17)] {
            let xs = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.2, (cout, cin, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let up = xs.upsample_nearest2d(2 * h, 2 * w).unwrap();
            let e = candle_nn::Conv2d::new(wt.clone(), Some(bias.clone()), cfg)
                .forward(&up)
                .unwrap();
            for winograd in [false, true] {
                let ours = Conv2d::build(wt.clone(), Some(bias.clone()), cfg, winograd).unwrap();
                let a = ours.forward_upsampled_2x(&xs).unwrap();
                let via = ours.takes_winograd(2 * h, 2 * w).unwrap();
                assert_eq!(via, winograd && 2 * h.min(w) >= winograd::MIN_SIDE);
                compare(
                    &a,
                    &e,
                    &format!("upsampled {cin}->{cout} {h}x{w} wino {winograd}"),
                    via,
                );
            }
        }
    }

    #[test]
    fn no_bias_and_non_contiguous_input() {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (1, 6, 36, 40), &dev)
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let w = Tensor::randn(0f32, 0.2, (3, 6, 3, 3), &dev).unwrap();
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let e = candle_nn::Conv2d::new(w.clone(), None, cfg)
            .forward(&xs)
            .unwrap();
        for winograd in [false, true] {
            let ours = Conv2d::build(w.clone(), None, cfg, winograd).unwrap();
            let a = ours.forward(&xs).unwrap();
            compare(
                &a,
                &e,
                &format!("no bias, transposed input, wino {winograd}"),
                ours.takes_winograd(40, 36).unwrap(),
            );
        }
    }
}
