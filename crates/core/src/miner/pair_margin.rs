//! Pair-margin mining: positive pairs that are too far and negative pairs that are too close.

use serde::{Deserialize, Serialize};

use super::blocks::pairs_from_masks;
use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::tuples::{Batch, Tuples};

fn default_pos_margin() -> f64 {
    0.2
}
fn default_neg_margin() -> f64 {
    0.8
}

/// Parameters of [`PairMarginMiner`] (reference defaults: pos_margin 0.2, neg_margin 0.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairMarginMinerParams {
    #[serde(default = "default_pos_margin")]
    pub pos_margin: f64,
    #[serde(default = "default_neg_margin")]
    pub neg_margin: f64,
}

impl Default for PairMarginMinerParams {
    fn default() -> Self {
        PairMarginMinerParams { pos_margin: default_pos_margin(), neg_margin: default_neg_margin() }
    }
}

impl MinerParams for PairMarginMinerParams {
    fn validate(&self) -> Result<()> {
        if !(self.pos_margin.is_finite() && self.neg_margin.is_finite()) {
            return Err(invalid("pair_margin miner", "pos_margin and neg_margin must be finite"));
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(PairMarginMiner { params: self.clone(), distance }))
    }
}

/// Positive pairs with `d > pos_margin` and negative pairs with `d < neg_margin` (for a
/// similarity: `s < pos_margin` and `s > neg_margin`).
///
/// # Shapes
/// embeddings [n, d] → pairs (at most n·m of each kind).
pub struct PairMarginMiner {
    pub params: PairMarginMinerParams,
    pub distance: Distance,
}

impl Miner for PairMarginMiner {
    fn name(&self) -> &'static str {
        "PairMarginMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let (matches, diffs) = batch.label_masks();
        // "Too far" positives: the margin is closer than the pair; "too close" negatives: the pair is closer.
        let far = self.distance.closer(&mat.full_like(self.params.pos_margin), &mat, false);
        let close = self.distance.closer(&mat, &mat.full_like(self.params.neg_margin), false);
        Ok(Tuples::Pairs(pairs_from_masks(&matches.logical_and(&far), &diffs.logical_and(&close))))
    }
}
