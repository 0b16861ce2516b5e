//! Deterministic Gauss-Legendre quadrature for the LMS coefficients (diffusers integrates
//! the Lagrange basis polynomials with scipy's quad). The integrands are polynomials of
//! degree < 4, which a 8-node rule integrates exactly up to rounding. Pure math, no state.

/// Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1], by Newton iteration on
/// the Legendre polynomial from the Chebyshev initial guesses.
pub(crate) fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // Three-term recurrence for P_n(x) and its derivative.
            let (mut p0, mut p1) = (1.0f64, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 0 {
                1.0
            } else if n == 1 {
                x
            } else {
                p1
            };
            let pn1 = if n <= 1 { 1.0 } else { p0 };
            dp = n as f64 * (x * pn - pn1) / (x * x - 1.0);
            let dx = pn / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        out.push((x, 2.0 / ((1.0 - x * x) * dp * dp)));
    }
    out
}

/// Integral of `f` over [a, b] (b may be below a) with the 8-point rule.
pub(crate) fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let half = (b - a) / 2.0;
    let mid = (a + b) / 2.0;
    gauss_legendre(8)
        .into_iter()
        .map(|(x, w)| w * f(mid + half * x))
        .sum::<f64>()
        * half
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_cubics() {
        let f = |x: f64| 3.0 * x * x * x - 2.0 * x + 0.5;
        let exact = |x: f64| 0.75 * x.powi(4) - x * x + 0.5 * x;
        let got = integrate(f, 14.6, 4.1);
        assert!((got - (exact(4.1) - exact(14.6))).abs() < 1e-9);
    }

    #[test]
    fn weights_sum_to_two() {
        let s: f64 = gauss_legendre(8).iter().map(|(_, w)| w).sum();
        assert!((s - 2.0).abs() < 1e-13);
    }
}
