//! Errors of the metric-learning core.
//!
//! Every failure a caller can cause (bad shapes, bad labels, non-finite values, invalid
//! configuration) is a typed error that says what is wrong, so the trainer can stop cleanly
//! before an epoch starts instead of panicking deep inside libtorch.

use thiserror::Error;

/// What can go wrong in `proxima-core`.
#[derive(Debug, Error)]
pub enum CoreError {
    /// A tensor does not have the shape the operation needs.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The batch has no rows.
    #[error("empty batch: {0}")]
    Empty(String),
    /// Embeddings (or a learnable weight) contain NaN or infinity.
    #[error("non-finite values in {0}")]
    NonFinite(String),
    /// A label is outside the range a classification-style loss was built for.
    #[error("label {label} is out of range: this loss was built for {num_classes} classes (labels 0..{num_classes})")]
    LabelOutOfRange { label: i64, num_classes: i64 },
    /// A parameter of a component is invalid (checked when the configuration is loaded).
    #[error("invalid {component} parameter: {message}")]
    InvalidParameter { component: String, message: String },
    /// The combination of components is not supported (e.g. a reducer a loss cannot use).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, CoreError>;

/// Builds an [`CoreError::InvalidParameter`].
pub(crate) fn invalid(component: &str, message: impl Into<String>) -> CoreError {
    CoreError::InvalidParameter { component: component.to_string(), message: message.into() }
}
