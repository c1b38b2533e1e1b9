//! Logo renders composited into real photos: training crops of many brands in the look of
//! FlickrLogos-27 query photos.
//!
//! Why: an identification embedding trained on a few photographed brands does not transfer to
//! brands it never saw (the open-set case every user meets: a brand enrolled tomorrow), and one
//! trained on clean renders of thousands of brands has never seen a logo printed on a shirt, lit
//! by the sun or half hidden by a hand. Pasting the renders of thousands of brands into windows
//! of real photos — away from the photos' own annotated logos — with perspective, lighting,
//! print texture, occlusion, blur and noise gives many classes *and* the photo domain. The crops
//! are cut around the pasted mark with the jitter and padding of [`crate::scene_crops`], as a
//! localiser's regions are.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::write_png;
use crate::decode::{DecodeOptions, decode_file};
use crate::error::{DataError, Result};
use crate::rng::{Rng, derive_seed};
use crate::scene::{Scene, crop};
use crate::scene_crops::jitter_box;
use crate::scenes_synth::{Icon, badge_colours, camera, fill_rect, paste_warped, render_icon, to_rgb, valid_box, warped_quad};

/// One logo file of a brand to composite.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeMark {
    /// Class folder (gallery brand name).
    pub brand: String,
    /// The SVG and the brand colour (one-colour marks are drawn in it, in white or in black).
    pub icon: Icon,
    /// A one-colour mark (simple-icons), whose colour the compositor chooses; colour logos keep theirs.
    pub mono: bool,
}

/// How composites are made.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeOptions {
    /// Crops per brand (each from one of the brand's logo files, drawn at random).
    pub per_brand: usize,
    /// Side of the square photo window the mark is pasted into, in pixels.
    pub window: u32,
    /// Seed (same seed, same crops).
    pub seed: u64,
}

impl Default for CompositeOptions {
    fn default() -> Self {
        CompositeOptions { per_brand: 8, window: 160, seed: 0 }
    }
}

/// What [`composite_into_photos`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompositeReport {
    /// Crops written.
    pub crops: usize,
    /// Brands (class folders) with at least one crop.
    pub brands: usize,
    /// Photos used as backgrounds.
    pub backgrounds: usize,
    /// Logo files whose SVG did not render (skipped, with the brand's other files used instead).
    pub unrenderable: Vec<PathBuf>,
}

/// A decoded background photo and the logo boxes a window must keep away from.
struct Background {
    img: RgbImage,
    boxes: Vec<[f32; 4]>,
}

/// Writes `opts.per_brand` crops of every brand of `marks`, composited into windows of the photos
/// of `backgrounds`, to `out/<brand>/composite_<seed>_<k>.png`.
///
/// Windows avoid the backgrounds' annotated boxes (so a real logo of another brand is not in the
/// crop); scenes without box annotations are not used. Crops go to a staging folder inside `out`
/// first and are moved into place only when all are written, so a failure leaves `out` as it was.
pub fn composite_into_photos(marks: &[CompositeMark], backgrounds: &[Scene], opts: &CompositeOptions, out: &Path) -> Result<CompositeReport> {
    if opts.per_brand == 0 || opts.window < 48 {
        return Err(DataError::Config(format!("composites: need per_brand > 0 and window >= 48 (got {}, {})", opts.per_brand, opts.window)));
    }
    for m in marks {
        let b = &m.brand;
        if b.is_empty() || b == "." || b == ".." || b.contains(['/', '\\']) {
            return Err(DataError::Invalid(format!("brand {b:?} cannot be a folder name")));
        }
    }
    let with_boxes: Vec<&Scene> = backgrounds.iter().filter(|s| s.boxes.is_some()).collect();
    if with_boxes.is_empty() {
        return Err(DataError::Invalid("composites need background photos with box annotations (so windows can keep away from their logos)".into()));
    }
    // Decoded once, the longer side at most 640 px (a FlickrLogos-27 photo is about 500 px).
    let bgs: Vec<Background> = with_boxes
        .par_iter()
        .map(|s| {
            let img = decode_file(&s.image, &DecodeOptions::default())?;
            let f = (640.0 / img.width().max(img.height()) as f32).min(1.0);
            let img = if f < 1.0 {
                image::imageops::resize(&img, ((img.width() as f32 * f) as u32).max(1), ((img.height() as f32 * f) as u32).max(1), image::imageops::FilterType::Triangle)
            } else {
                img
            };
            let boxes = s.boxes.iter().flatten().map(|b| b.bbox.map(|v| v * f)).collect();
            Ok(Background { img, boxes })
        })
        .collect::<Result<_>>()?;
    let mut by_brand: std::collections::BTreeMap<&str, Vec<&CompositeMark>> = Default::default();
    for m in marks {
        by_brand.entry(m.brand.as_str()).or_default().push(m);
    }
    let staging = out.join(".proxima-composites.partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    }
    let jobs: Vec<(&str, Vec<&CompositeMark>)> = by_brand.into_iter().collect();
    let made: Result<Vec<(usize, Vec<PathBuf>)>> = jobs
        .par_iter()
        .map(|(brand, files)| {
            let mut r = Rng::new(derive_seed(&[opts.seed, proxima_base::fnv1a64(0, brand.as_bytes())]));
            let mut written = 0;
            let mut bad: Vec<PathBuf> = Vec::new();
            // A draw whose warp left too little of the mark is drawn again; a file that does not
            // render at all is set aside and the brand's other files are used.
            for _ in 0..opts.per_brand * 4 {
                let usable: Vec<&&CompositeMark> = files.iter().filter(|m| !bad.contains(&m.icon.svg)).collect();
                if usable.is_empty() || written == opts.per_brand {
                    break;
                }
                let mark = usable[r.below(usable.len())];
                match composite_one(&mut r, mark, &bgs, opts.window) {
                    Ok(Some(img)) => {
                        write_png(&staging.join(brand).join(format!("composite_{}_{written:03}.png", opts.seed)), img)?;
                        written += 1;
                    }
                    Ok(None) => {}
                    Err(DataError::Decode { path, .. }) => bad.push(path),
                    Err(e) => return Err(e),
                }
            }
            Ok((written, bad))
        })
        .collect();
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            // Best effort: the error that matters is the one being returned.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let mut report = CompositeReport { crops: 0, brands: 0, backgrounds: bgs.len(), unrenderable: Vec::new() };
    for ((brand, _), (n, bad)) in jobs.iter().zip(made) {
        report.crops += n;
        report.unrenderable.extend(bad);
        if n == 0 {
            continue;
        }
        report.brands += 1;
        crate::scene_crops::move_files_into(&staging.join(brand), &out.join(brand))?;
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    }
    Ok(report)
}

/// A window (x0, y0, x1, y1) of one of `bgs` that keeps clear of its logo boxes (grown by a fifth
/// on each side); None when 50 draws found none.
fn clear_window<'a>(r: &mut Rng, bgs: &'a [Background]) -> Option<(&'a Background, [f32; 4])> {
    for _ in 0..50 {
        let bg = &bgs[r.below(bgs.len())];
        let (pw, ph) = (bg.img.width() as f32, bg.img.height() as f32);
        let s = r.range_f32(0.2, 0.6) * pw.min(ph);
        let (x0, y0) = (r.range_f32(0.0, pw - s), r.range_f32(0.0, ph - s));
        let win = [x0, y0, x0 + s, y0 + s];
        let clear = bg.boxes.iter().all(|b| {
            let (gw, gh) = ((b[2] - b[0]) * 0.2, (b[3] - b[1]) * 0.2);
            b[2] + gw <= win[0] || b[0] - gw >= win[2] || b[3] + gh <= win[1] || b[1] - gh >= win[3]
        });
        if clear {
            return Some((bg, win));
        }
    }
    None
}

/// A window of one of `bgs` (`side` × `side`) with `mark` pasted in, cropped around the mark; None
/// when the warp left too little of the mark; a `Decode` error when its SVG renders no ink.
fn composite_one(r: &mut Rng, mark: &CompositeMark, bgs: &[Background], side: u32) -> Result<Option<RgbImage>> {
    let Some((bg, win)) = clear_window(r, bgs) else { return Ok(None) };
    let patch = image::imageops::crop_imm(&bg.img, win[0] as u32, win[1] as u32, ((win[2] - win[0]) as u32).max(1), ((win[3] - win[1]) as u32).max(1)).to_image();
    let s = side as usize;
    let patch = image::imageops::resize(&patch, side, side, image::imageops::FilterType::Triangle);
    let base: Vec<f32> = patch.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    let mut c = base.clone();
    let sf = side as f32;
    // The mark: its colour as printed (brand colour, white or black for one-colour marks).
    let target = r.range_f32(0.3, 0.7) * sf;
    let (badge, colour) = badge_colours(r, mark.icon.rgb);
    let colour = if mark.mono { colour } else { mark.icon.rgb };
    let logo = render_icon(&mark.icon, (target * 1.5) as u32, colour)?;
    if !logo.pixels().any(|p| p[3] > 8) {
        return Err(DataError::Decode { path: mark.icon.svg.clone(), reason: "the SVG renders no ink".into() });
    }
    let scale = target / logo.width().max(logo.height()) as f32;
    let (lw, lh) = (logo.width() as f32 * scale, logo.height() as f32 * scale);
    let (cx, cy) = (sf / 2.0 + r.range_f32(-0.12, 0.12) * sf, sf / 2.0 + r.range_f32(-0.12, 0.12) * sf);
    // A sign, sticker or label behind some marks.
    if r.chance(0.35) {
        let pad = target * r.range_f32(0.08, 0.25);
        fill_rect(&mut c, s, s, [cx - lw / 2.0 - pad, cy - lh / 2.0 - pad, cx + lw / 2.0 + pad, cy + lh / 2.0 + pad], badge);
    }
    // Perspective: a rotated rectangle with each corner moved.
    let quad = warped_quad(r, [cx, cy], [lw, lh], 0.3, 0.15 * target);
    let b = paste_warped(&mut c, s, s, &logo, &quad, r.range_f32(0.75, 1.0));
    if !valid_box(&b) {
        return Ok(None);
    }
    // The pixels the paste (and any sign behind it) changed: print texture applies to them only,
    // so no rectangle of shading marks where the logo is.
    let printed: Vec<bool> = c.chunks_exact(3).zip(base.chunks_exact(3)).map(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3)).collect();
    let (x0, y0, x1, y1) = (b[0] as usize, b[1] as usize, (b[2] as usize).min(s), (b[3] as usize).min(s));
    // Print texture: the mark takes on the shading of the surface it is printed on.
    if r.chance(0.4) {
        let t = r.range_f32(0.2, 0.6);
        let lum = |i: usize| 0.299 * base[i] + 0.587 * base[i + 1] + 0.114 * base[i + 2];
        let mean = (y0..y1).flat_map(|y| (x0..x1).map(move |x| (y, x))).map(|(y, x)| lum((y * s + x) * 3)).sum::<f32>() / ((y1 - y0) * (x1 - x0)).max(1) as f32;
        for y in y0..y1 {
            for x in x0..x1 {
                if !printed[y * s + x] {
                    continue;
                }
                let i = (y * s + x) * 3;
                let g = (1.0 - t) + t * lum(i) / mean.max(0.05);
                for k in 0..3 {
                    c[i + k] *= g;
                }
            }
        }
    }
    // Occlusion: the background comes back over a band at one edge of the mark.
    if r.chance(0.25) {
        let f = r.range_f32(0.15, 0.35);
        let (bw, bh) = ((x1 - x0) as f32, (y1 - y0) as f32);
        let band = match r.below(4) {
            0 => [x0 as f32, y0 as f32, x0 as f32 + f * bw, y1 as f32],
            1 => [x1 as f32 - f * bw, y0 as f32, x1 as f32, y1 as f32],
            2 => [x0 as f32, y0 as f32, x1 as f32, y0 as f32 + f * bh],
            _ => [x0 as f32, y1 as f32 - f * bh, x1 as f32, y1 as f32],
        };
        for y in band[1] as usize..(band[3] as usize).min(s) {
            for x in band[0] as usize..(band[2] as usize).min(s) {
                let i = (y * s + x) * 3;
                c[i..i + 3].copy_from_slice(&base[i..i + 3]);
            }
        }
    }
    // Lighting, focus and sensor noise over the whole window.
    let gain = r.range_f32(0.6, 1.3);
    let tint: [f32; 3] = std::array::from_fn(|_| gain * (1.0 + 0.08 * r.normal()));
    camera(r, &mut c, s, s, tint, 1.6, 0.05);
    let img = to_rgb(&c, s, s);
    let bbox = jitter_box(r, b, 0.5, sf, sf);
    Ok(Some(crop(&img, bbox, 0.1)))
}

/// True when `name` names one of `brands`: equal, or containing it, compared on lower-case ASCII
/// letters and digits only ("Apple" excludes `apple`, `applepay`, `Apple Music`).
pub fn names_any(name: &str, brands: &[String]) -> bool {
    let n = brand_key(name);
    brands.iter().map(|b| brand_key(b)).any(|b| !b.is_empty() && n.contains(&b))
}

/// A brand name as names are compared across catalogues and splits: its ASCII letters and digits,
/// lower-cased ("Coca-Cola" → `cocacola`).
pub fn brand_key(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric()).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::SceneBox;

    fn write_svg(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!(r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">{body}</svg>"#)).unwrap();
        p
    }

    fn photo(dir: &Path) -> Scene {
        let mut img = RgbImage::new(300, 200);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x % 255) as u8, (y % 255) as u8, 90]);
        }
        let path = dir.join("photo.png");
        img.save(&path).unwrap();
        Scene { image: path, brands: vec!["x".into()], boxes: Some(vec![SceneBox { bbox: [0.0, 0.0, 60.0, 60.0], brand: "x".into() }]), kind: Default::default() }
    }

    #[test]
    fn composites_write_per_brand_crops_and_skip_marks_that_do_not_render() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_svg(dir.path(), "good.svg", r#"<path d="M2 2h20v20H2z"/>"#);
        let empty = write_svg(dir.path(), "empty.svg", "");
        let icon = |slug: &str, svg: &Path| Icon { slug: slug.into(), title: slug.into(), rgb: [200, 20, 20], svg: svg.to_path_buf() };
        let marks = vec![
            CompositeMark { brand: "acme".into(), icon: icon("acme", &good), mono: true },
            CompositeMark { brand: "acme".into(), icon: icon("acme", &empty), mono: true },
            CompositeMark { brand: "blank".into(), icon: icon("blank", &empty), mono: false },
        ];
        let out = dir.path().join("out");
        let opts = CompositeOptions { per_brand: 5, window: 96, seed: 3 };
        let rep = composite_into_photos(&marks, &[photo(dir.path())], &opts, &out).unwrap();
        assert_eq!(rep.crops, 5, "{rep:?}");
        assert_eq!(rep.brands, 1);
        assert!(rep.unrenderable.iter().all(|p| p == &empty) && !rep.unrenderable.is_empty());
        let files: Vec<_> = std::fs::read_dir(out.join("acme")).unwrap().collect();
        assert_eq!(files.len(), 5);
        assert!(!out.join("blank").exists() && !out.join(".proxima-composites.partial").exists());
        // Same seed, same crops.
        let out2 = dir.path().join("out2");
        composite_into_photos(&marks, &[photo(dir.path())], &opts, &out2).unwrap();
        let a = std::fs::read(out.join("acme/composite_3_000.png")).unwrap();
        let b = std::fs::read(out2.join("acme/composite_3_000.png")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn composites_refuse_bad_input_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_svg(dir.path(), "good.svg", r#"<path d="M2 2h20v20H2z"/>"#);
        let mark = CompositeMark { brand: "../x".into(), icon: Icon { slug: "x".into(), title: "x".into(), rgb: [0, 0, 0], svg: good }, mono: true };
        let out = dir.path().join("out");
        assert!(composite_into_photos(std::slice::from_ref(&mark), &[photo(dir.path())], &CompositeOptions::default(), &out).is_err());
        let ok = CompositeMark { brand: "x".into(), ..mark };
        let no_boxes = Scene { boxes: None, ..photo(dir.path()) };
        let e = composite_into_photos(std::slice::from_ref(&ok), &[no_boxes], &CompositeOptions::default(), &out).unwrap_err();
        assert!(e.to_string().contains("box annotations"), "{e}");
        let missing = Scene { image: dir.path().join("nope.jpg"), ..photo(dir.path()) };
        assert!(composite_into_photos(&[ok], &[missing], &CompositeOptions::default(), &out).is_err());
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    }

    #[test]
    fn names_any_matches_on_letters_and_digits() {
        let test = vec!["Apple".to_string(), "DHL".to_string()];
        assert!(names_any("applepay", &test));
        assert!(names_any("Apple Music", &test));
        assert!(names_any("dhl", &test));
        assert!(!names_any("adidas", &test));
        assert!(!names_any("", &test));
    }
}
