//! Shapiro-Wilk W statistic, for the PRADA model-extraction test.
//!
//! PRADA (Juuti et al., 2019) watches the distances between each of a
//! client's queries and its nearest earlier query: for benign clients they
//! look normally distributed, for extraction attacks (synthetic, uniformly
//! spread or grid-like queries) they do not, and W falls below about 0.9.
//!
//! W is computed with Royston's (1992) approximation of the coefficients
//! (`m_i` from normal quantiles at `(i - 3/8)/(n + 1/4)`, corrected end
//! coefficients), accurate to a few 1e-3 for 5 <= n <= 5000. No maintained
//! crate offers Shapiro-Wilk with a licence and dependency footprint that
//! fits a pure library here (statistics crates bring their own linear
//! algebra and are not on this crate's allowed dependency list), and the
//! test needs only the statistic, not its p-value.

use std::sync::OnceLock;

/// Smallest sample for which [`w`] returns a value.
pub const MIN_N: usize = 5;
/// Largest sample size whose coefficients are cached.
const CACHE_MAX: usize = 64;

/// Inverse of the standard normal CDF (Acklam's rational approximation,
/// relative error below 1.2e-9), for `0 < p < 1`.
// The coefficients are quoted as published, digit for digit.
#[allow(clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let lo = 0.02425;
    if p < lo {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - lo {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Royston's coefficients `a_1..a_n` for sample size `n >= MIN_N`.
fn coefficients(n: usize) -> Vec<f64> {
    let nf = n as f64;
    let m: Vec<f64> = (1..=n).map(|i| normal_quantile((i as f64 - 0.375) / (nf + 0.25))).collect();
    let mm: f64 = m.iter().map(|x| x * x).sum();
    let u = 1.0 / nf.sqrt();
    let poly = |c: [f64; 6]| c[0] + c[1] * u + c[2] * u * u + c[3] * u.powi(3) + c[4] * u.powi(4) + c[5] * u.powi(5);
    let an = poly([m[n - 1] / mm.sqrt(), 0.221157, -0.147981, -2.071190, 4.434685, -2.706056]);
    let an1 = poly([m[n - 2] / mm.sqrt(), 0.042981, -0.293762, -1.752461, 5.682633, -3.582633]);
    let phi = (mm - 2.0 * m[n - 1].powi(2) - 2.0 * m[n - 2].powi(2)) / (1.0 - 2.0 * an * an - 2.0 * an1 * an1);
    let mut a: Vec<f64> = m.iter().map(|x| x / phi.sqrt()).collect();
    a[n - 1] = an;
    a[n - 2] = an1;
    a[0] = -an;
    a[1] = -an1;
    a
}

fn cached(n: usize) -> Option<&'static [f64]> {
    static CACHE: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let table =
        CACHE.get_or_init(|| (0..=CACHE_MAX).map(|n| if n >= MIN_N { coefficients(n) } else { Vec::new() }).collect());
    table.get(n).map(Vec::as_slice)
}

/// The W statistic of `values` (sorted in place). `None` for fewer than
/// [`MIN_N`] values; `0` when all values are equal (a point mass is as far
/// from normal as it gets).
pub fn w(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n < MIN_N || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / n as f64;
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    if ss <= f64::EPSILON * mean.abs().max(1e-300) * n as f64 {
        return Some(0.0);
    }
    let owned;
    let a = match cached(n) {
        Some(a) => a,
        None => {
            owned = coefficients(n);
            &owned
        }
    };
    let b: f64 = a.iter().zip(values.iter()).map(|(a, x)| a * x).sum();
    Some((b * b / ss).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_known_values() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!((normal_quantile(0.001) + 3.090232).abs() < 1e-5);
    }

    #[test]
    fn normal_data_has_high_w_and_skewed_data_low() {
        // Normal quantiles themselves: W close to 1.
        let mut normal: Vec<f64> = (1..=32).map(|i| normal_quantile((f64::from(i) - 0.5) / 32.0)).collect();
        let wn = w(&mut normal).expect("w");
        assert!(wn > 0.97, "{wn}");
        // Exponential-like (strongly skewed) data.
        let mut skewed: Vec<f64> = (1..=32).map(|i| -(1.0 - (f64::from(i) - 0.5) / 32.0f64).ln().powi(3)).collect();
        let ws = w(&mut skewed).expect("w");
        assert!(ws < 0.8, "{ws}");
        // R: shapiro.test(c(148,154,158,160,161,162,166,170,182,195,236)) gives W = 0.79
        let mut x = [148.0, 154.0, 158.0, 160.0, 161.0, 162.0, 166.0, 170.0, 182.0, 195.0, 236.0];
        let wx = w(&mut x).expect("w");
        assert!((wx - 0.79).abs() < 0.01, "{wx}");
        assert_eq!(w(&mut [1.0, 1.0, 1.0, 1.0, 1.0]), Some(0.0));
        assert_eq!(w(&mut [1.0, 2.0]), None);
    }
}
