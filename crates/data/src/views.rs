//! Enrolment views: more renderings of an enrolled logo image, embedded beside the original.
//!
//! Why: a brand is enrolled from a few clean logo files, large and on a light background, but pages
//! show the same logo 14–32 px tall (its crop, scaled up to the model's input, is soft) or on a dark
//! theme. A gallery row per view puts the brand where such queries land, without retraining. The
//! views are deterministic, so a rebuilt gallery is the same gallery.

use image::{Rgb, RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

/// One view of an enrolled image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrolView {
    /// The image scaled down so that its shorter side is [`SMALL_SIDE`] pixels (area-averaging
    /// filter): the logo as a page draws it in a navigation bar or a footer.
    Small,
    /// The image's light, uniform background replaced by [`DARK_BACKGROUND`], anti-aliased edges
    /// blended: the logo on a dark theme. No view when the border is not a uniform light colour
    /// (a logo on a brand-coloured bar, a photo).
    Dark,
}

/// Shorter side of the [`EnrolView::Small`] view, in pixels.
pub const SMALL_SIDE: u32 = 24;
/// Background of the [`EnrolView::Dark`] view (a neutral dark grey of dark themes).
pub const DARK_BACKGROUND: [u8; 3] = [32, 33, 36];
/// Border pixels within this (largest channel difference) of the border's median colour count as
/// background.
const BORDER_TOLERANCE: u8 = 24;
/// Share of the border that must be background for the image to have a uniform background.
const UNIFORM_SHARE: f32 = 0.9;
/// Channel difference from the background at which a pixel counts as wholly foreground; below it
/// the pixel is taken as a blend of foreground and background in proportion.
const EDGE_RAMP: f32 = 96.0;

impl EnrolView {
    /// Every view, in a fixed order.
    pub const ALL: [EnrolView; 2] = [EnrolView::Small, EnrolView::Dark];

    /// Name of the view (as `--views` spells it).
    pub fn name(self) -> &'static str {
        match self {
            EnrolView::Small => "small",
            EnrolView::Dark => "dark",
        }
    }

    /// The view of `img`, or `None` where it does not apply (already small; no light background).
    pub fn render(self, img: &RgbImage) -> Option<RgbImage> {
        match self {
            EnrolView::Small => small(img, SMALL_SIDE),
            EnrolView::Dark => dark(img, DARK_BACKGROUND),
        }
    }
}

/// `img` scaled so that its shorter side is `side` (aspect kept); `None` when it is not larger.
fn small(img: &RgbImage, side: u32) -> Option<RgbImage> {
    let shorter = img.width().min(img.height());
    if shorter <= side || side == 0 {
        return None;
    }
    let s = side as f64 / shorter as f64;
    let (w, h) = (((img.width() as f64 * s).round() as u32).max(1), ((img.height() as f64 * s).round() as u32).max(1));
    Some(image::imageops::resize(img, w, h, FilterType::Triangle))
}

/// The background colour of `img` when its one-pixel border is uniform and light: the per-channel
/// median of the border, if at least [`UNIFORM_SHARE`] of the border lies within
/// [`BORDER_TOLERANCE`] of it and its luminance is at least 0.6.
pub fn light_background(img: &RgbImage) -> Option<[u8; 3]> {
    let (w, h) = img.dimensions();
    if w < 3 || h < 3 {
        return None;
    }
    let mut border: Vec<[u8; 3]> = Vec::with_capacity(2 * (w + h) as usize);
    for x in 0..w {
        border.push(img.get_pixel(x, 0).0);
        border.push(img.get_pixel(x, h - 1).0);
    }
    for y in 1..h - 1 {
        border.push(img.get_pixel(0, y).0);
        border.push(img.get_pixel(w - 1, y).0);
    }
    let mut bg = [0u8; 3];
    for (c, v) in bg.iter_mut().enumerate() {
        let mut ch: Vec<u8> = border.iter().map(|p| p[c]).collect();
        ch.sort_unstable();
        *v = ch[ch.len() / 2];
    }
    let near = border.iter().filter(|p| diff(p, &bg) <= BORDER_TOLERANCE).count();
    (near as f32 >= UNIFORM_SHARE * border.len() as f32 && luminance(bg) >= 0.6).then_some(bg)
}

/// Relative luminance of an sRGB colour in [0, 1] (Rec. 709 weights on the encoded values).
pub fn luminance(c: [u8; 3]) -> f64 {
    (0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64) / 255.0
}

/// Largest channel difference of two colours.
fn diff(a: &[u8; 3], b: &[u8; 3]) -> u8 {
    (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0)
}

/// `img` with its light background `bg` replaced by `to`.
///
/// A pixel `p` is read as `α·f + (1−α)·bg` with `α = min(1, diff(p, bg) / EDGE_RAMP)`, and drawn
/// as `α·f + (1−α)·to = p − (1−α)·(bg − to)`: background becomes `to`, solid foreground stays,
/// anti-aliased edges blend into the new background instead of keeping a light halo.
fn dark(img: &RgbImage, to: [u8; 3]) -> Option<RgbImage> {
    let bg = light_background(img)?;
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let alpha = (diff(&p.0, &bg) as f32 / EDGE_RAMP).min(1.0);
        let mut q = [0u8; 3];
        for c in 0..3 {
            q[c] = (p.0[c] as f32 - (1.0 - alpha) * (bg[c] as f32 - to[c] as f32)).round().clamp(0.0, 255.0) as u8;
        }
        *p = Rgb(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A red square logo on white, with a one-pixel anti-aliased (pink) edge.
    fn logo_on_white() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| {
            let inside = (10..30).contains(&x) && (8..22).contains(&y);
            let edge = (9..31).contains(&x) && (7..23).contains(&y);
            if inside {
                Rgb([220, 20, 20])
            } else if edge {
                Rgb([238, 138, 138])
            } else {
                Rgb([255, 255, 255])
            }
        })
    }

    #[test]
    fn small_keeps_aspect_and_only_shrinks() {
        let img = logo_on_white();
        let s = EnrolView::Small.render(&img).expect("30 px is above 24");
        assert_eq!((s.width(), s.height()), (32, 24));
        let tiny = RgbImage::new(50, 20);
        assert!(EnrolView::Small.render(&tiny).is_none(), "an image already at most 24 px is not scaled");
    }

    #[test]
    fn dark_swaps_the_background_keeps_the_logo_and_blends_edges() {
        let img = logo_on_white();
        let d = EnrolView::Dark.render(&img).expect("white border");
        assert_eq!(d.get_pixel(0, 0).0, DARK_BACKGROUND);
        assert_eq!(d.get_pixel(20, 15).0, [220, 20, 20], "solid foreground is kept");
        // The pink edge (difference 117 from white, above the ramp) stays; a fainter edge blends.
        assert_eq!(d.get_pixel(9, 15).0, [238, 138, 138]);
        let mut faint = img.clone();
        faint.put_pixel(9, 15, Rgb([255, 207, 207]));
        let f = EnrolView::Dark.render(&faint).unwrap().get_pixel(9, 15).0;
        // α = 48/96 = 0.5: the pixel shifted by half of (white − dark) = (223, 222, 219) / 2.
        assert_eq!(f, [144, 96, 98]);
    }

    #[test]
    fn dark_needs_a_uniform_light_border() {
        let bar = RgbImage::from_pixel(40, 30, Rgb([0, 48, 135]));
        assert!(light_background(&bar).is_none(), "a brand-coloured bar is not a light background");
        assert!(EnrolView::Dark.render(&bar).is_none());
        let noisy = RgbImage::from_fn(40, 30, |x, y| if (x + y) % 2 == 0 { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
        assert!(light_background(&noisy).is_none(), "half the border far from its median");
        assert_eq!(light_background(&logo_on_white()), Some([255, 255, 255]));
        assert!(light_background(&RgbImage::new(2, 2)).is_none());
    }
}
