//! The three linear maps of Winograd F(4x4, 3x3) with the interpolation points 0, 1, -1, 2, -2
//! and infinity (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//! `B^T` (6 input samples to 6 transformed ones), `G` (3 kernel taps to 6) and `A^T` (6 products
//! to 4 outputs). A 2-D transform applies the map over rows, then over columns. Each map is
//! written once for one 6- (or 3-) vector and applied element by element across whole rows
//! of tiles, so every loop runs over contiguous memory and vectorises.

/// Points of the transformed tile per axis (4 outputs + 3 taps - 1).
pub(super) const ALPHA: usize = 6;
/// Outputs of one tile per axis.
pub(super) const TILE: usize = 4;
/// Points of the 2-D transformed tile: one gemm each.
pub(super) const POINTS: usize = ALPHA * ALPHA;

/// `B^T x` for the 6 input samples of one tile axis.
#[inline(always)]
pub(super) fn input_map(x: [f32; 6]) -> [f32; 6] {
    let [x0, x1, x2, x3, x4, x5] = x;
    [
        4.0 * x0 - 5.0 * x2 + x4,
        -4.0 * (x1 + x2) + x3 + x4,
        4.0 * (x1 - x2) - x3 + x4,
        2.0 * (x3 - x1) - x2 + x4,
        2.0 * (x1 - x3) - x2 + x4,
        4.0 * x1 - 5.0 * x3 + x5,
    ]
}

/// `G g` for the 3 taps of one kernel axis.
#[inline(always)]
pub(super) fn kernel_map(g: [f32; 3]) -> [f32; 6] {
    let [g0, g1, g2] = g;
    let even = g0 + g2;
    [
        g0 / 4.0,
        -(even + g1) / 6.0,
        -(even - g1) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// `A^T m` for the 6 products of one tile axis.
#[inline(always)]
pub(super) fn output_map(m: [f32; 6]) -> [f32; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s12, d12) = (m1 + m2, m1 - m2);
    let (s34, d34) = (m3 + m4, m3 - m4);
    [
        m0 + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m5,
    ]
}

/// `out[j][i] = f([inputs[0][i], .., inputs[K-1][i]])[j]` for i in `0..n`: one map applied
/// element by element across whole rows (all slices cut to `n` first, so the loop carries no
/// bounds checks and vectorises).
#[inline(always)]
fn map_rows<const K: usize, const N: usize>(
    inputs: [&[f32]; K],
    out: [&mut [f32]; N],
    n: usize,
    f: impl Fn([f32; K]) -> [f32; N],
) {
    let inputs = inputs.map(|row| &row[..n]);
    let mut out = out.map(|row| &mut row[..n]);
    for i in 0..n {
        let v = f(std::array::from_fn(|k| inputs[k][i]));
        for (row, v) in out.iter_mut().zip(v) {
            row[i] = v;
        }
    }
}

/// The first `N` rows of `c` elements of `buf`, as separate slices.
fn rows_of<const N: usize>(buf: &mut [f32], c: usize) -> [&mut [f32]; N] {
    let mut rows = buf.chunks_exact_mut(c.max(1));
    std::array::from_fn(|_| rows.next().unwrap_or_default())
}

/// `U = G g G^T` of the kernels of one output channel against `c_in` input channels:
/// `taps[ci * 9 + 3 * a + b]` is tap (a, b) of input channel ci; writes `u[e * c_in + ci]` for
/// the 36 points e = 6 i + j. `tmp` holds the 9 de-interleaved tap rows plus the 18 rows of
/// `G g` (27 rows of `c_in`).
pub(super) fn kernels(taps: &[f32], c_in: usize, tmp: &mut [f32], u: &mut [f32]) {
    let (g, gg) = tmp[..27 * c_in].split_at_mut(9 * c_in);
    for (ci, k) in taps[..9 * c_in].chunks_exact(9).enumerate() {
        for (t, &v) in k.iter().enumerate() {
            g[t * c_in + ci] = v;
        }
    }
    let g: Vec<&[f32]> = g.chunks_exact(c_in).collect();
    // Over kernel rows: gg[i][b] = sum_a G[i][a] g[a][b], for each column b; stored at row
    // b * 6 + i so each pass writes six neighbouring rows.
    for (b, dst) in gg.chunks_exact_mut(ALPHA * c_in).enumerate() {
        map_rows(
            [g[b], g[3 + b], g[6 + b]],
            rows_of(dst, c_in),
            c_in,
            kernel_map,
        );
    }
    // Over kernel columns: u[i][j] = sum_b gg[i][b] G[j][b].
    let gg: Vec<&[f32]> = gg.chunks_exact(c_in).collect();
    for (i, dst) in u[..POINTS * c_in]
        .chunks_exact_mut(ALPHA * c_in)
        .enumerate()
    {
        let rows = [gg[i], gg[ALPHA + i], gg[2 * ALPHA + i]];
        map_rows(rows, rows_of(dst, c_in), c_in, kernel_map);
    }
}

/// Per-task buffers of [`input_tile_row`], sized for one tile row of `tw` tiles.
pub(super) struct InputScratch {
    /// The 6 input rows of the tile row, padded: `d[r][x] = input[y0 + r][x - 1]`.
    d: [Vec<f32>; ALPHA],
    /// `B^T d`, row-combined.
    t: [Vec<f32>; ALPHA],
    /// `phase[r][p][tx] = t[r][4 tx + p]`.
    phase: [[Vec<f32>; TILE]; ALPHA],
}

impl InputScratch {
    pub(super) fn new(tw: usize) -> Self {
        let width = TILE * (tw + 1);
        InputScratch {
            d: std::array::from_fn(|_| vec![0f32; width]),
            t: std::array::from_fn(|_| vec![0f32; width]),
            phase: std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; tw + 1])),
        }
    }
}

/// Where one input row comes from: the plane, its size, and whether it is read through a
/// nearest-neighbour 2x upsampling (pixel (y, x) of the conv input is stored at (y/2, x/2)).
pub(super) struct Plane<'a> {
    pub data: &'a [f32],
    /// Size of the convolution's input, after any upsampling.
    pub h: usize,
    pub w: usize,
    pub upsampled: bool,
}

impl Plane<'_> {
    /// Writes input row `y` into `row[1..1 + w]` (zeros elsewhere; all zeros outside the image).
    fn padded_row(&self, y: isize, row: &mut [f32]) {
        row.fill(0.0);
        if y < 0 || y >= self.h as isize {
            return;
        }
        let y = y as usize;
        let dst = &mut row[1..1 + self.w];
        if self.upsampled {
            let sw = self.w / 2;
            let line = &self.data[(y / 2) * sw..(y / 2 + 1) * sw];
            for (pair, &v) in dst.chunks_exact_mut(2).zip(line) {
                pair[0] = v;
                pair[1] = v;
            }
        } else {
            dst.copy_from_slice(&self.data[y * self.w..(y + 1) * self.w]);
        }
    }
}

/// `V = B^T d B` for the `tw` tiles of tile row `ty` of one channel: `out[e][tx]` for the 36
/// points e = 6 k + l (k over rows, l over columns).
#[inline(never)] // kept out of line so profiles attribute its time
pub(super) fn input_tile_row(
    plane: &Plane,
    tw: usize,
    ty: usize,
    s: &mut InputScratch,
    out: &mut [&mut [f32]],
) {
    let width = TILE * (tw + 1);
    let y0 = (TILE * ty) as isize - 1;
    for (r, row) in s.d.iter_mut().enumerate() {
        plane.padded_row(y0 + r as isize, &mut row[..width]);
    }
    let d: [&[f32]; ALPHA] = std::array::from_fn(|r| s.d[r].as_slice());
    map_rows(d, s.t.each_mut().map(Vec::as_mut_slice), width, input_map);
    for (t, phase) in s.t.iter().zip(s.phase.iter_mut()) {
        let [p0, p1, p2, p3] = phase;
        for (tx, q) in t[..width].chunks_exact(TILE).enumerate() {
            (p0[tx], p1[tx], p2[tx], p3[tx]) = (q[0], q[1], q[2], q[3]);
        }
    }
    // Tile tx's six columns are 4 tx .. 4 tx + 5: phases 0-3 at tx, then 0-1 at tx + 1.
    for (k, rows) in out.chunks_exact_mut(ALPHA).take(ALPHA).enumerate() {
        let [p0, p1, p2, p3] = &s.phase[k];
        let cols = [&p0[..], p1, p2, p3, &p0[1..], &p1[1..]];
        let [o0, o1, o2, o3, o4, o5] = rows else {
            return;
        };
        map_rows(
            cols,
            [o0, o1, o2, o3, o4, o5].map(|o| &mut o[..]),
            tw,
            input_map,
        );
    }
}

/// `Y = A^T M A` plus `add` for tile row `ty` of one output plane (`h` x `w`, row-major) from
/// the 36 gemm rows `m[e][tx]`; rows and columns past the image edge are cropped. `s` holds
/// the 24 row-combined rows (4 output rows x 6 columns) of `tw`.
#[inline(never)] // kept out of line so profiles attribute its time
#[allow(clippy::too_many_arguments)]
pub(super) fn output_tile_row(
    m: &[&[f32]; POINTS],
    tw: usize,
    ty: usize,
    (h, w): (usize, usize),
    add: f32,
    s: &mut [Vec<f32>; 4 * ALPHA],
    dst: &mut [f32],
) {
    // A^T over rows, per column l: s[4 l + i][tx].
    for (l, dst) in s.chunks_exact_mut(4).enumerate() {
        let rows: [&[f32]; ALPHA] = std::array::from_fn(|k| m[ALPHA * k + l]);
        let [s0, s1, s2, s3] = dst else {
            return;
        };
        map_rows(
            rows,
            [s0, s1, s2, s3].map(|v| v.as_mut_slice()),
            tw,
            output_map,
        );
    }
    // A over columns, per output row i.
    for i in 0..TILE {
        let y = TILE * ty + i;
        if y >= h {
            break;
        }
        let cols: [&[f32]; ALPHA] = std::array::from_fn(|l| &s[4 * l + i][..tw]);
        let row = &mut dst[y * w..(y + 1) * w];
        let mut quads = row.chunks_exact_mut(TILE);
        for (tx, q) in (&mut quads).enumerate() {
            let v = output_map(std::array::from_fn(|l| cols[l][tx]));
            for (o, v) in q.iter_mut().zip(v) {
                *o = v + add;
            }
        }
        let rest = quads.into_remainder();
        if !rest.is_empty() {
            let tx = tw - 1;
            let v = output_map(std::array::from_fn(|l| cols[l][tx]));
            for (o, v) in rest.iter_mut().zip(v) {
                *o = v + add;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The maps reproduce 1-D correlation: A^T [(G g) * (B^T d)] = (d * g)[0..4].
    #[test]
    fn one_dimensional_identity() {
        let d = [0.3f32, -1.2, 2.5, 0.7, -0.4, 1.9];
        let g = [0.5f32, -0.25, 1.5];
        let (bd, gg) = (input_map(d), kernel_map(g));
        let y = output_map(std::array::from_fn(|i| bd[i] * gg[i]));
        for (i, got) in y.iter().enumerate() {
            let want: f32 = (0..3).map(|k| d[i + k] * g[k]).sum();
            assert!((got - want).abs() < 1e-5, "output {i}: {got} vs {want}");
        }
    }
}
