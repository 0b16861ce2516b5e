//! The f32 gemm on the copy of the microkernels that `isa::active()` chose (callers pass it). The `gemm` crate
//! picks its copy by feature bits alone (AVX-512 wherever AVX-512F exists, including Zen 4,
//! where it does not pay); calling its generic driver with the AVX2 or AVX-512 microkernel
//! table ourselves lets the CPU model decide (see isa.rs).

use gemm::Parallelism;

use super::isa::Isa;

/// `dst := (dst if read_dst) + beta * lhs * rhs` for an m x n dst with column stride `dst_cs`
/// and row stride `dst_rs` (`gemm::gemm`'s argument order and meaning, strides in elements).
///
/// # Safety
/// Every element addressed by the sizes and strides lies inside its allocation, dst aliases
/// neither input, and no other thread touches dst while this runs (`gemm::gemm`'s contract).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_f32(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_cs: usize,
    dst_rs: usize,
    read_dst: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
    par: Parallelism,
) {
    let ((lhs, lhs_cs, lhs_rs), (rhs, rhs_cs, rhs_rs)) = (lhs, rhs);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 if isa.runs_here() => {
            // The microkernels store columns of dst: solve the transposed problem when dst's
            // columns are the strided side, as gemm::gemm does.
            let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) =
                if dst_cs < dst_rs {
                    (
                        n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs,
                    )
                } else {
                    (
                        m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                    )
                };
            let s = |x: usize| x as isize;
            let args = (
                m,
                n,
                k,
                dst,
                s(dst_cs),
                s(dst_rs),
                read_dst,
                lhs,
                s(lhs_cs),
                s(lhs_rs),
                rhs,
                s(rhs_cs),
                s(rhs_rs),
                beta,
                par,
            );
            // SAFETY: the caller's contract covers the operands; `runs_here()` confirmed the CPU
            // features the chosen microkernels need.
            unsafe {
                if isa == Isa::Avx512 {
                    x86::v4(args)
                } else {
                    x86::v3(args)
                }
            }
        }
        // Portable, a copy this CPU cannot run, or another architecture: the crate's own
        // choice (NEON on ARM).
        _ => {
            // SAFETY: the caller's contract is gemm::gemm's.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst,
                    dst_cs as isize,
                    dst_rs as isize,
                    read_dst,
                    lhs,
                    lhs_cs as isize,
                    lhs_rs as isize,
                    rhs,
                    rhs_cs as isize,
                    rhs_rs as isize,
                    1.0,
                    beta,
                    false,
                    false,
                    false,
                    par,
                )
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use gemm::Parallelism;
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::{MixedSimd, V3, V4};
    use gemm_f32::microkernel::{avx512f::f32 as k4, fma::f32 as k3};

    /// gemm's driver arguments after the transpose: m, n, k, dst, dst_cs, dst_rs, read_dst,
    /// lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, beta, parallelism.
    pub(super) type Args = (
        usize,
        usize,
        usize,
        *mut f32,
        isize,
        isize,
        bool,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        f32,
        Parallelism,
    );

    /// One driver per microkernel table: gemm's generic loop (blocking, packing, threads) over
    /// the table of `$k`, with `$n` f32 lanes per register (gemm-f32's `N`).
    macro_rules! driver {
        ($(#[$doc:meta])* $name:ident, $simd:ty, $k:ident, $n:literal) => {
            $(#[$doc])*
            pub(super) unsafe fn $name(a: Args) {
                let Some(simd) = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new() else {
                    unreachable!("the dispatcher chose a copy this CPU cannot run")
                };
                // SAFETY: forwarded from the caller.
                unsafe {
                    gemm_basic_generic::<
                        _,
                        f32,
                        $n,
                        { $k::MR_DIV_N * $n },
                        { $k::NR },
                        { $k::MR_DIV_N },
                        { $k::H_M },
                        { $k::H_N },
                    >(
                        simd, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9, a.10, a.11, a.12,
                        1.0, a.13, false, false, false, |x, y, z| x * y + z, &$k::UKR,
                        &$k::H_UKR, false, a.14,
                    )
                }
            }
        };
    }

    driver!(
        /// The AVX2+FMA microkernels (gemm-f32's `fma` table).
        ///
        /// # Safety
        /// As `gemm_f32`; the CPU has AVX2 and FMA.
        v3, V3, k3, 8
    );
    driver!(
        /// The AVX-512 microkernels (gemm-f32's `avx512f` table).
        ///
        /// # Safety
        /// As `gemm_f32`; the CPU has AVX-512F (and AVX2, FMA).
        v4, V4, k4, 16
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dst (row-major m x n, row stride n + 3) = (dst if accumulate) + beta * lhs * rhs, in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        (m, n, k): (usize, usize, usize),
        dst: &mut [f32],
        accumulate: bool,
        lhs: (&[f32], usize, usize),
        rhs: (&[f32], usize, usize),
        beta: f32,
    ) {
        let drs = n + 3;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for p in 0..k {
                    let a = lhs.0[i * lhs.2 + p * lhs.1] as f64;
                    let b = rhs.0[p * rhs.2 + j * rhs.1] as f64;
                    acc += a * b;
                }
                let d = &mut dst[i * drs + j];
                *d = (if accumulate { *d as f64 } else { 0.0 } + beta as f64 * acc) as f32;
            }
        }
    }

    /// Every copy this CPU runs gives the product (to f32 rounding), for shapes around the
    /// microkernels' tile sizes, strided and transposed operands, with and without accumulating.
    #[test]
    fn every_copy_computes_the_product() {
        let value = |i: usize| ((i * 7919 + 13) % 211) as f32 / 211.0 - 0.5;
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 40),
            (48, 6, 513),
            (96, 77, 320),
            (130, 1, 64),
            (1, 130, 64),
        ] {
            // lhs m x k row-major; rhs k x n taken transposed from an n x k buffer.
            let lhs: Vec<f32> = (0..m * k).map(value).collect();
            let rhs_t: Vec<f32> = (0..n * k).map(|i| value(i + 5)).collect();
            let drs = n + 3;
            let start: Vec<f32> = (0..m * drs).map(|i| value(i + 11)).collect();
            for accumulate in [false, true] {
                let mut want = start.clone();
                naive(
                    (m, n, k),
                    &mut want,
                    accumulate,
                    (&lhs, 1, k),
                    (&rhs_t, k, 1),
                    0.75,
                );
                for isa in Isa::all_here() {
                    let mut got = start.clone();
                    // SAFETY: every operand holds its m x k, k x n, m x n(+3) elements.
                    unsafe {
                        gemm_f32(
                            isa,
                            (m, n, k),
                            got.as_mut_ptr(),
                            1,
                            drs,
                            accumulate,
                            (lhs.as_ptr(), 1, k),
                            (rhs_t.as_ptr(), k, 1),
                            0.75,
                            Parallelism::None,
                        )
                    };
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let tol = 1e-5 * (k as f32).sqrt() + 1e-6;
                        assert!(
                            (g - w).abs() <= tol,
                            "{isa:?} {m}x{n}x{k} acc {accumulate} [{i}]: {g} vs {w}"
                        );
                    }
                    // The 3 padding columns of every row are never written.
                    for r in 0..m {
                        assert_eq!(
                            &got[r * drs + n..r * drs + drs],
                            &start[r * drs + n..r * drs + drs]
                        );
                    }
                }
            }
        }
    }
}
