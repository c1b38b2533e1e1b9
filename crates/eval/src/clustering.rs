//! Clustering quality: seeded k-means, then NMI and AMI exactly as scikit-learn.
//!
//! Why: pytorch-metric-learning reports NMI/AMI of a k-means clustering (k = number of
//! classes) next to the retrieval metrics; the sklearn definitions (arithmetic mean
//! normalisation, natural log, the hypergeometric expected mutual information, and the
//! special cases for single-cluster labelings) are reproduced to the last branch so the
//! numbers agree with published ones. k-means is seeded and single-threaded in its
//! reductions so the same seed always gives the same clustering.
//!
//! Definitions, with contingency `n_ij`, row sums `a_i`, column sums `b_j`, `N` samples:
//! * `MI = Σ n_ij/N · ln(N n_ij / (a_i b_j))`, `H(U) = −Σ a_i/N ln(a_i/N)`
//! * `NMI = MI / ((H(U)+H(V))/2)`
//! * `E[MI] = Σ_ij Σ_{n=max(1,a_i+b_j−N)}^{min(a_i,b_j)} n/N ln(N n/(a_i b_j)) ·
//!   a_i! b_j! (N−a_i)! (N−b_j)! / (N! n! (a_i−n)! (b_j−n)! (N−a_i−b_j+n)!)`
//! * `AMI = (MI − E[MI]) / ((H(U)+H(V))/2 − E[MI])`
//!
//! Special cases (sklearn 1.x): both labelings a single cluster → NMI = AMI = 1; one side a
//! single cluster → MI = 0, NMI = 0, AMI = 0.

use proxima_base::SplitMix64;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::knn::{Metric, knn};
use crate::matrix::{Embeddings, check_labels};

/// Result of [`evaluate_clustering`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringMetrics {
    /// Normalised mutual information (arithmetic).
    pub nmi: f64,
    /// Adjusted mutual information (arithmetic).
    pub ami: f64,
    /// Number of k-means clusters (= number of classes).
    pub num_clusters: usize,
    /// The k-means seed.
    pub seed: u64,
}

/// Map arbitrary labels to dense ids `0..n_distinct` (in order of first appearance).
fn dense(labels: &[i64]) -> (Vec<usize>, usize) {
    let mut m = HashMap::new();
    let ids = labels
        .iter()
        .map(|l| {
            let n = m.len();
            *m.entry(*l).or_insert(n)
        })
        .collect();
    (ids, m.len())
}

struct Contingency {
    n: usize,
    a: Vec<usize>,
    b: Vec<usize>,
    /// Non-zero cells `(i, j, n_ij)`.
    cells: Vec<(usize, usize, usize)>,
}

fn contingency(labels_true: &[i64], labels_pred: &[i64]) -> Result<Contingency> {
    check_labels("labels_pred", labels_true.len(), labels_pred)?;
    if labels_true.is_empty() {
        return Err(EvalError::Empty { what: "labels_true" });
    }
    let (t, nt) = dense(labels_true);
    let (p, np) = dense(labels_pred);
    let mut a = vec![0; nt];
    let mut b = vec![0; np];
    let mut cells: HashMap<(usize, usize), usize> = HashMap::new();
    for (&i, &j) in t.iter().zip(&p) {
        a[i] += 1;
        b[j] += 1;
        *cells.entry((i, j)).or_insert(0) += 1;
    }
    let mut cells: Vec<(usize, usize, usize)> = cells.into_iter().map(|((i, j), c)| (i, j, c)).collect();
    cells.sort_unstable();
    Ok(Contingency { n: labels_true.len(), a, b, cells })
}

fn entropy(counts: &[usize], n: usize) -> f64 {
    if counts.len() == 1 {
        return 0.0;
    }
    let n = n as f64;
    -counts.iter().filter(|&&c| c > 0).map(|&c| (c as f64 / n) * ((c as f64).ln() - n.ln())).sum::<f64>()
}

fn mutual_info(c: &Contingency) -> f64 {
    if c.a.len() == 1 || c.b.len() == 1 {
        return 0.0;
    }
    let n = c.n as f64;
    let mut mi = 0.0;
    for &(i, j, nij) in &c.cells {
        let nij_f = nij as f64;
        let p = nij_f / n;
        let outer = (c.a[i] as f64) * (c.b[j] as f64);
        let term = p * (nij_f.ln() - n.ln()) + p * (-outer.ln() + n.ln() + n.ln());
        if term.abs() >= f64::EPSILON {
            mi += term;
        }
    }
    mi.max(0.0)
}

fn expected_mutual_info(c: &Contingency) -> f64 {
    if c.a.len() == 1 || c.b.len() == 1 {
        return 0.0;
    }
    let n = c.n;
    // ln(x!) for x = 0..=n, by cumulative sums.
    let mut lf = vec![0f64; n + 1];
    for x in 1..=n {
        lf[x] = lf[x - 1] + (x as f64).ln();
    }
    let nf = n as f64;
    let mut emi = 0.0;
    for &ai in &c.a {
        for &bj in &c.b {
            let start = (ai + bj).saturating_sub(n).max(1);
            let end = ai.min(bj);
            let fixed = lf[ai] + lf[bj] + lf[n - ai] + lf[n - bj] - lf[n];
            for nij in start..=end {
                let nij_f = nij as f64;
                let term1 = nij_f / nf;
                let term2 = (nf.ln() + nij_f.ln()) - (ai as f64).ln() - (bj as f64).ln();
                let gln = fixed - lf[nij] - lf[ai - nij] - lf[bj - nij] - lf[n + nij - ai - bj];
                emi += term1 * term2 * gln.exp();
            }
        }
    }
    emi
}

/// Normalised mutual information, sklearn's `normalized_mutual_info_score` (arithmetic).
pub fn nmi(labels_true: &[i64], labels_pred: &[i64]) -> Result<f64> {
    let c = contingency(labels_true, labels_pred)?;
    if c.a.len() == 1 && c.b.len() == 1 {
        return Ok(1.0);
    }
    let mi = mutual_info(&c);
    if mi == 0.0 {
        return Ok(0.0);
    }
    let norm = 0.5 * (entropy(&c.a, c.n) + entropy(&c.b, c.n));
    Ok(mi / norm)
}

/// Adjusted mutual information, sklearn's `adjusted_mutual_info_score` (arithmetic).
pub fn ami(labels_true: &[i64], labels_pred: &[i64]) -> Result<f64> {
    let c = contingency(labels_true, labels_pred)?;
    if c.a.len() == 1 && c.b.len() == 1 {
        return Ok(1.0);
    }
    let mi = mutual_info(&c);
    let emi = expected_mutual_info(&c);
    let norm = 0.5 * (entropy(&c.a, c.n) + entropy(&c.b, c.n));
    let mut denom = norm - emi;
    denom = if denom < 0.0 { denom.min(-f64::EPSILON) } else { denom.max(f64::EPSILON) };
    Ok((mi - emi) / denom)
}

/// Output of [`kmeans`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KMeans {
    /// Cluster of each row.
    pub assignments: Vec<usize>,
    /// `k × d` row-major centres.
    pub centroids: Vec<f32>,
    /// Lloyd iterations run.
    pub iterations: usize,
    /// Sum of squared distances of rows to their centres.
    pub inertia: f64,
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum()
}

/// Seeded k-means: greedy k-means++ initialisation then Lloyd iterations (deterministic).
///
/// # Shapes
/// `data`: `n × d`; result centroids `k × d`, assignments `n`. Requires `1 <= k <= n`.
pub fn kmeans(data: Embeddings<'_>, k: usize, seed: u64, max_iter: usize) -> Result<KMeans> {
    let n = data.rows();
    let d = data.dim();
    if k == 0 || k > n {
        return Err(EvalError::InvalidK { k, max: n, reason: "k-means needs 1 <= k <= number of rows" });
    }
    let mut rng = SplitMix64(seed);
    // Greedy k-means++ (as sklearn): 2 + ln k candidates per step, keep the best.
    let trials = 2 + (k as f64).ln() as usize;
    let mut centroids = Vec::with_capacity(k * d);
    let first = (rng.next_u64() % n as u64) as usize;
    centroids.extend_from_slice(data.row(first));
    let mut closest: Vec<f64> = (0..n).map(|i| sq_dist(data.row(i), data.row(first))).collect();
    for _ in 1..k {
        let total: f64 = closest.iter().sum();
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let cand = if total > 0.0 {
                let mut target = rng.next_f64() * total;
                let mut pick = n - 1;
                for (i, &c) in closest.iter().enumerate() {
                    if target < c {
                        pick = i;
                        break;
                    }
                    target -= c;
                }
                pick
            } else {
                (rng.next_u64() % n as u64) as usize
            };
            let upd: Vec<f64> = (0..n).map(|i| closest[i].min(sq_dist(data.row(i), data.row(cand)))).collect();
            let pot: f64 = upd.iter().sum();
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, upd));
            }
        }
        let (_, cand, upd) = best.expect("at least one trial");
        centroids.extend_from_slice(data.row(cand));
        closest = upd;
    }

    let mut assignments = vec![usize::MAX; n];
    let mut iterations = 0;
    for _ in 0..max_iter.max(1) {
        iterations += 1;
        let c = Embeddings::new("centroids", &centroids, d)?;
        let nn = knn(data, Some(c), 1, Metric::L2Squared)?;
        let changed = nn.indices.iter().zip(&assignments).filter(|(a, b)| a != b).count();
        assignments.copy_from_slice(&nn.indices);
        // Recompute centres in f64, sequentially (deterministic).
        let mut sums = vec![0f64; k * d];
        let mut sizes = vec![0usize; k];
        for (i, &a) in assignments.iter().enumerate() {
            sizes[a] += 1;
            for (s, &v) in sums[a * d..(a + 1) * d].iter_mut().zip(data.row(i)) {
                *s += v as f64;
            }
        }
        // Empty cluster: move it to the row farthest from its centre.
        for cl in 0..k {
            if sizes[cl] == 0 {
                let far = (0..n).max_by(|&x, &y| nn.scores[x].total_cmp(&nn.scores[y]).then(y.cmp(&x))).unwrap_or(0);
                for (s, &v) in sums[cl * d..(cl + 1) * d].iter_mut().zip(data.row(far)) {
                    *s = v as f64;
                }
                sizes[cl] = 1;
            }
        }
        for cl in 0..k {
            for t in 0..d {
                centroids[cl * d + t] = (sums[cl * d + t] / sizes[cl] as f64) as f32;
            }
        }
        if changed == 0 {
            break;
        }
    }
    let inertia = (0..n).map(|i| sq_dist(data.row(i), &centroids[assignments[i] * d..(assignments[i] + 1) * d])).sum();
    Ok(KMeans { assignments, centroids, iterations, inertia })
}

/// k-means with k = number of classes, then NMI and AMI against the labels.
pub fn evaluate_clustering(data: Embeddings<'_>, labels: &[i64], seed: u64) -> Result<ClusteringMetrics> {
    check_labels("embeddings", data.rows(), labels)?;
    let (_, k) = dense(labels);
    if k == 1 {
        return Err(EvalError::SingleClass { what: "clustering labels", label: labels[0] });
    }
    let km = kmeans(data, k, seed, 100)?;
    let pred: Vec<i64> = km.assignments.iter().map(|&a| a as i64).collect();
    Ok(ClusteringMetrics { nmi: nmi(labels, &pred)?, ami: ami(labels, &pred)?, num_clusters: k, seed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_nmi() {
        // true [0,0,1,1], pred [0,0,0,1]: H(U)=ln2, H(V)= -(3/4 ln 3/4 + 1/4 ln 1/4)
        // MI = 1/2 ln(4*2/(2*3)) + 1/4 ln(4*1/(2*3)) + 1/4 ln(4*1/(2*1))
        let t = [0i64, 0, 1, 1];
        let p = [0i64, 0, 0, 1];
        let hu = 2f64.ln();
        let hv = -(0.75 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        let mi = 0.5 * (8.0f64 / 6.0).ln() + 0.25 * (4.0f64 / 6.0).ln() + 0.25 * 2f64.ln();
        assert!((nmi(&t, &p).unwrap() - mi / ((hu + hv) / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn special_cases_follow_sklearn() {
        assert_eq!(nmi(&[3, 3, 3], &[5, 5, 5]).unwrap(), 1.0);
        assert_eq!(ami(&[3, 3, 3], &[5, 5, 5]).unwrap(), 1.0);
        assert_eq!(nmi(&[0, 1, 2], &[0, 0, 0]).unwrap(), 0.0);
        assert_eq!(ami(&[0, 1, 2], &[0, 0, 0]).unwrap(), 0.0);
        assert_eq!(nmi(&[0, 0, 1, 1], &[1, 1, 0, 0]).unwrap(), 1.0);
        assert!((ami(&[0, 0, 1, 1], &[1, 1, 0, 0]).unwrap() - 1.0).abs() < 1e-12);
        assert!(matches!(nmi(&[0, 1], &[0]), Err(EvalError::LabelCountMismatch { .. })));
        assert!(matches!(ami(&[], &[]), Err(EvalError::Empty { .. })));
    }

    #[test]
    fn kmeans_separates_blobs_and_is_deterministic() {
        let mut data = Vec::new();
        let mut labels = Vec::new();
        let mut g = SplitMix64(7);
        for c in 0..3 {
            for _ in 0..30 {
                data.push(c as f32 * 10.0 + g.next_f64() as f32);
                data.push(-(c as f32) * 10.0 + g.next_f64() as f32);
                labels.push(c);
            }
        }
        let e = Embeddings::new("x", &data, 2).unwrap();
        let m = evaluate_clustering(e, &labels, 42).unwrap();
        assert!((m.nmi - 1.0).abs() < 1e-12 && (m.ami - 1.0).abs() < 1e-12);
        let a = kmeans(e, 3, 5, 50).unwrap();
        let b = kmeans(e, 3, 5, 50).unwrap();
        assert_eq!(a, b);
        assert!(matches!(evaluate_clustering(e, &vec![1; 90], 0), Err(EvalError::SingleClass { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn symmetric_bounded_and_relabel_invariant(
            t in proptest::collection::vec(0i64..5, 2..60), seed in any::<u64>()
        ) {
            let mut g = SplitMix64(seed);
            let p: Vec<i64> = t.iter().map(|_| (g.next_u64() % 4) as i64).collect();
            let n1 = nmi(&t, &p).unwrap();
            prop_assert!((0.0..=1.0 + 1e-12).contains(&n1));
            prop_assert!((n1 - nmi(&p, &t).unwrap()).abs() < 1e-12);
            let a1 = ami(&t, &p).unwrap();
            prop_assert!(a1 <= 1.0 + 1e-9);
            prop_assert!((a1 - ami(&p, &t).unwrap()).abs() < 1e-9);
            let renamed: Vec<i64> = p.iter().map(|x| 100 - 3 * x).collect();
            prop_assert!((nmi(&t, &renamed).unwrap() - n1).abs() < 1e-12);
            prop_assert!((ami(&t, &renamed).unwrap() - a1).abs() < 1e-9);
        }
    }
}
