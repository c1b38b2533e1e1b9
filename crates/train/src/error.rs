//! Errors of training: every one says what is wrong and, for files, where.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong while configuring, running or resuming training.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error(
        "training diverged: {what} became non-finite at epoch {epoch}, step {step}; training stopped, the last good checkpoint is kept (lower the learning rate or clip gradients)"
    )]
    Diverged { what: String, epoch: usize, step: usize },
    #[error(transparent)]
    Core(#[from] proxima_core::CoreError),
    #[error(transparent)]
    Eval(#[from] proxima_eval::EvalError),
    #[error(transparent)]
    Model(#[from] proxima_models::ModelError),
    #[error(transparent)]
    Data(#[from] proxima_data::DataError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("data parallel: {0}")]
    Dist(#[from] proxima_dist::DistError),
}

impl TrainError {
    /// An I/O error that names its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, TrainError>;
