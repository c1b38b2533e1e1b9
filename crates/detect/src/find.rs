//! Finding brands in whole images: localise, crop, embed, search the gallery, decide.
//!
//! Each detected region is cropped from the original image (with some context padding, as the
//! gallery's crops were), embedded by the metric-learning model and ranked against the gallery.
//! Each region gets a *confidence*: its best brand's similarity plus `score_weight · ln(score)`,
//! the localiser's belief that a logo is there (floored at [`SCORE_FLOOR`]; the whole-image
//! region, which the localiser did not propose, counts as the floor). A region is *known* when
//! its confidence reaches the threshold (the gallery's calibrated one unless given). The image's
//! answer is its most confident known region; with none, the image's brand is null and its
//! similarity is the best region's, so a caller can still rank. Optionally the whole image is one
//! more region, for photos where the logo fills the frame.
//!
//! Why fuse the localiser score: in cluttered photos a weak proposal (texture, text, a face) can
//! land slightly nearer to some brand than the real logo's crop does to its own; the localiser
//! knows the real logo is more logo-like. Measured on the FlickrLogos-27 query photos with the
//! weight chosen on one half and scored on the other, the share identified at 5 % false alarms
//! rose from 0.56–0.60 to 0.70 on both halves. With weight 0 the confidence is the similarity,
//! and since `ln(score) ≤ 0` a positive weight only makes the calibrated threshold stricter.

use image::RgbImage;
use proxima_index::{Decision, Gallery};
use proxima_models::model_dir::TrainedModel;
use serde::{Deserialize, Serialize};

use crate::error::{DetectError, Result};
use crate::localiser::Localiser;

/// Options of [`Finder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FindOptions {
    /// At most this many regions per image are identified (best localiser scores first).
    pub max_regions: usize,
    /// Ignore regions whose localiser score is below this.
    pub min_score: f32,
    /// Context added around each region before cropping, as a fraction of its size per side.
    pub padding: f32,
    /// Decision threshold (similarity); None: the gallery's calibrated threshold.
    pub threshold: Option<f32>,
    /// Also identify the whole image as one region (score 0).
    pub whole_image: bool,
    /// Images whose longer side exceeds this are scaled down first (the factor is reported).
    pub max_side: u32,
    /// Weight of the localiser score in a region's confidence (`similarity + w · ln(score)`); 0
    /// ranks and decides by similarity alone.
    pub score_weight: f32,
    /// Test-time augmentation: more context paddings at which each region is embedded too; the
    /// region's embedding is the mean of its views (L2-normalised again when the model normalises).
    /// Empty: one view at `padding`.
    pub tta_paddings: Vec<f32>,
}

/// Localiser scores below this count as this in a region's confidence (the default `min_score`).
pub const SCORE_FLOOR: f32 = 0.05;

impl Default for FindOptions {
    fn default() -> Self {
        FindOptions { max_regions: 8, min_score: 0.05, padding: 0.1, threshold: None, whole_image: false, max_side: 4096, score_weight: 0.1, tta_paddings: Vec::new() }
    }
}

/// One identified region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionAnswer {
    /// `[x0, y0, x1, y1]` in pixels of the original image.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The brand when its similarity reaches the threshold, else null.
    pub brand: Option<String>,
    /// Similarity of the best brand.
    pub similarity: f32,
    /// The best brand whatever the threshold.
    pub best_brand: String,
    /// Similarity of the second-best brand (null with a one-brand gallery): a region that is
    /// about as close to two brands is less likely a logo of either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_similarity: Option<f32>,
    /// The second-best brand (null with a one-brand gallery); `proxima check` lets it make a page
    /// on its own domain consistent when its confidence clears the threshold too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_brand: Option<String>,
    /// Localiser score (0 for the whole-image region).
    pub score: f32,
    /// `similarity + score_weight · ln(max(score, SCORE_FLOOR))`: what ranks the regions and what
    /// the threshold applies to.
    #[serde(default)]
    pub confidence: f32,
}

/// The answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindAnswer {
    pub image: String,
    /// Brand of the most confident known region, null when none passes the threshold.
    pub brand: Option<String>,
    /// Similarity of the most confident region (known or not); null when no region was found.
    pub similarity: Option<f32>,
    /// Confidence of that region (see [`RegionAnswer::confidence`]); null when none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The threshold used.
    pub threshold: f32,
    /// Factor the image was scaled by before anything else (1 unless larger than `max_side`).
    pub scale: f32,
    /// Regions, most confident first.
    pub regions: Vec<RegionAnswer>,
}

/// Localiser + embedding model + gallery.
pub struct Finder<'a> {
    localiser: &'a Localiser,
    model: &'a TrainedModel,
    gallery: &'a Gallery,
    threshold: f32,
    opts: FindOptions,
}

impl<'a> Finder<'a> {
    /// Checks that the gallery belongs to the model and that a threshold exists.
    pub fn new(localiser: &'a Localiser, model: &'a TrainedModel, gallery: &'a Gallery, opts: FindOptions) -> Result<Self> {
        if gallery.model_fingerprint() != model.fingerprint() {
            return Err(DetectError::ModelMismatch { gallery: gallery.model_fingerprint().to_string(), model: model.fingerprint().to_string() });
        }
        if gallery.dim() != model.dim() {
            return Err(DetectError::Config(format!("gallery dimension {} differs from the model's {}", gallery.dim(), model.dim())));
        }
        if gallery.is_empty() {
            return Err(DetectError::Config("the gallery is empty: enrol brands first".into()));
        }
        if opts.max_regions == 0 || !(0.0..=1.0).contains(&opts.padding) || opts.max_side < 32 {
            return Err(DetectError::Config("max_regions must be > 0, padding in [0, 1] and max_side ≥ 32".into()));
        }
        if let Some(p) = opts.tta_paddings.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(DetectError::Config(format!("every test-time padding must be in [0, 1], got {p}")));
        }
        if !(opts.score_weight >= 0.0 && opts.score_weight.is_finite()) {
            return Err(DetectError::Config(format!("score_weight must be ≥ 0, got {}", opts.score_weight)));
        }
        let threshold = gallery
            .decision_threshold(opts.threshold)
            .map_err(|_| DetectError::Config("the gallery has no calibrated threshold: calibrate it or pass a threshold".into()))?;
        if !threshold.is_finite() {
            return Err(DetectError::Config(format!("threshold must be a number, got {threshold}")));
        }
        Ok(Finder { localiser, model, gallery, threshold, opts })
    }

    /// The decision threshold in use.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Finds brands in one decoded image; `name` is echoed in the answer.
    pub fn find(&self, name: &str, img: &RgbImage) -> Result<FindAnswer> {
        let (img, scale) = downscale(img, &self.opts).map_err(|e| DetectError::Input(format!("{name}: {e}")))?;
        let (dets, _) = self.localiser.detect(&img)?;
        let regions = regions(&dets, &img, &self.opts);
        let emb = embed_regions(self.model, &img, &regions, self.opts.padding, &self.opts.tta_paddings)?;
        answer(name, &regions, &emb, scale, self.gallery, self.threshold, self.opts.score_weight)
    }
}

/// One embedding per region: its crop at `padding`, or the mean over `padding` and each of
/// `tta_paddings` (L2-normalised again when the model normalises its output).
///
/// # Shapes
/// Returns `regions.len() × embedding_size`, row-major.
pub fn embed_regions(model: &TrainedModel, img: &RgbImage, regions: &[([f32; 4], f32)], padding: f32, tta_paddings: &[f32]) -> Result<Vec<f32>> {
    if regions.is_empty() {
        return Ok(Vec::new());
    }
    let views: Vec<f32> = std::iter::once(padding).chain(tta_paddings.iter().copied()).collect();
    let crops: Vec<RgbImage> = views.iter().flat_map(|&p| regions.iter().map(move |(b, _)| crop(img, *b, p))).collect();
    let all = model.embed_images(&crops)?;
    if views.len() == 1 {
        return Ok(all);
    }
    let (n, d) = (regions.len(), model.dim());
    let mut mean = vec![0f32; n * d];
    for view in all.chunks_exact(n * d) {
        for (m, v) in mean.iter_mut().zip(view) {
            *m += v / views.len() as f32;
        }
    }
    if model.normalizes() {
        for row in mean.chunks_exact_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(mean)
}

/// The image scaled down so that its longer side is at most `opts.max_side`, and the factor.
pub fn downscale<'i>(img: &'i RgbImage, opts: &FindOptions) -> Result<(std::borrow::Cow<'i, RgbImage>, f32)> {
    if img.width() == 0 || img.height() == 0 {
        return Err(DetectError::Input("the image is empty (0 pixels)".into()));
    }
    let longer = img.width().max(img.height());
    if longer <= opts.max_side {
        return Ok((std::borrow::Cow::Borrowed(img), 1.0));
    }
    let s = opts.max_side as f32 / longer as f32;
    let (w, h) = (((img.width() as f32 * s).round() as u32).max(1), ((img.height() as f32 * s).round() as u32).max(1));
    Ok((std::borrow::Cow::Owned(image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)), s))
}

/// The regions to identify: the best detections above `min_score`, plus the whole image if asked.
pub fn regions(dets: &[crate::localiser::Detection], img: &RgbImage, opts: &FindOptions) -> Vec<([f32; 4], f32)> {
    let mut r: Vec<([f32; 4], f32)> = dets.iter().filter(|d| d.score >= opts.min_score).take(opts.max_regions).map(|d| (d.bbox, d.score)).collect();
    if opts.whole_image {
        r.push(([0.0, 0.0, img.width() as f32, img.height() as f32], 0.0));
    }
    r
}

/// The answer from regions (in pixels of the possibly scaled image) and their embeddings.
///
/// # Shapes
/// `embeddings`: `regions.len() × gallery.dim()`.
pub fn answer(name: &str, regions: &[([f32; 4], f32)], embeddings: &[f32], scale: f32, gallery: &Gallery, threshold: f32, score_weight: f32) -> Result<FindAnswer> {
    let mut answer = FindAnswer { image: name.to_string(), brand: None, similarity: None, confidence: None, threshold, scale, regions: Vec::new() };
    if regions.is_empty() {
        return Ok(answer);
    }
    // The two best brands of each region, and the background when it ranks among them.
    let ranked = gallery.rank_batch(embeddings, 2)?;
    for ((b, score), r) in regions.iter().zip(ranked) {
        // A region nearest to the background is not a logo: no answer at all.
        if r.is_background() {
            continue;
        }
        let best = &r.brands[0];
        let confidence = best.similarity + score_weight * score.max(SCORE_FLOOR).ln();
        // The gallery's rule (no background, a brand to answer), with the threshold on the confidence.
        let brand = match r.decide(f32::NEG_INFINITY)? {
            Decision::Known { brand, .. } if confidence >= threshold => Some(brand),
            _ => None,
        };
        answer.regions.push(RegionAnswer {
            bbox: b.map(|v| v / scale),
            brand,
            similarity: best.similarity,
            best_brand: best.brand.clone(),
            second_similarity: r.brands.get(1).map(|m| m.similarity),
            second_brand: r.brands.get(1).map(|m| m.brand.clone()),
            score: *score,
            confidence,
        });
    }
    if answer.regions.is_empty() {
        return Ok(answer);
    }
    answer.regions.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    answer.similarity = Some(answer.regions[0].similarity);
    answer.confidence = Some(answer.regions[0].confidence);
    answer.brand = answer.regions[0].brand.clone();
    Ok(answer)
}

/// The gallery brand whose rows are non-logo regions (`proxima localiser negatives`): a region
/// nearer to it than to any brand is not a logo. Why: UI elements and text that resemble one
/// enrolled mark more than any other (a "hub" brand) otherwise cause most false alarms on
/// screenshots; examples of them in the gallery answer "none" for such regions. The notion
/// belongs to the gallery ([`proxima_index::background`]), so that `query` and the HTTP
/// service follow the same rule; this is a re-export.
pub use proxima_index::BACKGROUND_BRAND;

/// Crops `b` grown by `padding` of its size per side, clamped to the image: the one crop rule,
/// shared with the training crops `proxima data crops` cuts from scenes (a re-export).
pub use proxima_data::scene::crop;

#[cfg(test)]
mod tests {
    use super::*;

    /// A region nearest to the background brand is dropped; the others report the best real
    /// brand and the second-best one's similarity.
    #[test]
    fn background_regions_are_not_answers() {
        let mut g = Gallery::new(2, "m").unwrap();
        g.add("acme", &[1.0, 0.0], &["a.png"]).unwrap();
        g.add("globex", &[0.6, 0.8], &["g.png"]).unwrap();
        g.add(BACKGROUND_BRAND, &[0.0, 1.0], &["bg.png"]).unwrap();
        let regions = [([0.0, 0.0, 10.0, 10.0], 0.9), ([20.0, 0.0, 30.0, 10.0], 0.8)];
        // Region 0 is acme-like; region 1 is nearest to the background.
        let emb = [1.0, 0.1, 0.1, 1.0];
        let a = answer("x", &regions, &emb, 1.0, &g, 0.5, 0.0).unwrap();
        assert_eq!(a.regions.len(), 1);
        assert_eq!((a.brand.as_deref(), a.regions[0].best_brand.as_str()), (Some("acme"), "acme"));
        let second = a.regions[0].second_similarity.unwrap();
        assert!(second < a.regions[0].similarity && second > 0.0, "globex is second: {second}");
        // Only background-like regions: no answer at all.
        let a = answer("y", &regions[1..], &emb[2..], 1.0, &g, 0.5, 0.0).unwrap();
        assert!(a.regions.is_empty() && a.brand.is_none() && a.similarity.is_none());
    }

    /// The localiser score reorders regions: a weak proposal slightly nearer to a brand loses to a
    /// confident one, and the threshold applies to the confidence (weight 0: the similarity).
    #[test]
    fn the_localiser_score_weighs_in_the_confidence() {
        let mut g = Gallery::new(2, "m").unwrap();
        g.add("acme", &[1.0, 0.0], &["a.png"]).unwrap();
        g.add("globex", &[0.0, 1.0], &["g.png"]).unwrap();
        // Region 0: confident proposal, acme at 0.90; region 1: weak proposal, globex at 0.95.
        let regions = [([0.0, 0.0, 10.0, 10.0], 0.8), ([20.0, 0.0, 30.0, 10.0], 0.06)];
        let emb = [0.9, (1.0f32 - 0.81).sqrt(), (1.0f32 - 0.9025).sqrt(), 0.95];
        let plain = answer("x", &regions, &emb, 1.0, &g, 0.5, 0.0).unwrap();
        assert_eq!(plain.brand.as_deref(), Some("globex"));
        assert_eq!(plain.regions[0].confidence, plain.regions[0].similarity);
        let fused = answer("x", &regions, &emb, 1.0, &g, 0.5, 0.1).unwrap();
        assert_eq!(fused.brand.as_deref(), Some("acme"));
        let want = 0.9 + 0.1 * 0.8f32.ln();
        assert!((fused.confidence.unwrap() - want).abs() < 1e-5 && (fused.similarity.unwrap() - 0.9).abs() < 1e-5);
        // A threshold between the confidence and the similarity: unknown under the fusion.
        let strict = answer("x", &regions, &emb, 1.0, &g, 0.89, 0.1).unwrap();
        assert!(strict.brand.is_none() && strict.regions.iter().all(|r| r.brand.is_none()), "{strict:?}");
        // The whole-image region (score 0) counts as the floor, not as −∞.
        let whole = answer("x", &[([0.0, 0.0, 30.0, 10.0], 0.0)], &emb[..2], 1.0, &g, 0.5, 0.1).unwrap();
        assert!((whole.confidence.unwrap() - (0.9 + 0.1 * SCORE_FLOOR.ln())).abs() < 1e-5);
    }
}
