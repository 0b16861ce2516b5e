//! CPU f32 kernels of the transformer blocks: fused multi-head attention and GEGLU.
//! Attention reads q, k, v straight from the projections' `[b, tokens, heads*d]` layout (head h
//! is columns h*d..(h+1)*d, addressed through gemm strides, no per-head copies) and writes the
//! output in that same layout, ready for `to_out`. Work is split into (batch, head, block of
//! query rows) tasks, each with its own rows x s score scratch: the full score tensor never
//! exists. Never reads or writes outside the checked buffers; other devices and dtypes must
//! use the candle path (`supports` says which).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::pipeline::kernels::cpu::fast_math;
use crate::pipeline::kernels::cpu::gemm::{contiguous_f32, matmul, View};
use crate::pipeline::kernels::cpu::shared_out::SharedOut;

/// Query rows per task when there is enough parallelism. gemm repacks k_h and v_h on every
/// call, so bigger blocks amortise that better; measured on one Zen 4 core, 256 rows beat 64 by
/// ~10% at 4096 tokens even though the scores then spill from L2 to L3, and 512+ gain little.
const BLOCK_ROWS: usize = 256;
/// Largest block (the normalising factors live on the stack).
const MAX_BLOCK_ROWS: usize = BLOCK_ROWS;
/// Smallest block the task count may shrink it to.
const MIN_BLOCK_ROWS: usize = 8;
/// Cap of one task's score scratch, in f32 elements (4 MiB).
const MAX_SCRATCH: usize = 1 << 20;
/// Rows of one GEGLU task.
const GEGLU_ROWS: usize = 16;

thread_local! {
    /// Score scratch of the attention tasks run on this thread, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether the fused kernels apply: every tensor on the CPU in f32.
pub(crate) fn supports(tensors: &[&Tensor]) -> bool {
    super::all_take_host_f32(tensors)
}

/// softmax(q k^T * scale) v per head for q `[b, t, heads*d]`, k and v `[b, s, heads*d]`
/// (CPU, f32), returned as `[b, t, heads*d]`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let op = FusedAttention {
        heads,
        scale: scale as f32,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// value * gelu_erf(gate) for `xs` `[.., 2*inner]` holding value then gate (CPU, f32).
pub(crate) fn geglu(xs: &Tensor) -> candle_core::Result<Tensor> {
    xs.contiguous()?.apply_op1_no_bwd(&Geglu)
}

struct FusedAttention {
    heads: usize,
    scale: f32,
}

struct Geglu;

#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    t: usize,
    s: usize,
    heads: usize,
    d: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.d
    }
}

/// Highest element index + 1 touched by a rows x cols matrix at `offset` with the given strides.
fn extent(offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        return offset;
    }
    offset + (rows - 1) * rs + (cols - 1) * cs + 1
}

/// Query rows per task: `BLOCK_ROWS`, fewer when the scratch would be too large or when there
/// would be too few tasks to keep every thread busy (small images, the UNet's lowest level).
/// Never depends on the batch size: the block is the gemm's row count, and gemm's blocking
/// over the shared dimension (so the rounding of a row's sums) changes with it; a sample's
/// result must not depend on how many samples share the call (continuous batching).
fn block_rows(d: &Dims) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let mut rows = BLOCK_ROWS.min(MAX_SCRATCH / d.s.max(1)).max(1);
    while rows > MIN_BLOCK_ROWS && d.heads * d.t.div_ceil(rows) < 4 * threads {
        rows /= 2;
    }
    rows.clamp(1, d.t.max(1))
}

fn attention_f32(
    d: Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> candle_core::Result<Vec<f32>> {
    let w = d.width();
    if q.len() != d.batch * d.t * w || k.len() != d.batch * d.s * w || v.len() != k.len() {
        candle_core::bail!("attention: buffers do not match their shapes");
    }
    let mut out = vec![0f32; q.len()];
    if out.is_empty() || d.s == 0 {
        return Ok(out);
    }
    let rows = block_rows(&d);
    let blocks = d.t.div_ceil(rows);
    let shared = SharedOut::new(&mut out);
    (0..d.batch * d.heads * blocks)
        .into_par_iter()
        .try_for_each(|task| {
            let (bh, blk) = (task / blocks, task % blocks);
            let (b, h) = (bh / d.heads, bh % d.heads);
            let r0 = blk * rows;
            let m = rows.min(d.t - r0);
            SCRATCH.with(|cell| {
                let mut scratch = cell.borrow_mut();
                if scratch.len() < m * d.s {
                    scratch.resize(m * d.s, 0.0);
                }
                let scores = &mut scratch[..m * d.s];
                head_block(&d, scale, q, k, v, shared, scores, b, h, r0, m)
            })
        })?;
    Ok(out)
}

/// Rows `r0..r0 + m` of head `h` of batch item `b`: scores, softmax, times v, into `out`.
#[allow(clippy::too_many_arguments)]
fn head_block(
    d: &Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: SharedOut,
    scores: &mut [f32],
    b: usize,
    h: usize,
    r0: usize,
    m: usize,
) -> candle_core::Result<()> {
    let w = d.width();
    let q_off = (b * d.t + r0) * w + h * d.d;
    let kv_off = b * d.s * w + h * d.d;
    // q block: m x d at row stride w; k_h^T: d x s with element (c, j) at j * w + c;
    // v_h: s x d at row stride w; out block: m x d at row stride w.
    if extent(kv_off, d.s, d.d, w, 1) > v.len() || extent(q_off, m, d.d, w, 1) > out.len() {
        candle_core::bail!("attention: task block outside its buffers");
    }
    let q_block = View {
        data: q,
        offset: q_off,
        rs: w,
        cs: 1,
    };
    let k_t = View {
        data: k,
        offset: kv_off,
        rs: 1,
        cs: w,
    };
    let none = Parallelism::None;
    matmul(m, d.s, d.d, scores, d.s, false, q_block, k_t, scale, none)?;
    // Softmax without its normalising pass over the m x s scores: the m x d result is scaled
    // instead (below), d being far smaller than s.
    let mut inv = [0f32; MAX_BLOCK_ROWS];
    let inv = &mut inv[..m];
    fast_math::exp_rows(scores, d.s, inv);
    let v_h = View {
        data: v,
        offset: kv_off,
        rs: w,
        cs: 1,
    };
    let scores = View::rows(scores, d.s);
    // SAFETY: (for the product and the row slices below) this task is the only writer of rows
    // r0..r0 + m of head h's columns in batch item b (tasks partition (batch, head, row
    // block)), nothing reads `out` until the parallel loop has finished, and at most one row
    // slice is alive at a time, never while the product runs.
    unsafe { out.matmul((m, d.d, d.s), q_off, w, false, scores, v_h, 1.0, none)? };
    for (r, &f) in inv.iter().enumerate() {
        // SAFETY: see above; the row lies inside this task's block.
        for o in unsafe { out.slice_mut(q_off + r * w, d.d)? } {
            *o *= f;
        }
    }
    Ok(())
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "runai-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = contiguous_f32(s1, l1, "attention: q")?;
        let k = contiguous_f32(s2, l2, "attention: k")?;
        let v = contiguous_f32(s3, l3, "attention: v")?;
        let (&[batch, t, w], &[kb, s, kw], &[vb, vs, vw]) = (l1.dims(), l2.dims(), l3.dims())
        else {
            candle_core::bail!("attention: expected 3-d q, k and v");
        };
        if self.heads == 0 || w % self.heads != 0 {
            candle_core::bail!(
                "attention: width {w} does not split into {} heads",
                self.heads
            );
        }
        if (kb, kw) != (batch, w) || (vb, vs, vw) != (batch, s, w) {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not match",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let d = Dims {
            batch,
            t,
            s,
            heads: self.heads,
            d: w / self.heads,
        };
        let out = attention_f32(d, self.scale, q, k, v)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, t, w))))
    }
}

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "runai-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s, l, "attention: geglu input")?;
        let mut dims = l.dims().to_vec();
        let Some(last) = dims.last_mut() else {
            candle_core::bail!("geglu: expected at least one dimension");
        };
        if *last % 2 != 0 {
            candle_core::bail!("geglu: last dimension {} is odd", *last);
        }
        let inner = *last / 2;
        *last = inner;
        let mut dst = vec![0f32; src.len() / 2];
        if inner > 0 {
            dst.par_chunks_mut(GEGLU_ROWS * inner)
                .zip(src.par_chunks(GEGLU_ROWS * 2 * inner))
                .for_each(|(out, inp)| fast_math::geglu_rows(inp, out, inner));
        }
        Ok((CpuStorage::F32(dst), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::layers::attention::chunked_attention;
    use crate::pipeline::test_util::max_abs_diff;
    use candle_core::DType;
    use candle_core::{Device, D};

    /// The existing candle path: split heads, chunked attention, merge heads.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
        let split = |x: &Tensor| {
            let (b, n, w) = x.dims3().unwrap();
            x.reshape((b, n, heads, w / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((b * heads, n, w / heads))
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (b, t, w) = q.dims3().unwrap();
        let kt = split(k).t().unwrap().contiguous().unwrap();
        let out = chunked_attention(&split(q), &kt, &split(v), scale, usize::MAX).unwrap();
        out.reshape((b, heads, t, w / heads))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, w))
            .unwrap()
    }

    #[test]
    fn matches_the_candle_path() {
        let dev = Device::Cpu;
        for (batch, t, s, heads, d) in [
            (2, 77, 77, 8, 40),
            (2, 1023, 77, 8, 40),
            (2, 64, 1023, 8, 64),
            (1, 77, 300, 1, 80),
            (2, 33, 17, 8, 160),
            (2, 1, 5, 1, 64),
            (1, 130, 130, 1, 512),
        ] {
            let w = heads * d;
            let q = Tensor::randn(0f32, 1.0, (batch, t, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (batch, s, w), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (batch, s, w), &dev).unwrap();
            // Larger than unit scale so the softmax is far from uniform.
            let scale = 3.0 / (d as f64).sqrt();
            let want = reference(&q, &k, &v, heads, scale);
            let got = attention(&q, &k, &v, heads, scale).unwrap();
            assert_eq!(got.dims(), &[batch, t, w]);
            let diff = max_abs_diff(&want, &got);
            assert!(diff < 2e-5, "{batch}x{t}x{s} heads {heads} d {d}: {diff}");
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 4, 16), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((2, 5, 16), DType::F32, &dev).unwrap();
        let v = Tensor::zeros((2, 6, 16), DType::F32, &dev).unwrap();
        assert!(attention(&q, &k, &v, 2, 1.0).is_err());
        assert!(attention(&q, &k, &k, 3, 1.0).is_err());
        assert!(attention(&q, &k, &k, 2, 1.0).is_ok());
    }

    #[test]
    fn geglu_matches_candle() {
        let dev = Device::Cpu;
        let xs = (Tensor::randn(0f32, 3.0, (2, 37, 2 * 96), &dev).unwrap() - 0.5).unwrap();
        let parts = xs.chunk(2, D::Minus1).unwrap();
        let want = (&parts[0] * parts[1].gelu_erf().unwrap()).unwrap();
        let got = geglu(&xs).unwrap();
        assert_eq!(got.dims(), &[2, 37, 96]);
        // Relative to the magnitude: outputs reach ~100, where one ulp is ~8e-6.
        let scaled = ((&want - &got).unwrap().abs().unwrap()
            / (want.abs().unwrap() + 1.0).unwrap())
        .unwrap();
        let diff = max_abs_diff(&scaled, &scaled.zeros_like().unwrap());
        assert!(diff < 1e-6, "geglu relative diff {diff}");
    }
}
