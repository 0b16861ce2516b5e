//! The CPU f32 convolution kernel behind `conv::Conv2d`: im2col straight from NCHW rows into
//! row tiles of a few MiB, then one gemm per tile against the weight as stored. 1x1 convolutions
//! skip im2col (the input already is the column matrix); at small spatial sizes the batch items
//! are folded into one gemm so the weight is streamed once. Never reads outside the checked
//! slices: every size is validated before the unsafe gemm calls.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

use crate::pipeline::kernels::cpu::gemm::{self as cpu_gemm, all_threads, contiguous_f32, View};

/// Square kernel, stride and zero padding of a convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

pub(crate) struct ConvOp<'a> {
    pub geometry: ConvGeometry,
    /// One value per output channel, added to every output pixel.
    pub bias: Option<&'a [f32]>,
}

/// Target size of one im2col tile: big enough for well-shaped gemms, small enough to stay in
/// the last-level cache between being written and being read.
const TILE_BYTES: usize = 8 << 20;
/// Output pixels per image below which the batch is folded into one gemm (the lowest UNet
/// levels: 4x4 to 16x16 at 256x256) so the weight is packed and streamed once per call.
const FOLD_BATCH_BELOW: usize = 1024;

/// Shapes of one call, all validated against the storages.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    oh: usize,
    ow: usize,
    g: ConvGeometry,
}

impl Dims {
    fn k_len(&self) -> usize {
        self.c_in * self.g.kernel * self.g.kernel
    }
    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
    fn is_pointwise(&self) -> bool {
        self.g.kernel == 1 && self.g.stride == 1 && self.g.padding == 0
    }
}

fn out_len(size: usize, g: ConvGeometry) -> Option<usize> {
    (size + 2 * g.padding)
        .checked_sub(g.kernel)
        .map(|span| span / g.stride + 1)
}

/// `dst[m, n] (row stride dst_rs) = dst (when accumulate) + weight[m, k] * rhs[k, n] (row
/// stride rhs_rs)`, on every thread of the pool.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    weight: &[f32],
    rhs: &[f32],
    rhs_rs: usize,
) -> candle_core::Result<()> {
    let (lhs, rhs) = (View::rows(weight, k), View::rows(rhs, rhs_rs));
    cpu_gemm::matmul(
        m,
        n,
        k,
        dst,
        dst_rs,
        accumulate,
        lhs,
        rhs,
        1.0,
        all_threads(),
    )
}

/// Writes rows `row0..row0 + rows` of the im2col matrix of one image into `col`
/// (`k_len` rows of `rows * ow` columns). Row `r` of the matrix is (channel, ky, kx) in the
/// weight's order, so the weight multiplies it unchanged.
fn im2col(d: &Dims, image: &[f32], row0: usize, rows: usize, col: &mut [f32]) {
    let kk = d.g.kernel * d.g.kernel;
    let n = rows * d.ow;
    col.par_chunks_mut(n).enumerate().for_each(|(r, dst)| {
        let ci = r / kk;
        let (ky, kx) = ((r % kk) / d.g.kernel, r % d.g.kernel);
        let plane = &image[ci * d.in_plane()..(ci + 1) * d.in_plane()];
        for (t, out_row) in dst.chunks_mut(d.ow).enumerate() {
            let iy = ((row0 + t) * d.g.stride + ky) as isize - d.g.padding as isize;
            if iy < 0 || iy >= d.h as isize {
                out_row.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * d.w..(iy as usize + 1) * d.w];
            fill_row(out_row, src, kx, d.g);
        }
    });
}

/// One output row of im2col: `out[x] = src[x * stride + kx - padding]`, zero outside `src`.
fn fill_row(out: &mut [f32], src: &[f32], kx: usize, g: ConvGeometry) {
    let w = src.len() as isize;
    let shift = kx as isize - g.padding as isize;
    if g.stride == 1 {
        // Valid x: 0 <= x + shift < w.
        let lo = (-shift).clamp(0, out.len() as isize) as usize;
        let hi = (w - shift).clamp(lo as isize, out.len() as isize) as usize;
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        let s0 = (lo as isize + shift) as usize;
        out[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
    } else {
        for (x, o) in out.iter_mut().enumerate() {
            let ix = (x * g.stride) as isize + shift;
            *o = if ix >= 0 && ix < w {
                src[ix as usize]
            } else {
                0.0
            };
        }
    }
}

/// Fills every output plane with its channel's bias (or zero).
fn init_output(d: &Dims, bias: Option<&[f32]>) -> Vec<f32> {
    let plane = d.out_plane();
    let mut out = vec![0f32; d.batch * d.c_out * plane];
    if let Some(bias) = bias {
        out.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
            p.fill(bias[i % d.c_out]);
        });
    }
    out
}

fn conv(
    d: &Dims,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let (k_len, plane, out_plane) = (d.k_len(), d.in_plane(), d.out_plane());
    if out_plane > 0 && out_plane < FOLD_BATCH_BELOW && d.batch > 1 {
        return conv_folded(d, input, weight, bias);
    }
    let mut out = init_output(d, bias);
    let accumulate = bias.is_some();
    if out_plane == 0 || d.batch == 0 {
        return Ok(out);
    }
    let rows_per_tile = (TILE_BYTES / (4 * k_len.max(1) * d.ow)).clamp(1, d.oh);
    let mut col = if d.is_pointwise() {
        Vec::new()
    } else {
        vec![0f32; k_len * rows_per_tile * d.ow]
    };
    for b in 0..d.batch {
        let image = &input[b * d.c_in * plane..(b + 1) * d.c_in * plane];
        let dst = &mut out[b * d.c_out * out_plane..(b + 1) * d.c_out * out_plane];
        if d.is_pointwise() {
            matmul(
                d.c_out, plane, k_len, dst, plane, accumulate, weight, image, plane,
            )?;
            continue;
        }
        let mut row0 = 0;
        while row0 < d.oh {
            let rows = rows_per_tile.min(d.oh - row0);
            let n = rows * d.ow;
            let col = &mut col[..k_len * n];
            im2col(d, image, row0, rows, col);
            let dst = &mut dst[row0 * d.ow..];
            matmul(
                d.c_out, n, k_len, dst, out_plane, accumulate, weight, col, n,
            )?;
            row0 += rows;
        }
    }
    Ok(out)
}

/// Small planes: all images' columns side by side in one gemm, then scattered to NCHW.
fn conv_folded(
    d: &Dims,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let (k_len, plane, out_plane) = (d.k_len(), d.in_plane(), d.out_plane());
    let n = d.batch * out_plane;
    let mut col = vec![0f32; k_len * n];
    // col[r, b * out_plane + p]: fill each image's block of columns row by row.
    let mut per_image = vec![0f32; k_len * out_plane];
    for b in 0..d.batch {
        let image = &input[b * d.c_in * plane..(b + 1) * d.c_in * plane];
        if d.is_pointwise() {
            per_image.copy_from_slice(image);
        } else {
            im2col(d, image, 0, d.oh, &mut per_image);
        }
        col.par_chunks_mut(n)
            .zip(per_image.par_chunks(out_plane))
            .for_each(|(dst, src)| dst[b * out_plane..(b + 1) * out_plane].copy_from_slice(src));
    }
    let mut tmp = vec![0f32; d.c_out * n];
    if let Some(bias) = bias {
        tmp.par_chunks_mut(n)
            .zip(bias.par_iter())
            .for_each(|(row, &v)| row.fill(v));
    }
    matmul(
        d.c_out,
        n,
        k_len,
        &mut tmp,
        n,
        bias.is_some(),
        weight,
        &col,
        n,
    )?;
    let mut out = vec![0f32; d.batch * d.c_out * out_plane];
    out.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(i, dst)| {
            let (b, co) = (i / d.c_out, i % d.c_out);
            dst.copy_from_slice(&tmp[co * n + b * out_plane..co * n + (b + 1) * out_plane]);
        });
    Ok(out)
}

impl CustomOp2 for ConvOp<'_> {
    fn name(&self) -> &'static str {
        "runai-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(s1, l1, "conv: input")?;
        let weight = contiguous_f32(s2, l2, "conv: weight")?;
        let g = self.geometry;
        let (&[batch, c_in, h, w], &[c_out, wc_in, kh, kw]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("conv: expected 4-d input and weight");
        };
        if wc_in != c_in || kh != g.kernel || kw != g.kernel || g.stride == 0 {
            candle_core::bail!(
                "conv: input has {c_in} channels, weight {c_out}x{wc_in}x{kh}x{kw}, stride {}",
                g.stride
            );
        }
        if self.bias.is_some_and(|b| b.len() != c_out) {
            candle_core::bail!("conv: bias length differs from {c_out} output channels");
        }
        let (Some(oh), Some(ow)) = (out_len(h, g), out_len(w, g)) else {
            candle_core::bail!("conv: {h}x{w} input smaller than the {}x{} kernel", kh, kw);
        };
        let d = Dims {
            batch,
            c_in,
            h,
            w,
            c_out,
            oh,
            ow,
            g,
        };
        let out = conv(&d, input, weight, self.bias)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, oh, ow))))
    }
}
