//! Drawing find answers onto images, so a person can check what was found where.
//!
//! Known regions get a thick green frame, unknown ones a thin grey one; boxes are in the image's
//! pixels, as [`crate::FindAnswer`] reports them.

use image::{Rgb, RgbImage};

use crate::find::FindAnswer;

/// A copy of `img` with every region of `answer` framed (known green, unknown grey).
pub fn draw_answer(img: &RgbImage, answer: &FindAnswer) -> RgbImage {
    let mut out = img.clone();
    // Unknown first so known frames stay on top.
    for known in [false, true] {
        for r in answer.regions.iter().filter(|r| r.brand.is_some() == known) {
            let (colour, width) = if known { (Rgb([0, 200, 60]), 4) } else { (Rgb([150, 150, 150]), 1) };
            frame(&mut out, r.bbox, colour, width);
        }
    }
    out
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
}
