//! Branch-free f32 `exp` and exact-erf GELU that LLVM can vectorise, and the row loops built on
//! them (softmax, GEGLU) for the CPU kernels. On x86-64 the loops run from the AVX-512 or the
//! AVX2+FMA-compiled copy that `isa::active()` chose, otherwise from the portable copy; all
//! compute the same polynomials. Accuracy (tested against f64): `exp` within 2 ulp over the normal range,
//! `erf` within 2e-7 absolute, GELU within a few ulp. Never allocates and never panics.

use std::f32::consts::FRAC_1_SQRT_2;

use super::isa::{self, Isa};

/// Above this `exp` overflows to infinity; below -LO_CLAMP it underflows to zero.
const HI_CLAMP: f32 = 89.0;
const LO_CLAMP: f32 = -104.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding it rounds to the nearest integer and leaves that integer in the low
/// mantissa bits, with no float-to-int conversion.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// ln 2 split so that `n * LN2_HI` is exact for the |n| <= 150 used here (Cody-Waite).
const LN2_HI: f32 = 0.69314575;
const LN2_LO: f32 = 1.4286068e-06;
/// exp(r) on [-ln2/2, ln2/2], least-squares fit of the relative error (about 2e-9).
const EXP_POLY: [f32; 7] = [
    1.0,
    1.0,
    0.4999999,
    0.16666421,
    0.04166836,
    0.008374771,
    0.0013829421,
];

/// erf(z) / z as a polynomial in z^2 for |z| < 1. The leading coefficient is the fit's, one ulp
/// below 2/sqrt(pi) in f32, which the other coefficients were fitted around.
#[allow(clippy::approx_constant)]
const ERF_SMALL: [f32; 7] = [
    1.1283791,
    -0.37612626,
    0.112835824,
    -0.026853692,
    0.005188099,
    -0.0008008189,
    7.847259e-05,
];
/// erfc(a) = t exp(-a^2) P(t) with t = 1 / (1 + a/2), for a >= 1 (relative error about 5e-8
/// before rounding; the fit covers every t in (0, 2/3]).
const ERFC_LARGE: [f32; 9] = [
    0.28209478,
    0.2820973,
    0.2467289,
    0.17792031,
    0.07168329,
    0.043474823,
    -0.155765,
    0.02930083,
    0.023489008,
];
const ERF_SPLIT: f32 = 1.0;

/// `a * b + c`, fused where the instruction exists (only the AVX2+FMA copy asks for it).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn horner<const FMA: bool, const N: usize>(coeffs: &[f32; N], x: f32) -> f32 {
    let Some((&last, rest)) = coeffs.split_last() else {
        return 0.0;
    };
    let mut acc = last;
    for &c in rest.iter().rev() {
        acc = madd::<FMA>(acc, x, c);
    }
    acc
}

/// 2^n for -75 <= n <= 64 (always a normal number), built from its exponent bits.
#[inline(always)]
fn pow2(n: i32) -> f32 {
    // Wrapping ops: the range is guaranteed by the caller, and overflow checks (debug builds)
    // would stop LLVM from vectorising the loops.
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

#[inline(always)]
fn exp_impl<const FMA: bool>(x: f32) -> f32 {
    // clamp keeps NaN, restored at the end.
    let xc = x.clamp(LO_CLAMP, HI_CLAMP);
    let shifted = xc * LOG2E + ROUND_MAGIC;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let nf = shifted - ROUND_MAGIC;
    let r = madd::<FMA>(nf, -LN2_LO, madd::<FMA>(nf, -LN2_HI, xc));
    let p = horner::<FMA, 7>(&EXP_POLY, r);
    // n lies in [-150, 128]: split it so each factor is a normal power of two and the product
    // overflows or goes subnormal exactly where exp does.
    let n1 = n >> 1;
    let y = p * pow2(n1) * pow2(n.wrapping_sub(n1));
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// Phi(x) = (1 + erf(x / sqrt 2)) / 2, accurate in absolute terms near 0 and in relative
/// terms in the lower tail (so GELU of large negative inputs keeps its tiny values).
#[inline(always)]
fn phi_impl<const FMA: bool>(x: f32) -> f32 {
    let z = x * FRAC_1_SQRT_2;
    let a = z.abs();
    let w = a * a;
    let small = madd::<FMA>(0.5 * z, horner::<FMA, 7>(&ERF_SMALL, w), 0.5);
    let t = 1.0 / madd::<FMA>(0.5, a, 1.0);
    let half_erfc = 0.5 * t * horner::<FMA, 9>(&ERFC_LARGE, t) * exp_impl::<FMA>(-w);
    let large = if z < 0.0 { half_erfc } else { 1.0 - half_erfc };
    if a < ERF_SPLIT {
        small
    } else {
        large
    }
}

#[cfg(test)]
#[inline(always)]
fn erf_impl<const FMA: bool>(z: f32) -> f32 {
    let a = z.abs();
    let w = a * a;
    let small = z * horner::<FMA, 7>(&ERF_SMALL, w);
    let t = 1.0 / madd::<FMA>(0.5, a, 1.0);
    let erfc = t * horner::<FMA, 9>(&ERFC_LARGE, t) * exp_impl::<FMA>(-w);
    let large = (1.0 - erfc).copysign(z);
    if a < ERF_SPLIT {
        small
    } else {
        large
    }
}

/// e^x (portable copy).
pub(crate) fn exp(x: f32) -> f32 {
    exp_impl::<false>(x)
}

/// erf(x) (portable copy; the polynomial GELU kernels inline is checked through it).
#[cfg(test)]
pub(crate) fn erf(x: f32) -> f32 {
    erf_impl::<false>(x)
}

/// GELU with the exact erf: x * (1 + erf(x / sqrt 2)) / 2 (portable copy).
pub(crate) fn gelu_erf(x: f32) -> f32 {
    x * phi_impl::<false>(x)
}

/// `L` = lanes of the manual reductions: enough independent accumulators for one register
/// (8 for AVX2, 16 for AVX-512).
/// Every element becomes `exp(v - max)`; returns 1 / the sum of the new values (the softmax is
/// the row times it).
#[inline(always)]
fn exp_row<const FMA: bool, const L: usize>(row: &mut [f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for v in m {
        max = max.max(v);
    }
    let mut s = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for (s, v) in s.iter_mut().zip(c.iter_mut()) {
            *v = exp_impl::<FMA>(*v - max);
            *s += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp_impl::<FMA>(*v - max);
        sum += *v;
    }
    sum += s.iter().sum::<f32>();
    1.0 / sum
}

#[inline(always)]
fn softmax_rows_impl<const FMA: bool, const L: usize>(data: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in data.chunks_exact_mut(width) {
        let inv = exp_row::<FMA, L>(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[inline(always)]
fn exp_rows_impl<const FMA: bool, const L: usize>(data: &mut [f32], width: usize, inv: &mut [f32]) {
    if width == 0 {
        return;
    }
    for (row, inv) in data.chunks_exact_mut(width).zip(inv) {
        *inv = exp_row::<FMA, L>(row);
    }
}

#[inline(always)]
fn geglu_rows_impl<const FMA: bool>(src: &[f32], dst: &mut [f32], inner: usize) {
    if inner == 0 {
        return;
    }
    for (out, row) in dst.chunks_exact_mut(inner).zip(src.chunks_exact(2 * inner)) {
        let (value, gate) = row.split_at(inner);
        for ((o, &v), &g) in out.iter_mut().zip(value).zip(gate) {
            *o = v * (g * phi_impl::<FMA>(g));
        }
    }
}

#[inline(always)]
fn affine_silu_impl<const FMA: bool>(out: &mut [f32], xs: &[f32], scale: f32, shift: f32) {
    for (o, &x) in out.iter_mut().zip(xs) {
        let y = madd::<FMA>(x, scale, shift);
        *o = y / (1.0 + exp_impl::<FMA>(-y));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// One compiled copy of every row loop for a set of CPU features, as module `$name`.
    macro_rules! copy {
        ($name:ident, $features:literal, $lanes:literal) => {
            pub(super) mod $name {
                // SAFETY (every function here): callers reach them only through `dispatch!`,
                // after `Isa::runs_here` confirmed the features the copy is compiled for; the
                // bodies are the safe generic loops, so the CPU features are the only
                // requirement.
                use super::super as m;

                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn softmax_rows(data: &mut [f32], width: usize) {
                    m::softmax_rows_impl::<true, $lanes>(data, width)
                }

                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn exp_rows(
                    data: &mut [f32],
                    width: usize,
                    inv: &mut [f32],
                ) {
                    m::exp_rows_impl::<true, $lanes>(data, width, inv)
                }

                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn geglu_rows(
                    src: &[f32],
                    dst: &mut [f32],
                    inner: usize,
                ) {
                    m::geglu_rows_impl::<true>(src, dst, inner)
                }

                #[cfg(test)]
                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn exp_slice(xs: &mut [f32]) {
                    m::exp_slice_impl::<true>(xs)
                }

                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn affine_silu(
                    out: &mut [f32],
                    xs: &[f32],
                    scale: f32,
                    shift: f32,
                ) {
                    m::affine_silu_impl::<true>(out, xs, scale, shift)
                }
            }
        };
    }

    // 8 and 16 f32 lanes: the reductions keep one register of partial sums.
    copy!(v3, "avx2,fma", 8);
    copy!(
        v4,
        "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma",
        16
    );
}

#[cfg(test)]
#[inline(always)]
fn exp_slice_impl<const FMA: bool>(xs: &mut [f32]) {
    for x in xs {
        *x = exp_impl::<FMA>(*x);
    }
}

/// Runs the copy of a row loop that `isa` names, falling back to the portable one where the
/// CPU cannot run it (or off x86-64).
macro_rules! dispatch {
    ($isa:expr, $f:ident, $portable:expr, ($($arg:expr),*)) => {{
        let isa: Isa = $isa;
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: runs_here() confirmed AVX-512 F/BW/CD/DQ/VL, AVX2 and FMA.
            Isa::Avx512 if isa.runs_here() => unsafe { x86::v4::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: runs_here() confirmed AVX2 and FMA.
            Isa::Avx2Fma | Isa::Avx512 if Isa::Avx2Fma.runs_here() => unsafe {
                x86::v3::$f($($arg),*)
            },
            _ => $portable,
        }
    }};
}

/// In place, every `width`-long row of `data` becomes its softmax (max-subtracted, so any
/// finite input is safe). A trailing partial row is left untouched.
pub(crate) fn softmax_rows(data: &mut [f32], width: usize) {
    softmax_rows_with(isa::active(), data, width)
}

/// `softmax_rows` on a chosen copy of the loop (tests compare the copies).
pub(crate) fn softmax_rows_with(isa: Isa, data: &mut [f32], width: usize) {
    dispatch!(
        isa,
        softmax_rows,
        softmax_rows_impl::<false, 8>(data, width),
        (data, width)
    )
}

/// The softmax of every `width`-long row of `data` without its last pass: each row becomes
/// `exp(v - max)` and `inv[r]` the factor that normalises row r (for a caller that can apply
/// it to a smaller result, as attention does to `scores * v`). Rows beyond `inv.len()` and a
/// trailing partial row are left untouched.
pub(crate) fn exp_rows(data: &mut [f32], width: usize, inv: &mut [f32]) {
    exp_rows_with(isa::active(), data, width, inv)
}

/// `exp_rows` on a chosen copy of the loop.
pub(crate) fn exp_rows_with(isa: Isa, data: &mut [f32], width: usize, inv: &mut [f32]) {
    dispatch!(
        isa,
        exp_rows,
        exp_rows_impl::<false, 8>(data, width, inv),
        (data, width, inv)
    )
}

/// GEGLU: for every row of `src` (`2 * inner` long: value then gate, diffusers' chunk order),
/// writes `value * gelu_erf(gate)` into the matching `inner`-long row of `dst`.
pub(crate) fn geglu_rows(src: &[f32], dst: &mut [f32], inner: usize) {
    geglu_rows_with(isa::active(), src, dst, inner)
}

/// `geglu_rows` on a chosen copy of the loop.
pub(crate) fn geglu_rows_with(isa: Isa, src: &[f32], dst: &mut [f32], inner: usize) {
    dispatch!(
        isa,
        geglu_rows,
        geglu_rows_impl::<false>(src, dst, inner),
        (src, dst, inner)
    )
}

/// `x = e^x` for every element, on a chosen copy of the loop (tests compare the copies).
#[cfg(test)]
pub(crate) fn exp_slice_with(isa: Isa, xs: &mut [f32]) {
    dispatch!(isa, exp_slice, exp_slice_impl::<false>(xs), (xs))
}

/// `out[i] = silu(xs[i] * scale + shift)` (the normalise + affine + SiLU pass of GroupNorm);
/// stops at the shorter slice.
pub(crate) fn affine_silu(out: &mut [f32], xs: &[f32], scale: f32, shift: f32) {
    affine_silu_with(isa::active(), out, xs, scale, shift)
}

/// `affine_silu` on a chosen copy of the loop.
pub(crate) fn affine_silu_with(isa: Isa, out: &mut [f32], xs: &[f32], scale: f32, shift: f32) {
    dispatch!(
        isa,
        affine_silu,
        affine_silu_impl::<false>(out, xs, scale, shift),
        (out, xs, scale, shift)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference erf in f64: Maclaurin series below 2.5, continued fraction for erfc above.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 2.5 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-18 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...))))
            let mut frac = a;
            for k in (1..200).rev() {
                frac = a + (k as f64 / 2.0) / frac;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / frac
        };
        r.copysign(x)
    }

    fn ulp(v: f32) -> f64 {
        let v = v.abs();
        (f32::from_bits(v.to_bits() + 1) - v) as f64
    }

    #[test]
    fn reference_erf_is_right() {
        // Known values: erf(0.5), erf(1), erf(2), erf(3).
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!((erf64(x) - want).abs() < 1e-14, "erf64({x})");
        }
    }

    #[test]
    fn exp_within_two_ulp_over_the_normal_range() {
        let n = 400_000;
        let xs: Vec<f32> = (0..=n)
            .map(|i| -87.3 + (88.7 + 87.3) * i as f32 / n as f32)
            .collect();
        for isa in Isa::all_here() {
            let mut ys = xs.clone();
            exp_slice_with(isa, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp();
                let err = (y as f64 - want).abs() / ulp(want as f32);
                assert!(
                    err <= 2.0,
                    "{isa:?} exp({x}) = {y}, want {want} ({err} ulp)"
                );
            }
        }
        for x in [-1.0e-7f32, 0.0, 1.0e-7, 1.0, -1.0] {
            let want = (x as f64).exp();
            assert!(
                (exp(x) as f64 - want).abs() <= 2.0 * ulp(want as f32),
                "exp({x})"
            );
        }
    }

    #[test]
    fn exp_edges() {
        for isa in Isa::all_here() {
            let mut ys = vec![
                -200.0,
                -104.5,
                -95.0,
                89.0,
                100.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
            ];
            exp_slice_with(isa, &mut ys);
            assert_eq!(ys[0], 0.0, "{isa:?}");
            assert_eq!(ys[1], 0.0, "{isa:?}");
            let want = (-95f64).exp();
            assert!(
                (ys[2] as f64 - want).abs() <= 2e-45,
                "{isa:?} subnormal {}",
                ys[2]
            );
            assert_eq!(ys[3], f32::INFINITY, "{isa:?}");
            assert_eq!(ys[4], f32::INFINITY, "{isa:?}");
            assert_eq!(ys[5], f32::INFINITY, "{isa:?}");
            assert_eq!(ys[6], 0.0, "{isa:?}");
            assert!(ys[7].is_nan(), "{isa:?}");
        }
    }

    #[test]
    fn erf_within_2e7_absolute() {
        let n = 200_000;
        let mut worst = 0f64;
        for i in 0..=n {
            let x = -12.0 + 24.0 * i as f32 / n as f32;
            let err = (erf(x) as f64 - erf64(x as f64)).abs();
            worst = worst.max(err);
            assert!(
                err <= 2e-7,
                "erf({x}) = {}, want {}",
                erf(x),
                erf64(x as f64)
            );
        }
        assert!(worst > 0.0);
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn gelu_matches_f64_in_every_copy() {
        let n = 200_000;
        let gates: Vec<f32> = (0..n).map(|i| -20.0 + 40.0 * i as f32 / n as f32).collect();
        // value = 1 so the GEGLU output is the GELU itself.
        let mut src = vec![1f32; 2 * n];
        src[n..].copy_from_slice(&gates);
        for isa in Isa::all_here() {
            let mut out = vec![0f32; n];
            geglu_rows_with(isa, &src, &mut out, n);
            for (&g, &y) in gates.iter().zip(&out) {
                let z = g as f64 / std::f64::consts::SQRT_2;
                // Lower tail through erfc directly so the reference keeps its precision.
                let phi = if z < -2.0 {
                    let a = -z;
                    let mut frac = a;
                    for k in (1..200).rev() {
                        frac = a + (k as f64 / 2.0) / frac;
                    }
                    0.5 * (-a * a).exp() / std::f64::consts::PI.sqrt() / frac
                } else {
                    0.5 * (1.0 + erf64(z))
                };
                let want = g as f64 * phi;
                let err = (y as f64 - want).abs();
                // A few ulp of the result, or 2e-7 of erf's absolute error scaled by |x|/2.
                let tol = (4.0 * ulp(want as f32)).max(1.2e-7 * (g as f64).abs());
                assert!(err <= tol, "{isa:?} gelu({g}) = {y}, want {want}");
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_f64() {
        let width = 77;
        let data: Vec<f32> = (0..width * 5)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        for isa in Isa::all_here() {
            let mut got = data.clone();
            softmax_rows_with(isa, &mut got, width);
            for (row, src) in got.chunks(width).zip(data.chunks(width)) {
                let max = src.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                let sum: f64 = src.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (&g, &s) in row.iter().zip(src) {
                    let want = (s as f64 - max).exp() / sum;
                    assert!((g as f64 - want).abs() <= 1e-6 * want + 1e-12, "{isa:?}");
                }
            }
        }
    }

    #[test]
    fn exp_rows_times_inv_is_the_softmax() {
        let width = 4099;
        let data: Vec<f32> = (0..width * 3)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        for isa in Isa::all_here() {
            let mut want = data.clone();
            softmax_rows_with(isa, &mut want, width);
            let mut got = data.clone();
            let mut inv = [0f32; 3];
            exp_rows_with(isa, &mut got, width, &mut inv);
            for (r, row) in got.chunks(width).enumerate() {
                for (&g, &w) in row.iter().zip(&want[r * width..]) {
                    assert_eq!(g * inv[r], w, "{isa:?} row {r}");
                }
            }
        }
    }

    #[test]
    fn affine_silu_matches_f64_on_every_copy() {
        let xs: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.013).collect();
        let (scale, shift) = (1.7f32, -0.3f32);
        for isa in Isa::all_here() {
            let mut out = vec![0f32; xs.len()];
            affine_silu_with(isa, &mut out, &xs, scale, shift);
            for (&x, &o) in xs.iter().zip(&out) {
                let y = x as f64 * scale as f64 + shift as f64;
                let want = y / (1.0 + (-y).exp());
                // y is formed in f32 (rounding of x*scale and of the sum, silu' <= 1.1), then the
                // exp and division add a few ulp of the result.
                let eps = f32::EPSILON as f64;
                let y_err = 2.0 * eps * ((x * scale).abs() as f64 + shift.abs() as f64);
                let tol = 1.1 * y_err + 4.0 * eps * want.abs();
                assert!(
                    (o as f64 - want).abs() <= tol,
                    "{isa:?} x={x}: {o} vs {want}"
                );
            }
        }
    }
}
