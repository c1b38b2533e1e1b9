//! Synthetic scenes: web-page screenshots and cluttered photos that carry real brand marks.
//!
//! Why: a logo localiser needs whole images with boxes, and the flagship use (a phishing page that
//! shows a bank's logo) has no public annotated set. The marks come from simple-icons (CC0 SVGs,
//! thousands of brands, rendered with resvg in the brand's colour), so the same catalogue also
//! yields galleries and embedding-training crops for far more brands than FlickrLogos-27 has.
//! Brands are split once, by a hash of their slug, into a training part and a held-out part, so
//! an evaluation can use brands that neither the localiser nor the embedding ever saw.
//!
//! Screenshots are laid out like sign-in pages (header bar with a logo and navigation, a card
//! with a second logo, input fields, a button, paragraphs of pseudo-text, icons that are not
//! logos); photos are gradients with clutter where marks sit under perspective, colour shift,
//! blur and noise. Every scene draws from its own RNG seeded by `(seed, index)`: output is
//! byte-identical whatever the thread count.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{write_file, write_png};
use crate::error::{DataError, Result};
use crate::raster::{apply_h, gaussian_blur3, homography, hsv_to_rgb, sample_bilinear};
use crate::rng::{Rng, derive_seed};
use crate::scene::{Scene, SceneBox, write_scenes};

/// One brand of the simple-icons catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Icon {
    /// File stem of `icons/<slug>.svg`; the brand name used in galleries.
    pub slug: String,
    /// Display name.
    pub title: String,
    /// Brand colour.
    pub rgb: [u8; 3],
    /// The SVG file.
    pub svg: PathBuf,
}

/// A brand mark that scenes can carry: a simple-icons [`Icon`], or a built-in synthetic brand
/// ([`crate::synth::SynthMark`], what `proxima demo` draws its screenshots with).
pub trait ScreenMark: Sync {
    /// Brand name written in the scene manifest (the gallery's brand name).
    fn brand(&self) -> &str;
    /// Brand colour: tints headers and buttons, and colours one-colour marks when it contrasts.
    fn colour(&self) -> [u8; 3];
    /// The mark with its longer side (about) `side` pixels, cropped to its ink, in straight RGBA;
    /// one-colour marks are drawn in `colour`, multi-colour ones keep their own colours.
    fn render(&self, side: u32, colour: [u8; 3]) -> Result<RgbaImage>;
}

impl ScreenMark for Icon {
    fn brand(&self) -> &str {
        &self.slug
    }
    fn colour(&self) -> [u8; 3] {
        self.rgb
    }
    fn render(&self, side: u32, colour: [u8; 3]) -> Result<RgbaImage> {
        render_icon(self, side, colour)
    }
}

/// Which brands of the catalogue to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BrandPart {
    /// Brands outside the held-out part (for training).
    #[default]
    Train,
    /// The held-out brands (never used for training).
    Heldout,
    /// Every brand.
    All,
}

/// Share of simple-icons brands in the held-out part.
pub const HELDOUT_FRACTION: f64 = 0.15;

/// True when `slug` belongs to the held-out part (a fixed hash split, independent of seeds).
pub fn is_heldout(slug: &str) -> bool {
    (crate::rng::mix64(crate::rng::fnv1a64(0, slug.as_bytes())) >> 11) as f64 / (1u64 << 53) as f64 <= HELDOUT_FRACTION
}

/// Loads the simple-icons catalogue (`data/simple-icons.json` + `icons/*.svg`) under `root`.
///
/// Entries whose SVG is missing are skipped; the result is sorted by slug.
pub fn load_icons(root: &Path, part: BrandPart) -> Result<Vec<Icon>> {
    #[derive(Deserialize)]
    struct Entry {
        title: String,
        hex: String,
        #[serde(default)]
        slug: Option<String>,
    }
    let meta = root.join("data").join("simple-icons.json");
    let text = std::fs::read_to_string(&meta).map_err(|e| DataError::io(&meta, e))?;
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| DataError::Invalid(format!("{}: not a simple-icons catalogue: {e}", meta.display())))?;
    let mut icons = Vec::new();
    for e in entries {
        let Some(slug) = e.slug else { continue };
        let svg = root.join("icons").join(format!("{slug}.svg"));
        let rgb = parse_hex(&e.hex).unwrap_or([0, 0, 0]);
        let keep = match part {
            BrandPart::All => true,
            BrandPart::Train => !is_heldout(&slug),
            BrandPart::Heldout => is_heldout(&slug),
        };
        if keep && svg.is_file() {
            icons.push(Icon { slug, title: e.title, rgb, svg });
        }
    }
    icons.sort_by(|a, b| a.slug.cmp(&b.slug));
    if icons.is_empty() {
        return Err(DataError::Invalid(format!("{}: no icons found for the {part:?} part", root.display())));
    }
    Ok(icons)
}

fn parse_hex(s: &str) -> Option<[u8; 3]> {
    let s = s.trim_start_matches('#');
    if s.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(s, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

/// Renders `icon` so that its longer side is `side` pixels, in `colour`, cropped to its ink.
///
/// Returns straight (not premultiplied) RGBA.
pub fn render_icon(icon: &Icon, side: u32, colour: [u8; 3]) -> Result<RgbaImage> {
    let data = std::fs::read(&icon.svg).map_err(|e| DataError::io(&icon.svg, e))?;
    let text = String::from_utf8_lossy(&data);
    let fill = format!("<svg fill=\"#{:02x}{:02x}{:02x}\" ", colour[0], colour[1], colour[2]);
    let text = text.replacen("<svg ", &fill, 1);
    let tree =
        resvg::usvg::Tree::from_str(&text, &resvg::usvg::Options::default()).map_err(|e| DataError::Decode { path: icon.svg.clone(), reason: format!("SVG: {e}") })?;
    let size = tree.size();
    let scale = side.max(1) as f32 / size.width().max(size.height());
    let (w, h) = (((size.width() * scale).ceil() as u32).max(1), ((size.height() * scale).ceil() as u32).max(1));
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h).ok_or_else(|| DataError::Config(format!("icon size {w}×{h} is invalid")))?;
    resvg::render(&tree, resvg::tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    let mut rgba = pixmap.data().to_vec();
    for px in rgba.chunks_exact_mut(4) {
        let a = px[3] as f32 / 255.0;
        if a > 0.0 {
            for c in px.iter_mut().take(3) {
                *c = ((*c as f32 / a).round()).min(255.0) as u8;
            }
        }
    }
    let img = RgbaImage::from_raw(w, h, rgba).expect("pixmap size");
    Ok(crop_to_ink(&img))
}

/// Crops an RGBA image to the bounding box of its non-transparent pixels.
pub(crate) fn crop_to_ink(img: &RgbaImage) -> RgbaImage {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p[3] > 8 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x + 1);
            y1 = y1.max(y + 1);
        }
    }
    if x0 >= x1 || y0 >= y1 {
        return img.clone();
    }
    image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

/// Scene synthesis options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SceneOptions {
    /// Screenshots to render.
    pub screenshots: usize,
    /// Photos to render.
    pub photos: usize,
    /// Share of scenes rendered with no logo at all (open-set negatives).
    pub no_logo_fraction: f32,
    /// Which brands the logos come from (simple-icons only; [`synth_scenes_with`] takes its marks).
    pub part: BrandPart,
    /// Master seed.
    pub seed: u64,
    /// Longer side of photo scenes in pixels.
    pub photo_size: u32,
}

impl Default for SceneOptions {
    fn default() -> Self {
        SceneOptions { screenshots: 200, photos: 100, no_logo_fraction: 0.15, part: BrandPart::Train, seed: 0, photo_size: 640 }
    }
}

impl SceneOptions {
    /// Checks option ranges.
    pub fn validate(&self) -> Result<()> {
        if self.screenshots + self.photos == 0 {
            return Err(DataError::Config("scenes: nothing to render (screenshots and photos are both 0)".into()));
        }
        if !(0.0..=1.0).contains(&self.no_logo_fraction) {
            return Err(DataError::Config(format!("scenes: no_logo_fraction must be in [0, 1], got {}", self.no_logo_fraction)));
        }
        if !(64..=4096).contains(&self.photo_size) {
            return Err(DataError::Config(format!("scenes: photo_size must be in 64..=4096, got {}", self.photo_size)));
        }
        Ok(())
    }
}

/// What [`synth_scenes`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneReport {
    /// The scene manifest (`scenes.jsonl`).
    pub manifest: PathBuf,
    /// Scenes written.
    pub scenes: usize,
    /// Logo boxes written.
    pub boxes: usize,
    /// Distinct brands used.
    pub brands: usize,
}

/// Renders screenshots and photos with simple-icons logos into `out/images/` + `out/scenes.jsonl`.
pub fn synth_scenes(icons_root: &Path, opts: &SceneOptions, out: &Path) -> Result<SceneReport> {
    opts.validate()?;
    let icons = load_icons(icons_root, opts.part)?;
    synth_scenes_with(&icons, opts, out)
}

/// As [`synth_scenes`], with the logos drawn from `marks` (`opts.part` is not used).
pub fn synth_scenes_with<M: ScreenMark>(marks: &[M], opts: &SceneOptions, out: &Path) -> Result<SceneReport> {
    opts.validate()?;
    if marks.is_empty() {
        return Err(DataError::Config("scenes: no brand mark to draw".into()));
    }
    let n = opts.screenshots + opts.photos;
    let scenes: Vec<Scene> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut r = Rng::new(derive_seed(&[opts.seed, 0x5ce2e, i as u64]));
            let with_logo = !r.chance(opts.no_logo_fraction);
            let icon: Option<&dyn ScreenMark> = with_logo.then(|| &marks[r.below(marks.len())] as &dyn ScreenMark);
            let (img, boxes) = if i < opts.screenshots { screenshot(&mut r, icon)? } else { photo(&mut r, icon, opts.photo_size)? };
            let (kind, ext, fmt) = if i < opts.screenshots { ("screenshot", "png", ImageFormat::Png) } else { ("photo", "jpg", ImageFormat::Jpeg) };
            let path = out.join("images").join(format!("{kind}_{i:05}.{ext}"));
            let mut buf = Vec::new();
            DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut buf), fmt).map_err(|e| DataError::Encode { path: path.clone(), reason: e.to_string() })?;
            write_file(&path, &buf)?;
            let brands = icon.map(|ic| vec![ic.brand().to_string()]).unwrap_or_default();
            let boxes = boxes.into_iter().map(|b| SceneBox { bbox: b, brand: icon.expect("boxes imply a logo").brand().to_string() }).collect();
            Ok(Scene { image: path, brands, boxes: Some(boxes), kind: kind.into() })
        })
        .collect::<Result<_>>()?;
    let manifest = out.join("scenes.jsonl");
    write_scenes(&manifest, &scenes)?;
    let mut used: Vec<&str> = scenes.iter().flat_map(|s| s.brands.iter().map(String::as_str)).collect();
    used.sort_unstable();
    used.dedup();
    Ok(SceneReport { manifest, scenes: scenes.len(), boxes: scenes.iter().map(|s| s.boxes.as_ref().map_or(0, Vec::len)).sum(), brands: used.len() })
}

/// One sign-in-page screenshot carrying `mark` (none: a page without a logo) and its logo boxes,
/// in memory; the same `seed` gives the same pixels.
pub fn render_screenshot(seed: u64, mark: Option<&dyn ScreenMark>) -> Result<(RgbImage, Vec<[f32; 4]>)> {
    screenshot(&mut Rng::new(derive_seed(&[seed, 0x5c4ee7])), mark)
}

/// Renders `per_brand` logo crops of every brand of `part` into `out/<slug>/NNN.png` (size²).
///
/// The first crop is the clean mark on white; the others vary background, colour (brand colour,
/// black, white on a dark badge), padding and a slight blur — what an enrolment set looks like.
pub fn render_icon_crops(icons_root: &Path, part: BrandPart, per_brand: usize, size: u32, seed: u64, max_brands: Option<usize>, out: &Path) -> Result<usize> {
    if per_brand == 0 || !(16..=1024).contains(&size) {
        return Err(DataError::Config(format!("icon crops: per_brand must be > 0 and size in 16..=1024 (got {per_brand}, {size})")));
    }
    let mut icons = load_icons(icons_root, part)?;
    if let Some(m) = max_brands {
        let mut r = Rng::new(derive_seed(&[seed, 0x1c0]));
        r.shuffle(&mut icons);
        icons.truncate(m);
        icons.sort_by(|a, b| a.slug.cmp(&b.slug));
    }
    let jobs: Vec<(usize, usize)> = (0..icons.len()).flat_map(|b| (0..per_brand).map(move |i| (b, i))).collect();
    jobs.par_iter().try_for_each(|&(b, i)| {
        let icon = &icons[b];
        let mut r = Rng::new(derive_seed(&[seed, 0xc2, b as u64, i as u64]));
        let s = size as usize;
        let (bg, colour) = if i == 0 { ([1.0, 1.0, 1.0], icon.rgb) } else { badge_colours(&mut r, icon.rgb) };
        let mut canvas = vec![0f32; s * s * 3];
        for px in canvas.chunks_exact_mut(3) {
            px.copy_from_slice(&bg);
        }
        let fill = if i == 0 { 0.8 } else { r.range_f32(0.6, 0.95) };
        let logo = render_icon(icon, (size as f32 * fill) as u32, colour)?;
        let (lw, lh) = (logo.width() as f32, logo.height() as f32);
        let x0 = (size as f32 - lw) * if i == 0 { 0.5 } else { r.range_f32(0.3, 0.7) };
        let y0 = (size as f32 - lh) * if i == 0 { 0.5 } else { r.range_f32(0.3, 0.7) };
        paste(&mut canvas, s, s, &logo, [x0 as f64, y0 as f64], 1.0);
        if i > 0 {
            gaussian_blur3(&mut canvas, s, s, r.range_f32(0.0, 0.8));
        }
        let path = out.join(&icon.slug).join(format!("{i:03}.png"));
        write_png(&path, to_rgb(&canvas, s, s))
    })?;
    Ok(jobs.len())
}

/// A background and a logo colour that contrast: brand colour on light, black on light, white on dark/brand.
pub(crate) fn badge_colours(r: &mut Rng, brand: [u8; 3]) -> ([f32; 3], [u8; 3]) {
    let lum = |c: [u8; 3]| (0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32) / 255.0;
    let light = [r.range_f32(0.9, 1.0); 3];
    match r.below(4) {
        0 | 1 if lum(brand) < 0.75 => (light, brand),
        2 => (light, [20, 20, 20]),
        _ => {
            let dark = if lum(brand) < 0.6 { brand.map(|v| v as f32 / 255.0) } else { [0.1, 0.1, 0.12] };
            (dark, [255, 255, 255])
        }
    }
}

// ---------------------------------------------------------------- canvas helpers

/// The camera over a whole canvas: per-channel `gains`, a Gaussian blur of σ drawn in [0, `max_blur`],
/// then sensor noise of a standard deviation drawn in [0, `max_noise`].
pub(crate) fn camera(r: &mut Rng, c: &mut [f32], w: usize, h: usize, gains: [f32; 3], max_blur: f32, max_noise: f32) {
    for px in c.chunks_exact_mut(3) {
        for k in 0..3 {
            px[k] *= gains[k];
        }
    }
    gaussian_blur3(c, w, h, r.range_f32(0.0, max_blur));
    let noise = max_noise * r.f32();
    for v in c.iter_mut() {
        *v += noise * r.normal();
    }
}

pub(crate) fn to_rgb(canvas: &[f32], w: usize, h: usize) -> RgbImage {
    let bytes = canvas.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes).expect("size matches")
}

pub(crate) fn fill_rect(c: &mut [f32], w: usize, h: usize, r: [f32; 4], col: [f32; 3]) {
    let x0 = r[0].max(0.0) as usize;
    let y0 = r[1].max(0.0) as usize;
    let x1 = (r[2].max(0.0) as usize).min(w);
    let y1 = (r[3].max(0.0) as usize).min(h);
    for y in y0..y1 {
        for x in x0..x1 {
            c[(y * w + x) * 3..][..3].copy_from_slice(&col);
        }
    }
}

fn stroke_rect(c: &mut [f32], w: usize, h: usize, r: [f32; 4], col: [f32; 3]) {
    fill_rect(c, w, h, [r[0], r[1], r[2], r[1] + 1.0], col);
    fill_rect(c, w, h, [r[0], r[3] - 1.0, r[2], r[3]], col);
    fill_rect(c, w, h, [r[0], r[1], r[0] + 1.0, r[3]], col);
    fill_rect(c, w, h, [r[2] - 1.0, r[1], r[2], r[3]], col);
}

fn fill_circle(c: &mut [f32], w: usize, h: usize, cx: f32, cy: f32, rad: f32, col: [f32; 3]) {
    let (x0, x1) = ((cx - rad).max(0.0) as usize, ((cx + rad).ceil().max(0.0) as usize).min(w));
    let (y0, y1) = ((cy - rad).max(0.0) as usize, ((cy + rad).ceil().max(0.0) as usize).min(h));
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= rad * rad {
                c[(y * w + x) * 3..][..3].copy_from_slice(&col);
            }
        }
    }
}

/// Pseudo-text: words of letter-like bars on one line from `x` to at most `x_end`; returns the end x.
fn text_line(c: &mut [f32], w: usize, h: usize, r: &mut Rng, x: f32, y: f32, x_end: f32, size: f32, col: [f32; 3]) -> f32 {
    let mut cx = x;
    while cx < x_end {
        let letters = 2 + r.below(8);
        let word_w = letters as f32 * size * 0.55;
        if cx + word_w > x_end {
            break;
        }
        for _ in 0..letters {
            let tall = r.chance(0.3);
            let lh = if tall { size } else { size * 0.62 };
            let lw = size * r.range_f32(0.25, 0.45);
            fill_rect(c, w, h, [cx, y + size - lh, cx + lw, y + size], col);
            cx += size * 0.55;
        }
        cx += size * 0.4;
    }
    cx
}

/// Alpha-blends a straight-RGBA logo at `at` (top-left, pixels) with an extra opacity.
fn paste(c: &mut [f32], w: usize, h: usize, logo: &RgbaImage, at: [f64; 2], opacity: f32) -> [f32; 4] {
    let (lw, lh) = (logo.width() as f64, logo.height() as f64);
    let quad = [[at[0], at[1]], [at[0] + lw, at[1]], [at[0] + lw, at[1] + lh], [at[0], at[1] + lh]];
    paste_warped(c, w, h, logo, &quad, opacity)
}

/// Alpha-blends a straight-RGBA logo mapped onto `quad` (clockwise from its top-left corner);
/// returns the tight box of the pixels it covered (`[0; 4]` when none).
pub(crate) fn paste_warped(c: &mut [f32], w: usize, h: usize, logo: &RgbaImage, quad: &[[f64; 2]; 4], opacity: f32) -> [f32; 4] {
    let (lw, lh) = (logo.width() as usize, logo.height() as usize);
    let rgba: Vec<f32> = logo.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    let src = [[0.0, 0.0], [lw as f64, 0.0], [lw as f64, lh as f64], [0.0, lh as f64]];
    let Some(hm) = homography(quad, &src) else { return [0.0; 4] };
    let xs = quad.iter().map(|p| p[0]);
    let ys = quad.iter().map(|p| p[1]);
    let bx0 = xs.clone().fold(f64::INFINITY, f64::min).floor().max(0.0) as usize;
    let bx1 = (xs.fold(f64::NEG_INFINITY, f64::max).ceil().max(0.0) as usize).min(w);
    let by0 = ys.clone().fold(f64::INFINITY, f64::min).floor().max(0.0) as usize;
    let by1 = (ys.fold(f64::NEG_INFINITY, f64::max).ceil().max(0.0) as usize).min(h);
    let (mut tx0, mut ty0, mut tx1, mut ty1) = (usize::MAX, usize::MAX, 0, 0);
    for y in by0..by1 {
        for x in bx0..bx1 {
            let (u, v) = apply_h(&hm, x as f64 + 0.5, y as f64 + 0.5);
            let Some(p) = sample_bilinear::<4>(&rgba, lw, lh, u - 0.5, v - 0.5) else { continue };
            let a = p[3] * opacity;
            if a <= 0.02 {
                continue;
            }
            let px = &mut c[(y * w + x) * 3..][..3];
            for k in 0..3 {
                px[k] = p[k] * a + px[k] * (1.0 - a);
            }
            if a > 0.25 {
                tx0 = tx0.min(x);
                ty0 = ty0.min(y);
                tx1 = tx1.max(x + 1);
                ty1 = ty1.max(y + 1);
            }
        }
    }
    if tx0 >= tx1 { [0.0; 4] } else { [tx0 as f32, ty0 as f32, tx1 as f32, ty1 as f32] }
}

/// The corners of an `size` rectangle centred on `centre`, rotated by an angle drawn in
/// ±`max_angle` radians, each corner then moved by up to `jitter` pixels in x and y: a perspective
/// warp for [`paste_warped`].
pub(crate) fn warped_quad(r: &mut Rng, centre: [f32; 2], size: [f32; 2], max_angle: f32, jitter: f32) -> [[f64; 2]; 4] {
    let (sa, ca) = r.range_f32(-max_angle, max_angle).sin_cos();
    let mut quad = [[0f64; 2]; 4];
    for (k, (dx, dy)) in [(-0.5f32, -0.5f32), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)].iter().enumerate() {
        let (px, py) = (dx * size[0], dy * size[1]);
        quad[k] = [(centre[0] + px * ca - py * sa + r.range_f32(-jitter, jitter)) as f64, (centre[1] + px * sa + py * ca + r.range_f32(-jitter, jitter)) as f64];
    }
    quad
}

pub(crate) fn valid_box(b: &[f32; 4]) -> bool {
    b[2] - b[0] >= 2.0 && b[3] - b[1] >= 2.0
}

// ---------------------------------------------------------------- screenshots

const SCREEN_SIZES: [(usize, usize); 6] = [(1280, 800), (1440, 900), (1024, 768), (1366, 768), (800, 600), (414, 896)];

/// A sign-in-page-like screenshot; one or two boxes of `icon` (none when `icon` is None).
fn screenshot(r: &mut Rng, icon: Option<&dyn ScreenMark>) -> Result<(RgbImage, Vec<[f32; 4]>)> {
    let (w, h) = SCREEN_SIZES[r.below(SCREEN_SIZES.len())];
    let (wf, hf) = (w as f32, h as f32);
    let dark = r.chance(0.15);
    let page_bg = if dark { [r.range_f32(0.08, 0.16); 3] } else { [r.range_f32(0.93, 1.0); 3] };
    let ink = if dark { [0.85, 0.85, 0.87] } else { [0.15, 0.15, 0.18] };
    let soft_ink = if dark { [0.6, 0.6, 0.62] } else { [0.45, 0.45, 0.5] };
    let mut c = vec![0f32; w * h * 3];
    for px in c.chunks_exact_mut(3) {
        px.copy_from_slice(&page_bg);
    }
    let accent = icon.map(|i| i.colour().map(|v| v as f32 / 255.0)).unwrap_or_else(|| hsv_to_rgb(r.f32(), r.range_f32(0.4, 0.9), r.range_f32(0.4, 0.9)));
    let mut boxes = Vec::new();

    // Header bar: plain, tinted, or brand-coloured.
    let header_h = r.range_f32(48.0, 84.0);
    let header_bg = match r.below(3) {
        0 => page_bg,
        1 => {
            if dark {
                [0.2; 3]
            } else {
                [r.range_f32(0.86, 0.97); 3]
            }
        }
        _ => accent.map(|v| v * 0.8),
    };
    fill_rect(&mut c, w, h, [0.0, 0.0, wf, header_h], header_bg);
    let header_dark = header_bg.iter().sum::<f32>() < 1.5;
    let header_ink = if header_dark { [0.95; 3] } else { ink };
    let mut x = r.range_f32(12.0, 48.0);
    if let Some(icon) = icon {
        let side = r.range_f32(0.4, 0.75) * header_h;
        let colour = contrast_colour(icon.colour(), header_bg);
        let logo = icon.render(side as u32, colour)?;
        let b = paste(&mut c, w, h, &logo, [x as f64, ((header_h - logo.height() as f32) / 2.0) as f64], 1.0);
        if valid_box(&b) {
            boxes.push(b);
            x = b[2];
        }
        // A wordmark beside the logo, as many pages do.
        let end = x + 10.0 + r.range_f32(40.0, 160.0);
        x = text_line(&mut c, w, h, r, x + 10.0, header_h * 0.5 - 9.0, end, 18.0, header_ink) + 20.0;
    } else {
        let end = x + r.range_f32(60.0, 160.0);
        x = text_line(&mut c, w, h, r, x, header_h * 0.5 - 9.0, end, 18.0, header_ink) + 20.0;
    }
    // Navigation items and a hamburger / avatar icon on the right.
    let nav_end = wf - 80.0;
    let mut nx = x.max(wf * 0.45);
    while nx < nav_end && r.chance(0.85) {
        let end = (nx + r.range_f32(40.0, 90.0)).min(nav_end);
        nx = text_line(&mut c, w, h, r, nx, header_h * 0.5 - 6.0, end, 12.0, header_ink) + 24.0;
    }
    if r.chance(0.7) {
        fill_circle(&mut c, w, h, wf - 40.0, header_h * 0.5, header_h * 0.22, if header_dark { [0.8; 3] } else { soft_ink });
    }

    // The sign-in card.
    let card_w = (wf * r.range_f32(0.3, 0.42)).clamp(300f32.min(wf - 20.0), wf - 20.0);
    let card_h = (hf * r.range_f32(0.5, 0.7)).min(hf - header_h - 30.0);
    let card_x = if r.chance(0.6) { (wf - card_w) / 2.0 } else { wf - card_w - r.range_f32(20.0, 80.0).min(wf - card_w - 5.0) };
    let card_y = header_h + r.range_f32(20.0, (hf - header_h - card_h - 10.0).max(21.0));
    let card_bg = if dark { [0.18; 3] } else { [1.0; 3] };
    fill_rect(&mut c, w, h, [card_x, card_y, card_x + card_w, card_y + card_h], card_bg);
    stroke_rect(&mut c, w, h, [card_x, card_y, card_x + card_w, card_y + card_h], if dark { [0.3; 3] } else { [0.85; 3] });
    let mut y = card_y + 20.0;
    if let Some(icon) = icon.filter(|_| r.chance(0.6)) {
        let side = r.range_f32(40.0, 120.0).min(card_w * 0.6);
        let logo = icon.render(side as u32, contrast_colour(icon.colour(), card_bg))?;
        let b = paste(&mut c, w, h, &logo, [(card_x + (card_w - logo.width() as f32) / 2.0) as f64, y as f64], 1.0);
        if valid_box(&b) {
            boxes.push(b);
            y = b[3] + 16.0;
        }
    }
    text_line(&mut c, w, h, r, card_x + 24.0, y, card_x + card_w - 24.0, 20.0, ink);
    y += 44.0;
    for _ in 0..2 {
        let end = card_x + 24.0 + r.range_f32(50.0, 120.0);
        text_line(&mut c, w, h, r, card_x + 24.0, y, end, 11.0, soft_ink);
        y += 18.0;
        stroke_rect(&mut c, w, h, [card_x + 24.0, y, card_x + card_w - 24.0, y + 36.0], if dark { [0.45; 3] } else { [0.7; 3] });
        y += 52.0;
    }
    let button_col = if icon.is_some() && r.chance(0.7) { accent } else { hsv_to_rgb(r.f32(), 0.7, 0.7) };
    fill_rect(&mut c, w, h, [card_x + 24.0, y, card_x + card_w - 24.0, y + 40.0], button_col);
    text_line(&mut c, w, h, r, card_x + card_w / 2.0 - 30.0, y + 14.0, card_x + card_w / 2.0 + 40.0, 12.0, [1.0; 3]);

    // Paragraphs of pseudo-text and a few non-logo icons around the card.
    let (left, right) = if card_x > wf * 0.3 { (24.0, card_x - 24.0) } else { (card_x + card_w + 24.0, wf - 24.0) };
    if right - left > 80.0 {
        let mut ty = header_h + r.range_f32(30.0, 80.0);
        let size = r.range_f32(10.0, 16.0);
        while ty < hf - 40.0 && r.chance(0.95) {
            let col = if r.chance(0.2) { ink } else { soft_ink };
            text_line(&mut c, w, h, r, left, ty, right, size, col);
            ty += size * r.range_f32(1.5, 2.4);
            if r.chance(0.08) {
                let col = hsv_to_rgb(r.f32(), r.range_f32(0.2, 0.8), r.range_f32(0.5, 0.9));
                fill_circle(&mut c, w, h, left + 12.0, ty + 12.0, 12.0, col);
                ty += 34.0;
            }
        }
    }
    // Footer line.
    fill_rect(&mut c, w, h, [0.0, hf - 36.0, wf, hf], if dark { [0.12; 3] } else { [0.95; 3] });
    text_line(&mut c, w, h, r, 24.0, hf - 24.0, wf * 0.5, 10.0, soft_ink);
    // Occasional JPEG-like softness (screenshots get rescaled and recompressed).
    if r.chance(0.3) {
        gaussian_blur3(&mut c, w, h, r.range_f32(0.3, 0.8));
    }
    Ok((to_rgb(&c, w, h), boxes))
}

/// The brand colour when it stands out on `bg`, else black or white.
fn contrast_colour(brand: [u8; 3], bg: [f32; 3]) -> [u8; 3] {
    let lum = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    let b = brand.map(|v| v as f32 / 255.0);
    if (lum(b) - lum(bg)).abs() > 0.3 {
        brand
    } else if lum(bg) > 0.5 {
        [15, 15, 15]
    } else {
        [250, 250, 250]
    }
}

// ---------------------------------------------------------------- photos

/// A cluttered photo-like scene with zero to two warped marks of `icon`.
fn photo(r: &mut Rng, icon: Option<&dyn ScreenMark>, longer: u32) -> Result<(RgbImage, Vec<[f32; 4]>)> {
    let long = longer as usize;
    let short = (longer as f32 * r.range_f32(0.6, 0.8)) as usize;
    let (w, h) = if r.chance(0.7) { (long, short) } else { (short, long) };
    let (wf, hf) = (w as f32, h as f32);
    let mut c = vec![0f32; w * h * 3];
    let c0 = hsv_to_rgb(r.f32(), r.range_f32(0.0, 0.7), r.range_f32(0.2, 1.0));
    let c1 = hsv_to_rgb(r.f32(), r.range_f32(0.0, 0.7), r.range_f32(0.2, 1.0));
    let (gs, gc) = r.range_f32(0.0, std::f32::consts::TAU).sin_cos();
    for y in 0..h {
        for x in 0..w {
            let t = ((x as f32 / wf - 0.5) * gc + (y as f32 / hf - 0.5) * gs + 0.5).clamp(0.0, 1.0);
            for k in 0..3 {
                c[(y * w + x) * 3 + k] = c0[k] * (1.0 - t) + c1[k] * t;
            }
        }
    }
    for _ in 0..(5 + r.below(25)) {
        let col = hsv_to_rgb(r.f32(), r.range_f32(0.0, 1.0), r.range_f32(0.1, 1.0));
        let (cx, cy) = (r.range_f32(0.0, wf), r.range_f32(0.0, hf));
        let s = r.range_f32(0.02, 0.25) * wf.min(hf);
        if r.chance(0.5) {
            fill_circle(&mut c, w, h, cx, cy, s, col);
        } else {
            fill_rect(&mut c, w, h, [cx - s, cy - s * r.range_f32(0.1, 1.0), cx + s, cy + s * r.range_f32(0.1, 1.0)], col);
        }
    }
    let mut boxes = Vec::new();
    if let Some(icon) = icon {
        for _ in 0..(1 + usize::from(r.chance(0.2))) {
            let side = r.range_f32(0.06, 0.45) * wf.min(hf);
            let (bg, colour) = badge_colours(r, icon.colour());
            let logo = icon.render((side * 2.0) as u32, colour)?;
            let scale = side / logo.width().max(logo.height()) as f32;
            let (lw, lh) = (logo.width() as f32 * scale, logo.height() as f32 * scale);
            let (cx, cy) = (r.range_f32(lw * 0.6, (wf - lw * 0.6).max(lw * 0.6 + 1.0)), r.range_f32(lh * 0.6, (hf - lh * 0.6).max(lh * 0.6 + 1.0)));
            // A sign or sticker behind some marks.
            if r.chance(0.5) {
                let pad = side * r.range_f32(0.1, 0.3);
                fill_rect(&mut c, w, h, [cx - lw / 2.0 - pad, cy - lh / 2.0 - pad, cx + lw / 2.0 + pad, cy + lh / 2.0 + pad], bg);
            }
            let quad = warped_quad(r, [cx, cy], [lw, lh], 0.35, 0.12 * side);
            let b = paste_warped(&mut c, w, h, &logo, &quad, r.range_f32(0.85, 1.0));
            if valid_box(&b) {
                boxes.push(b);
            }
        }
    }
    let gains: [f32; 3] = std::array::from_fn(|_| 1.0 + 0.12 * r.normal());
    camera(r, &mut c, w, h, gains, 1.5, 0.04);
    Ok((to_rgb(&c, w, h), boxes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$PROXIMA_DATA_DIR/simple-icons` (default `../shared/data` from the workspace root).
    fn icons_root() -> Option<PathBuf> {
        let data = std::env::var_os("PROXIMA_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
        let p = data.join("simple-icons");
        p.join("data/simple-icons.json").is_file().then_some(p)
    }

    #[test]
    fn heldout_split_is_fixed_and_about_the_asked_share() {
        let slugs: Vec<String> = (0..4000).map(|i| format!("brand{i}")).collect();
        let held = slugs.iter().filter(|s| is_heldout(s)).count() as f64 / slugs.len() as f64;
        assert!((held - HELDOUT_FRACTION).abs() < 0.03, "{held}");
        assert_eq!(is_heldout("paypal"), is_heldout("paypal"));
    }

    #[test]
    fn hex_colours_parse() {
        assert_eq!(parse_hex("FF8000"), Some([255, 128, 0]));
        assert_eq!(parse_hex("#00ff00"), Some([0, 255, 0]));
        assert_eq!(parse_hex("zz"), None);
    }

    #[test]
    fn paste_reports_the_covered_box() {
        let (w, h) = (40, 30);
        let mut c = vec![1f32; w * h * 3];
        let logo = RgbaImage::from_pixel(10, 5, image::Rgba([0, 0, 0, 255]));
        let b = paste(&mut c, w, h, &logo, [12.0, 7.0], 1.0);
        assert_eq!(b, [12.0, 7.0, 22.0, 12.0]);
        assert_eq!(c[(8 * w + 13) * 3], 0.0);
        assert_eq!(c[(2 * w + 2) * 3], 1.0);
    }

    #[test]
    fn scenes_render_deterministically_with_boxes_on_ink() {
        let Some(root) = icons_root() else {
            eprintln!("SKIPPED: simple-icons is absent (set PROXIMA_DATA_DIR)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = SceneOptions { screenshots: 3, photos: 2, no_logo_fraction: 0.2, part: BrandPart::Heldout, seed: 7, photo_size: 256 };
        let rep = synth_scenes(&root, &opts, dir.path()).unwrap();
        assert_eq!(rep.scenes, 5);
        let scenes = crate::scene::read_scenes(&rep.manifest).unwrap();
        for s in &scenes {
            let img = image::open(&s.image).unwrap().to_rgb8();
            for b in s.boxes.as_ref().unwrap() {
                assert!(b.bbox[2] <= img.width() as f32 && b.bbox[3] <= img.height() as f32, "{:?}", b.bbox);
                assert!(is_heldout(&b.brand));
            }
            assert_eq!(s.brands.is_empty(), s.boxes.as_ref().unwrap().is_empty());
        }
        let again = tempfile::tempdir().unwrap();
        let rep2 = synth_scenes(&root, &opts, again.path()).unwrap();
        let a = std::fs::read(&scenes[0].image).unwrap();
        let b = std::fs::read(again.path().join(scenes[0].image.strip_prefix(dir.path()).unwrap())).unwrap();
        assert_eq!(a, b, "same seed, same bytes");
        assert_eq!(rep.boxes, rep2.boxes);
    }

    /// Screenshots carrying built-in synthetic brands need no simple-icons: every scene with a
    /// logo has boxes of its brand, covering pixels that differ from the page, and the output is
    /// byte-identical for the same seed.
    #[test]
    fn screenshots_of_synthetic_brands() {
        let marks: Vec<crate::SynthMark> = (0..3).map(|b| crate::SynthMark::new(5, b)).collect();
        let m = marks[1].render(60, [0, 0, 0]).unwrap();
        assert!(m.width().max(m.height()) <= 60 && m.width().max(m.height()) >= 30, "{:?}", m.dimensions());
        assert!(m.pixels().any(|p| p[3] == 255) && m.pixels().any(|p| p[3] == 0), "ink cropped, not filled");
        assert!(marks[0].render(1, [0, 0, 0]).is_err());

        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opts = SceneOptions { screenshots: 4, photos: 0, no_logo_fraction: 0.25, seed: 9, ..Default::default() };
        let rep = synth_scenes_with(&marks, &opts, a.path()).unwrap();
        assert_eq!(rep.scenes, 4);
        assert!(rep.boxes >= 1);
        let scenes = crate::scene::read_scenes(&rep.manifest).unwrap();
        for s in &scenes {
            let img = image::open(&s.image).unwrap().to_rgb8();
            let boxes = s.boxes.as_ref().unwrap();
            assert_eq!(s.brands.is_empty(), boxes.is_empty());
            for bx in boxes {
                assert!(bx.brand.starts_with("brand_000") && s.brands.contains(&bx.brand));
                let px: Vec<_> = (bx.bbox[1] as u32..bx.bbox[3] as u32).flat_map(|y| (bx.bbox[0] as u32..bx.bbox[2] as u32).map(move |x| (x, y))).collect();
                let first = img.get_pixel(px[0].0, px[0].1);
                assert!(px.iter().any(|&(x, y)| img.get_pixel(x, y) != first), "the box covers a drawn mark: {:?}", bx.bbox);
            }
        }
        synth_scenes_with(&marks, &opts, b.path()).unwrap();
        for s in &scenes {
            let again = b.path().join(s.image.strip_prefix(a.path()).unwrap());
            assert_eq!(std::fs::read(&s.image).unwrap(), std::fs::read(again).unwrap(), "same seed, same bytes");
        }
        assert!(synth_scenes_with::<crate::SynthMark>(&[], &opts, b.path()).is_err());
    }

    #[test]
    fn icon_renders_in_colour_cropped_to_ink() {
        let Some(root) = icons_root() else {
            eprintln!("SKIPPED: simple-icons is absent (set PROXIMA_DATA_DIR)");
            return;
        };
        let icons = load_icons(&root, BrandPart::All).unwrap();
        assert!(icons.len() > 3000);
        let adidas = icons.iter().find(|i| i.slug == "adidas").expect("adidas is in simple-icons");
        let img = render_icon(adidas, 100, [255, 0, 0]).unwrap();
        assert!(img.width() <= 100 && img.height() <= 100 && img.width().max(img.height()) >= 95);
        let solid = img.pixels().filter(|p| p[3] == 255).collect::<Vec<_>>();
        assert!(!solid.is_empty() && solid.iter().all(|p| p[0] == 255 && p[1] == 0));
    }
}
