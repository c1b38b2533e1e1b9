//! Typed errors of the report writers.
//!
//! Why: reports are written at the end of long runs; an error must say which file could not
//! be produced and why (unwritable folder, bad input values), never panic or leave a
//! half-written file behind.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while drawing or writing a report file.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A file or folder could not be created, written or renamed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The plotting library failed while drawing.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The file being drawn.
        path: PathBuf,
        /// What the plotting library said.
        message: String,
    },
    /// The PNG encoder failed.
    #[error("cannot encode {} as PNG: {message}", path.display())]
    Encode {
        /// The file being encoded.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
    /// The data handed to a chart or table cannot be drawn.
    #[error("invalid input for {what}: {reason}")]
    InvalidInput {
        /// Which chart, series or table.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ReportError>;

/// Shorthand for [`ReportError::InvalidInput`].
pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ReportError {
    ReportError::InvalidInput { what: what.into(), reason: reason.into() }
}
