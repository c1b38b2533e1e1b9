//! Text labels drawn onto an existing RGB image, in the bundled font.
//!
//! Why here: the font and plotters live in this crate; the find pipeline frames regions itself
//! and only needs a brand name written beside each frame.

use plotters::prelude::*;

use crate::error::{ReportError, Result};
use crate::output::{FONT_FAMILY, ensure_font};

/// Writes `text` (`size` pixels high) on a filled `background` box whose top-left corner is at
/// `(x, y)`, moved inside the image when it would cross an edge. `rgb` is a `width × height`
/// RGB8 buffer, row-major. Returns the box drawn, `[x0, y0, x1, y1)` in pixels.
pub fn draw_label(rgb: &mut [u8], width: u32, height: u32, (x, y): (i32, i32), text: &str, size: u32, colour: [u8; 3], background: [u8; 3]) -> Result<[i32; 4]> {
    let invalid = |reason: String| ReportError::InvalidInput { what: format!("label {text:?}"), reason };
    if rgb.len() != width as usize * height as usize * 3 || width == 0 || height == 0 {
        return Err(invalid(format!("buffer of {} bytes is not a {width}×{height} RGB image", rgb.len())));
    }
    if !(4..=512).contains(&size) {
        return Err(invalid(format!("text size {size} must be within 4..=512 pixels")));
    }
    ensure_font()?;
    let root = BitMapBackend::with_buffer(rgb, (width, height)).into_drawing_area();
    let font = (FONT_FAMILY, size).into_font().color(&RGBColor(colour[0], colour[1], colour[2]));
    let (tw, th) = root.estimate_text_size(text, &font).map_err(|e| invalid(e.to_string()))?;
    let pad = (size / 6).max(1) as i32;
    let (bw, bh) = (tw as i32 + 2 * pad, th as i32 + 2 * pad);
    let x0 = x.min(width as i32 - bw).max(0);
    let y0 = y.min(height as i32 - bh).max(0);
    let fill = RGBColor(background[0], background[1], background[2]).filled();
    root.draw(&Rectangle::new([(x0, y0), (x0 + bw - 1, y0 + bh - 1)], fill)).map_err(|e| invalid(e.to_string()))?;
    root.draw(&Text::new(text.to_string(), (x0 + pad, y0 + pad), font)).map_err(|e| invalid(e.to_string()))?;
    root.present().map_err(|e| invalid(e.to_string()))?;
    Ok([x0, y0, x0 + bw, y0 + bh])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_changes_only_its_box_and_stays_inside() {
        let (w, h) = (120u32, 60u32);
        let mut rgb = vec![200u8; (w * h * 3) as usize];
        let b = draw_label(&mut rgb, w, h, (10, 5), "acme 0.91", 14, [255, 255, 255], [0, 150, 0]).unwrap();
        assert!(b[0] == 10 && b[1] == 5 && b[2] > 40 && b[3] > 15 && b[2] <= w as i32 && b[3] <= h as i32, "{b:?}");
        let px = |x: i32, y: i32| &rgb[((y as u32 * w + x as u32) * 3) as usize..][..3];
        assert_eq!(px(b[0], b[1]), [0, 150, 0], "background box");
        assert_eq!(px(b[2] + 2, b[3] + 2), [200, 200, 200], "outside untouched");
        let inside: Vec<&[u8]> = (b[1]..b[3]).flat_map(|y| (b[0]..b[2]).map(move |x| (x, y))).map(|(x, y)| px(x, y)).collect();
        assert!(inside.iter().any(|p| p[0] > 128), "white text drawn");
        // Near the bottom-right corner the box is moved inside.
        let mut rgb2 = vec![0u8; (w * h * 3) as usize];
        let b = draw_label(&mut rgb2, w, h, (115, 58), "x", 12, [255, 255, 255], [9, 9, 9]).unwrap();
        assert!(b[2] <= w as i32 && b[3] <= h as i32 && b[0] >= 0 && b[1] >= 0, "{b:?}");
        assert!(draw_label(&mut rgb2[..10], w, h, (0, 0), "x", 12, [0; 3], [0; 3]).is_err());
        assert!(draw_label(&mut rgb2, w, h, (0, 0), "x", 0, [0; 3], [0; 3]).is_err());
    }
}
