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
//! With background examples enrolled ([`crate::background`]) the scores follow the decision
//! rule: the background is never a wrong brand nor a genuine one. A calibration query labelled
//! with the background is an unknown query (its impostor score is its best brand). In
//! [`ImpostorScores::BestWrongBrand`] mode a query that the background outranks is answered "not
//! a logo" whatever the threshold: an impostor query whose nearest candidate (its own brand left
//! out) is the background cannot be a false match, and a genuine query whose brand the background
//! outranks cannot be accepted. Such queries carry no score; they are counted
//! ([`CalibrationScores::impostor_rejected`], [`CalibrationScores::genuine_rejected`]) and enter
//! FMR and FNMR as attempts rejected at every threshold. [`ImpostorScores::EveryWrongBrand`]
//! (1:1 verification) only leaves the background out.
//!
//! The threshold is `proxima_eval::threshold_for_fmr` (most lenient `t` with
//! `FMR(t) ≤ target`), rounded *up* to `f32`: searches compare `f32` similarities, and
//! rounding down could re-admit the impostor the threshold was placed just above. When the
//! rejected impostors alone keep FMR within the target at any threshold, the threshold is the
//! lowest calibration score (every scored query accepted). Calibration queries must not be
//! enrolled images (their genuine score would be 1).

use proxima_eval::{ScoreKind, rates_at_threshold, threshold_for_fmr};
use serde::{Deserialize, Serialize};

use crate::background::is_background;
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
    /// Genuine attempts used (scores and those rejected by the background).
    pub num_genuine: usize,
    /// Impostor attempts used (scores and those rejected by the background).
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
    /// Genuine queries rejected whatever the threshold (the background outranked their brand).
    #[serde(default)]
    pub genuine_rejected: usize,
    /// Impostor queries rejected whatever the threshold (the background outranked every wrong brand).
    #[serde(default)]
    pub impostor_rejected: usize,
}

impl CalibrationScores {
    /// The threshold for `target_fmr`, counting the rejected attempts (see the module doc).
    pub fn calibrate(&self, target_fmr: f64) -> Result<Calibration> {
        let (ni, ng) = (self.impostor.len() + self.impostor_rejected, self.genuine.len() + self.genuine_rejected);
        if self.impostor_rejected == 0 && self.genuine_rejected == 0 {
            return calibrate_scores(&self.genuine, &self.impostor, target_fmr);
        }
        let lowest = self.genuine.iter().chain(&self.impostor).copied().fold(f64::INFINITY, f64::min);
        if ni == 0 || !lowest.is_finite() {
            return Err(IndexError::EmptyInput { what: "calibration scores (every query was rejected by the background)" });
        }
        // A rejected attempt is a score below every threshold that can be chosen.
        let below = lowest - 1.0;
        let padded: Vec<f64> = self.impostor.iter().copied().chain(std::iter::repeat_n(below, self.impostor_rejected)).collect();
        let mut t64 = threshold_for_fmr(&padded, target_fmr, ScoreKind::Similarity)?;
        if t64 <= lowest {
            t64 = lowest;
        }
        let threshold = ceil_f32(t64);
        if !threshold.is_finite() {
            return Err(IndexError::InvalidParameter { name: "impostor scores", value: t64.to_string(), reason: "threshold does not fit in f32" });
        }
        let accepted = |v: &[f64]| v.iter().filter(|&&s| s >= threshold as f64).count();
        let fnmr = (ng > 0).then(|| (ng - accepted(&self.genuine)) as f64 / ng as f64);
        Ok(Calibration { threshold, target_fmr, achieved_fmr: accepted(&self.impostor) as f64 / ni as f64, fnmr, num_genuine: ng, num_impostor: ni })
    }
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
/// A brand in `true_brands` that is not enrolled, or the background, marks an unknown query
/// (impostor only). The background is never a wrong brand (see the module doc).
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
        // Labelled with the background: an unknown query, with no brand of its own.
        let own = |c: &crate::BrandMatch| c.brand == truth && !is_background(truth);
        let real_wrong = |c: &&crate::BrandMatch| !own(c) && !is_background(&c.brand);
        let background = cands.iter().find(|c| is_background(&c.brand)).map(|c| c.similarity);
        // As `Ranking::is_background`: the background wins ties.
        let outranked = |s: f32| background.is_some_and(|b| b >= s);
        match mode {
            ImpostorScores::BestWrongBrand => {
                match cands.iter().find(|c| own(c)) {
                    Some(g) if outranked(g.similarity) => out.genuine_rejected += 1,
                    Some(g) => out.genuine.push(g.similarity as f64),
                    None => {}
                }
                match cands.iter().find(real_wrong) {
                    Some(w) if outranked(w.similarity) => out.impostor_rejected += 1,
                    Some(w) => out.impostor.push(w.similarity as f64),
                    None => {}
                }
            }
            ImpostorScores::EveryWrongBrand => {
                out.genuine.extend(cands.iter().filter(|c| own(c)).map(|c| c.similarity as f64));
                out.impostor.extend(cands.iter().filter(real_wrong).map(|c| c.similarity as f64));
            }
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
        if s.impostor.is_empty() && s.impostor_rejected == 0 {
            return Err(IndexError::EmptyInput { what: "impostor scores (the gallery needs two brands, or unknown queries)" });
        }
        let c = s.calibrate(target_fmr)?;
        Ok(self.calibration.insert(c))
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

    /// The background is neither a wrong brand nor a genuine one, and a query it outranks is an
    /// attempt rejected at every threshold.
    #[test]
    fn background_scores_follow_the_decision_rule() {
        let mut g = Gallery::new(2, "m").unwrap();
        g.add("a", &[1.0, 0.0], &["a"]).unwrap();
        g.add("b", &[0.0, 1.0], &["b"]).unwrap();
        g.add(crate::BACKGROUND_BRAND, &[-1.0, 0.0], &["bg"]).unwrap();
        let at = |deg: f32| [deg.to_radians().cos(), deg.to_radians().sin()];
        let q: Vec<f32> = [
            at(20.0),  // a: genuine cos 20°, best wrong b (cos 70°), background farther
            at(100.0), // b: genuine cos 10°, best wrong background (cos 80°) > a (cos 100°): rejected
            at(170.0), // a, but the background (cos 10°) outranks a: genuine rejected; impostor rejected
            at(60.0),  // unknown brand z: best brand b (cos 30°)
            at(150.0), // labelled background: nearest is the background: rejected
            at(80.0),  // labelled background: nearest is b (cos 10°): a false match if accepted
        ]
        .concat();
        let truth = ["a", "b", "a", "z", crate::BACKGROUND_BRAND, crate::BACKGROUND_BRAND];
        let s = calibration_scores(&g, &q, &truth, ImpostorScores::BestWrongBrand).unwrap();
        let close = |v: &[f64], want: &[f32]| v.len() == want.len() && v.iter().zip(want).all(|(a, b)| (a - b.to_radians().cos() as f64).abs() < 1e-6);
        assert!(close(&s.genuine, &[20.0, 10.0]), "{:?}", s.genuine);
        assert!(close(&s.impostor, &[70.0, 30.0, 10.0]), "{:?}", s.impostor);
        assert_eq!((s.genuine_rejected, s.impostor_rejected), (1, 3));
        // 1:1 verification mode only leaves the background out.
        let e = calibration_scores(&g, &q, &truth, ImpostorScores::EveryWrongBrand).unwrap();
        assert_eq!((e.genuine.len(), e.impostor.len(), e.genuine_rejected, e.impostor_rejected), (3, 1 + 1 + 1 + 2 + 2 + 2, 0, 0));

        // Six impostor attempts, three rejected: FMR ≤ 0.2 allows one false match (the last
        // query's, at cos 10°); the threshold sits just above the next score (cos 30°).
        let c = s.calibrate(0.2).unwrap();
        assert!(c.threshold > 30f32.to_radians().cos() && c.threshold < 30f32.to_radians().cos() + 1e-4, "{c:?}");
        assert_eq!((c.num_impostor, c.num_genuine), (6, 3));
        assert!((c.achieved_fmr - 1.0 / 6.0).abs() < 1e-12);
        // Of three genuine attempts, cos 10° and cos 20° pass; the rejected one counts as a miss.
        assert_eq!(c.fnmr, Some(1.0 / 3.0));
        // FMR ≤ 0.5 allows every scored impostor (3 of 6): the threshold is the lowest score.
        let c = s.calibrate(0.5).unwrap();
        assert!((c.threshold - 70f32.to_radians().cos()).abs() < 1e-6 && c.achieved_fmr == 0.5, "{c:?}");
        // Without rejections the result is calibrate_scores'.
        let plain = CalibrationScores { genuine_rejected: 0, impostor_rejected: 0, ..s.clone() };
        assert_eq!(plain.calibrate(0.2).unwrap(), calibrate_scores(&s.genuine, &s.impostor, 0.2).unwrap());
        // Every query rejected: nothing to set a threshold from.
        let none = CalibrationScores { impostor_rejected: 2, ..Default::default() };
        assert!(matches!(none.calibrate(0.1), Err(IndexError::EmptyInput { .. })));
        // The gallery stores it, and a query nearest the background stays unknown.
        let stored = g.calibrate(&q, &truth, 0.2, ImpostorScores::BestWrongBrand).unwrap().clone();
        assert_eq!(stored, s.calibrate(0.2).unwrap());
        let id = g.identify(&at(170.0), 2).unwrap();
        assert!(matches!(id.decision, crate::Decision::Unknown { background_similarity: Some(_), .. }), "{:?}", id.decision);
    }
}
