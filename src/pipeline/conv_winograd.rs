//! Winograd F(2x2, 3x3) convolution for 3x3, stride 1, padding 1 layers on the CPU (f32): each
//! 2x2 output tile costs 16 multiplies per channel pair instead of 36, so the gemm work of these
//! layers drops 2.25x. The weights are transformed once at load time (16 `[c_out, c_in]`
//! matrices, 16/9 of the original size), then each call transforms input tiles, runs 16 gemms
//! and transforms back. Never reads outside the checked slices; results differ from direct
//! convolution only by rounding.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Target size of the transformed-input buffer of one chunk of tiles.
const CHUNK_BYTES: usize = 8 << 20;

/// The 16 transformed weight matrices, `u[e][co][ci]` row-major.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    u: Vec<f32>,
    c_out: usize,
    c_in: usize,
}

impl WinogradWeights {
    /// `U = G g G^T` for every (output, input) channel pair of a `(c_out, c_in, 3, 3)` weight.
    pub fn new(weight: &Tensor) -> candle_core::Result<Self> {
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

pub struct WinogradOp<'a> {
    pub weights: &'a WinogradWeights,
    pub bias: Option<&'a [f32]>,
}

/// Geometry of one call: batch, channels, image size and tile grid.
#[derive(Debug, Clone, Copy)]
struct Grid {
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Grid {
    fn tiles_per_image(&self) -> usize {
        self.th * self.tw
    }
}

/// `V = B^T d B` of the 4x4 input patch whose top-left corner is (y0, x0) (may lie in the
/// padding), written as `v[e * stride]` for the 16 positions e.
fn input_tile(plane: &[f32], g: &Grid, y0: isize, x0: isize) -> [f32; 16] {
    let mut d = [[0f32; 4]; 4];
    for (r, row) in d.iter_mut().enumerate() {
        let y = y0 + r as isize;
        if y < 0 || y >= g.h as isize {
            continue;
        }
        let line = &plane[y as usize * g.w..(y as usize + 1) * g.w];
        if x0 >= 0 && x0 + 4 <= g.w as isize {
            row.copy_from_slice(&line[x0 as usize..x0 as usize + 4]);
        } else {
            for (c, v) in row.iter_mut().enumerate() {
                let x = x0 + c as isize;
                if x >= 0 && x < g.w as isize {
                    *v = line[x as usize];
                }
            }
        }
    }
    // B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3.
    let mut t = [[0f32; 4]; 4];
    for c in 0..4 {
        t[0][c] = d[0][c] - d[2][c];
        t[1][c] = d[1][c] + d[2][c];
        t[2][c] = d[2][c] - d[1][c];
        t[3][c] = d[1][c] - d[3][c];
    }
    // (B^T d) B: the same combination over columns.
    let mut v = [0f32; 16];
    for r in 0..4 {
        let x = t[r];
        v[r * 4] = x[0] - x[2];
        v[r * 4 + 1] = x[1] + x[2];
        v[r * 4 + 2] = x[2] - x[1];
        v[r * 4 + 3] = x[1] - x[3];
    }
    v
}

/// `Y = A^T M A`: the 2x2 output tile from the 16 gemm results of one tile.
fn output_tile(m: &[f32; 16]) -> [f32; 4] {
    // A^T M: rows m0+m1+m2 and m1-m2-m3.
    let mut t = [[0f32; 4]; 2];
    for c in 0..4 {
        t[0][c] = m[c] + m[4 + c] + m[8 + c];
        t[1][c] = m[4 + c] - m[8 + c] - m[12 + c];
    }
    [
        t[0][0] + t[0][1] + t[0][2],
        t[0][1] - t[0][2] - t[0][3],
        t[1][0] + t[1][1] + t[1][2],
        t[1][1] - t[1][2] - t[1][3],
    ]
}

/// Tile coordinates (image, tile row, tile column) of global tile index `t`.
fn tile_at(g: &Grid, t: usize) -> (usize, usize, usize) {
    let per = g.tiles_per_image();
    let (b, r) = (t / per, t % per);
    (b, r / g.tw, r % g.tw)
}

fn winograd(
    g: &Grid,
    batch: usize,
    input: &[f32],
    w: &WinogradWeights,
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let plane = g.h * g.w;
    let mut out = vec![0f32; batch * g.c_out * plane];
    let total = batch * g.tiles_per_image();
    if total == 0 {
        return Ok(out);
    }
    let chunk = (CHUNK_BYTES / (16 * 4 * g.c_in.max(g.c_out).max(1))).clamp(1, total);
    let mut v = vec![0f32; 16 * g.c_in * chunk];
    let mut m = vec![0f32; 16 * g.c_out * chunk];
    let mut t0 = 0;
    while t0 < total {
        let nt = chunk.min(total - t0);
        // Input transform, one task per input channel: v[e][ci][t].
        let v_rows: Vec<&mut [f32]> = v[..16 * g.c_in * nt].chunks_mut(nt).collect();
        let mut by_channel: Vec<Vec<&mut [f32]>> = (0..g.c_in).map(|_| Vec::new()).collect();
        for (i, row) in v_rows.into_iter().enumerate() {
            by_channel[i % g.c_in].push(row);
        }
        by_channel
            .par_iter_mut()
            .enumerate()
            .for_each(|(ci, rows)| {
                for i in 0..nt {
                    let (b, ty, tx) = tile_at(g, t0 + i);
                    let p = &input[(b * g.c_in + ci) * plane..(b * g.c_in + ci + 1) * plane];
                    let tile = input_tile(p, g, 2 * ty as isize - 1, 2 * tx as isize - 1);
                    for (e, row) in rows.iter_mut().enumerate() {
                        row[i] = tile[e];
                    }
                }
            });
        // 16 independent gemms M_e = U_e V_e, one task each.
        let (u, v_ref) = (&w.u, &v);
        let pairs = g.c_out * g.c_in;
        m[..16 * g.c_out * nt]
            .par_chunks_mut(g.c_out * nt)
            .enumerate()
            .try_for_each(|(e, dst)| {
                matmul(
                    g.c_out,
                    nt,
                    g.c_in,
                    dst,
                    &u[e * pairs..(e + 1) * pairs],
                    &v_ref[e * g.c_in * nt..(e + 1) * g.c_in * nt],
                )
            })?;
        // Output transform, one task per (image, output channel) plane.
        let m_ref = &m;
        out.par_chunks_mut(plane).enumerate().for_each(|(bc, dst)| {
            let (b, co) = (bc / g.c_out, bc % g.c_out);
            let first = b * g.tiles_per_image();
            let lo = t0.max(first);
            let hi = (t0 + nt).min(first + g.tiles_per_image());
            let add = bias.map_or(0.0, |bv| bv[co]);
            for t in lo..hi {
                let i = t - t0;
                let mut mt = [0f32; 16];
                for (e, val) in mt.iter_mut().enumerate() {
                    *val = m_ref[(e * g.c_out + co) * nt + i];
                }
                let y = output_tile(&mt);
                let (_, ty, tx) = tile_at(g, t);
                for dy in 0..2 {
                    let oy = 2 * ty + dy;
                    if oy >= g.h {
                        break;
                    }
                    for dx in 0..2 {
                        let ox = 2 * tx + dx;
                        if ox < g.w {
                            dst[oy * g.w + ox] = y[dy * 2 + dx] + add;
                        }
                    }
                }
            }
        });
        t0 += nt;
    }
    Ok(out)
}

/// `dst[m, n] = lhs[m, k] * rhs[k, n]`, all row-major and contiguous, single-threaded (the
/// caller runs 16 of them in parallel).
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
) -> candle_core::Result<()> {
    if dst.len() != m * n || lhs.len() != m * k || rhs.len() != k * n {
        candle_core::bail!("winograd: gemm operands do not match their shapes");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY: the three slices are distinct and exactly m*n, m*k and k*n long (checked above),
    // addressed row-major with unit column stride.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    Ok(())
}

impl CustomOp1 for WinogradOp<'_> {
    fn name(&self) -> &'static str {
        "runai-winograd-conv3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("winograd: input must be f32");
        };
        let Some(input) = l.contiguous_offsets().and_then(|(a, b)| data.get(a..b)) else {
            candle_core::bail!("winograd: input must be contiguous");
        };
        let &[batch, c_in, h, w] = l.dims() else {
            candle_core::bail!("winograd: expected a 4-d input");
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
        };
        let out = winograd(&g, batch, input, wts, self.bias)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, wts.c_out, h, w))))
    }
}
