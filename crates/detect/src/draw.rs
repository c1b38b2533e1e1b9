//! Drawing find answers onto images, so a person can check what was found where.
//!
//! Known regions get a thick green frame and their brand and similarity written above it; unknown
//! ones a thin grey frame labelled "unknown". When the true boxes are known (synthetic scenes, an
//! evaluation set) they are framed in blue underneath, so a missed logo shows as a blue frame
//! alone. Boxes are in the image's pixels, as [`crate::FindAnswer`] reports them.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::error::{DetectError, Result};
use crate::find::FindAnswer;

/// Frame colour of a known region.
pub const KNOWN: [u8; 3] = [0, 200, 60];
/// Frame colour of a region whose best brand is below the threshold.
pub const UNKNOWN: [u8; 3] = [150, 150, 150];
/// Frame colour of a true (annotated) logo box.
pub const TRUTH: [u8; 3] = [30, 110, 255];

/// A copy of `img` with every region of `answer` framed and labelled (known green, unknown grey).
pub fn draw_answer(img: &RgbImage, answer: &FindAnswer) -> Result<RgbImage> {
    draw_answer_with_truth(img, answer, &[])
}

/// As [`draw_answer`], with the true logo boxes `truth` framed in blue underneath.
pub fn draw_answer_with_truth(img: &RgbImage, answer: &FindAnswer, truth: &[[f32; 4]]) -> Result<RgbImage> {
    let mut out = img.clone();
    let (w, h) = out.dimensions();
    if w == 0 || h == 0 {
        return Ok(out);
    }
    let size = (w.min(h) / 40).clamp(12, 40);
    for b in truth {
        frame(&mut out, *b, Rgb(TRUTH), 2);
    }
    // Unknown first so known frames and labels stay on top.
    for known in [false, true] {
        for r in answer.regions.iter().filter(|r| r.brand.is_some() == known) {
            let (colour, width, label) = match &r.brand {
                Some(brand) => (KNOWN, 4, format!("{brand} {:.2}", r.similarity)),
                None => (UNKNOWN, 1, format!("unknown {:.2}", r.similarity)),
            };
            frame(&mut out, r.bbox, Rgb(colour), width);
            let size = if known { size } else { (size * 3 / 4).max(10) };
            // Above the frame when there is room, else just inside its top edge.
            let y = r.bbox[1] as i32 - size as i32 - 2 * (size as i32 / 6).max(1);
            let y = if y < 0 { r.bbox[1] as i32 + width as i32 } else { y };
            let ink = if known { [255, 255, 255] } else { [0, 0, 0] };
            proxima_report::draw_label(&mut out, w, h, (r.bbox[0] as i32, y), &label, size, ink, colour)?;
        }
    }
    Ok(out)
}

/// PNG bytes of `img`; `path` only names the file in an error.
pub fn encode_png(img: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| DetectError::Input(format!("{}: cannot encode as PNG: {e}", path.display())))?;
    Ok(png)
}

/// Names for the drawings of `images` in `dir`: `<stem>.find.png`, with `-2`, `-3`, … added when
/// two images share a stem (e.g. `a/logo.png` and `b/logo.jpg`).
pub fn drawing_paths(dir: &Path, images: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    images
        .iter()
        .map(|p| {
            let stem = p.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
            let n = seen.entry(stem.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { dir.join(format!("{stem}.find.png")) } else { dir.join(format!("{stem}-{n}.find.png")) }
        })
        .collect()
}

/// Writes each `(path, bytes)` atomically, creating their folders; when one write fails, the
/// files this call already wrote are removed again, so a failure leaves none of them behind.
pub fn write_all(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let mut written: Vec<&Path> = Vec::new();
    for (path, bytes) in files {
        let result = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| DetectError::io(dir, e)),
            _ => Ok(()),
        }
        .and_then(|()| proxima_base::write_atomic(path, bytes).map_err(|e| DetectError::io(e.path, e.source)));
        if let Err(e) = result {
            for p in written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(())
}

/// Draws a rectangle outline of `width` pixels inside `b` (clamped to the image).
pub fn frame(img: &mut RgbImage, b: [f32; 4], colour: Rgb<u8>, width: u32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let x0 = (b[0].floor() as i64).clamp(0, w - 1);
    let y0 = (b[1].floor() as i64).clamp(0, h - 1);
    let x1 = (b[2].ceil() as i64 - 1).clamp(0, w - 1);
    let y1 = (b[3].ceil() as i64 - 1).clamp(0, h - 1);
    for t in 0..width as i64 {
        for x in x0..=x1 {
            for y in [y0 + t, y1 - t] {
                if (y0..=y1).contains(&y) {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
        for y in y0..=y1 {
            for x in [x0 + t, x1 - t] {
                if (x0..=x1).contains(&x) {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find::RegionAnswer;

    #[test]
    fn frame_draws_the_outline_only() {
        let mut img = RgbImage::new(10, 10);
        frame(&mut img, [2.0, 2.0, 8.0, 8.0], Rgb([255, 0, 0]), 1);
        assert_eq!(img.get_pixel(2, 2)[0], 255);
        assert_eq!(img.get_pixel(7, 5)[0], 255);
        assert_eq!(img.get_pixel(5, 5)[0], 0, "inside untouched");
        assert_eq!(img.get_pixel(8, 8)[0], 0, "x1, y1 exclusive");
        frame(&mut img, [-5.0, -5.0, 50.0, 50.0], Rgb([0, 255, 0]), 2);
        assert_eq!(img.get_pixel(0, 0)[1], 255);
        assert_eq!(img.get_pixel(9, 1)[1], 255);
    }

    fn region(bbox: [f32; 4], brand: Option<&str>) -> RegionAnswer {
        RegionAnswer {
            bbox,
            brand: brand.map(String::from),
            similarity: 0.9,
            best_brand: "acme".into(),
            second_similarity: None,
            second_brand: None,
            score: 0.5,
            confidence: 0.9,
        }
    }

    /// Known regions: thick green frame and a label above; unknown: thin grey frame; truth: blue
    /// underneath; the inside of every box and the rest of the image untouched.
    #[test]
    fn answers_are_framed_and_labelled() {
        let img = RgbImage::from_pixel(200, 160, Rgb([250, 250, 250]));
        let answer = FindAnswer {
            image: "x".into(),
            brand: Some("acme".into()),
            similarity: Some(0.9),
            confidence: Some(0.9),
            threshold: 0.5,
            scale: 1.0,
            regions: vec![region([40.0, 60.0, 100.0, 120.0], Some("acme")), region([130.0, 10.0, 190.0, 50.0], None)],
        };
        let out = draw_answer_with_truth(&img, &answer, &[[38.0, 58.0, 102.0, 122.0]]).unwrap();
        let px = |x, y| out.get_pixel(x, y).0;
        for t in 0..4 {
            assert_eq!(px(40 + t, 90), KNOWN, "left edge, {t} px in");
        }
        assert_eq!(px(70, 119), KNOWN, "bottom edge");
        assert_eq!(px(70, 90), [250; 3], "inside a known box untouched");
        assert_eq!(px(38, 90), TRUTH, "truth frame outside the found one");
        assert_eq!(px(160, 49), UNKNOWN, "unknown box: bottom edge");
        assert_eq!(px(160, 47), [250; 3], "unknown frames are 1 px");
        assert_eq!(px(5, 150), [250; 3], "far from every box untouched");
        // The known label sits right above the frame, on a green box.
        assert_eq!(px(41, 59), TRUTH, "truth frame top edge");
        assert!((30..58).any(|y| px(42, y) == KNOWN), "label box above the known frame");
        // Without truth, nothing blue.
        let plain = draw_answer(&img, &answer).unwrap();
        assert!(plain.pixels().all(|p| p.0 != TRUTH));
        assert_eq!(draw_answer(&RgbImage::new(0, 0), &answer).unwrap().dimensions(), (0, 0));
    }

    #[test]
    fn drawing_names_are_unique_and_writes_are_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let names = drawing_paths(dir.path(), &[PathBuf::from("a/logo.png"), PathBuf::from("b/logo.jpg"), PathBuf::from("shot.png")]);
        let names: Vec<String> = names.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["logo.find.png", "logo-2.find.png", "shot.find.png"]);

        let ok = dir.path().join("out/one.png");
        // A file where a folder must be: the second write fails, the first is removed again.
        std::fs::write(dir.path().join("blocker"), b"x").unwrap();
        let bad = dir.path().join("blocker/two.png");
        let e = write_all(&[(ok.clone(), b"1".to_vec()), (bad, b"2".to_vec())]).unwrap_err();
        assert!(e.to_string().contains("blocker"), "{e}");
        assert!(!ok.exists(), "nothing left behind");
        write_all(&[(ok.clone(), b"1".to_vec())]).unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), b"1");
    }
}
