//! Typed errors of the benchmark runner.
//!
//! Why: a bench runs for hours; when it stops, the message must say which file or which run
//! configuration is at fault so it can be fixed and the bench resumed.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while planning, running or reporting a bench.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bench file is invalid.
    #[error("bench config: {0}")]
    Config(String),
    /// A resolved experiment is invalid, or a run failed.
    #[error(transparent)]
    Train(#[from] proxima_train::TrainError),
    /// A line of `results.jsonl` (or `plan.json`) cannot be parsed.
    #[error("{}: line {line}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A chart or table could not be written.
    #[error(transparent)]
    Report(#[from] proxima_report::ReportError),
    /// Data preparation (synthetic data, splits) failed.
    #[error(transparent)]
    Data(#[from] proxima_data::DataError),
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io { path: path.into(), source }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, BenchError>;
