//! Means with 95% confidence intervals over folds × seeds.
//!
//! Why the t-distribution: a bench has few runs per configuration (2–10), where the normal
//! 1.96 would understate the uncertainty badly (the true factor is 12.7 for two runs). The
//! two-sided 95% quantile comes from a table for df ≤ 30 and from the Cornish–Fisher expansion
//! beyond (error < 1e-5 there); both are checked against a numerical integration of the
//! t density in the tests.

/// Two-sided 95% quantiles t(0.975, df) for df = 1..=30.
const T975: [f64; 30] = [
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
];

/// The 0.975 quantile of the standard normal distribution.
const Z975: f64 = 1.959_963_984_540_054;

/// The 0.975 quantile of Student's t with `df` degrees of freedom (df ≥ 1).
pub fn t975(df: usize) -> f64 {
    assert!(df >= 1, "t quantile needs df >= 1");
    if df <= T975.len() {
        return T975[df - 1];
    }
    cornish_fisher_975(df as f64)
}

/// Cornish–Fisher expansion of the t quantile around the normal one (four correction terms).
fn cornish_fisher_975(df: f64) -> f64 {
    let z = Z975;
    let (z3, z5, z7, z9) = (z.powi(3), z.powi(5), z.powi(7), z.powi(9));
    let g1 = (z3 + z) / 4.0;
    let g2 = (5.0 * z5 + 16.0 * z3 + 3.0 * z) / 96.0;
    let g3 = (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / 384.0;
    let g4 = (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / 92160.0;
    z + g1 / df + g2 / df.powi(2) + g3 / df.powi(3) + g4 / df.powi(4)
}

/// Mean and 95% confidence half-width of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanCi {
    /// Number of values.
    pub n: usize,
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator; 0 for one value).
    pub sd: f64,
    /// Half-width of the 95% t interval; `None` for a single value.
    pub half_width: Option<f64>,
}

/// Mean ± t(0.975, n−1)·sd/√n of the finite values; `None` when there is none.
pub fn mean_ci(values: &[f64]) -> Option<MeanCi> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(MeanCi { n, mean, sd: 0.0, half_width: None });
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    Some(MeanCi { n, mean, sd, half_width: Some(t975(n - 1) * sd / (n as f64).sqrt()) })
}

impl MeanCi {
    /// `0.4123 ± 0.0210` (or `0.4123 ± n/a` for one value).
    pub fn display(&self) -> String {
        match self.half_width {
            Some(h) => format!("{:.4} ± {:.4}", self.mean, h),
            None => format!("{:.4} ± n/a", self.mean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ln Γ(x) by the Lanczos approximation (g = 7, n = 9), accurate to ~1e-13.
    fn ln_gamma(x: f64) -> f64 {
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let x = x - 1.0;
        let t = x + 7.5;
        let s: f64 = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
    }

    /// P(T ≤ q) for Student's t by Simpson integration of the density from 0 to q.
    fn t_cdf(q: f64, df: f64) -> f64 {
        let c = (ln_gamma((df + 1.0) / 2.0) - ln_gamma(df / 2.0)).exp() / (df * std::f64::consts::PI).sqrt();
        let pdf = |x: f64| c * (1.0 + x * x / df).powf(-(df + 1.0) / 2.0);
        let n = 20_000;
        let h = q / n as f64;
        let mut s = pdf(0.0) + pdf(q);
        for i in 1..n {
            s += pdf(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        0.5 + s * h / 3.0
    }

    #[test]
    fn quantiles_have_probability_0975_by_integration() {
        for df in (1..=45).chain([60, 100, 120, 500, 10_000]) {
            let p = t_cdf(t975(df), df as f64);
            assert!((p - 0.975).abs() < 2e-6, "df {df}: t975 = {} has cdf {p}", t975(df));
        }
    }

    #[test]
    fn expansion_agrees_with_the_table_where_both_apply() {
        // At df = 30 the table and the expansion must meet (continuity at the switch).
        assert!((cornish_fisher_975(30.0) - T975[29]).abs() < 2e-5, "{}", cornish_fisher_975(30.0));
        assert!((t975(60) - 2.000298).abs() < 1e-5);
        assert!((t975(120) - 1.979930).abs() < 1e-5);
        assert!((t975(1_000_000) - Z975).abs() < 1e-5);
        // Monotone decreasing towards the normal quantile.
        for df in 1..200 {
            assert!(t975(df) > t975(df + 1), "df {df}");
        }
    }

    #[test]
    fn mean_ci_matches_hand_computation() {
        let c = mean_ci(&[0.5, 0.6, 0.7]).unwrap();
        assert_eq!(c.n, 3);
        assert!((c.mean - 0.6).abs() < 1e-12);
        assert!((c.sd - 0.1).abs() < 1e-12);
        // 4.302653 · 0.1 / √3
        assert!((c.half_width.unwrap() - 0.248_413_7).abs() < 1e-6, "{c:?}");
        assert_eq!(c.display(), "0.6000 ± 0.2484");
        let one = mean_ci(&[0.25, f64::NAN]).unwrap();
        assert_eq!((one.n, one.half_width), (1, None));
        assert_eq!(one.display(), "0.2500 ± n/a");
        assert!(mean_ci(&[]).is_none());
        let same = mean_ci(&[0.3, 0.3]).unwrap();
        assert_eq!(same.half_width, Some(0.0));
    }
}
