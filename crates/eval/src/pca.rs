//! 2-D PCA projection for plots.
//!
//! Why: a quick look at embeddings (do classes form blobs?) needs a deterministic
//! low-dimensional view; the top-2 principal axes are computed from the `d × d`
//! covariance by power iteration with deflation — no LAPACK dependency, O(n·d² + d²·iters).

use crate::error::{EvalError, Result};
use crate::matrix::Embeddings;

/// Project rows onto the first two principal axes of the (centred) data.
///
/// # Shapes
/// `data`: `n × d` (`n ≥ 2`); result `n × 2` row-major. Axis signs are fixed so that the
/// largest-magnitude component of each axis is positive.
pub fn pca_2d(data: Embeddings<'_>) -> Result<Vec<f32>> {
    let (n, d) = (data.rows(), data.dim());
    if n < 2 {
        return Err(EvalError::InvalidParameter { name: "rows", value: n.to_string(), reason: "PCA needs at least 2 rows" });
    }
    let mut mean = vec![0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(data.row(i)) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; d * d];
    let mut c = vec![0f64; d];
    for i in 0..n {
        for (t, (&v, m)) in data.row(i).iter().zip(&mean).enumerate() {
            c[t] = v as f64 - m;
        }
        for a in 0..d {
            let ca = c[a];
            for b in a..d {
                cov[a * d + b] += ca * c[b];
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[a * d + b] = cov[b * d + a];
        }
    }
    let mut axes: Vec<Vec<f64>> = Vec::new();
    for _ in 0..2.min(d) {
        let mut v: Vec<f64> = (0..d).map(|t| 1.0 + (t as f64) * 1e-3).collect();
        for _ in 0..500 {
            let mut w = vec![0f64; d];
            for a in 0..d {
                w[a] = (0..d).map(|b| cov[a * d + b] * v[b]).sum();
            }
            for ax in &axes {
                let p: f64 = w.iter().zip(ax).map(|(x, y)| x * y).sum();
                w.iter_mut().zip(ax).for_each(|(x, y)| *x -= p * y);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            w.iter_mut().for_each(|x| *x /= norm);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if delta < 1e-12 {
                break;
            }
        }
        let big = v.iter().copied().fold(0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        axes.push(v);
    }
    while axes.len() < 2 {
        axes.push(vec![0.0; d]);
    }
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        for ax in &axes {
            out.push(data.row(i).iter().zip(&mean).zip(ax).map(|((&v, m), a)| (v as f64 - m) * a).sum::<f64>() as f32);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_dominant_axes() {
        // Points spread along x (variance large) and y (small), constant z.
        let mut data = Vec::new();
        for i in 0..20 {
            let x = i as f32 - 9.5;
            // Sign pattern + - - + is uncorrelated with x over whole blocks of 4.
            let y = if i % 4 == 0 || i % 4 == 3 { 0.5 } else { -0.5 };
            data.extend_from_slice(&[x, y, 3.0]);
        }
        let e = Embeddings::new("x", &data, 3).unwrap();
        let p = pca_2d(e).unwrap();
        for i in 0..20 {
            assert!((p[2 * i] - (i as f32 - 9.5)).abs() < 1e-4);
            assert!((p[2 * i + 1].abs() - 0.5).abs() < 1e-4);
        }
        let one = Embeddings::new("x", &data[..3], 3).unwrap();
        assert!(pca_2d(one).is_err());
    }
}
