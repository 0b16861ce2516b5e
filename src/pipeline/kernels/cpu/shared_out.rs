//! One output buffer written by several parallel tasks, each to its own region: the raw-output
//! helper every kernel shares. It keeps the buffer's pointer and length, bounds-checks every
//! region a task asks for (a row slice, or the m x n block a gemm writes), and is the only place
//! that hands a destination to the `gemm` crate (through `gemm_dispatch`, which picks the
//! microkernels by CPU). What it cannot check, that no two tasks write
//! the same element at once, is each caller's SAFETY contract.

use std::marker::PhantomData;

use candle_core::bail;
use gemm::Parallelism;

use super::gemm::View;
use super::gemm_dispatch::gemm_f32;
use super::isa;

/// Depth of one gemm call. gemm blocks the shared dimension by an amount it derives from all
/// three sizes (`min(k, 512)` when m and n are small, a cache-based even split otherwise) and
/// rounds each block's partial sums into dst, so a row could round differently depending on
/// how many other rows share the call (other jobs' images folded into one call by continuous
/// batching). Calling gemm with at most this depth makes its blocking equal on every path.
const DEPTH: usize = 512;

/// An exclusively borrowed f32 buffer that parallel tasks write through, region by region.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _buf: PhantomData<&'a mut [f32]>,
}

// SAFETY: a SharedOut is made from a unique borrow (`new`), so while it exists nothing else
// reads or writes the buffer; every access goes through the `unsafe` methods below, whose
// callers guarantee that concurrently used regions are disjoint.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as for Send: shared references only reach the buffer through the unsafe methods.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(crate) fn new(buf: &'a mut [f32]) -> Self {
        SharedOut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `buf[offset..offset + len]`, checked against the buffer.
    ///
    /// # Safety
    /// While the returned slice lives, no other task touches any element of that range.
    // A `&mut` from `&self` is the point of this type: the caller's contract above is what
    // makes it unique.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(
        &self,
        offset: usize,
        len: usize,
    ) -> candle_core::Result<&mut [f32]> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => bail!(
                "kernel output: {offset}+{len} outside a buffer of {}",
                self.len
            ),
        }
        // SAFETY: the range lies inside the buffer (checked above), which is borrowed for 'a;
        // the caller guarantees no other live access to it.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) })
    }

    /// `dst = (dst if accumulate) + scale * lhs[m, k] * rhs[k, n]` where dst is the m x n block
    /// at `offset` with rows `dst_rs` apart. Every operand is bounds-checked first. A row's
    /// result depends only on its own inputs, never on `m` or `n` (see [`DEPTH`]).
    ///
    /// # Safety
    /// While it runs, no other task touches any element of that dst block.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn matmul(
        &self,
        (m, n, k): (usize, usize, usize),
        offset: usize,
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
                .and_then(|e| e.checked_add(offset))
                .is_some_and(|end| end <= self.len);
        if !dst_ok || !lhs.covers(m, k) || !rhs.covers(k, n) {
            bail!("gemm: operands smaller than their shapes");
        }
        if k == 0 {
            if !accumulate {
                for r in 0..m {
                    // SAFETY: row r of the block lies inside the buffer (dst_ok) and belongs
                    // to this call's block, which the caller guarantees nobody else touches.
                    unsafe { self.slice_mut(offset + r * dst_rs, n)? }.fill(0.0);
                }
            }
            return Ok(());
        }
        let isa = isa::active();
        let mut k0 = 0;
        while k0 < k {
            let depth = DEPTH.min(k - k0);
            // SAFETY: every element gemm touches was bounds-checked above: dst rows 0..m at
            // stride dst_rs >= n from `offset` (no two elements overlap), lhs/rhs through
            // `covers` for the whole depth, so for this slice of it too. The dst block is this
            // caller's alone (the contract above) and the buffer is a unique borrow, so the
            // written memory aliases neither input.
            unsafe {
                gemm_f32(
                    isa,
                    (m, n, depth),
                    self.ptr.add(offset),
                    1,
                    dst_rs,
                    accumulate || k0 > 0,
                    (
                        lhs.data.as_ptr().add(lhs.offset + k0 * lhs.cs),
                        lhs.cs,
                        lhs.rs,
                    ),
                    (
                        rhs.data.as_ptr().add(rhs.offset + k0 * rhs.rs),
                        rhs.cs,
                        rhs.rs,
                    ),
                    scale,
                    par,
                );
            }
            k0 += depth;
        }
        Ok(())
    }
}
