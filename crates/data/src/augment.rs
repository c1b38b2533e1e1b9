//! Augmentation: seeded image transforms ending in a normalised `f32` CHW buffer.
//!
//! Why this shape: pipelines are data (a serde list of tagged transforms, e.g.
//! `{"type": "random_resized_crop", "size": [128, 128]}`) so experiments change them without
//! recompiling; every random draw comes from an RNG seeded by `(pipeline seed, epoch, sample
//! index)`, so a sample's augmentation is identical whichever worker thread processes it. No
//! horizontal flip by default: mirrored logos are different marks (text reads backwards).

use std::cell::RefCell;

use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::raster::{gaussian_blur3, homography, hsv_to_rgb, rgb_to_hsv, warp_rgb};
use crate::rng::Rng;

fn default_scale() -> [f32; 2] {
    [0.5, 1.0]
}
fn default_ratio() -> [f32; 2] {
    [0.75, 4.0 / 3.0]
}
fn one() -> f32 {
    1.0
}
fn half() -> f32 {
    0.5
}
fn fill_grey() -> [u8; 3] {
    [124, 116, 104]
}

/// One transform. Sizes are `[height, width]`; `p` is the probability of applying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Resize to exactly `size` (aspect not kept).
    Resize {
        /// `[h, w]`.
        size: [u32; 2],
    },
    /// Resize so the shorter side is `size`, keeping aspect.
    ResizeShorter {
        /// Shorter side.
        size: u32,
    },
    /// Centre crop to `size` (pads with grey if the image is smaller).
    CenterCrop {
        /// `[h, w]`.
        size: [u32; 2],
    },
    /// Random area/aspect crop resized to `size` (Inception-style).
    RandomResizedCrop {
        /// `[h, w]`.
        size: [u32; 2],
        /// Area fraction range.
        #[serde(default = "default_scale")]
        scale: [f32; 2],
        /// Aspect ratio (w/h) range, sampled log-uniformly.
        #[serde(default = "default_ratio")]
        ratio: [f32; 2],
    },
    /// Rotation by a uniform angle in `±degrees` about the centre.
    Rotation {
        /// Max absolute angle in degrees.
        degrees: f32,
        /// Probability.
        #[serde(default = "one")]
        p: f32,
        /// Fill colour for uncovered pixels.
        #[serde(default = "fill_grey")]
        fill: [u8; 3],
    },
    /// Random perspective: each corner moves inward by up to `distortion × half side`.
    Perspective {
        /// Strength in `[0, 1]`.
        distortion: f32,
        /// Probability.
        #[serde(default = "half")]
        p: f32,
        /// Fill colour for uncovered pixels.
        #[serde(default = "fill_grey")]
        fill: [u8; 3],
    },
    /// Brightness/contrast/saturation/hue jitter (factors as in torchvision).
    ColorJitter {
        /// Brightness factor range `1 ± brightness`.
        #[serde(default)]
        brightness: f32,
        /// Contrast factor range `1 ± contrast`.
        #[serde(default)]
        contrast: f32,
        /// Saturation factor range `1 ± saturation`.
        #[serde(default)]
        saturation: f32,
        /// Hue shift range `± hue` (fraction of the colour wheel, ≤ 0.5).
        #[serde(default)]
        hue: f32,
        /// Probability.
        #[serde(default = "one")]
        p: f32,
    },
    /// Convert to grey (3 equal channels).
    Grayscale {
        /// Probability.
        #[serde(default = "one")]
        p: f32,
    },
    /// Gaussian blur with sigma uniform in `sigma` (pixels).
    GaussianBlur {
        /// `[min, max]` sigma.
        sigma: [f32; 2],
        /// Probability.
        #[serde(default = "half")]
        p: f32,
    },
    /// Additive Gaussian noise with standard deviation `std` (in 0..1 intensity units).
    Noise {
        /// Standard deviation.
        std: f32,
        /// Probability.
        #[serde(default = "half")]
        p: f32,
    },
    /// Horizontal mirror. Not in any default pipeline (mirrored logos are different marks).
    HorizontalFlip {
        /// Probability.
        #[serde(default = "half")]
        p: f32,
    },
}

/// Per-channel normalisation `(x / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Channel means (RGB, 0..1).
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }
}

/// A pipeline configuration: transforms in order, then normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Transforms applied in order.
    pub transforms: Vec<Transform>,
    /// Final normalisation (ImageNet statistics by default).
    #[serde(default)]
    pub normalize: Normalize,
}

impl PipelineConfig {
    /// Training preset: random resized crop, mild rotation/perspective, colour jitter, blur, noise.
    pub fn train(size: u32) -> Self {
        PipelineConfig {
            transforms: vec![
                Transform::RandomResizedCrop { size: [size, size], scale: [0.6, 1.0], ratio: default_ratio() },
                Transform::Rotation { degrees: 10.0, p: 0.5, fill: fill_grey() },
                Transform::Perspective { distortion: 0.2, p: 0.3, fill: fill_grey() },
                Transform::ColorJitter { brightness: 0.3, contrast: 0.3, saturation: 0.3, hue: 0.03, p: 0.8 },
                Transform::Grayscale { p: 0.05 },
                Transform::GaussianBlur { sigma: [0.1, 1.0], p: 0.2 },
                Transform::Noise { std: 0.02, p: 0.2 },
            ],
            normalize: Normalize::default(),
        }
    }

    /// Evaluation preset: resize to `size`² (no randomness).
    pub fn eval(size: u32) -> Self {
        PipelineConfig { transforms: vec![Transform::Resize { size: [size, size] }], normalize: Normalize::default() }
    }

    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(format!("augment: {m}")));
        let prob = |p: f32| (0.0..=1.0).contains(&p);
        for t in &self.transforms {
            match t {
                Transform::Resize { size } | Transform::CenterCrop { size } if size[0] == 0 || size[1] == 0 => return bad(format!("{t:?}: zero size")),
                Transform::ResizeShorter { size: 0 } => return bad("resize_shorter: zero size".into()),
                Transform::RandomResizedCrop { size, scale, ratio }
                    if size[0] == 0 || size[1] == 0 || !(scale[0] > 0.0 && scale[0] <= scale[1] && scale[1] <= 1.0) || !(ratio[0] > 0.0 && ratio[0] <= ratio[1]) =>
                {
                    return bad(format!("{t:?}: need size > 0, 0 < scale[0] <= scale[1] <= 1, 0 < ratio[0] <= ratio[1]"));
                }
                Transform::Rotation { p, .. } | Transform::Grayscale { p } | Transform::HorizontalFlip { p } if !prob(*p) => {
                    return bad(format!("{t:?}: p out of [0,1]"));
                }
                Transform::Perspective { distortion, p, .. } if !prob(*p) || !(0.0..=1.0).contains(distortion) => {
                    return bad(format!("{t:?}: p and distortion in [0,1]"));
                }
                Transform::ColorJitter { brightness, contrast, saturation, hue, p }
                    if !prob(*p) || [*brightness, *contrast, *saturation].iter().any(|v| !(0.0..=1.0).contains(v)) || !(0.0..=0.5).contains(hue) =>
                {
                    return bad(format!("{t:?}: factors in [0,1], hue in [0,0.5], p in [0,1]"));
                }
                Transform::GaussianBlur { sigma, p } if !(prob(*p) && sigma[0] >= 0.0 && sigma[0] <= sigma[1]) => {
                    return bad(format!("{t:?}: need 0 <= sigma[0] <= sigma[1]"));
                }
                Transform::Noise { std, p } if !prob(*p) || *std < 0.0 => return bad(format!("{t:?}: std >= 0, p in [0,1]")),
                _ => {}
            }
        }
        if self.normalize.std.iter().any(|&s| s <= 0.0) {
            return bad("normalize.std must be > 0".into());
        }
        Ok(())
    }

    /// Parses and validates a JSON pipeline configuration.
    pub fn from_json(text: &str) -> Result<Self> {
        let c: PipelineConfig = serde_json::from_str(text).map_err(|e| DataError::Config(format!("augment config: {e}")))?;
        c.validate()?;
        Ok(c)
    }
}

/// A validated, seeded pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    cfg: PipelineConfig,
    seed: u64,
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes (optionally a `crop = (left, top, width, height)` region of) `img` to `w × h`.
pub fn resize_rgb(img: &RgbImage, crop: Option<(f64, f64, f64, f64)>, w: u32, h: u32) -> RgbImage {
    if crop.is_none() && img.dimensions() == (w, h) {
        return img.clone();
    }
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3).expect("RgbImage buffer is valid");
    let mut dst = Image::new(w, h, PixelType::U8x3);
    let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    if let Some((l, t, cw, ch)) = crop {
        opts = opts.crop(l, t, cw, ch);
    }
    RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &opts)).expect("same pixel type, non-empty sizes");
    RgbImage::from_raw(w, h, dst.into_vec()).expect("size matches")
}

impl Pipeline {
    /// Validates `cfg` and builds a pipeline drawing randomness from `seed`.
    pub fn new(cfg: PipelineConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(Pipeline { cfg, seed })
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Applies the transforms to `img` for sample `index` in `epoch` (reproducible).
    pub fn apply(&self, img: &RgbImage, epoch: u64, index: u64) -> RgbImage {
        let mut rng = Rng::from_parts(&[self.seed, epoch, index]);
        let mut cur = img.clone();
        for t in &self.cfg.transforms {
            cur = apply_one(t, cur, &mut rng);
        }
        cur
    }

    /// Applies the transforms, resizes to `[h, w]` if the result differs, and writes the
    /// normalised CHW floats into `out` (length `3 * h * w`).
    pub fn run_into(&self, img: &RgbImage, epoch: u64, index: u64, size: [u32; 2], out: &mut [f32]) {
        let mut a = self.apply(img, epoch, index);
        if a.dimensions() != (size[1], size[0]) {
            a = resize_rgb(&a, None, size[1], size[0]);
        }
        to_chw(&a, &self.cfg.normalize, out);
    }
}

/// Writes `img` as normalised CHW floats into `out` (length `3 * h * w`).
pub fn to_chw(img: &RgbImage, n: &Normalize, out: &mut [f32]) {
    let hw = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * hw, "output buffer has the wrong length");
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * n.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| n.mean[c] / n.std[c]);
    let (r, rest) = out.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = p[0] as f32 * scale[0] - shift[0];
        g[i] = p[1] as f32 * scale[1] - shift[1];
        b[i] = p[2] as f32 * scale[2] - shift[2];
    }
}

fn map_pixels(img: &mut RgbImage, f: impl Fn([f32; 3]) -> [f32; 3]) {
    for p in img.as_mut().chunks_exact_mut(3) {
        let v = f([p[0] as f32 / 255.0, p[1] as f32 / 255.0, p[2] as f32 / 255.0]);
        for c in 0..3 {
            p[c] = (v[c].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
    }
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn apply_one(t: &Transform, mut img: RgbImage, rng: &mut Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let (wf, hf) = (w as f64, h as f64);
    match *t {
        Transform::Resize { size } => resize_rgb(&img, None, size[1], size[0]),
        Transform::ResizeShorter { size } => {
            let s = size as f64 / wf.min(hf);
            resize_rgb(&img, None, ((wf * s).round() as u32).max(1), ((hf * s).round() as u32).max(1))
        }
        Transform::CenterCrop { size } => {
            let (cw, ch) = (size[1] as f64, size[0] as f64);
            let (x0, y0) = ((wf - cw) / 2.0, (hf - ch) / 2.0);
            let m = [1.0, 0.0, x0.round(), 0.0, 1.0, y0.round(), 0.0, 0.0, 1.0];
            warp_rgb(&img, size[1], size[0], &m, fill_grey())
        }
        Transform::RandomResizedCrop { size, scale, ratio } => {
            let area = wf * hf;
            let (lr0, lr1) = ((ratio[0] as f64).ln(), (ratio[1] as f64).ln());
            for _ in 0..10 {
                let a = area * rng.range_f32(scale[0], scale[1]) as f64;
                let r = (lr0 + (lr1 - lr0) * rng.f64()).exp();
                let (cw, ch) = ((a * r).sqrt(), (a / r).sqrt());
                if cw <= wf && ch <= hf && cw >= 1.0 && ch >= 1.0 {
                    let x = rng.f64() * (wf - cw);
                    let y = rng.f64() * (hf - ch);
                    return resize_rgb(&img, Some((x, y, cw, ch)), size[1], size[0]);
                }
            }
            // Fallback: centre crop with clamped aspect (as torchvision does).
            let r = wf / hf;
            let (cw, ch) = if r < ratio[0] as f64 {
                (wf, wf / ratio[0] as f64)
            } else if r > ratio[1] as f64 {
                (hf * ratio[1] as f64, hf)
            } else {
                (wf, hf)
            };
            resize_rgb(&img, Some(((wf - cw) / 2.0, (hf - ch) / 2.0, cw, ch)), size[1], size[0])
        }
        Transform::Rotation { degrees, p, fill } => {
            let angle = rng.range_f32(-degrees, degrees);
            if !rng.chance(p) || angle == 0.0 {
                return img;
            }
            let (s, c) = (angle as f64).to_radians().sin_cos();
            let (cx, cy) = (wf / 2.0, hf / 2.0);
            // Output pixel → source: rotate by -angle about the centre.
            let m = [c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy, 0.0, 0.0, 1.0];
            warp_rgb(&img, w, h, &m, fill)
        }
        Transform::Perspective { distortion, p, fill } => {
            let jit: Vec<f64> = (0..8).map(|_| rng.f64() * distortion as f64).collect();
            if !rng.chance(p) || distortion == 0.0 {
                return img;
            }
            let (dx, dy) = (wf / 2.0, hf / 2.0);
            let start = [[0.0, 0.0], [wf, 0.0], [wf, hf], [0.0, hf]];
            let end = [[jit[0] * dx, jit[1] * dy], [wf - jit[2] * dx, jit[3] * dy], [wf - jit[4] * dx, hf - jit[5] * dy], [jit[6] * dx, hf - jit[7] * dy]];
            match homography(&end, &start) {
                Some(m) => warp_rgb(&img, w, h, &m, fill),
                None => img,
            }
        }
        Transform::ColorJitter { brightness, contrast, saturation, hue, p } => {
            let bf = rng.range_f32(1.0 - brightness, 1.0 + brightness);
            let cf = rng.range_f32(1.0 - contrast, 1.0 + contrast);
            let sf = rng.range_f32(1.0 - saturation, 1.0 + saturation);
            let hs = rng.range_f32(-hue, hue);
            if !rng.chance(p) {
                return img;
            }
            let mean = img.as_raw().chunks_exact(3).map(|q| luma([q[0] as f32, q[1] as f32, q[2] as f32])).sum::<f32>() / (255.0 * (w * h).max(1) as f32);
            map_pixels(&mut img, |c| {
                let mut v = c.map(|x| (x * bf).clamp(0.0, 1.0));
                v = v.map(|x| ((x - mean) * cf + mean).clamp(0.0, 1.0));
                let g = luma(v);
                v = v.map(|x| (g + (x - g) * sf).clamp(0.0, 1.0));
                if hs != 0.0 {
                    let hsv = rgb_to_hsv(v);
                    v = hsv_to_rgb(hsv[0] + hs, hsv[1], hsv[2]);
                }
                v
            });
            img
        }
        Transform::Grayscale { p } => {
            if rng.chance(p) {
                map_pixels(&mut img, |c| [luma(c); 3]);
            }
            img
        }
        Transform::GaussianBlur { sigma, p } => {
            let s = rng.range_f32(sigma[0], sigma[1]);
            if !rng.chance(p) {
                return img;
            }
            let mut f: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
            gaussian_blur3(&mut f, w as usize, h as usize, s);
            let out = f.iter().map(|&v| (v + 0.5).clamp(0.0, 255.0) as u8).collect();
            RgbImage::from_raw(w, h, out).expect("size matches")
        }
        Transform::Noise { std, p } => {
            if !rng.chance(p) || std == 0.0 {
                return img;
            }
            for v in img.as_mut() {
                *v = (*v as f32 + rng.normal() * std * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
            }
            img
        }
        Transform::HorizontalFlip { p } => {
            if rng.chance(p) {
                image::imageops::flip_horizontal_in_place(&mut img);
            }
            img
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 11 % 256) as u8, ((x + y) * 3 % 256) as u8]))
    }

    #[test]
    fn config_round_trips_through_tagged_json() {
        let cfg = PipelineConfig::train(64);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"type\":\"random_resized_crop\""), "{json}");
        assert_eq!(PipelineConfig::from_json(&json).unwrap(), cfg);
        let minimal = r#"{"transforms":[{"type":"random_resized_crop","size":[32,32]},{"type":"noise","std":0.1}]}"#;
        let c = PipelineConfig::from_json(minimal).unwrap();
        assert_eq!(c.normalize, Normalize::default());
        assert!(PipelineConfig::from_json(r#"{"transforms":[{"type":"grayscale","p":2.0}]}"#).is_err());
        assert!(PipelineConfig::from_json(r#"{"transforms":[{"type":"spin"}]}"#).is_err());
        assert!(!json.contains("horizontal_flip"), "no flip in the default pipeline");
    }

    #[test]
    fn seeded_per_sample_and_sizes_right() {
        let img = test_image(90, 70);
        let p = Pipeline::new(PipelineConfig::train(32), 11).unwrap();
        let a = p.apply(&img, 1, 5);
        assert_eq!(a.dimensions(), (32, 32));
        assert_eq!(a, p.apply(&img, 1, 5));
        assert_ne!(a, p.apply(&img, 1, 6));
        assert_ne!(a, p.apply(&img, 2, 5));
        let mut out = vec![0f32; 3 * 24 * 20];
        p.run_into(&img, 0, 0, [24, 20], &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn normalisation_matches_formula() {
        let img = RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 128]));
        let mut out = vec![0f32; 6];
        let n = Normalize::default();
        to_chw(&img, &n, &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((out[2] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
        assert!((out[5] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
    }

    #[test]
    fn individual_transforms_behave() {
        let img = test_image(40, 30);
        let mut r = Rng::new(0);
        let g = apply_one(&Transform::Grayscale { p: 1.0 }, img.clone(), &mut r);
        assert!(g.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        let same = apply_one(&Transform::Rotation { degrees: 0.0, p: 1.0, fill: [0; 3] }, img.clone(), &mut r);
        assert_eq!(same, img);
        let rot = apply_one(&Transform::Rotation { degrees: 30.0, p: 1.0, fill: [0, 255, 0] }, img.clone(), &mut r);
        assert_eq!(rot.dimensions(), (40, 30));
        assert_eq!(rot.get_pixel(0, 0), &image::Rgb([0, 255, 0]), "corner is uncovered after rotation");
        let cc = apply_one(&Transform::CenterCrop { size: [10, 20] }, img.clone(), &mut r);
        assert_eq!(cc.get_pixel(0, 0), img.get_pixel(10, 10));
        let rs = apply_one(&Transform::ResizeShorter { size: 15 }, img.clone(), &mut r);
        assert_eq!(rs.dimensions(), (20, 15));
        let flip = apply_one(&Transform::HorizontalFlip { p: 1.0 }, img.clone(), &mut r);
        assert_eq!(flip.get_pixel(0, 0), img.get_pixel(39, 0));
        let flat = RgbImage::from_pixel(8, 8, image::Rgb([100, 100, 100]));
        let bl = apply_one(&Transform::GaussianBlur { sigma: [1.0, 1.0], p: 1.0 }, flat.clone(), &mut r);
        assert_eq!(bl, flat);
        let nz = apply_one(&Transform::Noise { std: 0.1, p: 1.0 }, flat.clone(), &mut r);
        assert_ne!(nz, flat);
    }
}
