//! 2-D convolution layer for the UNet and VAE. On the CPU with f32 data it lowers the
//! convolution itself (see `conv_cpu`): the weight is used in place as the `[c_out, c_in*k*k]`
//! matrix it already is, where candle 0.11.1 re-lays the whole kernel and the input on every
//! call, single-threaded, and then runs many small gemms. Other devices, dtypes and shapes keep
//! candle's `Conv2d`. Never changes parameter names or what is computed beyond summation order.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::pipeline::error::Result;
use crate::pipeline::kernels::cpu::conv::{ConvGeometry, ConvOp};
use crate::pipeline::kernels::cpu::takes_host_f32;
use crate::pipeline::kernels::cpu::winograd::{WinogradOp, WinogradWeights};

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
    /// candle's layer: other devices and dtypes (the weight is also what `Direct` reads).
    Candle(candle_nn::Conv2d),
    /// Our im2col lowering over the weight as stored.
    Direct(Tensor),
    /// 3x3 / stride 1 / padding 1 with pre-transformed weights; the original weight is dropped.
    Winograd(WinogradWeights),
}

/// Output channels up to which a 3x3 stride-1 layer uses Winograd. Those layers run at the
/// highest resolutions (UNet levels 0-1, every VAE layer), where the tile count keeps the 16
/// gemms well shaped; the 1280-channel layers run on 4x4 to 16x16 latents and are bound by
/// streaming their weights, which Winograd would make 16/9 larger.
const WINOGRAD_MAX_OUT: usize = 640;

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
        let (c_out, _, k, k2) = weight.dims4()?;
        let wino_shape = k == 3 && k2 == 3 && cfg.stride == 1 && cfg.padding == 1;
        let kernel = if winograd && wino_shape && c_out <= WINOGRAD_MAX_OUT {
            Kernel::Winograd(WinogradWeights::new(&weight)?)
        } else {
            Kernel::Direct(weight)
        };
        Ok(Conv2d {
            kernel,
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
        match &self.kernel {
            Kernel::Winograd(weights) => self.winograd(weights, xs, true),
            _ => {
                let (_, _, h, w) = xs.dims4()?;
                self.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?)
            }
        }
    }

    fn winograd(
        &self,
        weights: &WinogradWeights,
        xs: &Tensor,
        upsample2x: bool,
    ) -> candle_core::Result<Tensor> {
        cpu_input(xs)?.apply_op1_no_bwd(&WinogradOp {
            weights,
            bias: self.host_bias.as_deref(),
            upsample2x,
        })
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
            Kernel::Winograd(weights) => self.winograd(weights, xs, false),
            Kernel::Direct(weight) => {
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
            );
        }
    }

    fn compare(a: &Tensor, e: &Tensor, what: &str) {
        assert_eq!(a.dims(), e.dims(), "shape {what}");
        let diff = max_abs_diff(a, e);
        assert!(diff < 1e-4, "{what}: max diff {diff}");
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
        // Winograd chunks of tiles that split one image and straddle two.
        check(3, 128, 8, (50, 50), 3, 1, 1);
    }

    #[test]
    fn fused_upsample_matches_upsample_then_conv() {
        let dev = Device::Cpu;
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        for (cin, cout, h, w) in [(8, 6, 5, 7), (16, 16, 4, 4), (4, 8, 1, 3)] {
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
                compare(
                    &a,
                    &e,
                    &format!("upsampled {cin}->{cout} {h}x{w} wino {winograd}"),
                );
            }
        }
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
            );
        }
    }
}
