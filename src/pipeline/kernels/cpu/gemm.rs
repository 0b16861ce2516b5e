//! What the CPU f32 kernels (convolution, Winograd, attention, text encoder) share: a gemm over
//! bounds-checked slice views, and read access to a contiguous f32 storage. The gemm call itself
//! lives in `shared_out`, which checks every operand against its slice first.

use candle_core::{bail, CpuStorage, Layout};
use gemm::Parallelism;

use super::shared_out::SharedOut;

/// A strided read-only matrix view: element (r, c) is `data[offset + r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix starting at `data[0]` with rows `rs` apart.
    pub(crate) fn rows(data: &'a [f32], rs: usize) -> Self {
        View {
            data,
            offset: 0,
            rs,
            cs: 1,
        }
    }

    /// Whether every element of a `rows` x `cols` matrix lies inside `data`.
    pub(crate) fn covers(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        (rows - 1)
            .checked_mul(self.rs)
            .and_then(|r| {
                (cols - 1)
                    .checked_mul(self.cs)
                    .and_then(|c| r.checked_add(c))
            })
            .and_then(|last| last.checked_add(self.offset))
            .is_some_and(|last| last < self.data.len())
    }
}

/// Every thread of the rayon pool, or none when there is only one.
pub(crate) fn all_threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst[m, n] (row-major, row stride dst_rs) = (dst if accumulate) + scale * lhs[m, k] * rhs[k, n]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    scale: f32,
    par: Parallelism,
) -> candle_core::Result<()> {
    let out = SharedOut::new(dst);
    // SAFETY: `dst` is exclusively borrowed for this call and this is its only user.
    unsafe { out.matmul((m, n, k), 0, dst_rs, accumulate, lhs, rhs, scale, par) }
}

/// The values of a contiguous f32 CPU storage, without copying; `what` names it in errors.
pub(crate) fn contiguous_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{what} must be f32");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{what} must be contiguous");
    };
    match data.get(start..end) {
        Some(v) => Ok(v),
        None => bail!("{what}: layout outside its storage"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_the_naive_product_and_refuses_short_operands() {
        // lhs 2x3, rhs 3x2 taken as a strided view (every other column of a 3x4 buffer).
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs = [1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0, 5.0, 0.0, 6.0, 0.0];
        let rhs_view = View {
            data: &rhs,
            offset: 0,
            rs: 4,
            cs: 2,
        };
        let mut dst = [10.0f32; 4];
        matmul(
            2,
            2,
            3,
            &mut dst,
            2,
            true,
            View::rows(&lhs, 3),
            rhs_view,
            2.0,
            Parallelism::None,
        )
        .unwrap();
        // lhs * [[1,2],[3,4],[5,6]] = [[22,28],[49,64]]; dst = 10 + 2 * that.
        assert_eq!(dst, [54.0, 66.0, 108.0, 138.0]);
        let err = matmul(
            2,
            2,
            4,
            &mut dst,
            2,
            false,
            View::rows(&lhs, 3),
            rhs_view,
            1.0,
            Parallelism::None,
        );
        assert!(err.is_err(), "a 2x4 lhs does not fit in 6 values");
    }
}
