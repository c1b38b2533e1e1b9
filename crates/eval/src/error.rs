//! Typed errors for every evaluation entry point.
//!
//! Why: evaluation runs at the end of long training jobs; a panic or a silent NaN there
//! loses hours of work or, worse, reports a wrong number. Every bad input is turned into
//! an [`EvalError`] that names what is wrong and where.

use thiserror::Error;

/// Everything that can go wrong while evaluating embeddings.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EvalError {
    /// A set (queries, references, scores, ...) is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which input was empty.
        what: &'static str,
    },
    /// A flat buffer's length is not a multiple of the row dimension.
    #[error("{what}: buffer of {len} values is not a whole number of rows of dimension {dim}")]
    RaggedRows {
        /// Which input.
        what: &'static str,
        /// Buffer length.
        len: usize,
        /// Declared dimension.
        dim: usize,
    },
    /// The embedding dimension is zero.
    #[error("{what}: embedding dimension must be > 0")]
    ZeroDimension {
        /// Which input.
        what: &'static str,
    },
    /// Two inputs disagree on the embedding dimension.
    #[error("dimension mismatch: {left_what} has dimension {left}, {right_what} has dimension {right}")]
    DimensionMismatch {
        /// First input.
        left_what: &'static str,
        /// Its dimension.
        left: usize,
        /// Second input.
        right_what: &'static str,
        /// Its dimension.
        right: usize,
    },
    /// The number of labels differs from the number of rows.
    #[error("label count mismatch: {what} has {rows} rows but {labels} labels")]
    LabelCountMismatch {
        /// Which input.
        what: &'static str,
        /// Rows.
        rows: usize,
        /// Labels.
        labels: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Row of the offending value.
        row: usize,
        /// Column of the offending value.
        col: usize,
        /// The value itself.
        value: f64,
    },
    /// A row is so large that its squared norm overflows `f32`.
    #[error("{what}: row {row} has a squared norm that overflows f32")]
    NormOverflow {
        /// Which input.
        what: &'static str,
        /// Row index.
        row: usize,
    },
    /// A zero vector cannot be normalised for cosine similarity.
    #[error("{what}: row {row} is the zero vector; cosine similarity is undefined")]
    ZeroVector {
        /// Which input.
        what: &'static str,
        /// Row index.
        row: usize,
    },
    /// `k` is zero or larger than the number of usable references.
    #[error("invalid k = {k}: must be in 1..={max} ({reason})")]
    InvalidK {
        /// Requested k.
        k: usize,
        /// Largest allowed k.
        max: usize,
        /// Why that is the limit.
        reason: &'static str,
    },
    /// Only one class is present, so the metric is trivially 1 and meaningless.
    #[error("{what}: only one class ({label}) is present; the metric would be trivially perfect")]
    SingleClass {
        /// Which input.
        what: &'static str,
        /// The only label.
        label: i64,
    },
    /// No query has a same-class reference, so no retrieval metric is defined.
    #[error("no query has a same-class reference ({queries} queries, all lone); retrieval metrics are undefined")]
    NoRetrievableQueries {
        /// Number of queries.
        queries: usize,
    },
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
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
