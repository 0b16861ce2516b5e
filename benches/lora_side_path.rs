//! What a LoRA applied as a low-rank side path would add to every UNet step, against the
//! merge-into-a-copy that runai does (issue #14 asks to measure both). A side path leaves
//! the weights alone and adds `scale * (x D^T) U^T` to each patched linear's output at every
//! call; merging pays once per LoRA set (BENCHMARKS.md "LoRA switch") and then costs nothing
//! per step. This bench times, with candle's `Linear` (what the UNet's attention and
//! feed-forward projections run), one batch-2 UNet step's worth of the 160 transformer-block
//! projections of SD1.5 at a given image size, without and with a rank-`r` side path on
//! each. Random weights (only the time means anything), f32, CPU.
//! `cargo bench --bench lora_side_path [-- SIZE RANK]` (default 512 16); prints one RESULT.

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use serde_json::json;

/// One projection: input and output width, tokens per sample it sees at this size.
struct Proj {
    inp: usize,
    out: usize,
    tokens: usize,
}

/// The 160 projections of SD1.5's 16 transformer blocks (down 2+2+2, mid 1, up 3+3+3 at
/// widths 320/640/1280), each block: attn1 q/k/v/out, attn2 q/out on the image tokens, attn2
/// k/v on the 77 context tokens (768 wide), the GEGLU projection (C -> 8C) and ff out (4C -> C).
fn projections(size: usize) -> Vec<Proj> {
    let latent = size / 8;
    let mut all = Vec::new();
    let levels = [
        (320, 2 + 3, latent * latent),
        (640, 2 + 3, (latent / 2) * (latent / 2)),
        (1280, 2 + 3, (latent / 4) * (latent / 4)),
        (1280, 1, (latent / 8) * (latent / 8)),
    ];
    for (c, blocks, tokens) in levels {
        for _ in 0..blocks {
            for _ in 0..6 {
                all.push(Proj {
                    inp: c,
                    out: c,
                    tokens,
                });
            }
            for _ in 0..2 {
                all.push(Proj {
                    inp: 768,
                    out: c,
                    tokens: 77,
                });
            }
            all.push(Proj {
                inp: c,
                out: 8 * c,
                tokens,
            });
            all.push(Proj {
                inp: 4 * c,
                out: c,
                tokens,
            });
        }
    }
    all
}

struct Layer {
    x: Tensor,
    base: Linear,
    down: Tensor,
    up: Tensor,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let size: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(512);
    let rank: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let dev = Device::Cpu;
    let layers = projections(size)
        .into_iter()
        .map(|p| {
            let w = Tensor::randn(0f32, 0.02, (p.out, p.inp), &dev)?;
            let b = Tensor::zeros(p.out, DType::F32, &dev)?;
            Ok(Layer {
                x: Tensor::randn(0f32, 1.0, (2, p.tokens, p.inp), &dev)?,
                base: Linear::new(w, Some(b)),
                down: Tensor::randn(0f32, 0.02, (rank, p.inp), &dev)?.t()?,
                up: Tensor::randn(0f32, 0.02, (p.out, rank), &dev)?.t()?,
            })
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let plain = |l: &Layer| l.base.forward(&l.x);
    let side = |l: &Layer| -> candle_core::Result<Tensor> {
        let y = l.base.forward(&l.x)?;
        let low = l.x.broadcast_matmul(&l.down)?.broadcast_matmul(&l.up)?;
        y + (low * 0.5)?
    };
    let run = |with_side: bool| -> candle_core::Result<f64> {
        let t = Instant::now();
        for l in &layers {
            if with_side {
                side(l)?;
            } else {
                plain(l)?;
            }
        }
        Ok(t.elapsed().as_secs_f64())
    };
    // Warm-up, then alternate the two five times.
    run(false)?;
    run(true)?;
    let (mut base_s, mut side_s) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        base_s.push(run(false)?);
        side_s.push(run(true)?);
    }
    let (b, s) = (median(base_s), median(side_s));
    println!(
        "RESULT {}",
        json!({
            "bench": "lora_side_path",
            "size": size,
            "rank": rank,
            "projections": layers.len(),
            "step_projections_s": (b * 1000.0).round() / 1000.0,
            "with_side_path_s": (s * 1000.0).round() / 1000.0,
            "side_path_extra_s_per_step": ((s - b) * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}
