//! Typed errors: what is wrong with a domain, a URL or a catalogue, naming the input or the file.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong here.
#[derive(Debug, Error)]
pub enum DomainError {
    /// A brand domain that cannot be stored.
    #[error("invalid domain {input:?}: {reason}")]
    InvalidDomain {
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// A page URL that cannot be used.
    #[error("invalid URL {input:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// A catalogue file that cannot be read or written.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A catalogue file whose contents are not a catalogue.
    #[error("{}: not a brand catalogue: {reason}", .path.display())]
    BadCatalogue {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DomainError>;

/// Wraps an I/O error with the path it happened on.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DomainError {
    let path = path.into();
    move |source| DomainError::Io { path, source }
}
