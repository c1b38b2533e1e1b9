//! Verification (1:1 matching): ROC, AUC, EER, FNMR at fixed FMR, and threshold choice.
//!
//! Why: a deployed matcher answers "same identity or not?" with a threshold on a score;
//! its quality is the trade-off between false matches (FMR) and false non-matches (FNMR),
//! and the operating threshold must be chosen on a calibration set for a target FMR, then
//! reported honestly on held-out pairs.
//!
//! Decision rule everywhere: accept (declare a match) when `similarity >= threshold`.
//! Distances are handled by negating them ([`ScoreKind::Distance`]); thresholds are
//! reported back in the caller's units.
//! * `FMR(t) = #{impostor ≥ t} / #impostors`, `FNMR(t) = #{genuine < t} / #genuine`.
//! * `AUC = P(g > i) + ½ P(g = i)` over genuine `g`, impostor `i` (area under the ROC
//!   with ties as diagonal segments).
//! * `EER`: the ROC is swept over every distinct score; between the two consecutive
//!   operating points where `FNMR − FMR` changes sign, both rates are linearly
//!   interpolated and the crossing value is reported.
//! * FNMR at FMR `α`: the threshold is the most lenient `t` with `FMR(t) ≤ α`; when
//!   `α < 1/#impostors` that is "above every impostor", and the report says so through
//!   `fmr_resolution`.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Whether higher scores mean "more likely the same".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreKind {
    /// Higher is more similar.
    Similarity,
    /// Lower is more similar (decision: accept when `distance <= threshold`).
    Distance,
}

/// One operating point of the ROC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Threshold in the caller's units.
    pub threshold: f64,
    /// False match rate at that threshold.
    pub fmr: f64,
    /// True match rate `1 − FNMR`.
    pub tmr: f64,
}

/// FNMR at one target FMR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FnmrAtFmr {
    /// Target FMR.
    pub target_fmr: f64,
    /// Chosen threshold (caller's units).
    pub threshold: f64,
    /// FMR achieved at that threshold (≤ target).
    pub fmr: f64,
    /// FNMR at that threshold.
    pub fnmr: f64,
}

/// Summary of a verification experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    /// Genuine (same-identity) pairs.
    pub num_genuine: usize,
    /// Impostor pairs.
    pub num_impostor: usize,
    /// Area under the ROC.
    pub auc: f64,
    /// Equal error rate.
    pub eer: f64,
    /// Threshold at the EER (caller's units, interpolated).
    pub eer_threshold: f64,
    /// FNMR at FMR 1e-2, 1e-3, 1e-4.
    pub fnmr_at_fmr: Vec<FnmrAtFmr>,
    /// Smallest non-zero FMR measurable, `1 / num_impostor`.
    pub fmr_resolution: f64,
}

fn to_sim(scores: &[f64], kind: ScoreKind, what: &'static str) -> Result<Vec<f64>> {
    if scores.is_empty() {
        return Err(EvalError::Empty { what });
    }
    if let Some(p) = scores.iter().position(|s| !s.is_finite()) {
        return Err(EvalError::NonFinite { what, row: p, col: 0, value: scores[p] });
    }
    Ok(match kind {
        ScoreKind::Similarity => scores.to_vec(),
        ScoreKind::Distance => scores.iter().map(|s| -s).collect(),
    })
}

fn back(t: f64, kind: ScoreKind) -> f64 {
    match kind {
        ScoreKind::Similarity => t,
        ScoreKind::Distance => -t,
    }
}

/// ROC operating points, from the strictest threshold (FMR = TMR = 0) to the most lenient.
pub fn roc_curve(genuine: &[f64], impostor: &[f64], kind: ScoreKind) -> Result<Vec<RocPoint>> {
    let g = to_sim(genuine, kind, "genuine scores")?;
    let i = to_sim(impostor, kind, "impostor scores")?;
    Ok(roc_sim(&g, &i).into_iter().map(|p| RocPoint { threshold: back(p.threshold, kind), ..p }).collect())
}

/// ROC in similarity units.
fn roc_sim(g: &[f64], i: &[f64]) -> Vec<RocPoint> {
    let mut all: Vec<(f64, bool)> = g.iter().map(|&s| (s, true)).chain(i.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (ng, ni) = (g.len() as f64, i.len() as f64);
    let mut pts = vec![RocPoint { threshold: f64::INFINITY, fmr: 0.0, tmr: 0.0 }];
    let (mut tg, mut ti) = (0usize, 0usize);
    let mut k = 0;
    while k < all.len() {
        let t = all[k].0;
        while k < all.len() && all[k].0 == t {
            if all[k].1 {
                tg += 1
            } else {
                ti += 1
            }
            k += 1;
        }
        pts.push(RocPoint { threshold: t, fmr: ti as f64 / ni, tmr: tg as f64 / ng });
    }
    pts
}

/// Area under the ROC (trapezoids; ties count one half).
pub fn auc(genuine: &[f64], impostor: &[f64], kind: ScoreKind) -> Result<f64> {
    let pts = roc_curve(genuine, impostor, kind)?;
    Ok(pts.windows(2).map(|w| (w[1].fmr - w[0].fmr) * (w[1].tmr + w[0].tmr) * 0.5).sum())
}

/// Equal error rate and its (interpolated) threshold.
pub fn equal_error_rate(genuine: &[f64], impostor: &[f64], kind: ScoreKind) -> Result<(f64, f64)> {
    let g = to_sim(genuine, kind, "genuine scores")?;
    let i = to_sim(impostor, kind, "impostor scores")?;
    let pts = roc_sim(&g, &i);
    // diff = FNMR − FMR = (1 − tmr) − fmr: starts at 1, ends at −1 (non-increasing).
    let diff = |p: &RocPoint| (1.0 - p.tmr) - p.fmr;
    for w in pts.windows(2) {
        let (a, b) = (diff(&w[0]), diff(&w[1]));
        if a >= 0.0 && b <= 0.0 {
            let alpha = if a == b { 0.0 } else { a / (a - b) };
            let fmr = w[0].fmr + alpha * (w[1].fmr - w[0].fmr);
            let fnmr = (1.0 - w[0].tmr) + alpha * (w[0].tmr - w[1].tmr);
            let t0 = if w[0].threshold.is_finite() { w[0].threshold } else { w[1].threshold };
            let t = t0 + alpha * (w[1].threshold - t0);
            return Ok((0.5 * (fmr + fnmr), back(t, kind)));
        }
    }
    unreachable!("FNMR − FMR goes from 1 to −1 along the ROC")
}

/// The most lenient threshold whose false-match rate on `impostor` is at most `target_fmr`.
///
/// Sort impostor similarities descending `s_1 ≥ s_2 ≥ …`; with `m = ⌊α·n⌋` allowed false
/// matches the threshold is the next float above `s_{m+1}` (accept when `sim ≥ t`).
pub fn threshold_for_fmr(impostor: &[f64], target_fmr: f64, kind: ScoreKind) -> Result<f64> {
    let i = to_sim(impostor, kind, "impostor scores")?;
    Ok(back(threshold_sim(&i, target_fmr)?, kind))
}

fn threshold_sim(i: &[f64], target: f64) -> Result<f64> {
    if !(target > 0.0 && target < 1.0) {
        return Err(EvalError::InvalidParameter { name: "target_fmr", value: target.to_string(), reason: "must be in (0, 1)" });
    }
    let mut s = i.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let m = (target * s.len() as f64).floor() as usize;
    Ok(s[m].next_up())
}

/// Rates of a fixed threshold on a (held-out) set: `(fmr, fnmr)`.
pub fn rates_at_threshold(genuine: &[f64], impostor: &[f64], threshold: f64, kind: ScoreKind) -> Result<(f64, f64)> {
    let g = to_sim(genuine, kind, "genuine scores")?;
    let i = to_sim(impostor, kind, "impostor scores")?;
    let t = back(threshold, kind);
    let fmr = i.iter().filter(|&&s| s >= t).count() as f64 / i.len() as f64;
    let fnmr = g.iter().filter(|&&s| s < t).count() as f64 / g.len() as f64;
    Ok((fmr, fnmr))
}

/// AUC, EER and FNMR at FMR 1e-2, 1e-3, 1e-4 in one report.
pub fn verification_report(genuine: &[f64], impostor: &[f64], kind: ScoreKind) -> Result<VerificationReport> {
    let a = auc(genuine, impostor, kind)?;
    let (eer, eer_threshold) = equal_error_rate(genuine, impostor, kind)?;
    let fnmr_at_fmr = [1e-2, 1e-3, 1e-4]
        .into_iter()
        .map(|target| {
            let threshold = threshold_for_fmr(impostor, target, kind)?;
            let (fmr, fnmr) = rates_at_threshold(genuine, impostor, threshold, kind)?;
            Ok(FnmrAtFmr { target_fmr: target, threshold, fmr, fnmr })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(VerificationReport {
        num_genuine: genuine.len(),
        num_impostor: impostor.len(),
        auc: a,
        eer,
        eer_threshold,
        fnmr_at_fmr,
        fmr_resolution: 1.0 / impostor.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_small_example() {
        let g = [0.9, 0.8, 0.4];
        let i = [0.7, 0.3, 0.2, 0.1];
        // Pairs g > i: 0.9 beats 4, 0.8 beats 4, 0.4 beats 3 -> 11/12.
        assert!((auc(&g, &i, ScoreKind::Similarity).unwrap() - 11.0 / 12.0).abs() < 1e-12);
        // Distances: the same data negated must give the same AUC.
        let gd: Vec<f64> = g.iter().map(|x| -x).collect();
        let id: Vec<f64> = i.iter().map(|x| -x).collect();
        assert!((auc(&gd, &id, ScoreKind::Distance).unwrap() - 11.0 / 12.0).abs() < 1e-12);
        // Threshold for FMR <= 0.25 (m = 1): next float above 2nd largest impostor 0.3.
        let t = threshold_for_fmr(&i, 0.25, ScoreKind::Similarity).unwrap();
        assert!(t > 0.3 && t < 0.3 + 1e-12);
        let (fmr, fnmr) = rates_at_threshold(&g, &i, t, ScoreKind::Similarity).unwrap();
        assert_eq!((fmr, fnmr), (0.25, 0.0));
        // FMR < 1/4 -> above every impostor: 0.7 -> genuine 0.4 rejected.
        let t = threshold_for_fmr(&i, 0.1, ScoreKind::Similarity).unwrap();
        let (fmr, fnmr) = rates_at_threshold(&g, &i, t, ScoreKind::Similarity).unwrap();
        assert_eq!(fmr, 0.0);
        assert!((fnmr - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn eer_of_symmetric_overlap() {
        // Perfect separation: EER 0; identical distributions: EER 0.5.
        let (e, t) = equal_error_rate(&[2.0, 3.0], &[0.0, 1.0], ScoreKind::Similarity).unwrap();
        assert_eq!(e, 0.0);
        assert!((1.0..=2.0).contains(&t));
        let (e, _) = equal_error_rate(&[1.0, 2.0], &[1.0, 2.0], ScoreKind::Similarity).unwrap();
        assert!((e - 0.5).abs() < 1e-12);
    }

    #[test]
    fn bad_scores_are_errors() {
        assert!(matches!(auc(&[], &[1.0], ScoreKind::Similarity), Err(EvalError::Empty { .. })));
        assert!(matches!(auc(&[f64::NAN], &[1.0], ScoreKind::Similarity), Err(EvalError::NonFinite { .. })));
        assert!(matches!(threshold_for_fmr(&[1.0], 0.0, ScoreKind::Similarity), Err(EvalError::InvalidParameter { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn auc_is_mann_whitney_and_threshold_respects_target(
            g in proptest::collection::vec(0i32..20, 1..30),
            i in proptest::collection::vec(0i32..20, 1..30),
            alpha in 0.01f64..0.99,
        ) {
            let g: Vec<f64> = g.into_iter().map(f64::from).collect();
            let i: Vec<f64> = i.into_iter().map(f64::from).collect();
            let mut u = 0.0;
            for &a in &g { for &b in &i { u += if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 }; } }
            let brute = u / (g.len() * i.len()) as f64;
            let a = auc(&g, &i, ScoreKind::Similarity).unwrap();
            prop_assert!((a - brute).abs() < 1e-12);
            let t = threshold_for_fmr(&i, alpha, ScoreKind::Similarity).unwrap();
            let (fmr, _) = rates_at_threshold(&g, &i, t, ScoreKind::Similarity).unwrap();
            prop_assert!(fmr <= alpha + 1e-12);
            // Most lenient: any impostor value at or below t accepted would break the target;
            // lowering t to the largest impostor < t must exceed alpha (or none exists).
            if let Some(lower) = i.iter().copied().filter(|&s| s < t).reduce(f64::max) {
                let (fmr2, _) = rates_at_threshold(&g, &i, lower, ScoreKind::Similarity).unwrap();
                prop_assert!(fmr2 > alpha);
            }
            let (e, _) = equal_error_rate(&g, &i, ScoreKind::Similarity).unwrap();
            prop_assert!((0.0..=1.0).contains(&e));
        }
    }
}
