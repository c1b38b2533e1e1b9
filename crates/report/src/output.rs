//! Rendering one chart to PNG and SVG, and atomic file writes.
//!
//! Why: both formats come from the same drawing code (a backend-generic [`Draw`] trait), so
//! they cannot drift apart; both are rendered in memory first and only then written, each
//! through a temporary file renamed into place, so a failed draw leaves no file at all and a
//! reader never sees a truncated one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{ReportError, Result, invalid};

/// The bundled font (DejaVu Sans, see `NOTICE`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Family name under which the bundled font is registered.
pub(crate) const FONT_FAMILY: &str = "sans-serif";

/// The two files written for one chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotFiles {
    /// The bitmap, `<name>.png`.
    pub png: PathBuf,
    /// The vector image, `<name>.svg`.
    pub svg: PathBuf,
}

/// A chart that can draw itself on any plotters backend.
pub(crate) trait Draw {
    /// Picture size in pixels.
    fn size(&self) -> (u32, u32);
    /// Draw onto a white, already-filled area.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Register the bundled font once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(invalid("bundled font", "DejaVuSans.ttf could not be parsed")) }
}

/// Check that `name` is a plain file stem (no folder part, not empty).
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(invalid("plot name", format!("{name:?} must be a plain file name without folders or extension")));
    }
    Ok(())
}

/// Render `plot` to `<dir>/<name>.png` and `<dir>/<name>.svg` (creating `dir` if needed).
pub(crate) fn save(dir: &Path, name: &str, plot: &impl Draw) -> Result<PlotFiles> {
    check_name(name)?;
    ensure_font()?;
    let files = PlotFiles { png: dir.join(format!("{name}.png")), svg: dir.join(format!("{name}.svg")) };
    let (w, h) = plot.size();
    if w < 64 || h < 64 || w > 10_000 || h > 10_000 {
        return Err(invalid(name, format!("picture size {w}x{h} must be within 64..=10000 pixels per side")));
    }

    let mut pixels = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        let draw_err = |e: &dyn std::fmt::Display| ReportError::Draw { path: files.png.clone(), message: e.to_string() };
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        plot.draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    let png = encode_png(&pixels, w, h).map_err(|e| ReportError::Encode { path: files.png.clone(), message: e.to_string() })?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        let draw_err = |e: &dyn std::fmt::Display| ReportError::Draw { path: files.svg.clone(), message: e.to_string() };
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        plot.draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }

    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    write_atomic(&files.png, &png)?;
    write_atomic(&files.svg, svg.as_bytes())?;
    Ok(files)
}

/// Encode an RGB8 buffer as PNG bytes.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Write `bytes` to `path` atomically and durably ([`proxima_base::write_atomic`]).
///
/// The folder must exist. On error nothing is left at `path` (an older file stays intact).
/// New files get mode 0644 (less the umask) on Unix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    proxima_base::write_atomic(path, bytes).map_err(|e| ReportError::Io { path: e.path, source: e.source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            // Expected 0644 less this process's umask (Linux reports it in /proc).
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|m| u32::from_str_radix(m.trim(), 8).ok());
            if let Some(umask) = umask {
                assert_eq!(mode, 0o644 & !umask, "mode {mode:o}, umask {umask:o}");
            }
        }
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/folder/b.txt");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(matches!(err, ReportError::Io { .. }));
        assert!(err.to_string().contains("no/such/folder/b.txt"), "{err}");
    }

    #[test]
    fn plot_names_must_be_plain() {
        for bad in ["", "a/b", "..", "x\\y"] {
            assert!(matches!(check_name(bad), Err(ReportError::InvalidInput { .. })), "{bad:?}");
        }
        check_name("roc_curve").unwrap();
    }
}
