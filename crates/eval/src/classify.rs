//! Classification by nearest class with an open-set "unknown" answer.
//!
//! Why: a metric-learning model is usually deployed as a gallery matcher — a query gets
//! the label of its nearest gallery class, unless even the best match is too weak, in
//! which case the honest answer is "unknown" (a class never enrolled). Measuring that
//! needs both the closed-set accuracy on known classes and how often unknowns are
//! rejected.
//!
//! Scores are similarities (higher is closer): cosine/dot as is, L2 distances negated.
//! The answer is `Unknown` when the best similarity is `< threshold`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::knn::{Metric, knn};
use crate::matrix::{Embeddings, check_labels, check_same_dim};

/// One query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Prediction {
    /// A gallery class, with the similarity that decided it.
    Known {
        /// Predicted label.
        label: i64,
        /// Best similarity of that class.
        similarity: f32,
    },
    /// Rejected: the best similarity was below the threshold.
    Unknown {
        /// The best similarity seen.
        similarity: f32,
    },
}

/// How the class of a query is decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Classifier {
    /// Majority vote of the `k` nearest gallery items; vote ties go to the class with the
    /// larger summed similarity, then the lower label.
    KnnVote {
        /// Neighbours that vote.
        k: usize,
    },
    /// Nearest class centre (mean of the class's gallery embeddings; for cosine the mean
    /// of the normalised embeddings).
    NearestCentroid,
}

/// Classify `query` rows against a labelled gallery, answering `Unknown` below `threshold`.
///
/// # Shapes
/// `query`: `nq × d`; `gallery`: `ng × d` with `ng` labels; result `nq`.
pub fn classify(
    query: Embeddings<'_>,
    gallery: Embeddings<'_>,
    gallery_labels: &[i64],
    classifier: Classifier,
    metric: Metric,
    threshold: f32,
) -> Result<Vec<Prediction>> {
    check_labels("gallery", gallery.rows(), gallery_labels)?;
    check_same_dim(("query", query.dim()), ("gallery", gallery.dim()))?;
    if threshold.is_nan() {
        return Err(EvalError::InvalidParameter { name: "threshold", value: "NaN".into(), reason: "must be a number" });
    }
    let decide = |label: i64, similarity: f32| {
        if similarity >= threshold { Prediction::Known { label, similarity } } else { Prediction::Unknown { similarity } }
    };
    match classifier {
        Classifier::KnnVote { k } => {
            let r = knn(query, Some(gallery), k, metric)?;
            Ok((0..query.rows())
                .map(|q| {
                    let mut votes: BTreeMap<i64, (usize, f64)> = BTreeMap::new();
                    for (&j, &s) in r.row_indices(q).iter().zip(r.row_scores(q)) {
                        let e = votes.entry(gallery_labels[j]).or_insert((0, 0.0));
                        e.0 += 1;
                        e.1 += metric.to_similarity(s) as f64;
                    }
                    // BTreeMap iterates labels ascending; keep the first maximum.
                    let mut best: Option<(i64, usize, f64)> = None;
                    for (&l, &(c, s)) in &votes {
                        if best.is_none_or(|(_, bc, bs)| c > bc || (c == bc && s > bs)) {
                            best = Some((l, c, s));
                        }
                    }
                    let (label, _, _) = best.expect("k >= 1");
                    let top = metric.to_similarity(r.row_scores(q)[0]);
                    decide(label, top)
                })
                .collect())
        }
        Classifier::NearestCentroid => {
            let d = gallery.dim();
            let mut sums: BTreeMap<i64, (usize, Vec<f64>)> = BTreeMap::new();
            for (i, &l) in gallery_labels.iter().enumerate() {
                let e = sums.entry(l).or_insert_with(|| (0, vec![0.0; d]));
                e.0 += 1;
                let row = gallery.row(i);
                let scale = if metric == Metric::Cosine {
                    let n = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                    if n == 0.0 {
                        return Err(EvalError::ZeroVector { what: "gallery", row: i });
                    }
                    1.0 / n
                } else {
                    1.0
                };
                for (s, &v) in e.1.iter_mut().zip(row) {
                    *s += v as f64 * scale;
                }
            }
            let labels: Vec<i64> = sums.keys().copied().collect();
            let centres: Vec<f32> = sums.values().flat_map(|(n, s)| s.iter().map(move |v| (v / *n as f64) as f32)).collect();
            let c = Embeddings::new("class centres", &centres, d)?;
            let r = knn(query, Some(c), 1, metric)?;
            Ok((0..query.rows()).map(|q| decide(labels[r.indices[q]], metric.to_similarity(r.scores[q]))).collect())
        }
    }
}

/// Open-set quality of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSetMetrics {
    /// Queries whose true class is enrolled.
    pub num_known: usize,
    /// Queries whose true class is not enrolled.
    pub num_unknown: usize,
    /// Known queries given their correct label (rejections count as wrong).
    pub known_accuracy: Option<f64>,
    /// Known queries answered with a label, correct or not, that was correct.
    pub closed_set_accuracy_of_accepted: Option<f64>,
    /// Known queries wrongly rejected as unknown.
    pub false_rejection_rate: Option<f64>,
    /// Unknown queries rejected.
    pub unknown_rejection_rate: Option<f64>,
    /// (correct known + rejected unknown) / all.
    pub overall_accuracy: f64,
}

/// The counts behind [`OpenSetMetrics`]: one [`OpenSetCounts::add`] per answered query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSetCounts {
    /// Queries whose true class is enrolled.
    pub known: usize,
    /// Known queries answered with their true label.
    pub known_correct: usize,
    /// Known queries answered with a label, correct or not.
    pub known_accepted: usize,
    /// Known queries rejected as unknown.
    pub known_rejected: usize,
    /// Queries whose true class is not enrolled.
    pub unknown: usize,
    /// Unknown queries rejected.
    pub unknown_rejected: usize,
}

impl OpenSetCounts {
    /// Counts one answer: whether the query's true class is enrolled, whether the answer was a
    /// label (not "unknown"), and whether that label is the true one.
    pub fn add(&mut self, truth_enrolled: bool, accepted: bool, correct: bool) {
        if truth_enrolled {
            self.known += 1;
            if accepted {
                self.known_accepted += 1;
                self.known_correct += correct as usize;
            } else {
                self.known_rejected += 1;
            }
        } else {
            self.unknown += 1;
            self.unknown_rejected += !accepted as usize;
        }
    }

    /// The rates (`None` where a denominator is zero; overall accuracy 0 without queries).
    pub fn metrics(&self) -> OpenSetMetrics {
        let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        let total = self.known + self.unknown;
        OpenSetMetrics {
            num_known: self.known,
            num_unknown: self.unknown,
            known_accuracy: ratio(self.known_correct, self.known),
            closed_set_accuracy_of_accepted: ratio(self.known_correct, self.known_accepted),
            false_rejection_rate: ratio(self.known_rejected, self.known),
            unknown_rejection_rate: ratio(self.unknown_rejected, self.unknown),
            overall_accuracy: ratio(self.known_correct + self.unknown_rejected, total).unwrap_or(0.0),
        }
    }
}

/// Score predictions; a true label is "known" when it is in `known_labels` (the gallery's).
pub fn open_set_metrics(predictions: &[Prediction], true_labels: &[i64], known_labels: &[i64]) -> Result<OpenSetMetrics> {
    check_labels("predictions", predictions.len(), true_labels)?;
    if predictions.is_empty() {
        return Err(EvalError::Empty { what: "predictions" });
    }
    let known: HashSet<i64> = known_labels.iter().copied().collect();
    let mut counts = OpenSetCounts::default();
    for (p, &t) in predictions.iter().zip(true_labels) {
        let accepted = matches!(p, Prediction::Known { .. });
        counts.add(known.contains(&t), accepted, matches!(*p, Prediction::Known { label, .. } if label == t));
    }
    Ok(counts.metrics())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery() -> (Vec<f32>, Vec<i64>) {
        // class 0 near (1, 0), class 1 near (0, 1)
        (vec![1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, 0.05, 0.95], vec![0, 0, 1, 1, 1])
    }

    #[test]
    fn knn_vote_and_centroid_with_rejection() {
        let (g, gl) = gallery();
        let ge = Embeddings::new("g", &g, 2).unwrap();
        // q0 clearly class 0, q1 clearly class 1, q2 = (-1, -1): opposite of everything.
        let q = [1.0f32, 0.05, 0.02, 1.0, -1.0, -1.0];
        let qe = Embeddings::new("q", &q, 2).unwrap();
        for c in [Classifier::KnnVote { k: 3 }, Classifier::NearestCentroid] {
            let p = classify(qe, ge, &gl, c, Metric::Cosine, 0.5).unwrap();
            assert!(matches!(p[0], Prediction::Known { label: 0, .. }), "{c:?} {p:?}");
            assert!(matches!(p[1], Prediction::Known { label: 1, .. }), "{c:?} {p:?}");
            assert!(matches!(p[2], Prediction::Unknown { .. }), "{c:?} {p:?}");
            let m = open_set_metrics(&p, &[0, 1, 7], &gl).unwrap();
            assert_eq!(m.known_accuracy, Some(1.0));
            assert_eq!(m.unknown_rejection_rate, Some(1.0));
            assert_eq!(m.overall_accuracy, 1.0);
        }
        // With L2 the similarity is the negated distance: threshold -0.2 rejects q0? No:
        // q0's nearest gallery item (1,0) is at distance 0.05 -> similarity -0.05 >= -0.2.
        let p = classify(qe, ge, &gl, Classifier::KnnVote { k: 1 }, Metric::L2, -0.2).unwrap();
        assert!(matches!(p[0], Prediction::Known { label: 0, .. }));
        assert!(matches!(p[2], Prediction::Unknown { .. }));
    }

    #[test]
    fn open_set_counts_rejected_knowns_as_errors() {
        let p = [
            Prediction::Known { label: 0, similarity: 0.9 },
            Prediction::Unknown { similarity: 0.1 },
            Prediction::Known { label: 1, similarity: 0.8 },
            Prediction::Known { label: 0, similarity: 0.7 },
        ];
        let m = open_set_metrics(&p, &[0, 1, 0, 5], &[0, 1]).unwrap();
        assert_eq!(m.num_known, 3);
        assert_eq!(m.known_accuracy, Some(1.0 / 3.0));
        assert_eq!(m.false_rejection_rate, Some(1.0 / 3.0));
        assert_eq!(m.closed_set_accuracy_of_accepted, Some(0.5));
        assert_eq!(m.unknown_rejection_rate, Some(0.0));
        assert_eq!(m.overall_accuracy, 0.25);
        assert!(matches!(open_set_metrics(&p, &[0], &[0]), Err(EvalError::LabelCountMismatch { .. })));
    }
}
