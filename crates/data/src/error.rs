//! The crate's single error type.
//!
//! Why one enum: callers (CLI, trainers) need to tell "this file is bad" (skip and report) from
//! "the configuration is wrong" (stop); every variant that touches the file system names the path,
//! because a bare `No such file or directory` in a 100k-image data set is useless.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Every error the data crate can return.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation failed on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file could be read but is not a decodable image.
    #[error("cannot decode {}: {reason}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// Why decoding failed.
        reason: String,
    },
    /// The bytes match no image format this build decodes (a web page, a PDF, an unknown codec):
    /// the input is not an image at all, as opposed to a recognised but broken one ([`DataError::Decode`]).
    #[error("cannot decode {}: {}", path.display(), DataError::UNKNOWN_FORMAT)]
    UnknownFormat {
        /// The file (or the name standing for uploaded bytes).
        path: PathBuf,
    },
    /// The image declares more pixels than the configured limit (decompression-bomb guard).
    #[error("{}: image declares {width}x{height} pixels, over the limit of {limit} pixels", path.display())]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The configured pixel limit.
        limit: u64,
    },
    /// Writing (encoding) an image failed.
    #[error("cannot encode {}: {reason}", path.display())]
    Encode {
        /// Destination file.
        path: PathBuf,
        /// Why encoding failed.
        reason: String,
    },
    /// A text file (manifest, annotation, split) has a malformed line.
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        /// The text file.
        path: PathBuf,
        /// 1-based line number (0 when not line-oriented).
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// JSON (de)serialisation of a file failed.
    #[error("JSON error in {}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A class name is not in the data set.
    #[error("unknown class {0:?}")]
    UnknownClass(String),
    /// A class has fewer samples than the sampler needs and the policy is to refuse.
    #[error("class {class:?} has {have} images, fewer than M = {need} (use policy `replace` or `skip`)")]
    ClassTooSmall {
        /// The class name or index.
        class: String,
        /// How many images it has.
        have: usize,
        /// How many a batch needs.
        need: usize,
    },
    /// The input is structurally unusable (e.g. no classes at all).
    #[error("invalid data set: {0}")]
    Invalid(String),
}

impl DataError {
    /// The reason [`DataError::UnknownFormat`] gives.
    pub const UNKNOWN_FORMAT: &'static str = "not a recognised image format (file content matches no supported codec)";

    /// Builds an [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}
