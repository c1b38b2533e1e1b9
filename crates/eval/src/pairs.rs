//! Genuine and impostor pair scores for verification metrics, exhaustive or sampled.
//!
//! All unordered pairs of one set (or all query × reference pairs) are scored when there are at
//! most [`MAX_PAIRS`] of them — for one set that is N ≤ 5000; above that, [`MAX_PAIRS`] pairs are
//! drawn uniformly *with replacement* (two distinct rows each) by a SplitMix64 generator seeded by
//! `seed`, in fixed blocks so the sample does not depend on the thread count. Uniform sampling
//! keeps the genuine/impostor ratio of the data, so the precision–recall curve stays honest.
//! `proxima eval` reports exactly these scores.

use proxima_base::SplitMix64;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::knn::Metric;
use crate::matrix::Embeddings;

/// Largest number of pairs scored exhaustively: all pairs of 5000 embeddings.
pub const MAX_PAIRS: usize = 5000 * 4999 / 2;
/// Pairs per independently seeded sampling block.
const SAMPLE_BLOCK: usize = 1 << 16;

/// How the verification pairs were chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairInfo {
    /// `all` or `sampled`.
    pub mode: &'static str,
    /// Pairs that exist.
    pub total_pairs: u128,
    /// Pairs scored.
    pub evaluated_pairs: usize,
    /// Sampling seed (meaningful for `sampled`).
    pub seed: u64,
}

/// Genuine (same label) and impostor pair scores, in the metric's own units.
#[derive(Debug, Clone)]
pub struct PairScores {
    pub genuine: Vec<f64>,
    pub impostor: Vec<f64>,
    pub info: PairInfo,
}

/// Rows prepared for pair scoring (unit-normalised for cosine).
struct Rows {
    data: Vec<f32>,
    dim: usize,
}

impl Rows {
    fn new(e: Embeddings<'_>, metric: Metric, what: &'static str) -> Result<Self> {
        let mut data = e.data().to_vec();
        if metric == Metric::Cosine {
            for (row, values) in data.chunks_mut(e.dim()).enumerate() {
                let norm = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
                if norm <= 0.0 {
                    return Err(EvalError::ZeroVector { what, row });
                }
                values.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
            }
        }
        Ok(Self { data, dim: e.dim() })
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The score of one pair of prepared rows.
fn score(a: &[f32], b: &[f32], metric: Metric) -> f64 {
    let squared = || a.iter().zip(b).map(|(x, y)| f64::from(x - y) * f64::from(x - y)).sum::<f64>();
    match metric {
        Metric::L2 => squared().sqrt(),
        Metric::L2Squared => squared(),
        Metric::Cosine | Metric::Dot => a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum(),
    }
}

/// Concatenates per-thread `(genuine, impostor)` parts in order.
fn concat(parts: Vec<(Vec<f64>, Vec<f64>)>) -> (Vec<f64>, Vec<f64>) {
    let (mut g, mut i) = (Vec::new(), Vec::new());
    for (pg, pi) in parts {
        g.extend(pg);
        i.extend(pi);
    }
    (g, i)
}

/// Scores the pairs of `q` (labels `ql`) with each other, or against `r` when given (see the
/// module docs for when they are sampled, with `seed`).
pub fn pair_scores(q: Embeddings<'_>, ql: &[i64], r: Option<(Embeddings<'_>, &[i64])>, metric: Metric, seed: u64) -> Result<PairScores> {
    let qr = Rows::new(q, metric, "query embeddings")?;
    let rr = match r {
        Some((e, _)) => Some(Rows::new(e, metric, "reference embeddings")?),
        None => None,
    };
    let rl = r.map_or(ql, |r| r.1);
    let (nq, nr) = (q.rows(), rl.len());
    let total: u128 = match rr {
        None => nq as u128 * (nq as u128 - 1) / 2,
        Some(_) => nq as u128 * nr as u128,
    };
    let refs = rr.as_ref().unwrap_or(&qr);
    let (genuine, impostor, mode, evaluated) = if total <= MAX_PAIRS as u128 {
        let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..nq)
            .into_par_iter()
            .map(|a| {
                let (mut g, mut i) = (Vec::new(), Vec::new());
                let start = if rr.is_none() { a + 1 } else { 0 };
                for (b, &lb) in rl.iter().enumerate().skip(start) {
                    let s = score(qr.row(a), refs.row(b), metric);
                    if ql[a] == lb { g.push(s) } else { i.push(s) }
                }
                (g, i)
            })
            .collect();
        let (g, i) = concat(parts);
        (g, i, "all", total as usize)
    } else {
        let blocks = MAX_PAIRS.div_ceil(SAMPLE_BLOCK);
        let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..blocks)
            .into_par_iter()
            .map(|blk| {
                let mut rng = SplitMix64(seed ^ (blk as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
                let count = SAMPLE_BLOCK.min(MAX_PAIRS - blk * SAMPLE_BLOCK);
                let (mut g, mut i) = (Vec::new(), Vec::new());
                for _ in 0..count {
                    let a = rng.below(nq);
                    let b = if rr.is_none() {
                        // A distinct second row: draw from the n − 1 others.
                        let b = rng.below(nq - 1);
                        if b >= a { b + 1 } else { b }
                    } else {
                        rng.below(nr)
                    };
                    let s = score(qr.row(a), refs.row(b), metric);
                    if ql[a] == rl[b] { g.push(s) } else { i.push(s) }
                }
                (g, i)
            })
            .collect();
        let (g, i) = concat(parts);
        (g, i, "sampled", MAX_PAIRS)
    };
    Ok(PairScores { genuine, impostor, info: PairInfo { mode, total_pairs: total, evaluated_pairs: evaluated, seed } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustive_pairs_match_a_brute_force_count() {
        // 5 points on a line, labels 0 0 1 1 1: 1 + 3 = 4 genuine and 6 impostor pairs.
        let data = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        let e = Embeddings::new("q", &data, 1).unwrap();
        let labels = [0, 0, 1, 1, 1];
        let p = pair_scores(e, &labels, None, Metric::L2, 0).unwrap();
        assert_eq!((p.genuine.len(), p.impostor.len(), p.info.mode), (4, 6, "all"));
        let mut g = p.genuine.clone();
        g.sort_by(f64::total_cmp);
        assert_eq!(g, vec![1.0, 1.0, 1.0, 2.0]);
        // Cross pairs: every query against every reference.
        let r = Embeddings::new("r", &data[..2], 1).unwrap();
        let p = pair_scores(e, &labels, Some((r, &[0, 1])), Metric::Dot, 0).unwrap();
        assert_eq!(p.genuine.len() + p.impostor.len(), 10);
        assert_eq!(p.genuine.len(), 2 + 3);
    }

    #[test]
    fn sampled_pairs_are_seeded_and_distinct_rows() {
        // 5001 rows exceed MAX_PAIRS in one set, so the pairs are sampled.
        let n = 5001;
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let e = Embeddings::new("q", &data, 1).unwrap();
        let a = pair_scores(e, &labels, None, Metric::L2, 3).unwrap();
        assert_eq!(a.info.mode, "sampled");
        assert_eq!(a.genuine.len() + a.impostor.len(), MAX_PAIRS);
        // Distinct rows: no zero distance; same-parity pairs have even distance.
        assert!(a.genuine.iter().chain(&a.impostor).all(|&s| s >= 1.0));
        assert!(a.genuine.iter().all(|&s| s % 2.0 == 0.0));
        let frac = a.genuine.len() as f64 / MAX_PAIRS as f64;
        assert!((frac - 0.49995).abs() < 0.01, "{frac}");
        let b = pair_scores(e, &labels, None, Metric::L2, 3).unwrap();
        assert_eq!(a.genuine, b.genuine);
        let c = pair_scores(e, &labels, None, Metric::L2, 4).unwrap();
        assert_ne!(a.genuine, c.genuine);
    }

    #[test]
    fn cosine_rejects_zero_rows() {
        let data = [1.0f32, 0.0, 0.0, 0.0];
        let e = Embeddings::new("q", &data, 2).unwrap();
        let err = pair_scores(e, &[0, 1], None, Metric::Cosine, 0).err().unwrap();
        assert_eq!(err, EvalError::ZeroVector { what: "query embeddings", row: 1 });
    }
}
