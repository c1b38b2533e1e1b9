//! Built-in synthetic logos: procedural brand marks "photographed" under random conditions.
//!
//! Why: tests, demos and CI need a metric-learning data set that exists without downloads, has as
//! many classes as asked, and is exactly reproducible. Each brand is one fixed design (shape,
//! colours, inner element, pseudo-letter wordmark, layout) derived from `(seed, brand index)`;
//! each image re-renders it with scale, rotation, perspective warp, occlusion, colour shift, blur,
//! noise and a cluttered background, whose strength is set by `difficulty` in `[0, 1]`. Every
//! image draws from its own RNG seeded by `(seed, brand, index)`, so output is byte-identical
//! whatever the thread count.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::write_png;
use crate::error::{DataError, Result};
use crate::raster::{apply_h, gaussian_blur3, homography, hsv_to_rgb, sample_bilinear};
use crate::rng::Rng;

/// Synthesis options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthOptions {
    /// Number of brands (classes).
    pub brands: usize,
    /// Images per brand.
    pub per_brand: usize,
    /// Output side in pixels (images are square).
    pub size: u32,
    /// Master seed.
    pub seed: u64,
    /// Augmentation strength in `[0, 1]` (0 = clean centred marks).
    pub difficulty: f32,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions { brands: 40, per_brand: 30, size: 64, seed: 0, difficulty: 0.5 }
    }
}

impl SynthOptions {
    /// Checks option ranges.
    pub fn validate(&self) -> Result<()> {
        if self.brands == 0 || self.per_brand == 0 {
            return Err(DataError::Config("synth: brands and per_brand must be > 0".into()));
        }
        if !(8..=1024).contains(&self.size) {
            return Err(DataError::Config(format!("synth: size must be in 8..=1024, got {}", self.size)));
        }
        if !(0.0..=1.0).contains(&self.difficulty) {
            return Err(DataError::Config(format!("synth: difficulty must be in [0, 1], got {}", self.difficulty)));
        }
        Ok(())
    }
}

/// What [`synth`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// Root of the class-per-folder tree.
    pub out_dir: PathBuf,
    /// Class folder names, in brand order.
    pub classes: Vec<String>,
    /// Number of PNGs written.
    pub images: usize,
}

/// Renders `brands × per_brand` synthetic logo photos of `size`² pixels into `out_dir/<brand>/`.
pub fn synth(brands: usize, per_brand: usize, size: u32, seed: u64, difficulty: f32, out_dir: &Path) -> Result<SynthReport> {
    synth_with(&SynthOptions { brands, per_brand, size, seed, difficulty }, out_dir)
}

/// Same as [`synth`], from an options value.
pub fn synth_with(opts: &SynthOptions, out_dir: &Path) -> Result<SynthReport> {
    opts.validate()?;
    let classes: Vec<String> = (0..opts.brands).map(brand_name).collect();
    let marks: Vec<Mark> = (0..opts.brands).into_par_iter().map(|b| Mark::render(&Design::new(opts.seed, b), mark_res(opts.size))).collect();
    let jobs: Vec<(usize, usize)> = (0..opts.brands).flat_map(|b| (0..opts.per_brand).map(move |i| (b, i))).collect();
    jobs.par_iter().try_for_each(|&(b, i)| {
        let img = render_photo(&marks[b], opts, b, i);
        let path = out_dir.join(&classes[b]).join(format!("{i:05}.png"));
        write_png(&path, img)
    })?;
    let report = SynthReport { out_dir: out_dir.to_path_buf(), classes, images: jobs.len() };
    Ok(report)
}

/// Renders one synthetic photo in memory (same pixels as the file [`synth`] would write).
pub fn synth_image(opts: &SynthOptions, brand: usize, index: usize) -> RgbImage {
    let mark = Mark::render(&Design::new(opts.seed, brand), mark_res(opts.size));
    render_photo(&mark, opts, brand, index)
}

/// The clean mark of one synthetic brand (its fixed design, no photographic effects), for
/// drawing it into scenes such as web-page screenshots ([`crate::scenes_synth::synth_scenes_with`]).
#[derive(Debug, Clone)]
pub struct SynthMark {
    name: String,
    design: Design,
}

impl SynthMark {
    /// Brand `brand` of the synthetic brands of `seed` (the brands [`synth`] renders with that seed).
    pub fn new(seed: u64, brand: usize) -> Self {
        SynthMark { name: brand_name(brand), design: Design::new(seed, brand) }
    }
}

impl crate::scenes_synth::ScreenMark for SynthMark {
    fn brand(&self) -> &str {
        &self.name
    }
    fn colour(&self) -> [u8; 3] {
        self.design.primary.map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8)
    }
    /// Multi-colour marks: `colour` is not used.
    fn render(&self, side: u32, _colour: [u8; 3]) -> Result<image::RgbaImage> {
        if !(4..=2048).contains(&side) {
            return Err(DataError::Config(format!("synthetic mark side must be in 4..=2048, got {side}")));
        }
        let m = Mark::render(&self.design, side as usize);
        let bytes = m.rgba.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8).collect();
        let img = image::RgbaImage::from_raw(side, side, bytes).expect("size matches");
        Ok(crate::scenes_synth::crop_to_ink(&img))
    }
}

/// Folder name of brand `b`.
pub fn brand_name(b: usize) -> String {
    format!("brand_{b:04}")
}

fn mark_res(size: u32) -> usize {
    (size as usize * 2).clamp(48, 256)
}

// ---------------------------------------------------------------- vector shapes

type P = [f32; 2];

#[derive(Debug, Clone)]
enum Shape {
    Poly(Vec<P>),
    Circle(P, f32),
    Ring(P, f32, f32),
    Capsule(P, P, f32),
}

impl Shape {
    fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Shape::Poly(pts) => {
                let mut inside = false;
                let mut j = pts.len() - 1;
                for i in 0..pts.len() {
                    let (a, b) = (pts[i], pts[j]);
                    if (a[1] > y) != (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0] {
                        inside = !inside;
                    }
                    j = i;
                }
                inside
            }
            Shape::Circle(c, r) => (x - c[0]).powi(2) + (y - c[1]).powi(2) <= r * r,
            Shape::Ring(c, r0, r1) => {
                let d = (x - c[0]).powi(2) + (y - c[1]).powi(2);
                d >= r0 * r0 && d <= r1 * r1
            }
            Shape::Capsule(a, b, r) => {
                let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
                let l2 = dx * dx + dy * dy;
                let t = if l2 > 0.0 { (((x - a[0]) * dx + (y - a[1]) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
                let (px, py) = (a[0] + t * dx - x, a[1] + t * dy - y);
                px * px + py * py <= r * r
            }
        }
    }
}

fn regular(n: usize, c: P, r: f32, rot: f32) -> Vec<P> {
    (0..n)
        .map(|i| {
            let a = rot + i as f32 * std::f32::consts::TAU / n as f32;
            [c[0] + r * a.cos(), c[1] + r * a.sin()]
        })
        .collect()
}

fn star(n: usize, c: P, r: f32, inner: f32, rot: f32) -> Vec<P> {
    (0..2 * n)
        .map(|i| {
            let a = rot + i as f32 * std::f32::consts::PI / n as f32;
            let rr = if i % 2 == 0 { r } else { r * inner };
            [c[0] + rr * a.cos(), c[1] + rr * a.sin()]
        })
        .collect()
}

fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Vec<P> {
    vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
}

fn rotated_rect(c: P, hw: f32, hh: f32, ang: f32) -> Vec<P> {
    let (s, co) = ang.sin_cos();
    [[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]].iter().map(|p| [c[0] + p[0] * co - p[1] * s, c[1] + p[0] * s + p[1] * co]).collect()
}

#[derive(Debug, Clone)]
struct Layer {
    shape: Shape,
    clip: Option<Shape>,
    color: [f32; 3],
}

/// One brand's fixed design, in mark coordinates `[-1, 1]²`.
#[derive(Debug, Clone)]
struct Design {
    layers: Vec<Layer>,
    /// The main colour.
    primary: [f32; 3],
}

impl Design {
    fn new(seed: u64, brand: usize) -> Design {
        let mut r = Rng::from_parts(&[seed, 0x00DE_516E, brand as u64]);
        let hue = r.f32();
        let primary = hsv_to_rgb(hue, r.range_f32(0.55, 1.0), r.range_f32(0.35, 0.95));
        let secondary = if r.chance(0.3) { [1.0, 1.0, 1.0] } else { hsv_to_rgb(hue + r.range_f32(0.3, 0.7), r.range_f32(0.4, 1.0), r.range_f32(0.6, 1.0)) };
        let accent = if r.chance(0.3) { [0.08, 0.08, 0.1] } else { hsv_to_rgb(hue + r.range_f32(0.15, 0.85), r.range_f32(0.5, 1.0), r.range_f32(0.3, 1.0)) };
        let mut layers = Vec::new();
        let layout = r.below(4);
        let (icon_c, icon_r, word): (P, f32, Option<[f32; 4]>) = match layout {
            0 => ([0.0, 0.0], 0.9, None),
            1 => ([0.0, -0.3], 0.6, Some([-0.85, 0.45, 0.85, 0.85])),
            2 => ([-0.55, 0.0], 0.4, Some([-0.05, -0.22, 0.95, 0.22])),
            _ => ([0.0, 0.0], 0.0, Some([-0.8, -0.3, 0.8, 0.3])),
        };
        if layout == 3 {
            // Banner wordmark: a bar in the primary colour with letters in the secondary one.
            let tilt = r.range_f32(-0.25, 0.25);
            layers.push(Layer { shape: Shape::Poly(rotated_rect([0.0, 0.0], 0.95, 0.45, tilt)), clip: None, color: primary });
            if r.chance(0.6) {
                layers.push(Layer { shape: Shape::Poly(rotated_rect([0.0, 0.62], 0.95, 0.08, tilt)), clip: None, color: accent });
            }
            push_word(&mut r, &mut layers, [-0.8, -0.3, 0.8, 0.3], secondary);
            return Design { layers, primary };
        }
        let rot = r.range_f32(0.0, std::f32::consts::TAU);
        let base_kind = r.below(7);
        let base = match base_kind {
            0 => Shape::Circle(icon_c, icon_r),
            1 => Shape::Poly(rotated_rect(icon_c, icon_r * 0.8, icon_r * 0.8, r.range_f32(-0.3, 0.3))),
            2 => Shape::Poly(regular(3, icon_c, icon_r, -std::f32::consts::FRAC_PI_2)),
            3 => Shape::Poly(regular(6, icon_c, icon_r, rot)),
            4 => Shape::Poly(regular(4, icon_c, icon_r, 0.0)),
            5 => Shape::Poly(star(4 + r.below(4), icon_c, icon_r, r.range_f32(0.45, 0.7), rot)),
            _ => Shape::Poly(vec![
                [icon_c[0] - icon_r * 0.8, icon_c[1] - icon_r * 0.8],
                [icon_c[0] + icon_r * 0.8, icon_c[1] - icon_r * 0.8],
                [icon_c[0] + icon_r * 0.8, icon_c[1] + icon_r * 0.1],
                [icon_c[0], icon_c[1] + icon_r],
                [icon_c[0] - icon_r * 0.8, icon_c[1] + icon_r * 0.1],
            ]),
        };
        if r.chance(0.4) {
            layers.push(Layer { shape: Shape::Ring(icon_c, icon_r * 0.98, icon_r * 1.08), clip: None, color: accent });
        }
        layers.push(Layer { shape: base.clone(), clip: None, color: primary });
        let s = icon_r * 0.6;
        match r.below(5) {
            0 => {
                let n = 2 + r.below(4);
                let ang = r.range_f32(0.0, std::f32::consts::PI);
                let gap = 2.0 * icon_r / (2 * n) as f32;
                for k in 0..n {
                    let off = -icon_r + gap * (2 * k + 1) as f32;
                    let c = [icon_c[0] - off * ang.sin(), icon_c[1] + off * ang.cos()];
                    layers.push(Layer { shape: Shape::Poly(rotated_rect(c, icon_r * 1.2, gap * 0.45, ang)), clip: Some(base.clone()), color: secondary });
                }
            }
            1 => {
                let grid = |k: usize| [icon_c[0] + s * ((k % 3) as f32 - 1.0), icon_c[1] + s * ((k / 3) as f32 - 1.0)];
                let strokes = 2 + r.below(3);
                let mut at = r.below(9);
                for _ in 0..strokes {
                    let mut next = r.below(9);
                    if next == at {
                        next = (at + 4) % 9;
                    }
                    layers.push(Layer { shape: Shape::Capsule(grid(at), grid(next), icon_r * 0.11), clip: None, color: secondary });
                    at = next;
                }
            }
            2 => {
                layers.push(Layer { shape: Shape::Ring(icon_c, s * 0.55, s * 0.95), clip: None, color: secondary });
                layers.push(Layer { shape: Shape::Circle(icon_c, s * 0.3), clip: None, color: accent });
            }
            3 => {
                let mut x = icon_c[0] - s;
                while x < icon_c[0] + s {
                    let bw = s * r.range_f32(0.06, 0.22);
                    layers.push(Layer { shape: Shape::Poly(rect(x, icon_c[1] - s, x + bw, icon_c[1] + s)), clip: Some(base.clone()), color: secondary });
                    x += bw + s * r.range_f32(0.08, 0.25);
                }
            }
            _ => {
                let (h, t) = (s * r.range_f32(0.5, 0.9), s * r.range_f32(0.25, 0.4));
                let c = icon_c;
                layers.push(Layer {
                    shape: Shape::Poly(vec![
                        [c[0] - s, c[1] - h * 0.5],
                        [c[0], c[1] + h * 0.5],
                        [c[0] + s, c[1] - h * 0.5],
                        [c[0] + s, c[1] - h * 0.5 + t],
                        [c[0], c[1] + h * 0.5 + t],
                        [c[0] - s, c[1] - h * 0.5 + t],
                    ]),
                    clip: None,
                    color: secondary,
                });
            }
        }
        if let Some(wb) = word {
            let wc = if r.chance(0.5) { primary } else { accent };
            push_word(&mut r, &mut layers, wb, wc);
        }
        Design { layers, primary }
    }
}

/// Pseudo-letters: 3×5 bitmaps drawn as blocks inside `b = [x0, y0, x1, y1]`.
fn push_word(r: &mut Rng, layers: &mut Vec<Layer>, b: [f32; 4], color: [f32; 3]) {
    let n = 3 + r.below(4);
    let cell_w = (b[2] - b[0]) / (n as f32 * 4.0 - 1.0);
    let cell_h = (b[3] - b[1]) / 5.0;
    let cell = cell_w.min(cell_h);
    let total_w = cell * (n as f32 * 4.0 - 1.0);
    let x0 = (b[0] + b[2]) * 0.5 - total_w * 0.5;
    let y0 = (b[1] + b[3]) * 0.5 - cell * 2.5;
    for k in 0..n {
        let mut bits = (r.next_u64() & 0x7FFF) as u16;
        while bits.count_ones() < 6 {
            bits |= 1 << r.below(15);
        }
        for j in 0..15 {
            if bits & (1 << j) != 0 {
                let (cx, cy) = ((j % 3) as f32, (j / 3) as f32);
                let x = x0 + (k as f32 * 4.0 + cx) * cell;
                let y = y0 + cy * cell;
                layers.push(Layer { shape: Shape::Poly(rect(x, y, x + cell * 1.02, y + cell * 1.02)), clip: None, color });
            }
        }
    }
}

/// A rendered mark: RGBA f32 (premultiplied-free, alpha = coverage) of `res`².
struct Mark {
    res: usize,
    rgba: Vec<f32>,
}

impl Mark {
    fn render(d: &Design, res: usize) -> Mark {
        const SS: [[f32; 2]; 4] = [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]];
        let mut rgba = vec![0f32; res * res * 4];
        let scale = 2.0 / res as f32;
        for y in 0..res {
            for x in 0..res {
                let px = &mut rgba[(y * res + x) * 4..][..4];
                for l in &d.layers {
                    let mut cov = 0.0;
                    for s in SS {
                        let (u, v) = ((x as f32 + s[0]) * scale - 1.0, (y as f32 + s[1]) * scale - 1.0);
                        if l.shape.contains(u, v) && l.clip.as_ref().is_none_or(|c| c.contains(u, v)) {
                            cov += 0.25;
                        }
                    }
                    if cov > 0.0 {
                        let a = px[3];
                        let na = cov + a * (1.0 - cov);
                        for c in 0..3 {
                            px[c] = (l.color[c] * cov + px[c] * a * (1.0 - cov)) / na;
                        }
                        px[3] = na;
                    }
                }
            }
        }
        Mark { res, rgba }
    }
}

// ---------------------------------------------------------------- photographing

fn render_photo(mark: &Mark, o: &SynthOptions, brand: usize, index: usize) -> RgbImage {
    let d = o.difficulty;
    let s = o.size as usize;
    let sf = s as f32;
    let mut r = Rng::from_parts(&[o.seed, 0x0009_4070, brand as u64, index as u64]);
    let mut img = vec![0f32; s * s * 3];

    // Background: a gradient, then clutter shapes.
    let c0 = hsv_to_rgb(r.f32(), r.range_f32(0.0, 0.3 + 0.6 * d), r.range_f32(0.5, 1.0));
    let c1 = hsv_to_rgb(r.f32(), r.range_f32(0.0, 0.3 + 0.6 * d), r.range_f32(0.4, 1.0));
    let ga = r.range_f32(0.0, std::f32::consts::TAU);
    let (gs, gc) = ga.sin_cos();
    let gain = 0.15 + 0.85 * d;
    for y in 0..s {
        for x in 0..s {
            let t = (((x as f32 / sf - 0.5) * gc + (y as f32 / sf - 0.5) * gs) * gain + 0.5).clamp(0.0, 1.0);
            for c in 0..3 {
                img[(y * s + x) * 3 + c] = c0[c] * (1.0 - t) + c1[c] * t;
            }
        }
    }
    let clutter = (d * 10.0 * r.f32()).round() as usize;
    for _ in 0..clutter {
        let col = hsv_to_rgb(r.f32(), r.range_f32(0.0, 1.0), r.range_f32(0.2, 1.0));
        let c = [r.range_f32(-0.2, 1.2) * sf, r.range_f32(-0.2, 1.2) * sf];
        let size = r.range_f32(0.05, 0.35) * sf;
        let shape = match r.below(3) {
            0 => Shape::Circle(c, size),
            1 => Shape::Poly(rotated_rect(c, size, size * r.range_f32(0.1, 1.0), r.range_f32(0.0, 3.2))),
            _ => Shape::Capsule(c, [r.range_f32(0.0, 1.0) * sf, r.range_f32(0.0, 1.0) * sf], sf * r.range_f32(0.01, 0.04)),
        };
        fill_shape(&mut img, s, &shape, col, 1.0);
    }

    // Mark placement: scale, rotation, translation, per-corner perspective jitter.
    let side = sf * r.range_f32(0.9 - 0.45 * d, 1.0 - 0.15 * d);
    let ang = r.range_f32(-1.0, 1.0) * d * 40f32.to_radians();
    let slack = ((sf - side) * 0.5).max(0.0) + d * 0.08 * sf;
    let centre = [sf * 0.5 + r.range_f32(-slack, slack), sf * 0.5 + r.range_f32(-slack, slack)];
    let (sa, ca) = ang.sin_cos();
    let jit = d * 0.12 * side;
    let mut dst = [[0f64; 2]; 4];
    for (k, (cx, cy)) in [(-0.5f32, -0.5f32), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)].iter().enumerate() {
        let (px, py) = (cx * side, cy * side);
        dst[k] = [(centre[0] + px * ca - py * sa + r.range_f32(-jit, jit)) as f64, (centre[1] + px * sa + py * ca + r.range_f32(-jit, jit)) as f64];
    }
    let m = mark.res as f64;
    let src = [[0.0, 0.0], [m, 0.0], [m, m], [0.0, m]];
    // A tint of the mark itself (lighting / print colour variation).
    let tint: [f32; 3] = std::array::from_fn(|_| 1.0 + d * 0.15 * r.normal());
    if let Some(h) = homography(&dst, &src) {
        const SS: [f64; 2] = [0.25, 0.75];
        for y in 0..s {
            for x in 0..s {
                let mut acc = [0f32; 4];
                for sy in SS {
                    for sx in SS {
                        let (u, v) = apply_h(&h, x as f64 + sx, y as f64 + sy);
                        if let Some(p) = sample_bilinear::<4>(&mark.rgba, mark.res, mark.res, u, v) {
                            for c in 0..3 {
                                acc[c] += p[c] * p[3];
                            }
                            acc[3] += p[3];
                        }
                    }
                }
                let a = acc[3] / 4.0;
                if a > 0.0 {
                    let px = &mut img[(y * s + x) * 3..][..3];
                    for c in 0..3 {
                        let col = acc[c] / acc[3] * tint[c];
                        px[c] = col * a + px[c] * (1.0 - a);
                    }
                }
            }
        }
    }

    // Partial occlusion over the mark.
    if r.chance(0.7 * d) {
        let col = hsv_to_rgb(r.f32(), r.f32(), r.range_f32(0.1, 1.0));
        let area = side * side * r.range_f32(0.05, 0.35 * d + 0.05);
        let (w, h) = {
            let asp = r.range_f32(0.3, 3.0);
            ((area * asp).sqrt(), (area / asp).sqrt())
        };
        let c = [centre[0] + r.range_f32(-0.5, 0.5) * side, centre[1] + r.range_f32(-0.5, 0.5) * side];
        let shape =
            if r.chance(0.5) { Shape::Poly(rotated_rect(c, w * 0.5, h * 0.5, r.range_f32(0.0, 3.2))) } else { Shape::Circle(c, (area / std::f32::consts::PI).sqrt()) };
        fill_shape(&mut img, s, &shape, col, 1.0);
    }

    // Global colour shift (white balance / exposure / contrast).
    let gains: [f32; 3] = std::array::from_fn(|_| 1.0 + d * 0.2 * r.normal());
    let bright = d * 0.12 * r.normal();
    let contrast = 1.0 + d * 0.3 * r.range_f32(-1.0, 1.0);
    for px in img.chunks_exact_mut(3) {
        for c in 0..3 {
            px[c] = ((px[c] - 0.5) * contrast + 0.5) * gains[c] + bright;
        }
    }
    let sigma = d * 1.2 * r.f32() * sf / 64.0;
    gaussian_blur3(&mut img, s, s, sigma);
    let noise = d * 0.06 * r.f32();
    let mut out = Vec::with_capacity(s * s * 3);
    for v in img {
        let n = if noise > 0.0 { noise * r.normal() } else { 0.0 };
        out.push(((v + n).clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
    }
    RgbImage::from_raw(s as u32, s as u32, out).expect("size matches")
}

/// Fills `shape` (in pixel coordinates) with 2×2 supersampled coverage.
fn fill_shape(img: &mut [f32], s: usize, shape: &Shape, col: [f32; 3], alpha: f32) {
    for y in 0..s {
        for x in 0..s {
            let mut cov = 0.0;
            for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                if shape.contains(x as f32 + dx, y as f32 + dy) {
                    cov += 0.25;
                }
            }
            if cov > 0.0 {
                let a = cov * alpha;
                let px = &mut img[(y * s + x) * 3..][..3];
                for c in 0..3 {
                    px[c] = col[c] * a + px[c] * (1.0 - a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn designs_are_fixed_per_brand_and_differ_between_brands() {
        let a = Mark::render(&Design::new(3, 0), 48);
        let b = Mark::render(&Design::new(3, 0), 48);
        let c = Mark::render(&Design::new(3, 1), 48);
        assert_eq!(a.rgba, b.rgba);
        assert_ne!(a.rgba, c.rgba);
        let covered = a.rgba.chunks(4).filter(|p| p[3] > 0.5).count();
        assert!(covered > 48 * 48 / 20, "mark covers only {covered} px");
    }

    #[test]
    fn difficulty_zero_is_cleaner_than_one() {
        // Same brand, two photos: at difficulty 0 they are nearly identical; at 1 they differ a lot.
        let diff = |d: f32| {
            let o = SynthOptions { brands: 1, per_brand: 2, size: 32, seed: 9, difficulty: d };
            let (a, b) = (synth_image(&o, 0, 0), synth_image(&o, 0, 1));
            a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f32 - y as f32).abs()).sum::<f32>() / a.as_raw().len() as f32
        };
        let (easy, hard) = (diff(0.0), diff(1.0));
        assert!(easy < hard, "easy {easy} hard {hard}");
    }

    #[test]
    fn options_validated() {
        assert!(SynthOptions { difficulty: 1.5, ..Default::default() }.validate().is_err());
        assert!(SynthOptions { brands: 0, ..Default::default() }.validate().is_err());
        assert!(SynthOptions::default().validate().is_ok());
    }
}
