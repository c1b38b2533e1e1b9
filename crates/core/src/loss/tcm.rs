//! Threshold-consistent margin (TCM) loss (Zhang et al., 2023): a regulariser that pushes
//! positive-pair cosine similarities above `margin_plus` and negative-pair similarities below
//! `margin_minus`, so one global threshold works across classes.
//!
//! Why it stands alone: in pytorch-metric-learning 2.9 the loss has no base loss; it is meant
//! to be added to a metric loss (e.g. through `MultipleLosses`). Only the violating pairs are
//! averaged, so well-separated pairs do not dilute the penalty.
//!
//! The similarities come from the cosine distance matrix (O(n·m) memory); mined pairs are
//! indexed into it, repetitions counting as in the reference.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::checks::cosine_only;
use super::{DistanceLoss, DistanceLossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::reducer::LossTerm;
use crate::tuples::{Batch, Tuples};

/// Parameters of [`ThresholdConsistentMarginLoss`] (reference defaults: λ± 1, m+ 0.9, m− 0.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdConsistentMarginParams {
    pub lambda_plus: f64,
    pub lambda_minus: f64,
    pub margin_plus: f64,
    pub margin_minus: f64,
}

impl Default for ThresholdConsistentMarginParams {
    fn default() -> Self {
        ThresholdConsistentMarginParams { lambda_plus: 1.0, lambda_minus: 1.0, margin_plus: 0.9, margin_minus: 0.5 }
    }
}

const NAME: &str = "threshold_consistent_margin loss";

impl DistanceLossParams for ThresholdConsistentMarginParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        for (name, v) in [("lambda_plus", self.lambda_plus), ("lambda_minus", self.lambda_minus), ("margin_plus", self.margin_plus), ("margin_minus", self.margin_minus)]
        {
            if !v.is_finite() {
                return Err(invalid(NAME, format!("{name} must be finite, got {v}")));
            }
        }
        Ok(())
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        cosine_only(NAME, distance)
    }
}

/// Threshold-consistent margin loss.
///
/// With `s` the cosine similarity, `P⁻ = {positive pairs with s ≤ m₊}` and
/// `N⁺ = {negative pairs with s ≥ m₋}`:
/// `L = λ₊ · mean_{P⁻}(m₊ − s) + λ₋ · mean_{N⁺}(s − m₋)`, an empty set contributing 0
/// (already reduced).
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type ThresholdConsistentMarginLoss = DistanceLoss<ThresholdConsistentMarginParams>;

/// `Σ x·keep / max(Σ keep, 1)`.
fn masked_mean(x: &Tensor, keep: &Tensor) -> Tensor {
    let k = keep.to_kind(x.kind());
    (x * &k).sum(x.kind()) / k.sum(Kind::Double).clamp_min(1.0).to_kind(x.kind())
}

impl MetricLoss for ThresholdConsistentMarginLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let (pos, neg) = match tuples {
            None => {
                let (matches, diffs) = batch.label_masks();
                (mat.masked_select(&matches), mat.masked_select(&diffs))
            }
            Some(t) => {
                let p = batch.to_pairs(Some(t));
                (mat.index(&[Some(&p.pos_anchor), Some(&p.pos_other)]), mat.index(&[Some(&p.neg_anchor), Some(&p.neg_other)]))
            }
        };
        let p = &self.params;
        let pos_part = masked_mean(&(-&pos + p.margin_plus), &pos.le(p.margin_plus));
        let neg_part = masked_mean(&(&neg - p.margin_minus), &neg.ge(p.margin_minus));
        Ok(vec![LossTerm::reduced("loss", pos_part * p.lambda_plus + neg_part * p.lambda_minus)])
    }
}
