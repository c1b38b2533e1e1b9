//! Detection and whole-image identification metrics: box AP for a class-agnostic localiser, and
//! open-set image-level identification at fixed false-alarm rates.
//!
//! Why here: these numbers decide whether "find the logo in a screenshot" works, so they must be
//! computable from plain vectors (no libtorch), testable on hand-made cases, and the same for the
//! CLI, the benchmark and a Rust user.
//!
//! AP follows PASCAL VOC 2010+: detections of all images sorted by score (ties: input order),
//! greedily matched to the unmatched ground-truth box of highest IoU ≥ the threshold in their
//! image, precision made monotone from the right, area under the precision–recall steps.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// A scored box `[x0, y0, x1, y1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredBox {
    pub bbox: [f32; 4],
    pub score: f32,
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes (0 when either has no area); the one
/// definition lives in `proxima-base`, shared with the crops `proxima-data` cuts from scenes.
pub use proxima_base::box_iou;

/// Class-agnostic average precision at an IoU threshold, with the recall reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApResult {
    /// Area under the interpolated precision–recall curve.
    pub ap: f64,
    /// Share of ground-truth boxes matched by some detection.
    pub recall: f64,
    /// Ground-truth boxes.
    pub num_gt: usize,
    /// Detections.
    pub num_det: usize,
}

/// Average precision of `detections[i]` against `ground_truth[i]` (one entry per image).
pub fn average_precision(detections: &[Vec<ScoredBox>], ground_truth: &[Vec<[f32; 4]>], iou_threshold: f32) -> Result<ApResult> {
    if detections.len() != ground_truth.len() {
        return Err(EvalError::LabelCountMismatch { what: "detections (one list per ground-truth image)", rows: ground_truth.len(), labels: detections.len() });
    }
    if !(0.0..=1.0).contains(&iou_threshold) {
        return Err(EvalError::InvalidParameter { name: "iou_threshold", value: iou_threshold.to_string(), reason: "must be in [0, 1]" });
    }
    let num_gt: usize = ground_truth.iter().map(Vec::len).sum();
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    for (img, dets) in detections.iter().enumerate() {
        for (j, d) in dets.iter().enumerate() {
            if !d.score.is_finite() {
                return Err(EvalError::NonFinite { what: "detection scores", row: img, col: j, value: d.score as f64 });
            }
            all.push((d.score, img, j));
        }
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut used: Vec<Vec<bool>> = ground_truth.iter().map(|g| vec![false; g.len()]).collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve: Vec<(f64, f64)> = Vec::with_capacity(all.len());
    for &(_, img, j) in &all {
        let d = &detections[img][j].bbox;
        let best = ground_truth[img]
            .iter()
            .enumerate()
            .filter(|(k, _)| !used[img][*k])
            .map(|(k, g)| (k, box_iou(d, g)))
            .filter(|&(_, v)| v >= iou_threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((k, _)) => {
                used[img][k] = true;
                tp += 1;
            }
            None => fp += 1,
        }
        let recall = if num_gt == 0 { 0.0 } else { tp as f64 / num_gt as f64 };
        curve.push((recall, tp as f64 / (tp + fp) as f64));
    }
    // Monotone precision from the right, then the area under the recall steps.
    for i in (0..curve.len().saturating_sub(1)).rev() {
        curve[i].1 = curve[i].1.max(curve[i + 1].1);
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for &(r, p) in &curve {
        ap += (r - prev_recall) * p;
        prev_recall = r;
    }
    let recall = if num_gt == 0 { 0.0 } else { tp as f64 / num_gt as f64 };
    Ok(ApResult { ap, recall, num_gt, num_det: all.len() })
}

/// One image's answer for image-level identification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAnswer {
    /// Best brand found (before any threshold), None when nothing was found at all.
    pub brand: Option<String>,
    /// Its score: the similarity, or the confidence a decision rule ranks by (−∞ when nothing was found).
    pub similarity: f32,
    /// Brands truly present; empty for a no-logo image.
    pub truth: Vec<String>,
}

/// Identification at one false-alarm rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtFalseAlarm {
    /// The asked false-alarm rate on no-logo images.
    pub target: f64,
    /// Similarity threshold that meets it (accept `≥ threshold`).
    pub threshold: f32,
    /// False-alarm rate reached on the no-logo images (≤ target).
    pub false_alarm_rate: f64,
    /// Share of logo images whose best brand is right and passes the threshold.
    pub identified: f64,
}

/// Image-level identification summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentificationReport {
    /// Images with at least one true brand.
    pub num_logo_images: usize,
    /// Images with none.
    pub num_no_logo_images: usize,
    /// Share of logo images whose best brand (no threshold) is one of the true brands.
    pub top1: f64,
    /// One entry per asked false-alarm rate.
    pub at_false_alarm: Vec<AtFalseAlarm>,
}

/// Top-1 accuracy and the share identified at each false-alarm rate on the no-logo images.
///
/// The threshold for rate `f` is the smallest similarity accepted by at most `⌊f · n⌋` no-logo
/// images (strictly above the next-higher no-logo score), so the achieved rate never exceeds `f`.
pub fn identification_report(answers: &[ImageAnswer], false_alarm_rates: &[f64]) -> Result<IdentificationReport> {
    let (logo, none): (Vec<&ImageAnswer>, Vec<&ImageAnswer>) = answers.iter().partition(|a| !a.truth.is_empty());
    if logo.is_empty() {
        return Err(EvalError::Empty { what: "images with a logo" });
    }
    if let Some(i) = answers.iter().position(|a| a.similarity.is_nan()) {
        return Err(EvalError::NonFinite { what: "image similarities", row: i, col: 0, value: f64::NAN });
    }
    let right = |a: &ImageAnswer| a.brand.as_ref().is_some_and(|b| a.truth.contains(b));
    let top1 = logo.iter().filter(|a| right(a)).count() as f64 / logo.len() as f64;
    let mut neg: Vec<f32> = none.iter().map(|a| a.similarity).collect();
    neg.sort_by(|a, b| b.total_cmp(a));
    let mut at = Vec::new();
    for &f in false_alarm_rates {
        if !(0.0..=1.0).contains(&f) {
            return Err(EvalError::InvalidParameter { name: "false_alarm_rate", value: f.to_string(), reason: "must be in [0, 1]" });
        }
        let allowed = (f * neg.len() as f64 + 1e-9).floor() as usize;
        // Accept strictly above the (allowed+1)-th highest negative score.
        let threshold = if allowed >= neg.len() { f32::NEG_INFINITY } else { neg[allowed].next_up() };
        let fa = neg.iter().filter(|&&s| s >= threshold).count();
        let identified = logo.iter().filter(|a| right(a) && a.similarity >= threshold).count() as f64 / logo.len() as f64;
        at.push(AtFalseAlarm { target: f, threshold, false_alarm_rate: if neg.is_empty() { 0.0 } else { fa as f64 / neg.len() as f64 }, identified });
    }
    Ok(IdentificationReport { num_logo_images: logo.len(), num_no_logo_images: none.len(), top1, at_false_alarm: at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(b: [f32; 4], s: f32) -> ScoredBox {
        ScoredBox { bbox: b, score: s }
    }

    #[test]
    fn ap_of_perfect_and_of_mixed_detections() {
        let gt = vec![vec![[0.0, 0.0, 10.0, 10.0]], vec![[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]];
        let perfect = vec![vec![sb([0.0, 0.0, 10.0, 10.0], 0.9)], vec![sb([20.0, 20.0, 30.0, 30.0], 0.8), sb([1.0, 0.0, 10.0, 10.0], 0.7)]];
        let r = average_precision(&perfect, &gt, 0.5).unwrap();
        assert_eq!((r.ap, r.recall, r.num_gt), (1.0, 1.0, 3));
        // A false positive ranked second: P = 1, 1/2, 2/3, 3/4 at recalls 1/3, 1/3, 2/3, 1.
        let mixed =
            vec![vec![sb([0.0, 0.0, 10.0, 10.0], 0.9), sb([50.0, 50.0, 60.0, 60.0], 0.85)], vec![sb([20.0, 20.0, 30.0, 30.0], 0.8), sb([0.0, 0.0, 10.0, 10.0], 0.7)]];
        let r = average_precision(&mixed, &gt, 0.5).unwrap();
        let want = 1.0 / 3.0 * 1.0 + 1.0 / 3.0 * 0.75 + 1.0 / 3.0 * 0.75;
        assert!((r.ap - want).abs() < 1e-12, "{} vs {want}", r.ap);
    }

    #[test]
    fn duplicate_detections_count_once() {
        let gt = vec![vec![[0.0, 0.0, 10.0, 10.0]]];
        let dets = vec![vec![sb([0.0, 0.0, 10.0, 10.0], 0.9), sb([0.0, 0.0, 10.0, 9.0], 0.8)]];
        let r = average_precision(&dets, &gt, 0.5).unwrap();
        assert_eq!(r.ap, 1.0);
        assert_eq!(r.num_det, 2);
        let low = average_precision(&[vec![sb([0.0, 0.0, 4.0, 10.0], 0.9)]], &gt, 0.5).unwrap();
        assert_eq!((low.ap, low.recall), (0.0, 0.0));
        assert!(average_precision(&dets, &[], 0.5).is_err());
    }

    fn ans(brand: Option<&str>, s: f32, truth: &[&str]) -> ImageAnswer {
        ImageAnswer { brand: brand.map(String::from), similarity: s, truth: truth.iter().map(|t| t.to_string()).collect() }
    }

    #[test]
    fn identification_thresholds_never_exceed_the_false_alarm_rate() {
        let mut a = vec![ans(Some("a"), 0.9, &["a"]), ans(Some("b"), 0.95, &["a"]), ans(Some("c"), 0.6, &["c"]), ans(None, f32::NEG_INFINITY, &["d"])];
        for i in 0..10 {
            a.push(ans(Some("x"), 0.5 + 0.04 * i as f32, &[]));
        }
        let r = identification_report(&a, &[0.0, 0.1, 1.0]).unwrap();
        assert_eq!((r.num_logo_images, r.num_no_logo_images), (4, 10));
        assert_eq!(r.top1, 0.5);
        // 0 %: above the best negative 0.86 → only "a" at 0.9 is identified.
        assert_eq!(r.at_false_alarm[0].false_alarm_rate, 0.0);
        assert_eq!(r.at_false_alarm[0].identified, 0.25);
        // 10 %: one negative (0.86) may pass; threshold just above 0.82.
        assert_eq!(r.at_false_alarm[1].false_alarm_rate, 0.1);
        assert_eq!(r.at_false_alarm[1].identified, 0.25);
        // 100 %: everything passes; right answers are 2 of 4.
        assert_eq!(r.at_false_alarm[2].identified, 0.5);
        assert!(identification_report(&a[4..], &[0.1]).is_err(), "no logo images");
    }
}
