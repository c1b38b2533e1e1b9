//! Typed errors of the gallery, its file format and its search backends.
//!
//! Why: a gallery decides whether a web page impersonates a brand; a wrong answer from a
//! corrupted file, a mismatched model or a malformed query is worse than no answer. Every
//! such case is an [`IndexError`] that names what is wrong, and every file error names
//! the path it happened on.

use std::path::PathBuf;

use proxima_eval::{EvalError, Metric};
use thiserror::Error;

/// Everything that can go wrong with a gallery.
#[derive(Debug, Error)]
pub enum IndexError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the gallery magic bytes.
    #[error("{}: not a Proxima gallery file (magic bytes {found:02x?})", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// The file's format version is not one this build reads.
    #[error("{}: gallery format version {found} is not supported (this build reads version {supported})", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version stored in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The file is shorter or longer than its own header says.
    #[error("{}: truncated or padded file (or a corrupted length field): {expected} bytes expected, {actual} found", .path.display())]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// Length implied by the header (or the minimum length).
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The stored checksum does not match the contents.
    #[error("{}: checksum mismatch (stored {stored:08x}, computed {computed:08x}); the file is corrupted", .path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// CRC32 stored in the file.
        stored: u32,
        /// CRC32 of the contents.
        computed: u32,
    },
    /// The JSON header is unreadable or inconsistent.
    #[error("{}: invalid gallery header: {reason}", .path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The gallery was enrolled with another model than the caller's.
    #[error("gallery {} was built with model {gallery}, you are using model {expected}", .path.display())]
    FingerprintMismatch {
        /// The gallery file.
        path: PathBuf,
        /// Fingerprint stored in the gallery.
        gallery: String,
        /// Fingerprint of the caller's model.
        expected: String,
    },
    /// A query or enrolment batch has another embedding dimension than the gallery.
    #[error("{what} has dimension {got}, the gallery's embedding dimension is {expected}")]
    DimensionMismatch {
        /// Which input.
        what: &'static str,
        /// Gallery dimension.
        expected: usize,
        /// Input dimension.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A zero vector has no direction, so its cosine similarity is undefined.
    #[error("{what}: row {row} is the zero vector; cosine similarity is undefined")]
    ZeroVector {
        /// Which input.
        what: &'static str,
        /// Row.
        row: usize,
    },
    /// An input holds no rows.
    #[error("{what} is empty")]
    EmptyInput {
        /// Which input.
        what: &'static str,
    },
    /// Search on a gallery with no enrolled rows.
    #[error("the gallery is empty; enrol at least one brand before searching")]
    EmptyGallery,
    /// Identification on a gallery whose only rows are background (non-logo) examples.
    #[error("the gallery holds only background examples ({}); enrol at least one brand before identifying", crate::BACKGROUND_BRAND)]
    OnlyBackground,
    /// Two inputs that must have one entry per row disagree.
    #[error("{what}: {rows} embedding rows but {count} {items}")]
    CountMismatch {
        /// Which call.
        what: &'static str,
        /// Embedding rows.
        rows: usize,
        /// Number of the other items.
        count: usize,
        /// What the other items are.
        items: &'static str,
    },
    /// A brand name is not acceptable.
    #[error("invalid brand name {name:?}: {reason}")]
    InvalidBrand {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A brand that is not enrolled.
    #[error("brand {0:?} is not in the gallery")]
    UnknownBrand(String),
    /// A source path that cannot be stored (the file format keeps paths as UTF-8).
    #[error("source path {} is not valid UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    /// `identify` needs a decision threshold and the gallery has none.
    #[error("the gallery has no calibrated threshold; calibrate it or pass a threshold explicitly")]
    NotCalibrated,
    /// A parameter is outside its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// The HNSW backend cannot index this metric.
    #[error("the HNSW backend does not support metric {0:?} (use Cosine, L2 or L2Squared, or the exact backend)")]
    UnsupportedMetric(Metric),
    /// An error from the evaluation crate (exact k-NN, thresholds).
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, IndexError>;

/// Wrap an I/O error with the path it happened on.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexError {
    let path = path.into();
    move |source| IndexError::Io { path, source }
}
