//! Host f32 kernels of the CLIP text encoder on contiguous row-major buffers: LayerNorm, linear
//! layers with bias (and residual) folded into the gemm, causal multi-head attention straight
//! from a fused QKV projection, and the two activations. clip.rs uses them instead of candle's
//! op-by-op graph (one allocation and one fork/join per op) when everything is f32 on the CPU.
//! Never reads or writes outside its slices: every output region goes through `SharedOut`.

use candle_core::bail;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::pipeline::kernels::cpu::fast_math;
use crate::pipeline::kernels::cpu::gemm::{matmul, View};
use crate::pipeline::kernels::cpu::shared_out::SharedOut;

type KResult<T> = candle_core::Result<T>;

/// Elements per rayon task in the row-wise passes: small passes stay on one thread.
const CHUNK_ELEMS: usize = 1 << 15;

/// Whole rows per task so that a task is about CHUNK_ELEMS elements.
fn rows_per_task(dim: usize) -> usize {
    (CHUNK_ELEMS / dim.max(1)).max(1)
}

/// How a linear layer combines with what `out` already holds.
#[derive(Clone, Copy)]
pub(crate) enum Write {
    /// `out = x W^T + b`.
    Replace,
    /// `out += x W^T + b` (a residual connection, in place).
    Accumulate,
    /// `out = act(x W^T + b)`.
    Activate(Activation),
}

/// Columns of output per block for a layer with `n` outputs: whole 16-column micro-panels,
/// two blocks per thread so that a briefly busy core does not hold up the whole product.
pub(crate) fn column_block(n: usize) -> usize {
    let tasks = (2 * rayon::current_num_threads()).max(1);
    n.div_ceil(tasks).next_multiple_of(16).max(16)
}

/// Rearranges a PyTorch `[n, k]` weight into column blocks for `linear`: block `b` (output
/// columns `c0 = b * block` up to `c0 + cols`) is stored at `c0 * k` as `[k, cols]` row-major,
/// so the task computing those columns streams one contiguous range of memory.
pub(crate) fn block_columns(weight: &[f32], n: usize, k: usize, block: usize) -> KResult<Vec<f32>> {
    if weight.len() != n * k || block == 0 {
        bail!(
            "clip: cannot block a weight of {} values as {n} x {k}",
            weight.len()
        );
    }
    let mut out = vec![0f32; weight.len()];
    out.par_chunks_mut(block * k)
        .zip(weight.par_chunks(block * k))
        .for_each(|(dst, src)| {
            // src: `cols` rows of k (the block's outputs); dst: k rows of `cols`.
            let cols = src.len() / k;
            for (c, row) in src.chunks_exact(k).enumerate() {
                for (kk, &v) in row.iter().enumerate() {
                    dst[kk * cols + c] = v;
                }
            }
        });
    Ok(out)
}

/// `x [rows, k]` times the transposed weight, plus `bias [n]`, with the weight in the column
/// blocks of `block_columns` (made once at load: gemm then streams each block contiguously
/// instead of gathering the weight element by element on every call). One rayon task per
/// block does the bias, a single-threaded gemm and the activation for its columns: one
/// parallel region per layer (gemm's own threading leaves these small-m products on one
/// core, and separate bias/activation passes would each add a fork/join).
pub(crate) fn linear(
    x: &[f32],
    weight_blocks: &[f32],
    block: usize,
    bias: &[f32],
    out: &mut [f32],
    mode: Write,
) -> KResult<()> {
    let n = bias.len();
    if n == 0 || block == 0 || weight_blocks.len() % n != 0 {
        bail!(
            "clip: linear weight of {} values for {n} outputs",
            weight_blocks.len()
        );
    }
    let k = weight_blocks.len() / n;
    if k == 0 || x.len() % k != 0 || out.len() != x.len() / k * n {
        bail!("clip: linear shapes do not match");
    }
    let rows = x.len() / k;
    if rows == 0 {
        return Ok(());
    }
    let dst = SharedOut::new(out);
    (0..n.div_ceil(block)).into_par_iter().try_for_each(|b| {
        let c0 = b * block;
        let cols = block.min(n - c0);
        let bias = &bias[c0..c0 + cols];
        // SAFETY (for the row slices and the gemm below): blocks cover disjoint column ranges
        // c0..c0 + cols of `out`, so no two tasks touch the same element; `out` is exclusively
        // borrowed for the whole parallel region while x and weight_blocks are only read; and
        // within a task at most one row slice is alive at a time, never while gemm runs.
        // SharedOut checks every range against the buffer.
        let for_rows = |f: &dyn Fn(&mut [f32])| -> KResult<()> {
            for r in 0..rows {
                // SAFETY: row r's columns c0..c0 + cols belong to this task (see above).
                f(unsafe { dst.slice_mut(r * n + c0, cols)? });
            }
            Ok(())
        };
        match mode {
            Write::Replace => for_rows(&|row| row.copy_from_slice(bias))?,
            Write::Accumulate => for_rows(&|row| {
                row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
            })?,
            Write::Activate(_) => {}
        }
        let lhs = View::rows(x, k);
        let rhs = View {
            data: weight_blocks,
            offset: c0 * k,
            rs: cols,
            cs: 1,
        };
        let accumulate = !matches!(mode, Write::Activate(_));
        let none = Parallelism::None;
        // SAFETY: as above, this block's columns belong to this task alone.
        unsafe { dst.matmul((rows, cols, k), c0, n, accumulate, lhs, rhs, 1.0, none)? };
        if let Write::Activate(act) = mode {
            for_rows(&|row| bias_activation(row, bias, act))?;
        }
        Ok(())
    })
}

/// Row-wise LayerNorm of `x [rows, gamma.len()]` into `out`, as PyTorch: biased variance of
/// the centred values, then `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub(crate) fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    out: &mut [f32],
) -> KResult<()> {
    let dim = gamma.len();
    if dim == 0 || beta.len() != dim || x.len() % dim != 0 || out.len() != x.len() {
        bail!("clip: layer norm shapes do not match");
    }
    let step = rows_per_task(dim) * dim;
    out.par_chunks_mut(step)
        .zip(x.par_chunks(step))
        .for_each(|(out, x)| {
            for (o, x) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                let mean = lane_sum(x, |v| v) / dim as f32;
                let var = lane_sum(x, |v| (v - mean) * (v - mean)) / dim as f32;
                let inv = 1.0 / (var as f64 + eps).sqrt() as f32;
                for (((o, &x), &g), &b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *o = (x - mean) * inv * g + b;
                }
            }
        });
    Ok(())
}

/// Sum of `f(v)` over `xs` in eight interleaved partial sums (vectorizable, and more accurate
/// than one running sum).
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Which activation the MLP applies after its first linear layer.
#[derive(Clone, Copy)]
pub(crate) enum Activation {
    /// `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// Exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`.
    GeluErf,
}

/// `row = act(row + bias)` in place (`row` and `bias` of the same length).
fn bias_activation(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        // Same form as candle's sigmoid, 1 / (1 + exp(-z)); branch-free so it vectorizes.
        Activation::QuickGelu => {
            for (v, &b) in row.iter_mut().zip(bias) {
                let y = *v + b;
                *v = y / (1.0 + fast_math::exp(-1.702 * y));
            }
        }
        Activation::GeluErf => {
            for (v, &b) in row.iter_mut().zip(bias) {
                let y = *v + b;
                *v = fast_math::gelu_erf(y);
            }
        }
    }
}

/// Causal self-attention of `qkv [batch * seq, 3 * heads * head_dim]` (q, k and v side by side,
/// each split into heads) into `out [batch * seq, heads * head_dim]`: one task per (sequence,
/// head), each softmaxing only the unmasked (j <= i) scores.
pub(crate) fn causal_attention(
    qkv: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> KResult<()> {
    let inner = heads * head_dim;
    let rows = batch * seq;
    if qkv.len() != rows * 3 * inner || out.len() != rows * inner {
        bail!("clip: attention shapes do not match");
    }
    if rows == 0 || inner == 0 {
        return Ok(());
    }
    let scale = (head_dim as f32).powf(-0.5);
    let per_head: Vec<Vec<f32>> = (0..batch * heads)
        .into_par_iter()
        .map(|task| -> KResult<Vec<f32>> {
            let (b, h) = (task / heads, task % heads);
            let base = b * seq * 3 * inner + h * head_dim;
            let q = View {
                data: qkv,
                offset: base,
                rs: 3 * inner,
                cs: 1,
            };
            // k transposed: element (d, j) is key j's component d.
            let kt = View {
                data: qkv,
                offset: base + inner,
                rs: 1,
                cs: 3 * inner,
            };
            let v = View {
                data: qkv,
                offset: base + 2 * inner,
                rs: 3 * inner,
                cs: 1,
            };
            let mut scores = vec![0f32; seq * seq];
            let one = Parallelism::None;
            matmul(
                seq,
                seq,
                head_dim,
                &mut scores,
                seq,
                false,
                q,
                kt,
                scale,
                one,
            )?;
            for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                let (keep, masked) = row.split_at_mut(i + 1);
                fast_math::softmax_rows(keep, i + 1);
                masked.iter_mut().for_each(|s| *s = 0.0);
            }
            let probs = View {
                data: &scores,
                offset: 0,
                rs: seq,
                cs: 1,
            };
            let mut o = vec![0f32; seq * head_dim];
            matmul(
                seq, head_dim, seq, &mut o, head_dim, false, probs, v, 1.0, one,
            )?;
            Ok(o)
        })
        .collect::<KResult<_>>()?;
    for (task, o) in per_head.iter().enumerate() {
        let (b, h) = (task / heads, task % heads);
        for (i, src) in o.chunks_exact(head_dim).enumerate() {
            let at = (b * seq + i) * inner + h * head_dim;
            out[at..at + head_dim].copy_from_slice(src);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor, D};

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn randn(shape: &[usize], std: f64) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, std as f32, shape, &Device::Cpu)
    }

    #[test]
    fn linear_matches_candle_in_every_mode() -> candle_core::Result<()> {
        let (rows, k, n) = (37, 48, 70);
        let x = randn(&[rows, k], 1.0)?;
        let w = randn(&[n, k], 0.2)?;
        let b = randn(&[n], 1.0)?;
        let res = randn(&[rows, n], 1.0)?;
        let want = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(&x)?;
        let (xv, wv, bv) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            block_columns(&w.flatten_all()?.to_vec1::<f32>()?, n, k, 32)?,
            b.to_vec1::<f32>()?,
        );
        let mut out = vec![f32::NAN; rows * n];
        linear(&xv, &wv, 32, &bv, &mut out, Write::Replace)?;
        let d = max_diff(&out, &want.flatten_all()?.to_vec1()?);
        assert!(d < 1e-5, "replace diff {d}");

        let mut out = res.flatten_all()?.to_vec1::<f32>()?;
        linear(&xv, &wv, 32, &bv, &mut out, Write::Accumulate)?;
        let d = max_diff(&out, &(&res + &want)?.flatten_all()?.to_vec1()?);
        assert!(d < 1e-5, "accumulate diff {d}");

        let y = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        let quick = (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?;
        for (act, want) in [
            (Activation::QuickGelu, quick),
            (Activation::GeluErf, y.gelu_erf()?),
        ] {
            let mut out = vec![f32::NAN; rows * n];
            linear(&xv, &wv, 32, &bv, &mut out, Write::Activate(act))?;
            let d = max_diff(&out, &want.flatten_all()?.to_vec1()?);
            assert!(d < 1e-5, "activation diff {d}");
        }

        let mut short = vec![0f32; rows * n - 1];
        assert!(linear(&xv, &wv, 32, &bv, &mut short, Write::Replace).is_err());
        Ok(())
    }

    #[test]
    fn block_columns_lays_out_transposed_blocks() -> candle_core::Result<()> {
        let (n, k, block) = (40, 3, 16);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let b = block_columns(&w, n, k, block)?;
        for c in 0..n {
            let (c0, cols) = (c / block * block, block.min(n - c / block * block));
            for kk in 0..k {
                assert_eq!(
                    b[c0 * k + kk * cols + (c - c0)],
                    w[c * k + kk],
                    "({c}, {kk})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn layer_norm_matches_candle() -> candle_core::Result<()> {
        let (rows, dim) = (300, 96);
        let x = (randn(&[rows, dim], 3.0)? + 2.0)?;
        let g = randn(&[dim], 1.0)?;
        let b = randn(&[dim], 1.0)?;
        let want = candle_nn::LayerNorm::new(g.clone(), b.clone(), 1e-5).forward(&x)?;
        let mut out = vec![0f32; rows * dim];
        layer_norm(
            &x.flatten_all()?.to_vec1()?,
            &g.to_vec1()?,
            &b.to_vec1()?,
            1e-5,
            &mut out,
        )?;
        let d = max_diff(&out, &want.flatten_all()?.to_vec1()?);
        assert!(d < 1e-5, "layer norm diff {d}");
        Ok(())
    }

    /// Against the plain candle formulation: separate q/k/v, scores + additive causal mask,
    /// softmax, weighted values, heads merged back.
    #[test]
    fn causal_attention_matches_candle() -> candle_core::Result<()> {
        let (batch, seq, heads, hd) = (2, 13, 3, 8);
        let inner = heads * hd;
        let qkv = randn(&[batch, seq, 3 * inner], 2.0)?;
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, i * inner, inner)?
                .reshape((batch, seq, heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let mut mask = vec![0f32; seq * seq];
        for i in 0..seq {
            for j in i + 1..seq {
                mask[i * seq + j] = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(mask, (seq, seq), &Device::Cpu)?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?.broadcast_add(&mask)?;
        let want = candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch * seq, inner))?;
        let mut out = vec![f32::NAN; batch * seq * inner];
        causal_attention(
            &qkv.flatten_all()?.to_vec1()?,
            batch,
            seq,
            heads,
            hd,
            &mut out,
        )?;
        let d = max_diff(&out, &want.flatten_all()?.to_vec1()?);
        assert!(d < 1e-5, "attention diff {d}");
        Ok(())
    }
}
