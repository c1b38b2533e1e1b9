//! Small raster helpers shared by [`crate::synth`] and [`crate::augment`]: homographies,
//! bilinear warps, separable Gaussian blur, colour conversions.
//!
//! Why hand-written: they are a few dozen lines each, fully deterministic (no SIMD-dependent
//! rounding differences across machines), and avoid pulling a large imaging dependency.

use image::RgbImage;

/// Solves the 3×3 homography mapping each `from[i]` to `to[i]` (row-major, `h[8] = 1`).
pub fn homography(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<[f64; 9]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (from[i], to[i]);
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // Gaussian elimination with partial pivoting on the 8×9 augmented matrix.
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        for r in 0..8 {
            if r != col {
                let f = a[r][col] / a[col][col];
                if f != 0.0 {
                    for c in col..9 {
                        a[r][c] -= f * a[col][c];
                    }
                }
            }
        }
    }
    let mut h = [0f64; 9];
    for i in 0..8 {
        h[i] = a[i][8] / a[i][i];
    }
    h[8] = 1.0;
    Some(h)
}

/// Applies homography `h` to `(x, y)`.
#[inline]
pub fn apply_h(h: &[f64; 9], x: f64, y: f64) -> (f64, f64) {
    let w = h[6] * x + h[7] * y + h[8];
    let w = if w.abs() < 1e-12 { 1e-12 } else { w };
    ((h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w)
}

/// Bilinear sample of an interleaved `C`-channel f32 image; `None` outside.
#[inline]
pub fn sample_bilinear<const C: usize>(buf: &[f32], w: usize, h: usize, x: f64, y: f64) -> Option<[f32; C]> {
    // Pixel centres at integer + 0.5.
    let fx = x - 0.5;
    let fy = y - 0.5;
    if fx < -0.5 || fy < -0.5 || fx > w as f64 - 0.5 || fy > h as f64 - 0.5 {
        return None;
    }
    let x0 = fx.floor().clamp(0.0, (w - 1) as f64) as usize;
    let y0 = fy.floor().clamp(0.0, (h - 1) as f64) as usize;
    let x1 = (x0 + 1).min(w - 1);
    let y1 = (y0 + 1).min(h - 1);
    let tx = (fx - x0 as f64).clamp(0.0, 1.0) as f32;
    let ty = (fy - y0 as f64).clamp(0.0, 1.0) as f32;
    let mut out = [0f32; C];
    for (c, o) in out.iter_mut().enumerate() {
        let p = |xx: usize, yy: usize| buf[(yy * w + xx) * C + c];
        let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
        let bot = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
        *o = top * (1.0 - ty) + bot * ty;
    }
    Some(out)
}

/// Warps `src` into a `out_w × out_h` image; `dst_to_src` maps output pixel coordinates to
/// source coordinates; pixels falling outside take `fill`.
pub fn warp_rgb(src: &RgbImage, out_w: u32, out_h: u32, dst_to_src: &[f64; 9], fill: [u8; 3]) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let f: Vec<f32> = src.as_raw().iter().map(|&v| v as f32).collect();
    let mut out = Vec::with_capacity((out_w * out_h * 3) as usize);
    for y in 0..out_h {
        for x in 0..out_w {
            let (u, v) = apply_h(dst_to_src, x as f64 + 0.5, y as f64 + 0.5);
            match sample_bilinear::<3>(&f, w, h, u, v) {
                Some(p) => out.extend(p.iter().map(|&c| (c + 0.5).clamp(0.0, 255.0) as u8)),
                None => out.extend_from_slice(&fill),
            }
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("size matches")
}

/// In-place separable Gaussian blur of an interleaved 3-channel f32 image (clamped edges).
pub fn gaussian_blur3(buf: &mut [f32], w: usize, h: usize, sigma: f32) {
    if sigma < 0.05 || w == 0 || h == 0 {
        return;
    }
    let r = (sigma * 3.0).ceil() as isize;
    let mut k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let mut tmp = vec![0f32; buf.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (ki, kv) in k.iter().enumerate() {
                let xx = (x as isize + ki as isize - r).clamp(0, w as isize - 1) as usize;
                let i = (y * w + xx) * 3;
                for c in 0..3 {
                    acc[c] += kv * buf[i + c];
                }
            }
            tmp[(y * w + x) * 3..][..3].copy_from_slice(&acc);
        }
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (ki, kv) in k.iter().enumerate() {
                let yy = (y as isize + ki as isize - r).clamp(0, h as isize - 1) as usize;
                let i = (yy * w + x) * 3;
                for c in 0..3 {
                    acc[c] += kv * tmp[i + c];
                }
            }
            buf[(y * w + x) * 3..][..3].copy_from_slice(&acc);
        }
    }
}

/// HSV (all in 0..1, hue wraps) to RGB in 0..1.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// RGB (0..1) to HSV (0..1).
pub fn rgb_to_hsv(c: [f32; 3]) -> [f32; 3] {
    let max = c[0].max(c[1]).max(c[2]);
    let min = c[0].min(c[1]).min(c[2]);
    let d = max - min;
    let h = if d <= 1e-6 {
        0.0
    } else if max == c[0] {
        ((c[1] - c[2]) / d).rem_euclid(6.0) / 6.0
    } else if max == c[1] {
        ((c[2] - c[0]) / d + 2.0) / 6.0
    } else {
        ((c[0] - c[1]) / d + 4.0) / 6.0
    };
    let s = if max <= 1e-6 { 0.0 } else { d / max };
    [h, s, max]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_maps_corners() {
        let from = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];
        let to = [[1.0, 2.0], [12.0, 1.0], [11.0, 13.0], [-1.0, 9.0]];
        let h = homography(&from, &to).unwrap();
        for i in 0..4 {
            let (u, v) = apply_h(&h, from[i][0], from[i][1]);
            assert!((u - to[i][0]).abs() < 1e-6 && (v - to[i][1]).abs() < 1e-6);
        }
        assert!(homography(&[[0.0, 0.0]; 4], &to).is_none());
    }

    #[test]
    fn hsv_roundtrip() {
        for c in [[0.2, 0.5, 0.9], [1.0, 0.0, 0.0], [0.3, 0.3, 0.3], [0.9, 0.8, 0.1]] {
            let h = rgb_to_hsv(c);
            let back = hsv_to_rgb(h[0], h[1], h[2]);
            for k in 0..3 {
                assert!((back[k] - c[k]).abs() < 1e-5, "{c:?} -> {h:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn blur_preserves_constant_and_mean() {
        let mut b = vec![0.5f32; 5 * 4 * 3];
        gaussian_blur3(&mut b, 5, 4, 1.3);
        assert!(b.iter().all(|v| (v - 0.5).abs() < 1e-5));
        let mut d = vec![0f32; 9 * 9 * 3];
        d[(4 * 9 + 4) * 3] = 1.0;
        gaussian_blur3(&mut d, 9, 9, 1.0);
        let s: f32 = d.iter().step_by(3).sum();
        assert!((s - 1.0).abs() < 1e-3 && d[(4 * 9 + 4) * 3] < 0.5);
    }
}
