//! FlickrLogos-27 importer: official layout (or `.tar.gz` archives) → class-per-folder crops.
//!
//! Why crop: metric learning on logos works on the logo region, not on the whole photo (a logo
//! may cover 1% of it). Why de-duplicate: the official training annotation lists each box once
//! per cumulative subset (4536 lines, only 1261 distinct boxes); cropping every line would put
//! identical pixels on both sides of any split. Every crop keeps its source photo as `group`, so
//! query/gallery splits can keep crops of one photo together. Query images whose brand is `none`
//! (and any distractor images) become a separate "no known brand" set: open-set negatives.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{Issue, reason_of, write_file};
use crate::decode::{DecodeOptions, decode_file, has_image_extension};
use crate::error::{DataError, Result};
use crate::scene::{Scene, SceneBox, write_scenes};

/// Name of the official training-set annotation file.
pub const TRAIN_ANNOTATION: &str = "flickr_logos_27_dataset_training_set_annotation.txt";
/// Name of the official query-set annotation file.
pub const QUERY_ANNOTATION: &str = "flickr_logos_27_dataset_query_set_annotation.txt";
/// Name of the official images folder.
pub const IMAGES_DIR: &str = "flickr_logos_27_dataset_images";
/// Label used for images with no known brand.
pub const NO_BRAND: &str = "none";

/// Importer options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportOptions {
    /// Grow each box by this fraction of its width/height on every side (before clamping).
    pub padding: f32,
    /// Decoding options for the source photos.
    pub decode: DecodeOptions,
    /// Copy query and no-brand photos into the output (otherwise only list them).
    pub copy_query: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { padding: 0.0, decode: DecodeOptions::default(), copy_query: true }
    }
}

impl ImportOptions {
    /// Checks option ranges.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=2.0).contains(&self.padding) {
            return Err(DataError::Config(format!("padding must be in [0, 2], got {}", self.padding)));
        }
        Ok(())
    }
}

/// What the importer did (also written to `<out>/import_report.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Non-empty lines in the training annotation file.
    pub annotation_lines: usize,
    /// Distinct `(image, brand, box)` entries after de-duplication.
    pub distinct_boxes: usize,
    /// Boxes skipped because they have zero or negative area (before or after clamping).
    pub degenerate_skipped: usize,
    /// Crops written.
    pub crops: usize,
    /// Crops per brand.
    pub crops_per_class: BTreeMap<String, usize>,
    /// Distinct annotated photos.
    pub source_images: usize,
    /// Query photos with a known brand.
    pub query_images: usize,
    /// Photos with no known brand (query `none` + distractors).
    pub no_brand_images: usize,
    /// Problems (unreadable photos, malformed lines, degenerate boxes), each with a reason.
    pub issues: Vec<Issue>,
    /// Folder of crops, `crops/<brand>/<file>.png`.
    pub crops_dir: PathBuf,
    /// JSONL manifest of the crops (path, label, bbox in the source photo, group, source).
    pub manifest: PathBuf,
    /// JSONL manifest of the query photos with a known brand.
    pub query_manifest: PathBuf,
    /// JSONL manifest of the no-brand photos.
    pub no_brand_manifest: PathBuf,
    /// Scene manifest of the annotated training photos (every box, unpadded).
    #[serde(default)]
    pub train_scenes: PathBuf,
    /// Scene manifest of the query photos (brand only) and the no-brand photos (no logo).
    #[serde(default)]
    pub query_scenes: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
struct Ann {
    image: String,
    brand: String,
    b: [i64; 4],
}

#[derive(Serialize)]
struct CropRecord<'a> {
    path: String,
    label: &'a str,
    bbox: [f32; 4],
    group: &'a str,
    source: String,
}

#[derive(Serialize)]
struct PhotoRecord<'a> {
    path: String,
    label: &'a str,
    group: &'a str,
}

/// Imports FlickrLogos-27 from `src` (the official folder, or a `.tar.gz` of it) into `out`.
pub fn import_flickrlogos27(src: &Path, out: &Path, opts: &ImportOptions) -> Result<ImportReport> {
    opts.validate()?;
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let src_dir = if src.is_file() {
        let dest = out.join(".source");
        extract_tar_gz(src, &dest)?;
        dest
    } else {
        src.to_path_buf()
    };
    let root = find_root(&src_dir, 4).ok_or_else(|| DataError::Invalid(format!("no {TRAIN_ANNOTATION} found under {}", src_dir.display())))?;
    let images_dir = find_dir_named(&root, IMAGES_DIR, 3).unwrap_or_else(|| root.join(IMAGES_DIR));

    let mut report = ImportReport::default();
    let ann_path = root.join(TRAIN_ANNOTATION);
    let text = std::fs::read_to_string(&ann_path).map_err(|e| DataError::io(&ann_path, e))?;
    let mut seen = std::collections::HashSet::new();
    let mut anns: Vec<Ann> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        report.annotation_lines += 1;
        let coords: Option<Vec<i64>> = f.get(3..7).and_then(|c| c.iter().map(|x| x.parse().ok()).collect());
        let (Some(coords), true) = (coords, f.len() == 7) else {
            report.issues.push(Issue::new(&ann_path, format!("line {}: expected `image brand subset x1 y1 x2 y2`, got {line:?}", i + 1)));
            continue;
        };
        let a = Ann { image: f[0].to_string(), brand: f[1].to_string(), b: [coords[0], coords[1], coords[2], coords[3]] };
        if seen.insert((a.image.clone(), a.brand.clone(), a.b)) {
            anns.push(a);
        }
    }
    report.distinct_boxes = anns.len();

    let mut by_image: BTreeMap<&str, Vec<&Ann>> = BTreeMap::new();
    for a in &anns {
        by_image.entry(a.image.as_str()).or_default().push(a);
    }
    report.source_images = by_image.len();
    let crops_dir = out.join("crops");

    // One task per photo: decode once, crop all its boxes.
    let results: Vec<PhotoResult<'_>> = by_image.par_iter().map(|(image, boxes)| crop_photo(&images_dir, image, boxes, &crops_dir, opts)).collect();
    let mut manifest = Vec::new();
    for (crops, issues, degenerate) in results {
        report.degenerate_skipped += degenerate;
        report.issues.extend(issues);
        for (rel, a, b) in crops {
            report.crops += 1;
            *report.crops_per_class.entry(a.brand.clone()).or_default() += 1;
            let rec = CropRecord {
                path: rel,
                label: &a.brand,
                bbox: [b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32],
                group: &a.image,
                source: images_dir.join(&a.image).to_string_lossy().into_owned(),
            };
            manifest.extend(serde_json::to_vec(&rec).expect("record serialises"));
            manifest.push(b'\n');
        }
    }
    report.crops_dir = crops_dir;
    report.manifest = out.join("manifest.jsonl");
    write_file(&report.manifest, &manifest)?;

    // Query set and no-brand photos.
    let mut query = Vec::new();
    let mut none = Vec::new();
    let qpath = root.join(QUERY_ANNOTATION);
    match std::fs::read_to_string(&qpath) {
        Err(e) => report.issues.push(Issue::new(&qpath, format!("query annotation not read: {e}"))),
        Ok(t) => {
            for (i, line) in t.lines().enumerate() {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    [] => {}
                    [img, brand] if brand.eq_ignore_ascii_case(NO_BRAND) => none.push(images_dir.join(img)),
                    [img, brand] => query.push((images_dir.join(img), brand.to_string())),
                    _ => report.issues.push(Issue::new(&qpath, format!("line {}: expected `image<TAB>brand`, got {line:?}", i + 1))),
                }
            }
        }
    }
    if let Some(dd) = find_dir_containing(&root, "distractor", 3) {
        let mut files: Vec<PathBuf> = walk_files(&dd).into_iter().filter(|p| has_image_extension(p)).collect();
        files.sort();
        none.extend(files);
    }
    let mut qlines = Vec::new();
    for (p, brand) in &query {
        if let Some(rel) = place_photo(p, &out.join("query").join(brand), out, opts, &mut report.issues) {
            let g = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            qlines.extend(serde_json::to_vec(&PhotoRecord { path: rel, label: brand, group: &g }).expect("serialises"));
            qlines.push(b'\n');
            report.query_images += 1;
        }
    }
    let mut nlines = Vec::new();
    for p in &none {
        if let Some(rel) = place_photo(p, &out.join("no_brand"), out, opts, &mut report.issues) {
            let g = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            nlines.extend(serde_json::to_vec(&PhotoRecord { path: rel, label: NO_BRAND, group: &g }).expect("serialises"));
            nlines.push(b'\n');
            report.no_brand_images += 1;
        }
    }
    // Whole photos with their boxes (localiser training) and the query photos (identification).
    let mut train_scenes = Vec::new();
    for (image, boxes) in &by_image {
        let boxes: Vec<SceneBox> =
            boxes.iter().filter(|a| a.b[2] > a.b[0] && a.b[3] > a.b[1]).map(|a| SceneBox { bbox: a.b.map(|v| v as f32), brand: a.brand.clone() }).collect();
        let mut brands: Vec<String> = boxes.iter().map(|b| b.brand.clone()).collect();
        brands.sort();
        brands.dedup();
        train_scenes.push(Scene { image: images_dir.join(image), brands, boxes: Some(boxes), kind: "flickrlogos27".into() });
    }
    report.train_scenes = out.join("scenes_train.jsonl");
    write_scenes(&report.train_scenes, &train_scenes)?;
    let query_scenes: Vec<Scene> = query
        .iter()
        .map(|(p, brand)| Scene { image: p.clone(), brands: vec![brand.clone()], boxes: None, kind: "flickrlogos27".into() })
        .chain(none.iter().map(|p| Scene { image: p.clone(), brands: vec![], boxes: Some(vec![]), kind: "flickrlogos27".into() }))
        .collect();
    report.query_scenes = out.join("scenes_query.jsonl");
    write_scenes(&report.query_scenes, &query_scenes)?;
    report.query_manifest = out.join("query.jsonl");
    report.no_brand_manifest = out.join("no_brand.jsonl");
    write_file(&report.query_manifest, &qlines)?;
    write_file(&report.no_brand_manifest, &nlines)?;
    let rp = out.join("import_report.json");
    write_file(&rp, &serde_json::to_vec_pretty(&report).expect("report serialises"))?;
    Ok(report)
}

/// Copies (or just references) one photo; returns the manifest path (relative to `out` if copied).
fn place_photo(p: &Path, dir: &Path, out: &Path, opts: &ImportOptions, issues: &mut Vec<Issue>) -> Option<String> {
    if !p.is_file() {
        issues.push(Issue::new(p, "listed photo not found"));
        return None;
    }
    if !opts.copy_query {
        return Some(p.to_string_lossy().into_owned());
    }
    let dest = dir.join(p.file_name()?);
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::copy(p, &dest)) {
        issues.push(Issue::new(&dest, format!("cannot copy: {e}")));
        return None;
    }
    Some(dest.strip_prefix(out).unwrap_or(&dest).to_string_lossy().into_owned())
}

/// Clamps a (padded) box to the image; `None` when it has no area left.
pub fn clamp_box(b: [i64; 4], width: u32, height: u32, padding: f32) -> Option<[u32; 4]> {
    let (x1, y1, x2, y2) = (b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64);
    if x2 <= x1 || y2 <= y1 {
        return None;
    }
    let (px, py) = ((x2 - x1) * padding as f64, (y2 - y1) * padding as f64);
    let cl = |v: f64, hi: u32| v.round().clamp(0.0, hi as f64) as u32;
    let r = [cl(x1 - px, width), cl(y1 - py, height), cl(x2 + px, width), cl(y2 + py, height)];
    (r[2] > r[0] && r[3] > r[1]).then_some(r)
}

type PhotoResult<'a> = (Vec<(String, &'a Ann, [u32; 4])>, Vec<Issue>, usize);

fn crop_photo<'a>(images_dir: &Path, image: &str, boxes: &[&'a Ann], crops_dir: &Path, opts: &ImportOptions) -> PhotoResult<'a> {
    let path = images_dir.join(image);
    let mut issues = Vec::new();
    let img = match decode_file(&path, &opts.decode) {
        Ok(i) => i,
        Err(e) => {
            issues.push(Issue::new(&path, format!("{} ({} boxes not cropped)", reason_of(&e), boxes.len())));
            return (Vec::new(), issues, 0);
        }
    };
    let (w, h) = img.dimensions();
    let stem = Path::new(image).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| image.to_string());
    let mut crops = Vec::new();
    let mut degenerate = 0;
    for a in boxes {
        let Some(c) = clamp_box(a.b, w, h, opts.padding) else {
            degenerate += 1;
            issues.push(Issue::new(&path, format!("degenerate box {:?} for {} in a {w}x{h} image skipped", a.b, a.brand)));
            continue;
        };
        let crop = image::imageops::crop_imm(&img, c[0], c[1], c[2] - c[0], c[3] - c[1]).to_image();
        let rel = format!("crops/{}/{}_{}_{}_{}_{}.png", a.brand, stem, a.b[0], a.b[1], a.b[2], a.b[3]);
        let dest = crops_dir.parent().unwrap_or(crops_dir).join(&rel);
        let mut buf = Vec::new();
        if let Err(e) = DynamicImage::ImageRgb8(crop).write_to(&mut Cursor::new(&mut buf), ImageFormat::Png) {
            issues.push(Issue::new(&dest, format!("cannot encode crop: {e}")));
            continue;
        }
        if let Err(e) = write_file(&dest, &buf) {
            issues.push(Issue::new(&dest, reason_of(&e)));
            continue;
        }
        crops.push((rel, *a, c));
    }
    (crops, issues, degenerate)
}

/// Extracts a `.tar.gz` into `dest`, then any `.tar.gz` found inside it (next to the archive).
pub fn extract_tar_gz(archive: &Path, dest: &Path) -> Result<()> {
    let f = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    std::fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(dest).map_err(|e| DataError::io(archive, e))?;
    let mut inner: Vec<PathBuf> = walk_files(dest).into_iter().filter(|p| is_tar_gz(p)).collect();
    inner.sort();
    for a in inner {
        let f = std::fs::File::open(&a).map_err(|e| DataError::io(&a, e))?;
        let parent = a.parent().unwrap_or(dest).to_path_buf();
        tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(&parent).map_err(|e| DataError::io(&a, e))?;
        std::fs::remove_file(&a).map_err(|e| DataError::io(&a, e))?;
    }
    Ok(())
}

fn is_tar_gz(p: &Path) -> bool {
    let n = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    n.ends_with(".tar.gz") || n.ends_with(".tgz")
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 6 => stack.push((p, depth + 1)),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

fn find_root(dir: &Path, depth: usize) -> Option<PathBuf> {
    if dir.join(TRAIN_ANNOTATION).is_file() {
        return Some(dir.to_path_buf());
    }
    if depth == 0 {
        return None;
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subs.sort();
    subs.iter().find_map(|s| find_root(s, depth - 1))
}

fn find_dir_named(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    find_dir(dir, depth, &|n| n == name)
}

fn find_dir_containing(dir: &Path, part: &str, depth: usize) -> Option<PathBuf> {
    find_dir(dir, depth, &|n| n.to_lowercase().contains(part))
}

fn find_dir(dir: &Path, depth: usize, pred: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subs.sort();
    if let Some(s) = subs.iter().find(|s| s.file_name().and_then(|n| n.to_str()).is_some_and(pred)) {
        return Some(s.clone());
    }
    if depth == 0 {
        return None;
    }
    subs.iter().find_map(|s| find_dir(s, depth - 1, pred))
}

/// Counts crops per group (source photo) in a crops manifest — handy for leakage checks.
pub fn groups_of(ds: &crate::Dataset) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in &ds.samples {
        if let Some(g) = &s.group {
            *m.entry(g.clone()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_and_degenerate() {
        assert_eq!(clamp_box([3, 197, 3, 197], 500, 500, 0.0), None);
        assert_eq!(clamp_box([-5, -5, 10, 10], 8, 8, 0.0), Some([0, 0, 8, 8]));
        assert_eq!(clamp_box([10, 10, 20, 30], 100, 100, 0.1), Some([9, 8, 21, 32]));
        assert_eq!(clamp_box([200, 200, 300, 300], 100, 100, 0.0), None);
    }
}
