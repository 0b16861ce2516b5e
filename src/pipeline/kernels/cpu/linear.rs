//! The fully connected layer over tokens on the host: `xs [.., k]` times the weight, stored
//! transposed as `[k, n]`, plus the bias, in one gemm whose starting value is the bias (no
//! separate add pass), on the microkernels `isa` chose. Rows are independent: a token's result
//! never depends on how many other rows share the call (gemm's depth is capped, see
//! `shared_out`).
//!
//! Why `[k, n]`: gemm runs the product as `out^T = W xs^T`, vectorized along the output
//! features. With the weight as stored in checkpoints (`[n, k]`, features `k` apart) it first
//! copies every weight panel into a packed buffer, on every call; with `[k, n]` the features
//! are adjacent and gemm reads the weight in place whenever few tokens share the call (the
//! 8x8 and 4x4 levels of a UNet step): 5-8% of a 256x256 step on a Zen 4 (BENCHMARKS.md).
//! Whether a call packs depends on its token count, so on the batch: the batch-invariance
//! tests (`layers::batch_invariance`) check that a row's bits do not.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::gemm::{all_threads, contiguous_f32, matmul, View};

/// Rows per bias-filling task.
const FILL_ROWS: usize = 64;

/// Columns and rows of one block of [`transposed`]: 32 x 32 f32 is 4 KiB read and 4 KiB
/// written, both in L1.
const BLOCK: usize = 32;

/// A checkpoint's `[n, k]` weight as the `[k, n]` tensor [`LinearOp`] takes, transposed once
/// at load in cache-sized blocks, output rows in parallel (candle's strided copy took about a
/// second for a UNet's linear layers).
pub(crate) fn transposed(weight: &Tensor) -> candle_core::Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let (storage, layout) = weight.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("linear: the weight is not in host memory");
    };
    let w = contiguous_f32(cpu, layout, "linear: weight")?;
    let mut out = vec![0f32; n * k];
    if n > 0 && k > 0 {
        out.par_chunks_mut(BLOCK * n)
            .enumerate()
            .for_each(|(block, rows)| {
                // Each block: 32 contiguous runs read from the weight's rows into a tile, the
                // tile written transposed as 32 contiguous runs of the output's rows.
                let c0 = block * BLOCK;
                let height = rows.len() / n;
                let mut tile = [[0f32; BLOCK]; BLOCK];
                for o0 in (0..n).step_by(BLOCK) {
                    let width = BLOCK.min(n - o0);
                    for (j, t) in tile[..width].iter_mut().enumerate() {
                        let start = (o0 + j) * k + c0;
                        t[..height].copy_from_slice(&w[start..start + height]);
                    }
                    for (c, row) in rows.chunks_exact_mut(n).enumerate() {
                        for (j, v) in row[o0..o0 + width].iter_mut().enumerate() {
                            *v = tile[j][c];
                        }
                    }
                }
            });
    }
    drop(storage);
    Tensor::from_vec(out, (k, n), weight.device())
}

/// `xs [.., k]` x `w_t [k, n]` (+ bias): the op's second operand is the transposed weight.
pub(crate) struct LinearOp {
    /// `[n]`, or None for a layer without bias.
    pub(crate) bias: Option<Arc<[f32]>>,
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "runai-linear"
    }

    fn cpu_fwd(
        &self,
        xs_s: &CpuStorage,
        xs_l: &Layout,
        w_s: &CpuStorage,
        w_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(xs_s, xs_l, "linear: input")?;
        let w_t = contiguous_f32(w_s, w_l, "linear: weight")?;
        let &[k, n] = w_l.dims() else {
            candle_core::bail!("linear: weight must be 2-d, got {:?}", w_l.dims());
        };
        let mut dims = xs_l.dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == k => *last = n,
            _ => candle_core::bail!("linear: input {:?} does not end in {k}", xs_l.dims()),
        }
        if self.bias.as_ref().is_some_and(|b| b.len() != n) {
            candle_core::bail!("linear: bias does not have {n} values");
        }
        let rows = xs.len().checked_div(k).unwrap_or(0);
        let mut out = vec![0f32; rows * n];
        // n == 0 (a zero-width layer) leaves nothing to fill.
        if let Some(bias) = self.bias.as_ref().filter(|_| n > 0) {
            out.par_chunks_mut(FILL_ROWS * n).for_each(|chunk| {
                for row in chunk.chunks_exact_mut(n) {
                    row.copy_from_slice(bias);
                }
            });
        }
        let accumulate = self.bias.is_some();
        matmul(
            rows,
            n,
            k,
            &mut out,
            n,
            accumulate,
            View::rows(xs, k),
            View::rows(w_t, n),
            1.0,
            all_threads(),
        )?;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Equal to candle's transpose for shapes that are and are not multiples of the block,
    /// and for empty ones.
    #[test]
    fn transposed_equals_candles_transpose() {
        for (n, k) in [
            (1usize, 1usize),
            (32, 32),
            (70, 33),
            (5, 100),
            (0, 4),
            (4, 0),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let ours = transposed(&w).unwrap();
            assert_eq!(ours.dims(), &[k, n]);
            let want = w.t().unwrap().contiguous().unwrap();
            let (a, b): (Vec<f32>, Vec<f32>) = (
                ours.flatten_all().unwrap().to_vec1().unwrap(),
                want.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(a, b, "{n}x{k}");
        }
    }
}
