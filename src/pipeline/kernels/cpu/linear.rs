//! The fully connected layer over tokens on the host: `xs [.., k]` times the transposed weight
//! `[n, k]`, plus the bias, in one gemm whose starting value is the bias (no separate add pass),
//! on the microkernels `isa` chose. Rows are independent: a token's result never depends on how
//! many other rows share the call (gemm's depth is capped, see `shared_out`).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

use super::gemm::{all_threads, contiguous_f32, matmul, View};

/// Rows per bias-filling task.
const FILL_ROWS: usize = 64;

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
        let w = contiguous_f32(w_s, w_l, "linear: weight")?;
        let &[n, k] = w_l.dims() else {
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
        // The weight is [n, k] row-major: its transpose, element (c, o), is at o * k + c.
        let w_t = View {
            data: w,
            offset: 0,
            rs: 1,
            cs: k,
        };
        let accumulate = self.bias.is_some();
        matmul(
            rows,
            n,
            k,
            &mut out,
            n,
            accumulate,
            View::rows(xs, k),
            w_t,
            1.0,
            all_threads(),
        )?;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}
