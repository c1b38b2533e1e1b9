//! Robust image decoding to RGB8.
//!
//! Why this wrapper instead of `image::open`: real scraped data contains truncated files, HTML
//! saved as `.jpg`, CMYK JPEGs, 16-bit and grey PNGs, transparent logos and the occasional
//! decompression bomb. Every one of those must come back as either a plain RGB8 image or a
//! [`DataError`] naming the file and the reason — never a panic, never a giant allocation. The
//! pixel limit is checked against the *declared* header size before any pixel buffer exists.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage, RgbaImage};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// What to do with an alpha channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlphaMode {
    /// Composite over a white background (right for logos on transparent canvases).
    #[default]
    White,
    /// Drop the alpha channel and keep the raw colour values.
    Drop,
}

/// Decoding options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    /// Refuse images whose header declares more than this many pixels (width × height).
    pub max_pixels: u64,
    /// Alpha handling.
    pub alpha: AlphaMode,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_pixels: 64 * 1024 * 1024, alpha: AlphaMode::White }
    }
}

/// File extensions treated as images when scanning folders (lower-case, without dot).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"];

/// True when `path` has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e))).unwrap_or(false)
}

/// Reads and decodes the file at `path` to RGB8.
pub fn decode_file(path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes(&bytes, path, opts)
}

/// Decodes in-memory `bytes` (whose origin is `path`, used in errors) to RGB8.
pub fn decode_bytes(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let err = |reason: String| DataError::Decode { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(err("empty file (0 bytes)".into()));
    }
    let caught = std::panic::catch_unwind(|| decode_inner(bytes, path, opts));
    match caught {
        Ok(r) => r,
        Err(_) => Err(err("the decoder panicked on this file".into())),
    }
}

fn decode_inner(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let err = |reason: String| DataError::Decode { path: path.to_path_buf(), reason };
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DataError::io(path, e))?;
    if reader.format().is_none() {
        return Err(DataError::UnknownFormat { path: path.to_path_buf() });
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_eoi_after_scan(bytes) {
        // zune-jpeg pads a truncated scan with grey and reports success; refuse it instead.
        return Err(err("truncated JPEG (no end-of-image marker after the last scan)".into()));
    }
    let mut limits = Limits::default();
    // Backstop for codecs that allocate before reporting dimensions: 8 bytes per pixel
    // (16-bit RGBA) plus slack for codec tables.
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| map_image_error(e, path))?;
    let (w, h) = decoder.dimensions();
    if (w as u64) * (h as u64) > opts.max_pixels {
        return Err(DataError::TooLarge { path: path.to_path_buf(), width: w, height: h, limit: opts.max_pixels });
    }
    if w == 0 || h == 0 {
        return Err(err(format!("image has zero size ({w}x{h})")));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, path))?;
    Ok(to_rgb8(img, opts.alpha))
}

/// True when an EOI marker (`FF D9`) follows the last start-of-scan marker (`FF DA`).
/// EXIF thumbnails carry their own EOI before the main scan, so only EOIs after it count.
pub fn jpeg_has_eoi_after_scan(bytes: &[u8]) -> bool {
    let sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((sos, eoi), (Some(s), Some(e)) if e > s)
}

fn map_image_error(e: image::ImageError, path: &Path) -> DataError {
    let reason = match &e {
        image::ImageError::Limits(l) => format!("exceeds decoding limits: {l}"),
        image::ImageError::Unsupported(u) => format!("unsupported: {u}"),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated file: {io}")
        }
        other => other.to_string(),
    };
    DataError::Decode { path: path.to_path_buf(), reason }
}

/// Converts any decoded image to RGB8, handling alpha per `alpha`.
pub fn to_rgb8(img: DynamicImage, alpha: AlphaMode) -> RgbImage {
    if !img.color().has_alpha() || alpha == AlphaMode::Drop {
        return img.to_rgb8();
    }
    composite_on_white(&img.to_rgba8())
}

/// Composites an RGBA image over a white background.
pub fn composite_on_white(rgba: &RgbaImage) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for p in rgba.as_raw().chunks_exact(4) {
        let a = p[3] as u32;
        for &c in &p[..3] {
            out.push(((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer size matches")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png).unwrap();
        buf
    }

    #[test]
    fn alpha_composites_on_white_or_drops() {
        let mut img = RgbaImage::new(2, 1);
        img.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        img.put_pixel(1, 0, Rgba([10, 20, 30, 255]));
        let bytes = png_bytes(DynamicImage::ImageRgba8(img));
        let p = Path::new("a.png");
        let white = decode_bytes(&bytes, p, &DecodeOptions::default()).unwrap();
        assert_eq!(white.get_pixel(0, 0), &Rgb([255, 255, 255]));
        assert_eq!(white.get_pixel(1, 0), &Rgb([10, 20, 30]));
        let drop = decode_bytes(&bytes, p, &DecodeOptions { alpha: AlphaMode::Drop, ..Default::default() }).unwrap();
        assert_eq!(drop.get_pixel(0, 0), &Rgb([0, 0, 0]));
    }

    #[test]
    fn sixteen_bit_and_grey_pngs_decode() {
        let img16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_pixel(3, 2, Rgb([65535, 0, 32896]));
        let out = decode_bytes(&png_bytes(DynamicImage::ImageRgb16(img16)), Path::new("x.png"), &DecodeOptions::default()).unwrap();
        assert_eq!(out.get_pixel(2, 1), &Rgb([255, 0, 128]));
        let grey: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(2, 2, Luma([77]));
        let out = decode_bytes(&png_bytes(DynamicImage::ImageLuma8(grey)), Path::new("g.png"), &DecodeOptions::default()).unwrap();
        assert_eq!(out.get_pixel(1, 1), &Rgb([77, 77, 77]));
        let ga: ImageBuffer<LumaA<u16>, Vec<u16>> = ImageBuffer::from_pixel(1, 1, LumaA([0, 0]));
        let out = decode_bytes(&png_bytes(DynamicImage::ImageLumaA16(ga)), Path::new("ga.png"), &DecodeOptions::default()).unwrap();
        assert_eq!(out.get_pixel(0, 0), &Rgb([255, 255, 255]));
    }

    #[test]
    fn pixel_limit_is_enforced() {
        let img = RgbImage::new(100, 100);
        let bytes = png_bytes(DynamicImage::ImageRgb8(img));
        let opts = DecodeOptions { max_pixels: 9_999, ..Default::default() };
        match decode_bytes(&bytes, Path::new("big.png"), &opts) {
            Err(DataError::TooLarge { width: 100, height: 100, limit: 9_999, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(decode_bytes(&bytes, Path::new("ok.png"), &DecodeOptions { max_pixels: 10_000, ..Default::default() }).is_ok());
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let img = RgbImage::from_fn(40, 40, |x, y| Rgb([(x * 6) as u8, (y * 6) as u8, 77]));
        let mut buf = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg).unwrap();
        assert!(decode_bytes(&buf, Path::new("ok.jpg"), &DecodeOptions::default()).is_ok());
        let cut = &buf[..buf.len() * 2 / 3];
        match decode_bytes(cut, Path::new("cut.jpg"), &DecodeOptions::default()) {
            Err(DataError::Decode { reason, .. }) => assert!(reason.contains("truncated"), "{reason}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        let mut trailing = buf.clone();
        trailing.extend_from_slice(b"trailer bytes some cameras append");
        assert!(decode_bytes(&trailing, Path::new("t.jpg"), &DecodeOptions::default()).is_ok());
    }

    #[test]
    fn extensions() {
        assert!(has_image_extension(Path::new("a/b.JPG")));
        assert!(has_image_extension(Path::new("b.webp")));
        assert!(!has_image_extension(Path::new("b.txt")));
        assert!(!has_image_extension(Path::new("jpg")));
    }
}
