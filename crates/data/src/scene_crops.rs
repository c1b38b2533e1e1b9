//! Training crops cut from the logo boxes of annotated scenes, jittered the way a localiser's
//! boxes are.
//!
//! Why: at `find` time the identification embedding is shown a region the localiser proposed,
//! rarely the exact logo box — shifted, too large or too small (IoU 0.5–0.8 with the truth is
//! common), with page text or photo clutter around the mark, at the scene's own (often small)
//! resolution. An embedding trained only on clean, centred renders names such crops as some other
//! brand. Cutting its training crops from annotated scenes, with boxes drawn at a chosen IoU from
//! the truth and padded by the same [`crop`] rule `find` uses, closes that gap without tying the
//! embedding to one localiser.

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::write_png;
use crate::decode::{DecodeOptions, decode_file};
use crate::error::{DataError, Result};
use crate::rng::{Rng, derive_seed};
use crate::scene::{Scene, crop};

/// How crops are cut from each box.
#[derive(Debug, Clone, PartialEq)]
pub struct CropOptions {
    /// Crops per box: the first is the box itself, the others are jittered.
    pub per_box: usize,
    /// A jittered box overlaps the true one by at least this IoU.
    pub min_iou: f32,
    /// Context added on each side, as a share of the box size (as `find`'s `padding`).
    pub padding: f32,
    /// Crops whose longer side exceeds this are shrunk to it (aspect kept).
    pub max_side: u32,
    /// Seed of the jitter.
    pub seed: u64,
}

impl Default for CropOptions {
    fn default() -> Self {
        CropOptions { per_box: 4, min_iou: 0.5, padding: 0.1, max_side: 256, seed: 0 }
    }
}

impl CropOptions {
    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<()> {
        if self.per_box == 0 || !(self.min_iou > 0.0 && self.min_iou <= 1.0) || !(0.0..=1.0).contains(&self.padding) || self.max_side < 16 {
            return Err(DataError::Config(format!(
                "scene crops: need per_box > 0, 0 < min_iou <= 1, padding in [0, 1] and max_side >= 16 (got {}, {}, {}, {})",
                self.per_box, self.min_iou, self.padding, self.max_side
            )));
        }
        Ok(())
    }
}

/// What [`cut_scene_crops`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CropReport {
    /// Crops written.
    pub crops: usize,
    /// Logo boxes they were cut from.
    pub boxes: usize,
    /// Distinct brands (class folders).
    pub brands: usize,
    /// Scenes with boxes that were read.
    pub scenes: usize,
    /// Scenes left out because they have no box annotation (image-level labels only).
    pub without_boxes: usize,
}

/// A box drawn around `b` with IoU ≥ `min_iou`, inside a `w` × `h` image.
///
/// Each side length is scaled by a factor log-uniform in [1/1.6, 1.6] and the centre moved by up to
/// 0.3 of the size; draws below `min_iou` are redrawn (up to 100 times, then `b` itself).
pub fn jitter_box(r: &mut Rng, b: [f32; 4], min_iou: f32, w: f32, h: f32) -> [f32; 4] {
    let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let span = 1.6f32.ln();
    for _ in 0..100 {
        let nw = bw * r.range_f32(-span, span).exp();
        let nh = bh * r.range_f32(-span, span).exp();
        let nx = cx + r.range_f32(-0.3, 0.3) * bw;
        let ny = cy + r.range_f32(-0.3, 0.3) * bh;
        let j = [(nx - nw / 2.0).max(0.0), (ny - nh / 2.0).max(0.0), (nx + nw / 2.0).min(w), (ny + nh / 2.0).min(h)];
        if j[2] > j[0] && j[3] > j[1] && proxima_base::box_iou(&j, &b) >= min_iou {
            return j;
        }
    }
    b
}

/// Cuts `opts.per_box` crops of every logo box of `scenes` into `out/<brand>/<scene>_<box>_<k>.png`.
///
/// `<scene>` is a hash of the image path, so crops of several manifests can share one folder (with
/// the rendered crops of `data icons`, say) without overwriting each other. Brand names must be
/// usable as folder names; they are all checked before anything is written. Crops are written to a
/// staging folder inside `out` and moved into place only when every scene has been cut, so an
/// undecodable image leaves `out` as it was.
pub fn cut_scene_crops(scenes: &[Scene], opts: &CropOptions, out: &Path) -> Result<CropReport> {
    opts.validate()?;
    let with_boxes: Vec<&Scene> = scenes.iter().filter(|s| s.boxes.is_some()).collect();
    let mut brands = std::collections::BTreeSet::new();
    for s in &with_boxes {
        for b in s.boxes.iter().flatten() {
            let bad = b.brand.is_empty() || b.brand == "." || b.brand == ".." || b.brand.contains(['/', '\\']);
            if bad {
                return Err(DataError::Invalid(format!("{}: brand {:?} cannot be a folder name", s.image.display(), b.brand)));
            }
            brands.insert(b.brand.as_str());
        }
    }
    let staging = out.join(".proxima-crops.partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    }
    if let Err(e) = cut_into(&with_boxes, opts, &staging) {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    for brand in &brands {
        let from = staging.join(brand);
        if from.is_dir() {
            move_files_into(&from, &out.join(brand))?;
        }
    }
    std::fs::remove_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    let boxes: usize = with_boxes.iter().map(|s| s.boxes.as_ref().map_or(0, Vec::len)).sum();
    Ok(CropReport { crops: boxes * opts.per_box, boxes, brands: brands.len(), scenes: with_boxes.len(), without_boxes: scenes.len() - with_boxes.len() })
}

/// Moves every file of the staging folder `from` into `to` (created if missing), keeping names;
/// an existing file of the same name is replaced.
pub(crate) fn move_files_into(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| DataError::io(to, e))?;
    for f in std::fs::read_dir(from).map_err(|e| DataError::io(from, e))? {
        let f = f.map_err(|e| DataError::io(from, e))?.path();
        let dest = to.join(f.file_name().expect("a file in the staging folder"));
        std::fs::rename(&f, &dest).map_err(|e| DataError::io(&dest, e))?;
    }
    Ok(())
}

/// Cuts `opts.per_box` crops of every box of `scenes` into `out/<brand>/`.
fn cut_into(scenes: &[&Scene], opts: &CropOptions, out: &Path) -> Result<()> {
    scenes.par_iter().try_for_each(|s| {
        let img = decode_file(&s.image, &DecodeOptions::default())?;
        let (w, h) = (img.width() as f32, img.height() as f32);
        let tag = proxima_base::fnv1a64(0, s.image.to_string_lossy().as_bytes());
        let mut r = Rng::new(derive_seed(&[opts.seed, tag]));
        for (i, b) in s.boxes.iter().flatten().enumerate() {
            for k in 0..opts.per_box {
                let bbox = if k == 0 { b.bbox } else { jitter_box(&mut r, b.bbox, opts.min_iou, w, h) };
                let mut c = crop(&img, bbox, opts.padding);
                let long = c.width().max(c.height());
                if long > opts.max_side {
                    let f = opts.max_side as f32 / long as f32;
                    let (nw, nh) = (((c.width() as f32 * f).round() as u32).max(1), ((c.height() as f32 * f).round() as u32).max(1));
                    c = image::imageops::resize(&c, nw, nh, image::imageops::FilterType::Triangle);
                }
                write_png(&out.join(&b.brand).join(format!("{tag:016x}_{i}_{k}.png")), c)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::SceneBox;

    #[test]
    fn jittered_boxes_keep_the_overlap_and_stay_inside() {
        let mut r = Rng::new(7);
        let b = [40.0, 30.0, 80.0, 50.0];
        let mut moved = 0;
        for _ in 0..500 {
            let j = jitter_box(&mut r, b, 0.5, 100.0, 60.0);
            assert!(proxima_base::box_iou(&j, &b) >= 0.5, "{j:?}");
            assert!(j[0] >= 0.0 && j[1] >= 0.0 && j[2] <= 100.0 && j[3] <= 60.0, "{j:?}");
            moved += usize::from(j != b);
        }
        // Nearly every draw is a real jitter, not the fallback to the box itself.
        assert!(moved > 490, "{moved}");
        // A strict overlap still holds.
        let j = jitter_box(&mut r, b, 0.9, 100.0, 60.0);
        assert!(proxima_base::box_iou(&j, &b) >= 0.9);
    }

    #[test]
    fn crops_land_in_brand_folders_and_bad_brands_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        let mut rgb = image::RgbImage::from_pixel(120, 80, image::Rgb([255, 255, 255]));
        for y in 20..40 {
            for x in 30..70 {
                rgb.put_pixel(x, y, image::Rgb([200, 0, 0]));
            }
        }
        rgb.save(&img).unwrap();
        let boxed = |brand: &str| Scene {
            image: img.clone(),
            brands: vec![brand.into()],
            boxes: Some(vec![SceneBox { bbox: [30.0, 20.0, 70.0, 40.0], brand: brand.into() }]),
            kind: "screenshot".into(),
        };
        let no_box = Scene { image: img.clone(), brands: vec!["acme".into()], boxes: None, kind: "photo".into() };
        let out = dir.path().join("crops");
        let opts = CropOptions { per_box: 3, max_side: 32, ..Default::default() };
        let rep = cut_scene_crops(&[boxed("acme"), no_box], &opts, &out).unwrap();
        assert_eq!((rep.crops, rep.boxes, rep.brands, rep.scenes, rep.without_boxes), (3, 1, 1, 1, 1));
        let mut files: Vec<_> = std::fs::read_dir(out.join("acme")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert_eq!(files.len(), 3);
        // The first crop is the padded box itself (40×20 grown by 10 % per side), shrunk to 32 wide.
        let first = image::open(files.iter().find(|p| p.to_string_lossy().ends_with("_0_0.png")).unwrap()).unwrap();
        assert_eq!((first.width(), first.height()), (32, 16));
        // Same seed, same crops.
        let again = dir.path().join("again");
        cut_scene_crops(&[boxed("acme")], &opts, &again).unwrap();
        for f in &files {
            assert_eq!(std::fs::read(f).unwrap(), std::fs::read(again.join("acme").join(f.file_name().unwrap())).unwrap());
        }
        // A brand that is not a folder name is refused before anything is written.
        let bad = dir.path().join("bad");
        let e = cut_scene_crops(&[boxed("acme"), boxed("../x")], &opts, &bad).unwrap_err().to_string();
        assert!(e.contains("../x") && e.contains("folder name"), "{e}");
        assert!(!bad.exists());
        assert!(cut_scene_crops(&[], &CropOptions { min_iou: 0.0, ..Default::default() }, &bad).is_err());
        // An undecodable image among good ones: an error naming it, and `out` keeps only what it had.
        let broken = dir.path().join("broken.png");
        std::fs::write(&broken, b"not a png").unwrap();
        let mut scenes: Vec<Scene> = (0..8).map(|_| boxed("globex")).collect();
        scenes.push(Scene { image: broken, ..boxed("initech") });
        let e = cut_scene_crops(&scenes, &opts, &out).unwrap_err().to_string();
        assert!(e.contains("broken.png"), "{e}");
        let left: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left, ["acme"]);
        assert_eq!(std::fs::read_dir(out.join("acme")).unwrap().count(), 3);
    }
}
