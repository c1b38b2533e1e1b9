//! Finding brands in whole images: localise, crop, embed, search the gallery, decide.
//!
//! Each detected region is cropped from the original image (with some context padding, as the
//! gallery's crops were), embedded by the metric-learning model and ranked against the gallery.
//! A region is *known* when its best brand's similarity reaches the threshold (the gallery's
//! calibrated one unless given). The image's answer is its best known region; with none, the
//! image's brand is null and its similarity is the best one seen, so a caller can still rank.
//! Optionally the whole image is one more region, for photos where the logo fills the frame.

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
}

impl Default for FindOptions {
    fn default() -> Self {
        FindOptions { max_regions: 8, min_score: 0.05, padding: 0.1, threshold: None, whole_image: false, max_side: 4096 }
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
    /// Localiser score (0 for the whole-image region).
    pub score: f32,
}

/// The answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindAnswer {
    pub image: String,
    /// Brand of the best known region, null when none passes the threshold.
    pub brand: Option<String>,
    /// Similarity of the best region (known or not); null when no region was found at all.
    pub similarity: Option<f32>,
    /// The threshold used.
    pub threshold: f32,
    /// Factor the image was scaled by before anything else (1 unless larger than `max_side`).
    pub scale: f32,
    /// Regions, best similarity first.
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
        if gallery.model_fingerprint() != model.card.fingerprint {
            return Err(DetectError::ModelMismatch { gallery: gallery.model_fingerprint().to_string(), model: model.card.fingerprint.clone() });
        }
        if gallery.dim() != model.card.model.embedding_size as usize {
            return Err(DetectError::Config(format!("gallery dimension {} differs from the model's {}", gallery.dim(), model.card.model.embedding_size)));
        }
        if gallery.is_empty() {
            return Err(DetectError::Config("the gallery is empty: enrol brands first".into()));
        }
        if opts.max_regions == 0 || !(0.0..=1.0).contains(&opts.padding) || opts.max_side < 32 {
            return Err(DetectError::Config("max_regions must be > 0, padding in [0, 1] and max_side ≥ 32".into()));
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
        let crops: Vec<RgbImage> = regions.iter().map(|(b, _)| crop(&img, *b, self.opts.padding)).collect();
        let emb = self.model.embed_images(&crops)?;
        answer(name, &regions, &emb, scale, self.gallery, self.threshold)
    }
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
pub fn answer(name: &str, regions: &[([f32; 4], f32)], embeddings: &[f32], scale: f32, gallery: &Gallery, threshold: f32) -> Result<FindAnswer> {
    let mut answer = FindAnswer { image: name.to_string(), brand: None, similarity: None, threshold, scale, regions: Vec::new() };
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
        let brand = match r.decide(threshold)? {
            Decision::Known { brand, .. } => Some(brand),
            Decision::Unknown { .. } => None,
        };
        answer.regions.push(RegionAnswer {
            bbox: b.map(|v| v / scale),
            brand,
            similarity: best.similarity,
            best_brand: best.brand.clone(),
            second_similarity: r.brands.get(1).map(|m| m.similarity),
            score: *score,
        });
    }
    if answer.regions.is_empty() {
        return Ok(answer);
    }
    answer.regions.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    answer.similarity = Some(answer.regions[0].similarity);
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

/// Crops `b` grown by `padding` of its size per side, clamped to the image (at least 1×1).
pub fn crop(img: &RgbImage, b: [f32; 4], padding: f32) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (pw, ph) = ((b[2] - b[0]) * padding, (b[3] - b[1]) * padding);
    let x0 = (b[0] - pw).clamp(0.0, w - 1.0).floor() as u32;
    let y0 = (b[1] - ph).clamp(0.0, h - 1.0).floor() as u32;
    let x1 = ((b[2] + pw).clamp(0.0, w).ceil() as u32).max(x0 + 1);
    let y1 = ((b[3] + ph).clamp(0.0, h).ceil() as u32).max(y0 + 1);
    image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

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
        let a = answer("x", &regions, &emb, 1.0, &g, 0.5).unwrap();
        assert_eq!(a.regions.len(), 1);
        assert_eq!((a.brand.as_deref(), a.regions[0].best_brand.as_str()), (Some("acme"), "acme"));
        let second = a.regions[0].second_similarity.unwrap();
        assert!(second < a.regions[0].similarity && second > 0.0, "globex is second: {second}");
        // Only background-like regions: no answer at all.
        let a = answer("y", &regions[1..], &emb[2..], 1.0, &g, 0.5).unwrap();
        assert!(a.regions.is_empty() && a.brand.is_none() && a.similarity.is_none());
    }

    #[test]
    fn crop_grows_and_clamps() {
        let img = RgbImage::new(100, 50);
        assert_eq!(crop(&img, [10.0, 10.0, 30.0, 20.0], 0.1).dimensions(), (24, 12));
        assert_eq!(crop(&img, [90.0, 40.0, 100.0, 50.0], 0.5).dimensions(), (15, 15));
        assert_eq!(crop(&img, [99.5, 49.5, 99.6, 49.6], 0.0).dimensions(), (1, 1));
    }
}
