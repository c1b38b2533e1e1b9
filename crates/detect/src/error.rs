//! Typed errors of the detection crate; every I/O error names its path.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong while training a localiser or finding logos.
#[derive(Debug, Error)]
pub enum DetectError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A localiser directory is missing, corrupt or of another format.
    #[error("{path}: {message}")]
    Artifact { path: PathBuf, message: String },
    /// The gallery was built with another embedding model.
    #[error("the gallery was built with model {gallery} but the model is {model}: rebuild the gallery with this model")]
    ModelMismatch { gallery: String, model: String },
    /// The input image cannot be used.
    #[error("{0}")]
    Input(String),
    /// Training went wrong (empty data, NaN loss).
    #[error("training the localiser: {0}")]
    Training(String),
    #[error(transparent)]
    Data(#[from] proxima_data::DataError),
    #[error(transparent)]
    Index(#[from] proxima_index::IndexError),
    #[error(transparent)]
    Model(#[from] proxima_models::ModelError),
    #[error(transparent)]
    Eval(#[from] proxima_eval::EvalError),
    #[error(transparent)]
    Report(#[from] proxima_report::ReportError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl DetectError {
    /// An [`DetectError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DetectError::Io { path: path.into(), source }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DetectError>;
