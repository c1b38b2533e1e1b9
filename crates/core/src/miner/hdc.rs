//! Hard-aware deeply cascaded (HDC) mining (Yuan et al.): keep the hardest fraction of the pairs.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::tuples::{Batch, Pairs, Tuples};

fn default_filter_percentage() -> f64 {
    0.5
}

/// Parameters of [`HDCMiner`] (reference default: filter_percentage 0.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HdcMinerParams {
    /// The fraction of positive pairs, and of negative pairs, that is kept.
    #[serde(default = "default_filter_percentage")]
    pub filter_percentage: f64,
}

impl Default for HdcMinerParams {
    fn default() -> Self {
        HdcMinerParams { filter_percentage: default_filter_percentage() }
    }
}

impl MinerParams for HdcMinerParams {
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.filter_percentage) {
            return Err(invalid("hdc miner", format!("filter_percentage must be in [0, 1], got {}", self.filter_percentage)));
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(HDCMiner { filter_percentage: self.filter_percentage, distance }))
    }
}

/// The `⌈f·P⌉` farthest positive pairs and the `⌈f·N⌉` closest negative pairs (f the filter
/// percentage; "far"/"close" by the distance, reversed for a similarity).
///
/// # Shapes
/// embeddings [n, d] → pairs.
pub struct HDCMiner {
    pub filter_percentage: f64,
    pub distance: Distance,
}

impl HDCMiner {
    /// Keeps the `⌈f·len⌉` entries of `values` that are largest (or smallest) with their pairs.
    fn hardest(&self, values: &Tensor, anchor: Tensor, other: Tensor, largest: bool) -> (Tensor, Tensor) {
        let len = values.size()[0];
        if len == 0 {
            return (anchor, other);
        }
        let k = (self.filter_percentage * len as f64).ceil() as i64;
        let (_, idx) = values.topk(k.min(len), 0, largest, true);
        (anchor.index_select(0, &idx), other.index_select(0, &idx))
    }
}

impl Miner for HDCMiner {
    fn name(&self) -> &'static str {
        "HDCMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let all = batch.all_pairs();
        let pos = mat.index(&[Some(&all.pos_anchor), Some(&all.pos_other)]);
        let neg = mat.index(&[Some(&all.neg_anchor), Some(&all.neg_other)]);
        let inverted = self.distance.is_inverted();
        let (pos_anchor, pos_other) = self.hardest(&pos, all.pos_anchor, all.pos_other, !inverted);
        let (neg_anchor, neg_other) = self.hardest(&neg, all.neg_anchor, all.neg_other, inverted);
        Ok(Tuples::Pairs(Pairs { pos_anchor, pos_other, neg_anchor, neg_other }))
    }
}
