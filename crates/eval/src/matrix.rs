//! A validated, borrowed row-major embedding matrix.
//!
//! Why: every entry point needs the same checks (non-empty, whole rows, finite values);
//! doing them once in a constructor means the numeric kernels can assume clean data and
//! never produce a NaN from bad input.

use crate::error::{EvalError, Result};

/// A borrowed `rows × dim` row-major `f32` matrix whose values are all finite.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    data: &'a [f32],
    rows: usize,
    dim: usize,
}

impl<'a> Embeddings<'a> {
    /// Wrap and validate a row-major buffer; `what` names it in errors.
    ///
    /// # Shapes
    /// `data.len() == rows * dim`.
    pub fn new(what: &'static str, data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(EvalError::ZeroDimension { what });
        }
        if data.is_empty() {
            return Err(EvalError::Empty { what });
        }
        if !data.len().is_multiple_of(dim) {
            return Err(EvalError::RaggedRows { what, len: data.len(), dim });
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite { what, row: pos / dim, col: pos % dim, value: data[pos] as f64 });
        }
        Ok(Self { data, rows: data.len() / dim, dim })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The whole row-major buffer.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Check that `labels` has one entry per row.
pub(crate) fn check_labels(what: &'static str, rows: usize, labels: &[i64]) -> Result<()> {
    if labels.len() != rows {
        return Err(EvalError::LabelCountMismatch { what, rows, labels: labels.len() });
    }
    Ok(())
}

/// Check that two matrices share a dimension.
pub(crate) fn check_same_dim(a: (&'static str, usize), b: (&'static str, usize)) -> Result<()> {
    if a.1 != b.1 {
        return Err(EvalError::DimensionMismatch { left_what: a.0, left: a.1, right_what: b.0, right: b.1 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_buffers() {
        assert!(matches!(Embeddings::new("q", &[], 2), Err(EvalError::Empty { .. })));
        assert!(matches!(Embeddings::new("q", &[1.0], 0), Err(EvalError::ZeroDimension { .. })));
        assert!(matches!(Embeddings::new("q", &[1.0, 2.0, 3.0], 2), Err(EvalError::RaggedRows { len: 3, dim: 2, .. })));
        let e = Embeddings::new("q", &[1.0, 2.0, f32::NAN, 0.0], 2).unwrap_err();
        assert!(matches!(e, EvalError::NonFinite { row: 1, col: 0, .. }));
        assert!(e.to_string().contains("row 1"));
        assert!(matches!(Embeddings::new("q", &[1.0, f32::INFINITY], 2), Err(EvalError::NonFinite { row: 0, col: 1, .. })));
    }

    #[test]
    fn rows_are_views() {
        let d = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let e = Embeddings::new("q", &d, 3).unwrap();
        assert_eq!(e.rows(), 2);
        assert_eq!(e.row(1), &[4.0, 5.0, 6.0]);
    }
}
