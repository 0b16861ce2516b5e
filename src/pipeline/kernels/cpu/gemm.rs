//! What the CPU f32 kernels (convolution, Winograd, attention, text encoder) share: a gemm over
//! bounds-checked slice views, and read access to a contiguous f32 storage. Never lets the
//! unsafe gemm call touch an element outside the slices it was given.

use candle_core::{bail, CpuStorage, Layout};
use gemm::{gemm, Parallelism};

/// A strided read-only matrix view: element (r, c) is `data[offset + r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix starting at `data[0]` with rows `rs` apart.
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        View {
            data,
            offset: 0,
            rs,
            cs: 1,
        }
    }

    /// Whether every element of a `rows` x `cols` matrix lies inside `data`.
    pub fn covers(&self, rows: usize, cols: usize) -> bool {
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
pub fn all_threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Depth of one gemm call. gemm blocks the shared dimension by an amount it derives from
/// all three sizes (`min(k, 512)` for small m and n, a cache-based split otherwise), and each
/// block's partial sums are rounded into `dst`; so the same row could round differently
/// depending on how many other rows (images of other jobs, folded into one call) share the
/// call. Feeding gemm at most this depth per call makes its blocking the same on every path.
const DEPTH: usize = 512;

/// `dst[m, n] (row-major, row stride dst_rs) = (dst if accumulate) + scale * lhs[m, k] * rhs[k, n]`.
/// A row's result depends only on its own inputs, never on `m` or `n` (see [`DEPTH`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
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
    if k <= DEPTH {
        return matmul_block(m, n, k, dst, dst_rs, accumulate, lhs, rhs, scale, par);
    }
    let mut k0 = 0;
    while k0 < k {
        let depth = DEPTH.min(k - k0);
        let l = View {
            offset: lhs.offset + k0 * lhs.cs,
            ..lhs
        };
        let r = View {
            offset: rhs.offset + k0 * rhs.rs,
            ..rhs
        };
        matmul_block(
            m,
            n,
            depth,
            dst,
            dst_rs,
            accumulate || k0 > 0,
            l,
            r,
            scale,
            par,
        )?;
        k0 += depth;
    }
    Ok(())
}

/// One gemm call of depth `k`, bounds-checked.
#[allow(clippy::too_many_arguments)]
fn matmul_block(
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
    if m == 0 || n == 0 {
        return Ok(());
    }
    let dst_ok = dst_rs >= n
        && (m - 1)
            .checked_mul(dst_rs)
            .and_then(|e| e.checked_add(n))
            .is_some_and(|end| end <= dst.len());
    if !dst_ok || !lhs.covers(m, k) || !rhs.covers(k, n) {
        bail!("gemm: operands smaller than their shapes");
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row.iter_mut().take(n).for_each(|v| *v = 0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: every element gemm touches was bounds-checked above: dst rows 0..m at stride
    // dst_rs >= n (so no two elements overlap), lhs/rhs through `covers`. dst is a unique
    // borrow and lhs/rhs shared ones, so the written memory aliases neither input.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// The values of a contiguous f32 CPU storage, without copying; `what` names it in errors.
pub fn contiguous_f32<'a>(
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
