//! Angular loss: constrains the angle at the negative of the triangle (anchor, positive,
//! negative) instead of a distance difference, which makes the margin scale-invariant.
//!
//! Each positive pair is compared with every reference row of another class through one
//! `[positive pairs × m]` matrix product (no B³ triplet list).

use serde::{Deserialize, Serialize};

use super::pair_common::masked_lse;
use super::{DistanceLoss, DistanceLossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::reducer::{LossTerm, TermIndices};
use crate::tuples::{Batch, Tuples};

/// Parameters of [`AngularLoss`] (reference default: `alpha = 40` degrees; normalised
/// Euclidean distance only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AngularParams {
    /// The angle bound, in degrees.
    pub alpha: f64,
}

impl Default for AngularParams {
    fn default() -> Self {
        AngularParams { alpha: 40.0 }
    }
}

impl DistanceLossParams for AngularParams {
    fn default_distance() -> Distance {
        Distance::lp()
    }
    fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha < 90.0) {
            return Err(invalid("angular loss", format!("alpha must be an angle in (0, 90) degrees, got {}", self.alpha)));
        }
        Ok(())
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        if *distance != Distance::lp() {
            return Err(invalid("angular loss", "only the normalised Euclidean distance (lp, p = 2, power = 1) is supported"));
        }
        Ok(())
    }
}

/// Angular loss.
///
/// With normalised anchor `a` and positive `p`, every reference row `x_n` of another class and
/// `t = tan²(alpha)`: `L(a,p) = log(1 + Σ_n exp(4t (a + p)·x_n − 2(1 + t) a·p))`. One value per
/// positive pair, mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(P·m) memory for P positive pairs.
pub type AngularLoss = DistanceLoss<AngularParams>;

impl MetricLoss for AngularLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pairs = batch.to_pairs(tuples);
        if pairs.num_pos() == 0 || pairs.num_neg() == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let (a1, p) = (&pairs.pos_anchor, &pairs.pos_other);
        let reference = batch.ref_embeddings();
        let anchors = self.distance.maybe_normalize(&batch.embeddings.index_select(0, a1));
        let positives = self.distance.maybe_normalize(&reference.index_select(0, p));
        let keep = batch.labels.index_select(0, a1).unsqueeze(1).ne_tensor(&batch.ref_labels().unsqueeze(0));
        let sq_tan = self.params.alpha.to_radians().tan().powi(2);
        let ap_dot = (&anchors * &positives).sum_dim_intlist(1, true, anchors.kind());
        let ap_x = (&anchors + &positives).matmul(&reference.tr());
        let final_form = ap_x * (4.0 * sq_tan) - ap_dot * (2.0 * (1.0 + sq_tan));
        let losses = masked_lse(&final_form, &keep, true);
        Ok(vec![LossTerm::new("loss", losses, TermIndices::PosPair(pairs.pos_anchor.shallow_clone(), pairs.pos_other.shallow_clone()))])
    }
}
