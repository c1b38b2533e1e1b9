//! Shared helpers: fixture and parity paths, image loading, comparisons.

use std::path::{Path, PathBuf};

use proxima_models::Normalization;
use tch::{Kind, Tensor};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// `<parity>/backbones`, or None (with a SKIPPED message) when it is absent.
pub fn backbones_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PROXIMA_PARITY_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("../shared/parity"));
    let dir = dir.join("backbones");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: backbone parity directory {} not found (set PROXIMA_PARITY_DIR to the shared parity directory)", dir.display());
        None
    }
}

/// A file of the backbone parity directory, or None (with a SKIPPED message).
pub fn parity_file(name: &str) -> Option<PathBuf> {
    let path = backbones_dir()?.join(name);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("SKIPPED: parity file {} not found", path.display());
        None
    }
}

/// An RGB PNG as a `[1, 3, H, W]` float tensor in [0, 1], then normalised.
pub fn load_image(path: &Path, norm: &Normalization) -> Tensor {
    let img = image::open(path).unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display())).to_rgb8();
    let (w, h) = img.dimensions();
    let raw = Tensor::from_slice(img.as_raw().as_slice()).view([h as i64, w as i64, 3]);
    let xs = raw.permute([2, 0, 1]).unsqueeze(0).to_kind(Kind::Float) / 255.0;
    norm.apply(&xs)
}

/// A JSON array of numbers.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// A 1-D or 2-D tensor's values.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
}

/// Largest absolute difference.
pub fn max_abs_diff(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max)
}
