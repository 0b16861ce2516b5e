//! Winograd F(2x2, 3x3) convolution for 3x3, stride 1, padding 1 layers on the CPU (f32): each
//! 2x2 output tile costs 16 multiplies per channel pair instead of 36, so the gemm work of these
//! layers drops 2.25x. The weights are transformed once at load time (16 `[c_out, c_in]`
//! matrices, 16/9 of the original size), then each call transforms input tiles, runs 16 gemms
//! and transforms back. Never reads outside the checked slices; results differ from direct
//! convolution only by rounding.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::pipeline::kernels::cpu::gemm::{contiguous_f32, matmul, View};

/// Target size of the transformed-input buffer of one chunk of tiles.
const CHUNK_BYTES: usize = 8 << 20;

/// The 16 transformed weight matrices, `u[e][co][ci]` row-major.
#[derive(Debug, Clone)]
pub(crate) struct WinogradWeights {
    u: Vec<f32>,
    c_out: usize,
    c_in: usize,
}

impl WinogradWeights {
    /// `U = G g G^T` for every (output, input) channel pair of a `(c_out, c_in, 3, 3)` weight.
    pub(crate) fn new(weight: &Tensor) -> candle_core::Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if kh != 3 || kw != 3 {
            candle_core::bail!("winograd: expected a 3x3 kernel, got {kh}x{kw}");
        }
        let g: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        let pairs = c_out * c_in;
        // Pair-major first (parallel, one 3x3 -> 4x4 transform per pair), then position-major.
        let mut by_pair = vec![0f32; 16 * pairs];
        by_pair
            .par_chunks_mut(16)
            .zip(g.par_chunks_exact(9))
            .for_each(|(dst, k)| dst.copy_from_slice(&transform_kernel(k)));
        let mut u = vec![0f32; 16 * pairs];
        u.par_chunks_mut(pairs).enumerate().for_each(|(e, dst)| {
            for (p, v) in dst.iter_mut().enumerate() {
                *v = by_pair[p * 16 + e];
            }
        });
        Ok(WinogradWeights { u, c_out, c_in })
    }
}

/// `G g G^T` of one 3x3 kernel (row-major), in f64 then rounded once.
fn transform_kernel(k: &[f32]) -> [f32; 16] {
    // G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 of the 3x3 kernel.
    let mut gg = [[0f64; 3]; 4];
    for c in 0..3 {
        let (a, b, d) = (k[c] as f64, k[3 + c] as f64, k[6 + c] as f64);
        gg[0][c] = a;
        gg[1][c] = (a + b + d) / 2.0;
        gg[2][c] = (a - b + d) / 2.0;
        gg[3][c] = d;
    }
    // (G g) G^T: the same combination over columns.
    let mut u = [0f32; 16];
    for (r, row) in gg.iter().enumerate() {
        let (a, b, d) = (row[0], row[1], row[2]);
        let vals = [a, (a + b + d) / 2.0, (a - b + d) / 2.0, d];
        for (c, v) in vals.iter().enumerate() {
            u[r * 4 + c] = *v as f32;
        }
    }
    u
}

pub(crate) struct WinogradOp<'a> {
    pub weights: &'a WinogradWeights,
    pub bias: Option<&'a [f32]>,
    /// Convolve the nearest-neighbour 2x upsampling of the input (read on the fly).
    pub upsample2x: bool,
}

/// Geometry of one call: batch, channels, image size and tile grid.
#[derive(Debug, Clone, Copy)]
struct Grid {
    c_in: usize,
    c_out: usize,
    /// Size of the convolution's input (and output), after any upsampling.
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    /// The stored input is the nearest-neighbour half-size image: pixel (y, x) is read from
    /// (y / 2, x / 2), so the 2x upsampled tensor is never materialised.
    upsampled: bool,
}

impl Grid {
    /// Elements of one stored input channel.
    fn in_plane(&self) -> usize {
        if self.upsampled {
            (self.h / 2) * (self.w / 2)
        } else {
            self.h * self.w
        }
    }
}

/// Input transform of one tile row of one channel: `V = B^T d B` for the `tw` tiles whose
/// 4x4 patches start at input row `y0` (may lie in the padding), written as `out[e][tx]`.
/// Works on whole rows so every loop runs over contiguous vectors (and vectorises): a padded
/// copy of the four input rows, the row combination, then the column combination on the even
/// and odd columns.
#[inline(never)] // kept out of line so profiles attribute its time
fn input_row(plane: &[f32], g: &Grid, y0: isize, scratch: &mut RowScratch, out: &mut [&mut [f32]]) {
    let tw = g.tw;
    let width = 2 * tw + 2;
    // d[r][x] = input[y0 + r][x - 1], zero outside the image.
    for (r, row) in scratch.d.iter_mut().enumerate() {
        let row = &mut row[..width];
        row.fill(0.0);
        let y = y0 + r as isize;
        if y < 0 || y >= g.h as isize {
            continue;
        }
        if g.upsampled {
            let (sy, sw) = (y as usize / 2, g.w / 2);
            let line = &plane[sy * sw..(sy + 1) * sw];
            for (pair, &v) in row[1..1 + g.w].chunks_exact_mut(2).zip(line) {
                pair[0] = v;
                pair[1] = v;
            }
        } else {
            let line = &plane[y as usize * g.w..(y as usize + 1) * g.w];
            row[1..1 + g.w].copy_from_slice(line);
        }
    }
    // B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3, over the whole padded width.
    {
        let [d0, d1, d2, d3] = &scratch.d;
        let [t0, t1, t2, t3] = &mut scratch.t;
        for j in 0..width {
            t0[j] = d0[j] - d2[j];
            t1[j] = d1[j] + d2[j];
            t2[j] = d2[j] - d1[j];
            t3[j] = d1[j] - d3[j];
        }
    }
    // Split each combined row into its even and odd columns.
    for r in 0..4 {
        let pairs = scratch.t[r][..width].chunks_exact(2);
        let (ev, od) = (
            &mut scratch.even[r][..tw + 1],
            &mut scratch.odd[r][..tw + 1],
        );
        for ((e, o), p) in ev.iter_mut().zip(od.iter_mut()).zip(pairs) {
            *e = p[0];
            *o = p[1];
        }
    }
    // (B^T d) B on tile tx's columns 2tx..2tx+3 = even[tx], odd[tx], even[tx+1], odd[tx+1].
    for r in 0..4 {
        let (ev, od) = (&scratch.even[r], &scratch.odd[r]);
        let (e0, e1, o0, o1) = (&ev[..tw], &ev[1..tw + 1], &od[..tw], &od[1..tw + 1]);
        let [v0, v1, v2, v3] = &mut out[4 * r..4 * r + 4] else {
            return;
        };
        for ((v, a), b) in v0[..tw].iter_mut().zip(e0).zip(e1) {
            *v = a - b;
        }
        for ((v, a), b) in v1[..tw].iter_mut().zip(o0).zip(e1) {
            *v = a + b;
        }
        for ((v, a), b) in v2[..tw].iter_mut().zip(e1).zip(o0) {
            *v = a - b;
        }
        for ((v, a), b) in v3[..tw].iter_mut().zip(o0).zip(o1) {
            *v = a - b;
        }
    }
}

/// Per-task buffers of `input_row`, sized for one tile row.
struct RowScratch {
    d: [Vec<f32>; 4],
    t: [Vec<f32>; 4],
    even: [Vec<f32>; 4],
    odd: [Vec<f32>; 4],
}

impl RowScratch {
    fn new(tw: usize) -> Self {
        let v = |n: usize| [vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]];
        RowScratch {
            d: v(2 * tw + 2),
            t: v(2 * tw + 2),
            even: v(tw + 1),
            odd: v(tw + 1),
        }
    }
}

/// Output transform of one tile row of one channel: `Y = A^T M A` from the 16 gemm rows
/// `m[e][tx]`, plus bias, into output rows `2ty` and `2ty + 1` (cropped at the image edge).
#[inline(never)] // kept out of line so profiles attribute its time
fn output_row(
    m: &[&[f32]; 16],
    g: &Grid,
    ty: usize,
    add: f32,
    t: &mut [Vec<f32>; 8],
    dst: &mut [f32],
) {
    let tw = g.tw;
    // A^T M: row 0 = m0+m1+m2, row 1 = m1-m2-m3 (per column c of the 4x4 tile).
    for c in 0..4 {
        let (m0, m1, m2, m3) = (
            &m[c][..tw],
            &m[4 + c][..tw],
            &m[8 + c][..tw],
            &m[12 + c][..tw],
        );
        let (lo, hi) = t.split_at_mut(4);
        let (a, b) = (&mut lo[c][..tw], &mut hi[c][..tw]);
        for (((a, x0), x1), x2) in a.iter_mut().zip(m0).zip(m1).zip(m2) {
            *a = x0 + x1 + x2;
        }
        for (((b, x1), x2), x3) in b.iter_mut().zip(m1).zip(m2).zip(m3) {
            *b = x1 - x2 - x3;
        }
    }
    for dy in 0..2 {
        let oy = 2 * ty + dy;
        if oy >= g.h {
            break;
        }
        let row = &mut dst[oy * g.w..(oy + 1) * g.w];
        let (c0, c1, c2, c3) = (&t[4 * dy], &t[4 * dy + 1], &t[4 * dy + 2], &t[4 * dy + 3]);
        let mut pairs = row.chunks_exact_mut(2);
        for (tx, pair) in (&mut pairs).enumerate() {
            pair[0] = c0[tx] + c1[tx] + c2[tx] + add;
            pair[1] = c1[tx] - c2[tx] - c3[tx] + add;
        }
        // Odd width: the last tile contributes only its left column.
        if let [last] = pairs.into_remainder() {
            let tx = tw - 1;
            *last = c0[tx] + c1[tx] + c2[tx] + add;
        }
    }
}

fn winograd(
    g: &Grid,
    batch: usize,
    input: &[f32],
    w: &WinogradWeights,
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let plane = g.h * g.w;
    let in_plane = g.in_plane();
    if input.len() != batch * g.c_in * in_plane {
        candle_core::bail!("winograd: input length does not match its shape");
    }
    let mut out = vec![0f32; batch * g.c_out * plane];
    // Work in whole tile rows: global tile row gr = image * th + ty.
    let total_rows = batch * g.th;
    if total_rows == 0 || g.tw == 0 {
        return Ok(out);
    }
    let row_bytes = 16 * 4 * g.c_in.max(g.c_out).max(1) * g.tw;
    let rows_per_chunk = (CHUNK_BYTES / row_bytes).clamp(1, total_rows);
    let max_nt = rows_per_chunk * g.tw;
    let mut v = vec![0f32; 16 * g.c_in * max_nt];
    let mut m = vec![0f32; 16 * g.c_out * max_nt];
    let mut r0 = 0;
    while r0 < total_rows {
        let rows = rows_per_chunk.min(total_rows - r0);
        let nt = rows * g.tw;
        // Input transform, one task per input channel, each writing its own contiguous block
        // v[ci][e][(gr - r0) * tw + tx] (16 rows of nt).
        v[..16 * g.c_in * nt]
            .par_chunks_mut(16 * nt)
            .enumerate()
            .for_each(|(ci, block)| {
                let mut scratch = RowScratch::new(g.tw);
                let mut rows16: Vec<&mut [f32]> = block.chunks_mut(nt).collect();
                for k in 0..rows {
                    let (b, ty) = ((r0 + k) / g.th, (r0 + k) % g.th);
                    let p = &input[(b * g.c_in + ci) * in_plane..(b * g.c_in + ci + 1) * in_plane];
                    let mut outs: Vec<&mut [f32]> = rows16
                        .iter_mut()
                        .map(|r| &mut r[k * g.tw..(k + 1) * g.tw])
                        .collect();
                    input_row(p, g, 2 * ty as isize - 1, &mut scratch, &mut outs);
                }
            });
        // 16 independent gemms M_e = U_e V_e, one task each.
        let (u, v_ref) = (&w.u, &v);
        let pairs = g.c_out * g.c_in;
        m[..16 * g.c_out * nt]
            .par_chunks_mut(g.c_out * nt)
            .enumerate()
            .try_for_each(|(e, dst)| {
                let lhs = View::rows(&u[e * pairs..(e + 1) * pairs], g.c_in);
                // V_e: c_in rows of nt, 16 * nt apart in the channel-major buffer.
                let rhs = View {
                    data: &v_ref[..16 * g.c_in * nt],
                    offset: e * nt,
                    rs: 16 * nt,
                    cs: 1,
                };
                // Single-threaded: the 16 products already run in parallel.
                matmul(
                    g.c_out,
                    nt,
                    g.c_in,
                    dst,
                    nt,
                    false,
                    lhs,
                    rhs,
                    1.0,
                    Parallelism::None,
                )
            })?;
        // Output transform, one task per (image, output channel) plane.
        let m_ref = &m;
        out.par_chunks_mut(plane).enumerate().for_each(|(bc, dst)| {
            let (b, co) = (bc / g.c_out, bc % g.c_out);
            let lo = r0.max(b * g.th);
            let hi = (r0 + rows).min((b + 1) * g.th);
            if lo >= hi {
                return;
            }
            let add = bias.map_or(0.0, |bv| bv[co]);
            let mut t: [Vec<f32>; 8] = std::array::from_fn(|_| vec![0f32; g.tw]);
            for gr in lo..hi {
                let off = (gr - r0) * g.tw;
                let ms: [&[f32]; 16] = std::array::from_fn(|e| {
                    let base = (e * g.c_out + co) * nt + off;
                    &m_ref[base..base + g.tw]
                });
                output_row(&ms, g, gr - b * g.th, add, &mut t, dst);
            }
        });
        r0 += rows;
    }
    Ok(out)
}

impl CustomOp1 for WinogradOp<'_> {
    fn name(&self) -> &'static str {
        "runai-winograd-conv3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(s, l, "winograd: input")?;
        let &[batch, c_in, sh, sw] = l.dims() else {
            candle_core::bail!("winograd: expected a 4-d input");
        };
        let (h, w) = if self.upsample2x {
            (2 * sh, 2 * sw)
        } else {
            (sh, sw)
        };
        let wts = self.weights;
        if c_in != wts.c_in || self.bias.is_some_and(|b| b.len() != wts.c_out) {
            candle_core::bail!(
                "winograd: input has {c_in} channels, weights expect {} -> {}",
                wts.c_in,
                wts.c_out
            );
        }
        let g = Grid {
            c_in,
            c_out: wts.c_out,
            h,
            w,
            th: h.div_ceil(2),
            tw: w.div_ceil(2),
            upsampled: self.upsample2x,
        };
        let out = winograd(&g, batch, input, wts, self.bias)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, wts.c_out, h, w))))
    }
}
