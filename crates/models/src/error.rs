//! Errors of the model crate.
//!
//! Loading weights is where most user mistakes surface (a wrong path, a checkpoint of another
//! architecture, a half-downloaded file), so every such error names the file and, where there is
//! one, the parameter — the message alone should tell the user what to fix.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong in `proxima-models`.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The weight file cannot be opened or read.
    #[error("cannot read weight file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The weight file is truncated, corrupt or not in a supported format.
    #[error("weight file {path} is corrupt or not a supported format: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A parameter of the model has no counterpart in the weight file.
    #[error("parameter `{name}` is missing from weight file {path}{more}")]
    MissingParameter { name: String, path: PathBuf, more: String },
    /// A parameter of the weight file does not have the model's shape.
    #[error("parameter `{name}`: expected {}, file has {} (weight file {path})", fmt_shape(.expected), fmt_shape(.found))]
    ShapeMismatch { name: String, expected: Vec<i64>, found: Vec<i64>, path: PathBuf },
    /// The model configuration is invalid.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The input does not have the shape the model needs.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A file of a model directory or a tensor file cannot be read or written.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tensor file (checkpoint, model weights) or model card is not as written: corrupt, of
    /// another format version, or changed since its fingerprint was taken.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Decoding or preprocessing images failed.
    #[error(transparent)]
    Data(#[from] proxima_data::DataError),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// `[64,3,7,7]`: a shape as PyTorch users write it.
pub fn fmt_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

impl ModelError {
    /// Builds a [`ModelError::File`].
    pub fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::File { path: path.into(), source }
    }

    /// Builds a [`ModelError::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ModelError::Corrupt { path: path.into(), reason: reason.into() }
    }
}
