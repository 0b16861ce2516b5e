//! `runai bench --phase conv3x3`: every distinct 3x3 / stride 1 convolution shape of the SD1.5
//! UNet at 256x256 and 512x512 (batch 2, as under CFG), through the direct lowering (im2col +
//! gemm) and through Winograd F(4x4, 3x3), alternated shape by shape on random data. One
//! `RESULT` line per shape; `applies` is what `winograd::applies` chooses there. This is the
//! measurement behind that rule's thresholds. Needs no model.

use anyhow::bail;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::bench::{median, randn, round_to, time_runs};
use crate::pipeline::kernels::cpu::conv::{ConvGeometry, ConvOp};
use crate::pipeline::kernels::cpu::isa::{self, cpu_model};
use crate::pipeline::kernels::cpu::winograd::{self, WinogradOp};

/// (c_in, c_out, side) of the UNet's 3x3 stride-1 layers; 512x512 images give latents of 64,
/// 256x256 ones 32, and each level halves the side.
const SHAPES: [(usize, usize, usize); 16] = [
    (320, 320, 64),
    (960, 320, 64),
    (640, 640, 64),
    (320, 320, 32),
    (640, 640, 32),
    (1920, 640, 32),
    (1280, 1280, 32),
    (640, 640, 16),
    (960, 640, 16),
    (1280, 640, 16),
    (1920, 640, 16),
    (1280, 1280, 16),
    (2560, 1280, 16),
    (1280, 1280, 8),
    (2560, 1280, 8),
    (320, 320, 16),
];

/// Times both paths on every shape and prints one `RESULT` line each.
pub(super) fn run(repeats: usize, dev: &Device) -> anyhow::Result<()> {
    if !dev.is_cpu() {
        bail!("conv3x3 times the CPU kernels; run it with --device cpu");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for (c_in, c_out, side) in SHAPES {
        let x = randn(&mut rng, &[2, c_in, side, side], dev)?;
        let w = (randn(&mut rng, &[c_out, c_in, 3, 3], dev)? * 0.02)?;
        let bias = vec![0.1f32; c_out];
        let direct = ConvOp {
            geometry: ConvGeometry {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            bias: Some(&bias),
        };
        let wino = WinogradOp {
            bias: Some(&bias),
            upsample2x: false,
        };
        let run = |op: &dyn Fn() -> candle_core::Result<Tensor>| {
            time_runs(repeats, dev, || {
                op()?;
                Ok(())
            })
        };
        let t_direct = run(&|| x.apply_op2_no_bwd(&w, &direct))?;
        let t_wino = run(&|| x.apply_op2_no_bwd(&w, &wino))?;
        let (md, mw) = (median(&t_direct), median(&t_wino));
        let gflop = 2.0 * 2.0 * (side * side * c_in * c_out * 9) as f64 / 1e9;
        let result = json!({
            "phase": "conv3x3",
            "impl": "runai",
            "shape": format!("2x{c_in}x{side}x{side} -> {c_out}"),
            "gflop_direct": round_to(gflop, 2),
            "direct_s": t_direct.iter().map(|t| round_to(*t, 4)).collect::<Vec<_>>(),
            "winograd_s": t_wino.iter().map(|t| round_to(*t, 4)).collect::<Vec<_>>(),
            "direct_median_s": round_to(md, 4),
            "winograd_median_s": round_to(mw, 4),
            "winograd_over_direct": round_to(mw / md, 3),
            "applies": winograd::applies(c_in, c_out, side, side),
            "threads": candle_core::utils::get_num_threads(),
            "cpu": cpu_model().describe(),
            "cpu_kernels": isa::active_name(),
        });
        println!("RESULT {result}");
    }
    Ok(())
}
