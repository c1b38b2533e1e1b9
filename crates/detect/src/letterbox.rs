//! Letterboxing: any image → a square network input, and boxes back to image pixels.
//!
//! Why top-left placement and mean-colour padding: the mapping between input and image pixels is
//! one scale factor (no offset to carry around), and padding with the normalisation mean makes it
//! exactly zero after normalisation, the value the trunk's zero-padding already shows at borders.

use image::RgbImage;
use image::imageops::FilterType;
use proxima_models::Normalization;

/// How an image was placed into the square input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Input pixels per image pixel (≤ 1 shrinks).
    pub scale: f32,
    /// Where the image's top-left corner landed, in input pixels.
    pub offset: [f32; 2],
    /// Side of the square input.
    pub side: u32,
}

impl Letterbox {
    /// Maps a box from input pixels back to image pixels.
    pub fn to_image(&self, b: [f32; 4]) -> [f32; 4] {
        [(b[0] - self.offset[0]) / self.scale, (b[1] - self.offset[1]) / self.scale, (b[2] - self.offset[0]) / self.scale, (b[3] - self.offset[1]) / self.scale]
    }
    /// Maps a box from image pixels to input pixels.
    pub fn to_input(&self, b: [f32; 4]) -> [f32; 4] {
        [b[0] * self.scale + self.offset[0], b[1] * self.scale + self.offset[1], b[2] * self.scale + self.offset[0], b[3] * self.scale + self.offset[1]]
    }
}

/// Resizes `img` by `scale`, places it at `offset` in a `side`² canvas (cropping what falls
/// outside), optionally mirrored, and writes normalised CHW floats into `out` (`3·side²`).
pub fn place(img: &RgbImage, side: u32, scale: f32, offset: [f32; 2], flip: bool, norm: &Normalization, out: &mut [f32]) -> Letterbox {
    let s = side as usize;
    assert_eq!(out.len(), 3 * s * s, "output buffer must hold 3·side² floats");
    let w = ((img.width() as f32 * scale).round() as u32).max(1);
    let h = ((img.height() as f32 * scale).round() as u32).max(1);
    let resized = if (w, h) == img.dimensions() { img.clone() } else { image::imageops::resize(img, w, h, FilterType::Triangle) };
    out.fill(0.0);
    let (ox, oy) = (offset[0].round() as i64, offset[1].round() as i64);
    let inv_std: [f32; 3] = std::array::from_fn(|c| 1.0 / norm.std[c] as f32);
    for y in 0..h as i64 {
        let ty = y + oy;
        if ty < 0 || ty >= s as i64 {
            continue;
        }
        for x in 0..w as i64 {
            let tx = x + ox;
            if tx < 0 || tx >= s as i64 {
                continue;
            }
            let sx = if flip { w as i64 - 1 - x } else { x };
            let p = resized.get_pixel(sx as u32, y as u32);
            for c in 0..3 {
                out[c * s * s + ty as usize * s + tx as usize] = (p[c] as f32 / 255.0 - norm.mean[c] as f32) * inv_std[c];
            }
        }
    }
    Letterbox { scale, offset: [ox as f32, oy as f32], side }
}

/// The inference letterbox: longer side scaled to `side` (never enlarged past 2×), top-left.
pub fn letterbox(img: &RgbImage, side: u32, norm: &Normalization, out: &mut [f32]) -> Letterbox {
    let scale = (side as f32 / img.width().max(img.height()) as f32).min(2.0);
    place(img, side, scale, [0.0, 0.0], false, norm, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_map_back_and_padding_is_zero() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([255, 255, 255]));
        let norm = Normalization::HALF;
        let mut buf = vec![1.0; 3 * 64 * 64];
        let lb = letterbox(&img, 64, &norm, &mut buf);
        assert_eq!(lb.scale, 64.0 / 200.0);
        let back = lb.to_image(lb.to_input([10.0, 20.0, 50.0, 60.0]));
        for (a, b) in back.iter().zip([10.0, 20.0, 50.0, 60.0]) {
            assert!((a - b).abs() < 1e-4, "{back:?}");
        }
        // Inside the image: white normalised; below it (row 40 of 64): padding, exactly 0.
        assert!((buf[5 * 64 + 5] - (1.0 - 0.5) / 0.5).abs() < 1e-6);
        assert_eq!(buf[40 * 64 + 5], 0.0);
    }

    #[test]
    fn flip_mirrors_columns() {
        let mut img = RgbImage::from_pixel(4, 1, image::Rgb([0, 0, 0]));
        img.put_pixel(0, 0, image::Rgb([255, 255, 255]));
        let norm = Normalization::HALF;
        let mut buf = vec![0.0; 3 * 4 * 4];
        place(&img, 4, 1.0, [0.0, 0.0], true, &norm, &mut buf);
        assert!(buf[3] > 0.5 && buf[0] < 0.0, "the white pixel moved to the last column");
    }
}
