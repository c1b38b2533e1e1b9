//! Parameter checks shared by the loss configurations, so every loss words its errors alike.

use crate::distance::Distance;
use crate::error::{Result, invalid};

/// Fails unless every `(name, value)` is finite.
pub(crate) fn finite(component: &str, values: &[(&str, f64)]) -> Result<()> {
    for (name, v) in values {
        if !v.is_finite() {
            return Err(invalid(component, format!("{name} must be finite, got {v}")));
        }
    }
    Ok(())
}

/// Fails unless `v` is a finite number > 0.
pub(crate) fn positive(component: &str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(component, format!("{name} must be a positive number, got {v}")));
    }
    Ok(())
}

/// The configured distance (cosine when none), refusing any other: for losses defined on the
/// cosine similarity only.
pub(crate) fn cosine_only(component: &str, distance: Option<Distance>) -> Result<Distance> {
    let distance = distance.unwrap_or_else(Distance::cosine);
    if !matches!(distance, Distance::Cosine { .. }) {
        return Err(invalid(component, "only the cosine similarity is supported"));
    }
    Ok(distance)
}
