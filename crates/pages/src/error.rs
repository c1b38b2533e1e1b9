//! Errors of `proxima-pages`: every one names the step or the file.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong while rendering pages.
#[derive(Debug, Error)]
pub enum PagesError {
    /// No Chromium binary was found.
    #[error("no Chromium found (install Debian's `chromium` with scripts/setup-chromium.sh, or set PROXIMA_CHROMIUM)")]
    NoBrowser,
    /// The browser failed at a step (start, load, script, screenshot), or stopped.
    #[error("Chromium, while {step}: {message}")]
    Browser { step: String, message: String },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Input data is missing or not as documented.
    #[error("{0}")]
    Invalid(String),
    /// Writing the scene manifest failed.
    #[error(transparent)]
    Data(#[from] proxima_data::DataError),
}

impl PagesError {
    /// Builds a [`PagesError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PagesError::Io { path: path.into(), source }
    }
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, PagesError>;
