//! Contrastive (Siamese) loss: pull positive pairs within `pos_margin`, push negative pairs
//! beyond `neg_margin`.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::reducer::{LossTerm, Reducer, TermIndices};
use crate::tuples::{Batch, Tuples};

fn one() -> f64 {
    1.0
}

/// Parameters of [`ContrastiveLoss`] (reference defaults: `pos_margin = 0`, `neg_margin = 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveParams {
    #[serde(default)]
    pub pos_margin: f64,
    #[serde(default = "one")]
    pub neg_margin: f64,
}

impl Default for ContrastiveParams {
    fn default() -> Self {
        ContrastiveParams { pos_margin: 0.0, neg_margin: 1.0 }
    }
}

impl LossParams for ContrastiveParams {
    fn validate(&self) -> Result<()> {
        if !self.pos_margin.is_finite() || !self.neg_margin.is_finite() {
            return Err(invalid("contrastive loss", "margins must be finite"));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::lp())
    }
    fn build(&self, distance: Option<Distance>, _ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        Ok(Box::new(ContrastiveLoss { params: self.clone(), distance: distance.unwrap_or_else(Distance::lp) }))
    }
}

/// Contrastive loss.
///
/// `L_pos(a,p) = [m(d_ap, pos_margin)]₊`, `L_neg(a,n) = [m(neg_margin, d_an)]₊` where
/// `m(x, y) = x − y` for a distance and `y − x` for a similarity; two terms (`pos_loss`,
/// `neg_loss`), each reduced by avg-non-zero by default, then summed.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub struct ContrastiveLoss {
    pub params: ContrastiveParams,
    pub distance: Distance,
}

impl MetricLoss for ContrastiveLoss {
    fn name(&self) -> &'static str {
        "ContrastiveLoss"
    }

    fn default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pairs = batch.to_pairs(tuples);
        let (np, nn) = (pairs.num_pos(), pairs.num_neg());
        if np <= 1 && nn <= 1 {
            return Ok(vec![LossTerm::zero("pos_loss"), LossTerm::zero("neg_loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let gather = |a: &Tensor, o: &Tensor| mat.index(&[Some(a), Some(o)]);
        let pos = if np > 0 {
            let v = self.distance.margin_to(&gather(&pairs.pos_anchor, &pairs.pos_other), self.params.pos_margin).relu();
            LossTerm::new("pos_loss", v, TermIndices::PosPair(pairs.pos_anchor.shallow_clone(), pairs.pos_other.shallow_clone()))
        } else {
            LossTerm::zero("pos_loss")
        };
        let neg = if nn > 0 {
            let v = self.distance.margin_from(self.params.neg_margin, &gather(&pairs.neg_anchor, &pairs.neg_other)).relu();
            LossTerm::new("neg_loss", v, TermIndices::NegPair(pairs.neg_anchor.shallow_clone(), pairs.neg_other.shallow_clone()))
        } else {
            LossTerm::zero("neg_loss")
        };
        Ok(vec![pos, neg])
    }
}
