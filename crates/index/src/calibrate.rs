//! Calibrating the "unknown" threshold for a target false-match rate.
//!
//! Why: the threshold turns a similarity into a decision, and its only meaning is the
//! error rate it buys. A threshold picked by eye ("0.7 looks right") has an unknown
//! false-match rate; one computed on a held-out calibration set for a target FMR has a
//! measured one, and it must be recalibrated whenever the model changes (the gallery
//! stores it next to the model fingerprint for that reason).
//!
//! Scores for gallery-based calibration, per calibration query with true brand `b`:
//! * genuine: the best similarity to `b`'s rows (only when `b` is enrolled);
//! * impostor ([`ImpostorScores::BestWrongBrand`], the default): the best similarity to
//!   any *other* brand — the score that would make the query a false match in open-set
//!   identification, so FMR reads as "fraction of queries that would be answered with a
//!   wrong brand"; queries of brands not in the gallery contribute their top score;
//! * impostor ([`ImpostorScores::EveryWrongBrand`]): one score per (query, other brand)
//!   pair, the classical 1:1 verification FMR per comparison (lower, for the same
//!   threshold, by roughly the number of brands).
//!
//! The threshold is `proxima_eval::threshold_for_fmr` (most lenient `t` with
//! `FMR(t) ≤ target`), rounded *up* to `f32`: searches compare `f32` similarities, and
//! rounding down could re-admit the impostor the threshold was placed just above.
//! Calibration queries must not be enrolled images (their genuine score would be 1).

use proxima_eval::{ScoreKind, rates_at_threshold, threshold_for_fmr};
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::gallery::Gallery;

/// A decision threshold and the calibration it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Accept a brand when its similarity is `>= threshold`.
    pub threshold: f32,
    /// The false-match rate it was calibrated for.
    pub target_fmr: f64,
    /// FMR on the calibration impostors at `threshold` (≤ target).
    pub achieved_fmr: f64,
    /// FNMR on the calibration genuine scores (None without genuine scores).
    pub fnmr: Option<f64>,
    /// Genuine scores used.
    pub num_genuine: usize,
    /// Impostor scores used.
    pub num_impostor: usize,
}

/// Which impostor scores a calibration query contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImpostorScores {
    /// Its best similarity over all brands other than its own (open-set identification).
    #[default]
    BestWrongBrand,
    /// Its best similarity to each other brand (1:1 verification).
    EveryWrongBrand,
}

/// Genuine and impostor similarities of a calibration set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationScores {
    /// Same-brand similarities.
    pub genuine: Vec<f64>,
    /// Other-brand similarities.
    pub impostor: Vec<f64>,
}

/// Round a threshold up to the nearest `f32` (never below `t`).
fn ceil_f32(t: f64) -> f32 {
    let r = t as f32;
    if (r as f64) < t { r.next_up() } else { r }
}

/// The threshold for `target_fmr` from genuine (may be empty) and impostor similarities.
pub fn calibrate_scores(genuine: &[f64], impostor: &[f64], target_fmr: f64) -> Result<Calibration> {
    let t64 = threshold_for_fmr(impostor, target_fmr, ScoreKind::Similarity)?;
    let threshold = ceil_f32(t64);
    if !threshold.is_finite() {
        return Err(IndexError::InvalidParameter { name: "impostor scores", value: t64.to_string(), reason: "threshold does not fit in f32" });
    }
    let fmr = impostor.iter().filter(|&&s| s >= threshold as f64).count() as f64 / impostor.len() as f64;
    let fnmr = if genuine.is_empty() { None } else { Some(rates_at_threshold(genuine, impostor, threshold as f64, ScoreKind::Similarity)?.1) };
    Ok(Calibration { threshold, target_fmr, achieved_fmr: fmr, fnmr, num_genuine: genuine.len(), num_impostor: impostor.len() })
}

/// Genuine and impostor scores of labelled calibration queries against a gallery.
///
/// A brand in `true_brands` that is not enrolled marks an unknown query (impostor only).
///
/// # Shapes
/// `queries`: `true_brands.len() × dim`.
pub fn calibration_scores<S: AsRef<str>>(gallery: &Gallery, queries: &[f32], true_brands: &[S], mode: ImpostorScores) -> Result<CalibrationScores> {
    let d = gallery.dim();
    if queries.len() != true_brands.len() * d {
        return Err(IndexError::CountMismatch { what: "calibration", rows: queries.len() / d, count: true_brands.len(), items: "brand labels" });
    }
    // Rank every brand: the exact per-brand maxima are needed for both score kinds.
    let ranked = gallery.rank_brands_batch(queries, gallery.brands().len())?;
    let mut out = CalibrationScores::default();
    for (cands, truth) in ranked.iter().zip(true_brands) {
        let truth = truth.as_ref();
        let mut wrong = cands.iter().filter(|c| c.brand != truth).map(|c| c.similarity as f64);
        if let Some(g) = cands.iter().find(|c| c.brand == truth) {
            out.genuine.push(g.similarity as f64);
        }
        match mode {
            ImpostorScores::BestWrongBrand => out.impostor.extend(wrong.next()),
            ImpostorScores::EveryWrongBrand => out.impostor.extend(wrong),
        }
    }
    Ok(out)
}

impl Gallery {
    /// Calibrate from precomputed similarities and store the threshold.
    pub fn calibrate_from_scores(&mut self, genuine: &[f64], impostor: &[f64], target_fmr: f64) -> Result<&Calibration> {
        let c = calibrate_scores(genuine, impostor, target_fmr)?;
        Ok(self.calibration.insert(c))
    }

    /// Calibrate on labelled queries (see [`calibration_scores`]) and store the threshold.
    ///
    /// # Shapes
    /// `queries`: `true_brands.len() × dim`.
    pub fn calibrate<S: AsRef<str>>(&mut self, queries: &[f32], true_brands: &[S], target_fmr: f64, mode: ImpostorScores) -> Result<&Calibration> {
        let s = calibration_scores(self, queries, true_brands, mode)?;
        if s.impostor.is_empty() {
            return Err(IndexError::EmptyInput { what: "impostor scores (the gallery needs two brands, or unknown queries)" });
        }
        self.calibrate_from_scores(&s.genuine, &s.impostor, target_fmr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_respects_target_and_rounds_up() {
        // 10 impostors 0.0..0.9; FMR <= 0.2 allows two false matches: t just above 0.7.
        let imp: Vec<f64> = [0.0f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9].map(f64::from).to_vec();
        let genuine = [0.95, 0.85, 0.75, 0.65];
        let c = calibrate_scores(&genuine, &imp, 0.2).unwrap();
        assert!(c.threshold > 0.7f32 && c.threshold <= 0.7f32.next_up(), "{}", c.threshold);
        assert_eq!(c.achieved_fmr, 0.2);
        assert_eq!(c.fnmr, Some(0.25));
        assert_eq!((c.num_genuine, c.num_impostor), (4, 10));
        // The impostor at 0.7 (an f32 value) must be rejected after rounding to f32.
        assert!(((0.7f32) as f64) < c.threshold as f64);
        assert_eq!(calibrate_scores(&[], &imp, 0.2).unwrap().fnmr, None);
        assert!(calibrate_scores(&genuine, &imp, 0.0).is_err());
        assert!(calibrate_scores(&genuine, &[], 0.1).is_err());
    }

    #[test]
    fn ceil_never_rounds_down() {
        for t in [0.1f64, 0.7, -0.3, 1.0 / 3.0, 0.9999999999] {
            let r = ceil_f32(t);
            assert!(r as f64 >= t);
            assert!((r.next_down() as f64) < t);
        }
    }

    #[test]
    fn gallery_scores_per_mode() {
        let mut g = Gallery::new(2, "m").unwrap();
        g.add("a", &[1.0, 0.0], &["a"]).unwrap();
        g.add("b", &[0.0, 1.0], &["b"]).unwrap();
        g.add("c", &[-1.0, 0.0], &["c"]).unwrap();
        // q0 of brand a (cos to a = 0.8, b = 0.6, c = -0.8); q1 of unenrolled brand z.
        let q = [0.8f32, 0.6, 0.0, -1.0];
        let s = calibration_scores(&g, &q, &["a", "z"], ImpostorScores::BestWrongBrand).unwrap();
        assert_eq!(s.genuine.len(), 1);
        assert!((s.genuine[0] - 0.8).abs() < 1e-6);
        // q0's best wrong brand is b (0.6); q1's best brand is a or c at 0 -> 0.
        assert_eq!(s.impostor.len(), 2);
        assert!((s.impostor[0] - 0.6).abs() < 1e-6 && s.impostor[1].abs() < 1e-6);
        let s = calibration_scores(&g, &q, &["a", "z"], ImpostorScores::EveryWrongBrand).unwrap();
        assert_eq!(s.impostor.len(), 2 + 3);
        assert!(calibration_scores(&g, &q, &["a"], ImpostorScores::default()).is_err());

        let c = g.calibrate(&q, &["a", "z"], 0.4, ImpostorScores::BestWrongBrand).unwrap().clone();
        // Two impostors, FMR <= 0.4 allows none: threshold just above 0.6.
        assert!(c.threshold > 0.6 && c.threshold < 0.6001);
        assert_eq!(g.calibration(), Some(&c));
        let id = g.identify(&q[..2], 1).unwrap();
        assert!(matches!(id.decision, crate::Decision::Known { ref brand, .. } if brand == "a"));
    }
}
