//! Scenes: whole images (photos, web-page screenshots) with the logo boxes they contain.
//!
//! Why a separate record from [`crate::Sample`]: a metric-learning sample is one crop with one
//! label, while a scene is what a user really holds — a large image where zero, one or several
//! logos sit somewhere. The localiser trains on scene boxes (class-agnostic), and the find
//! evaluation scores image-level answers against scene brands. Some sets know only which brand
//! an image shows, not where (the FlickrLogos-27 query set): `boxes` is then `None`, and such
//! scenes count for identification but not for box AP. (Box overlap lives in `proxima_eval::box_iou`.)
//!
//! A scene manifest is JSONL, one [`Scene`] per line; relative image paths are resolved against
//! the manifest's folder.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One annotated logo in a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneBox {
    /// `[x0, y0, x1, y1]` in pixels of the scene image (`x1`, `y1` exclusive).
    pub bbox: [f32; 4],
    /// The brand shown in the box.
    pub brand: String,
}

/// A whole image and the logos in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scene {
    /// The image file (absolute, or relative to the manifest's folder in the file).
    pub image: PathBuf,
    /// Brands present in the image; empty when it shows no known logo.
    #[serde(default)]
    pub brands: Vec<String>,
    /// Logo boxes, when known (`None`: only image-level labels).
    #[serde(default)]
    pub boxes: Option<Vec<SceneBox>>,
    /// Where the scene comes from (`"photo"`, `"screenshot"`, `"flickrlogos27"` …), for reports.
    #[serde(default)]
    pub kind: String,
}

/// Reads a scene manifest; relative image paths become paths under the manifest's folder.
pub fn read_scenes(path: &Path) -> Result<Vec<Scene>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut s: Scene = serde_json::from_str(line).map_err(|e| DataError::Invalid(format!("{}: line {}: not a scene record: {e}", path.display(), i + 1)))?;
        if s.image.is_relative() {
            s.image = base.join(&s.image);
        }
        if let Some(boxes) = &s.boxes {
            for b in boxes {
                let [x0, y0, x1, y1] = b.bbox;
                if !(b.bbox.iter().all(|v| v.is_finite()) && x1 > x0 && y1 > y0) {
                    return Err(DataError::Invalid(format!("{}: line {}: box {:?} has no area", path.display(), i + 1, b.bbox)));
                }
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Writes a scene manifest atomically; image paths under the manifest's folder are stored relative.
pub fn write_scenes(path: &Path, scenes: &[Scene]) -> Result<()> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut buf = Vec::new();
    for s in scenes {
        let mut s = s.clone();
        // Relative paths are relative to the working directory here but to the manifest when read.
        if s.image.is_relative() {
            s.image = std::path::absolute(&s.image).map_err(|e| DataError::io(&s.image, e))?;
        }
        let base = std::path::absolute(base).map_err(|e| DataError::io(base, e))?;
        if let Ok(rel) = s.image.strip_prefix(&base) {
            s.image = rel.to_path_buf();
        }
        serde_json::to_writer(&mut buf, &s).expect("scene serialises");
        buf.push(b'\n');
    }
    write_atomic(path, &buf)
}

/// Replaces `path` with `bytes` atomically and durably ([`proxima_base::write_atomic`]), creating
/// its folder first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    proxima_base::write_atomic(path, bytes).map_err(|e| DataError::io(e.path, e.source))
}

/// Crops `b` grown by `padding` of its size per side, clamped to the image (at least 1×1).
///
/// The rule `find` cuts a localiser's region by, and the one training crops are cut by, so that the
/// embedding trains on what it will be shown.
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

    #[test]
    fn manifest_round_trip_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("scenes.jsonl");
        let scenes = vec![
            Scene {
                image: dir.path().join("img/a.png"),
                brands: vec!["acme".into()],
                boxes: Some(vec![SceneBox { bbox: [1.0, 2.0, 30.0, 40.0], brand: "acme".into() }]),
                kind: "screenshot".into(),
            },
            Scene { image: "/elsewhere/b.jpg".into(), brands: vec![], boxes: None, kind: "photo".into() },
        ];
        write_scenes(&m, &scenes).unwrap();
        let text = std::fs::read_to_string(&m).unwrap();
        assert!(text.contains("\"img/a.png\""), "stored relative: {text}");
        assert_eq!(read_scenes(&m).unwrap(), scenes);
    }

    #[test]
    fn atomic_write_replaces_and_failures_name_the_path_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let blocked = p.join("below-a-file.jsonl");
        let e = write_atomic(&blocked, b"x").unwrap_err().to_string();
        assert!(e.contains("m.jsonl"), "{e}");
    }

    #[test]
    fn bad_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("s.jsonl");
        std::fs::write(&m, "{\"image\":\"a.png\",\"boxes\":[{\"bbox\":[5,5,5,9],\"brand\":\"x\"}]}\n").unwrap();
        let e = read_scenes(&m).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("no area"), "{e}");
        std::fs::write(&m, "{\"image\":\"a.png\",\"colour\":1}\n").unwrap();
        assert!(read_scenes(&m).unwrap_err().to_string().contains("not a scene record"));
    }

    #[test]
    fn crop_grows_and_clamps() {
        let img = RgbImage::new(100, 50);
        assert_eq!(crop(&img, [10.0, 10.0, 30.0, 20.0], 0.1).dimensions(), (24, 12));
        assert_eq!(crop(&img, [90.0, 40.0, 100.0, 50.0], 0.5).dimensions(), (15, 15));
        assert_eq!(crop(&img, [99.5, 49.5, 99.6, 49.6], 0.0).dimensions(), (1, 1));
    }
}
