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

/// Fails unless `scale` is a finite number > 0 (the logit scale of a margin softmax).
pub(crate) fn check_scale(loss: &str, scale: f64) -> Result<()> {
    positive(loss, "scale", scale)
}

/// The angle multiplier of LargeMarginSoftmax and SphereFace: a whole number in 1..=64.
pub(crate) fn integer_margin(loss: &str, margin: f64) -> Result<i64> {
    if !(margin.is_finite() && margin >= 1.0 && margin.fract() == 0.0 && margin <= 64.0) {
        return Err(invalid(loss, format!("margin must be a whole number between 1 and 64 (the angle multiplier), got {margin}")));
    }
    Ok(margin as i64)
}

/// Fails unless `margin` is an angle in degrees in [0, 180).
pub(crate) fn check_angle(loss: &str, margin: f64) -> Result<()> {
    if !(margin.is_finite() && (0.0..180.0).contains(&margin)) {
        return Err(invalid(loss, format!("margin must be an angle in degrees in [0, 180), got {margin}")));
    }
    Ok(())
}

/// Refuses every distance but the cosine similarity: for losses defined on it only.
pub(crate) fn cosine_only(component: &str, distance: &Distance) -> Result<()> {
    if !matches!(distance, Distance::Cosine { .. }) {
        return Err(invalid(component, "only the cosine similarity is supported"));
    }
    Ok(())
}
