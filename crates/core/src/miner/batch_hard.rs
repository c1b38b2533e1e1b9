//! Batch-hard mining (Hermans et al., "In Defense of the Triplet Loss").

use serde::{Deserialize, Serialize};
use tch::Kind;

use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::Result;
use crate::tuples::{Batch, Triplets, Tuples};

/// Parameters of [`BatchHardMiner`] (it has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchHardParams {}

impl MinerParams for BatchHardParams {
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(BatchHardMiner { distance }))
    }
}

/// For every anchor with a positive and a negative: its farthest positive and closest negative.
///
/// # Shapes
/// embeddings [n, d] → at most n triplets.
pub struct BatchHardMiner {
    pub distance: Distance,
}

impl Miner for BatchHardMiner {
    fn name(&self) -> &'static str {
        "BatchHardMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let (matches, diffs) = batch.label_masks();
        let worst = self.distance.worst_value();
        // Hardest positive: the farthest, so non-positives are set to the closest possible value.
        let pos = mat.masked_fill(&matches.logical_not(), -worst);
        let (_, hard_p) = self.distance.largest_along(&pos, 1);
        let neg = mat.masked_fill(&diffs.logical_not(), worst);
        let (_, hard_n) = self.distance.smallest_along(&neg, 1);
        let valid = matches.any_dim(1, false).logical_and(&diffs.any_dim(1, false));
        let anchors = valid.nonzero().flatten(0, -1);
        Ok(Tuples::Triplets(Triplets {
            positive: hard_p.index_select(0, &anchors).to_kind(Kind::Int64),
            negative: hard_n.index_select(0, &anchors).to_kind(Kind::Int64),
            anchor: anchors,
        }))
    }
}
