//! Winograd F(4x4, 3x3) convolution for 3x3, stride 1, padding 1 layers on the CPU (f32): each
//! 4x4 output tile costs 36 multiplies per channel pair instead of 144 (direct), so the gemm
//! work of these layers drops 4x. A call transforms the layer's weights (36 `[c_out, c_in]`
//! matrices, 4x the kernel's size, in the kernels' reusable scratch buffer: layers keep only
//! their original weights), transforms the input tiles, runs 36 gemms and transforms back.
//! [`applies`] says where that pays. Never reads outside the checked slices; results differ
//! from direct convolution by rounding only (the tests bound it).

mod transform;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use gemm::Parallelism;
use rayon::prelude::*;

use self::transform::{InputScratch, Plane, ALPHA, POINTS, TILE};
use crate::pipeline::kernels::cpu::gemm::{contiguous_f32, matmul, View};
use crate::pipeline::kernels::cpu::scratch;

/// Target size of the transformed-input buffer of one chunk of tiles.
const CHUNK_BYTES: usize = 8 << 20;

/// Smallest image side (the smaller of height and width, after any upsampling) at which a
/// layer goes through Winograd: with fewer than 16 tiles an image the 36 gemms are too thin
/// to pay for the input and output transforms.
pub(crate) const MIN_SIDE: usize = 16;

/// Largest transformed weight (36 x c_out x c_in f32) a call may build; it lives in the
/// kernels' scratch pool, which keeps the largest buffer used. Bigger layers (2560 -> 1280
/// and up) run direct.
const MAX_WEIGHT_BYTES: usize = 256 << 20;

/// Whether a 3x3 / stride 1 / padding 1 layer of `c_in -> c_out` channels on `h x w` images
/// (after any upsampling) runs through Winograd. The thresholds come from `runai bench --phase
/// conv3x3` (BENCHMARKS.md): at sides of 16 and more Winograd took 0.3-0.8x the direct time
/// on every UNet shape, at 8 it took 1.5-1.8x. The choice depends on one image's size only,
/// never on the batch, so an image's result is the same alone or batched.
pub(crate) fn applies(c_in: usize, c_out: usize, h: usize, w: usize) -> bool {
    POINTS * 4 * c_in * c_out <= MAX_WEIGHT_BYTES && h.min(w) >= MIN_SIDE
}

/// The op: `apply_op2(input, weight)` with a `(c_out, c_in, 3, 3)` weight.
pub(crate) struct WinogradOp<'a> {
    pub bias: Option<&'a [f32]>,
    /// Convolve the nearest-neighbour 2x upsampling of the input (read on the fly).
    pub upsample2x: bool,
}

/// Geometry of one call: channels, image size and tile grid.
#[derive(Debug, Clone, Copy)]
struct Grid {
    c_in: usize,
    c_out: usize,
    /// Size of the convolution's input (and output), after any upsampling.
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
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

/// `U = G g G^T` of every kernel into `u` (every element written), laid out `u[co][e][ci]`:
/// row co of point e's matrix is contiguous, so the gemm reads `U_e` as a strided matrix with
/// unit column stride.
fn transform_weights(weight: &[f32], c_in: usize, u: &mut [f32]) {
    u.par_chunks_mut(POINTS * c_in)
        .zip(weight.par_chunks_exact(9 * c_in))
        .for_each_init(
            || vec![0f32; 27 * c_in],
            |tmp, (dst, taps)| transform::kernels(taps, c_in, tmp, dst),
        );
}

fn winograd(
    g: &Grid,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let plane = g.h * g.w;
    let in_plane = g.in_plane();
    if input.len() != batch * g.c_in * in_plane || weight.len() != 9 * g.c_in * g.c_out {
        candle_core::bail!("winograd: input or weight length does not match its shape");
    }
    let mut out = vec![0f32; batch * g.c_out * plane];
    // Work in whole tile rows: global tile row gr = image * th + ty.
    let total_rows = batch * g.th;
    if total_rows == 0 || g.tw == 0 || g.c_in == 0 || g.c_out == 0 {
        if let Some(bias) = bias {
            for (i, dst) in out.chunks_mut(plane.max(1)).enumerate() {
                dst.fill(bias[i % g.c_out]);
            }
        }
        return Ok(out);
    }
    scratch::with_scratch(POINTS * g.c_in * g.c_out, |u| {
        transform_weights(weight, g.c_in, u);
        tiles(g, batch, input, u, bias, &mut out)
    })?;
    Ok(out)
}

/// Input transform, 36 gemms and output transform of every tile, chunk by chunk, into `out`.
fn tiles(
    g: &Grid,
    batch: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> candle_core::Result<()> {
    let (plane, in_plane) = (g.h * g.w, g.in_plane());
    let total_rows = batch * g.th;
    let row_bytes = POINTS * 4 * g.c_in.max(g.c_out) * g.tw;
    let rows_per_chunk = (CHUNK_BYTES / row_bytes).clamp(1, total_rows);
    let max_nt = rows_per_chunk * g.tw;
    let mut v = vec![0f32; POINTS * g.c_in * max_nt];
    let mut m = vec![0f32; POINTS * g.c_out * max_nt];
    let mut r0 = 0;
    while r0 < total_rows {
        let rows = rows_per_chunk.min(total_rows - r0);
        let nt = rows * g.tw;
        // Input transform, one task per input channel, each writing its own contiguous block
        // v[ci][e][(gr - r0) * tw + tx] (36 rows of nt).
        v[..POINTS * g.c_in * nt]
            .par_chunks_mut(POINTS * nt)
            .enumerate()
            .for_each_init(
                || InputScratch::new(g.tw),
                |scratch, (ci, block)| {
                    let mut rows36: Vec<&mut [f32]> = block.chunks_mut(nt).collect();
                    for k in 0..rows {
                        let (b, ty) = ((r0 + k) / g.th, (r0 + k) % g.th);
                        let start = (b * g.c_in + ci) * in_plane;
                        let src = Plane {
                            data: &input[start..start + in_plane],
                            h: g.h,
                            w: g.w,
                            upsampled: g.upsampled,
                        };
                        let mut outs: Vec<&mut [f32]> = rows36
                            .iter_mut()
                            .map(|r| &mut r[k * g.tw..(k + 1) * g.tw])
                            .collect();
                        transform::input_tile_row(&src, g.tw, ty, scratch, &mut outs);
                    }
                },
            );
        // 36 independent gemms M_e = U_e V_e, one task each.
        let (u_ref, v_ref) = (u, &v[..POINTS * g.c_in * nt]);
        m[..POINTS * g.c_out * nt]
            .par_chunks_mut(g.c_out * nt)
            .enumerate()
            .try_for_each(|(e, dst)| {
                let lhs = View {
                    data: u_ref,
                    offset: e * g.c_in,
                    rs: POINTS * g.c_in,
                    cs: 1,
                };
                // V_e: c_in rows of nt, 36 * nt apart in the channel-major buffer.
                let rhs = View {
                    data: v_ref,
                    offset: e * nt,
                    rs: POINTS * nt,
                    cs: 1,
                };
                // Single-threaded: the 36 products already run in parallel.
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
        out.par_chunks_mut(plane).enumerate().for_each_init(
            || std::array::from_fn(|_| vec![0f32; g.tw]),
            |s: &mut [Vec<f32>; 4 * ALPHA], (bc, dst)| {
                let (b, co) = (bc / g.c_out, bc % g.c_out);
                let lo = r0.max(b * g.th);
                let hi = (r0 + rows).min((b + 1) * g.th);
                let add = bias.map_or(0.0, |bv| bv[co]);
                for gr in lo..hi {
                    let off = (gr - r0) * g.tw;
                    let ms: [&[f32]; POINTS] = std::array::from_fn(|e| {
                        let base = (e * g.c_out + co) * nt + off;
                        &m_ref[base..base + g.tw]
                    });
                    transform::output_tile_row(&ms, g.tw, gr - b * g.th, (g.h, g.w), add, s, dst);
                }
            },
        );
        r0 += rows;
    }
    Ok(())
}

impl CustomOp2 for WinogradOp<'_> {
    fn name(&self) -> &'static str {
        "runai-winograd-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(s1, l1, "winograd: input")?;
        let weight = contiguous_f32(s2, l2, "winograd: weight")?;
        let (&[batch, c_in, sh, sw], &[c_out, wc_in, 3, 3]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("winograd: expected a 4-d input and a (c_out, c_in, 3, 3) weight");
        };
        if c_in != wc_in || self.bias.is_some_and(|b| b.len() != c_out) {
            candle_core::bail!(
                "winograd: input has {c_in} channels, weights expect {wc_in} -> {c_out}"
            );
        }
        let (h, w) = if self.upsample2x {
            (2 * sh, 2 * sw)
        } else {
            (sh, sw)
        };
        let g = Grid {
            c_in,
            c_out,
            h,
            w,
            th: h.div_ceil(TILE),
            tw: w.div_ceil(TILE),
            upsampled: self.upsample2x,
        };
        let out = winograd(&g, batch, input, weight, self.bias)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Worst error relative to the output's largest magnitude. F(4x4, 3x3) in f32 measures
    /// about 1e-5 here (direct convolution about 1e-7): its transforms scale values by up to 8
    /// and its kernel transform by 1/24, which is the price of the 4x fewer multiplies.
    const TOLERANCE: f64 = 5e-5;

    /// Direct 3x3 / padding 1 correlation in f64 (of the 2x upsampled input if asked).
    fn reference(x: &Tensor, wt: &Tensor, bias: &[f32], up: bool) -> Vec<f64> {
        let x = if up {
            let (_, _, h, w) = x.dims4().unwrap();
            x.upsample_nearest2d(2 * h, 2 * w).unwrap()
        } else {
            x.clone()
        };
        let (b, ci, h, w) = x.dims4().unwrap();
        let co = wt.dim(0).unwrap();
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let wv: Vec<f32> = wt.flatten_all().unwrap().to_vec1().unwrap();
        let mut out = vec![0f64; b * co * h * w];
        for n in 0..b {
            for o in 0..co {
                for y in 0..h {
                    for xx in 0..w {
                        let mut acc = bias[o] as f64;
                        for c in 0..ci {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y + ky, xx + kx);
                                    if iy == 0 || ix == 0 || iy > h || ix > w {
                                        continue;
                                    }
                                    let xi = ((n * ci + c) * h + iy - 1) * w + ix - 1;
                                    let wi = ((o * ci + c) * 3 + ky) * 3 + kx;
                                    acc += xv[xi] as f64 * wv[wi] as f64;
                                }
                            }
                        }
                        out[((n * co + o) * h + y) * w + xx] = acc;
                    }
                }
            }
        }
        out
    }

    /// Runs the op and returns its worst error relative to the largest reference value.
    fn worst_error(b: usize, ci: usize, co: usize, (h, w): (usize, usize), up: bool) -> f64 {
        // Seeded uniform values in [-1, 1): the same inputs on every run.
        let mut rng = ChaCha8Rng::seed_from_u64((b * 1000 + ci * 100 + co * 10 + h + w) as u64);
        let mut values =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let x = Tensor::from_vec(values(b * ci * h * w), (b, ci, h, w), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(values(co * ci * 9), (co, ci, 3, 3), &Device::Cpu).unwrap();
        let bias: Vec<f32> = (0..co).map(|i| 0.1 * i as f32 - 0.2).collect();
        let got = x
            .apply_op2_no_bwd(
                &wt,
                &WinogradOp {
                    bias: Some(&bias),
                    upsample2x: up,
                },
            )
            .unwrap();
        let (oh, ow) = if up { (2 * h, 2 * w) } else { (h, w) };
        assert_eq!(got.dims(), &[b, co, oh, ow]);
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want = reference(&x, &wt, &bias, up);
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        assert!(scale > 0.1, "degenerate reference");
        got.iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs() / scale)
            .fold(0.0, f64::max)
    }

    #[test]
    fn matches_direct_convolution_on_edge_shapes() {
        // Sizes that are and are not multiples of the 4x4 tile, down to a single pixel.
        for (b, ci, co, hw) in [
            (2, 3, 5, (8, 8)),
            (1, 4, 3, (5, 7)),
            (2, 2, 2, (1, 1)),
            (1, 5, 4, (9, 2)),
            (3, 6, 7, (6, 11)),
        ] {
            let err = worst_error(b, ci, co, hw, false);
            assert!(
                err < TOLERANCE,
                "{b}x{ci}->{co} {hw:?}: relative error {err}"
            );
        }
    }

    #[test]
    fn fused_upsampling_matches_upsample_then_convolve() {
        for (ci, co, hw) in [(3, 4, (3, 5)), (4, 2, (4, 4)), (2, 3, (1, 3))] {
            let err = worst_error(2, ci, co, hw, true);
            assert!(
                err < 1e-5,
                "upsampled {ci}->{co} {hw:?}: relative error {err}"
            );
        }
    }

    #[test]
    fn chunks_of_tiles_split_images_and_deep_layers_stay_accurate() {
        // 256 input channels: 36 * 4 * 256 * 13 bytes per tile row, so the 8 MiB chunks hold
        // a few tile rows and straddle images; the depth shows how the error grows with c_in.
        let err = worst_error(3, 256, 4, (50, 50), false);
        assert!(err < TOLERANCE, "deep layer: relative error {err}");
    }

    #[test]
    fn refuses_mismatched_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &dev).unwrap();
        let wt = Tensor::zeros((2, 4, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let op = WinogradOp {
            bias: None,
            upsample2x: false,
        };
        assert!(x.apply_op2_no_bwd(&wt, &op).is_err());
        let wt5 = Tensor::zeros((2, 3, 5, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(x.apply_op2_no_bwd(&wt5, &op).is_err());
    }

    #[test]
    fn degenerate_shapes_give_empty_or_bias_only_outputs() {
        let dev = Device::Cpu;
        let zeros = |s: &[usize]| Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap();
        let op = WinogradOp {
            bias: None,
            upsample2x: false,
        };
        // No output channels (a hostile config): an empty result, not a panic.
        let out = zeros(&[1, 3, 8, 8]).apply_op2_no_bwd(&zeros(&[0, 3, 3, 3]), &op);
        assert_eq!(out.unwrap().dims(), &[1, 0, 8, 8]);
        // No input channels: every output pixel is its channel's bias.
        let bias = [0.5f32, -2.0];
        let with_bias = WinogradOp {
            bias: Some(&bias),
            upsample2x: false,
        };
        let out = zeros(&[2, 0, 5, 6])
            .apply_op2_no_bwd(&zeros(&[2, 0, 3, 3]), &with_bias)
            .unwrap();
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v.len(), 2 * 2 * 30);
        for (i, px) in v.chunks(30).enumerate() {
            assert!(px.iter().all(|&p| p == bias[i % 2]), "plane {i}");
        }
    }

    #[test]
    fn applies_by_image_size_and_weight_size() {
        assert!(applies(320, 320, 64, 64));
        assert!(applies(1280, 1280, MIN_SIDE, 40));
        assert!(!applies(1280, 1280, MIN_SIDE - 1, 64));
        assert!(!applies(320, 320, 64, MIN_SIDE - 1));
        assert!(!applies(2560, 1280, 64, 64));
    }
}
