//! Triplet-margin mining: every triplet whose margin falls in a band, streamed by blocks.
//!
//! The reference enumerates all B³-scale triplets and filters them; here the positive pairs are
//! visited in blocks (see [`super::blocks`]) and only the kept triplets become indices. The
//! comparisons use the same float32 differences of distance-matrix entries as the reference, so
//! the kept set is identical.

use serde::{Deserialize, Serialize};

use super::blocks::collect_triplets;
use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::tuples::{Batch, Tuples};

/// Which triplets [`TripletMarginMiner`] keeps, by their margin `t = d_an − d_ap` (for a
/// similarity `s_ap − s_an`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeOfTriplets {
    /// `t ≤ margin`: every triplet that violates the margin.
    #[default]
    All,
    /// `t ≤ margin` and `t ≤ 0`: the negative is at least as close as the positive.
    Hard,
    /// `0 < t ≤ margin`: the negative is farther than the positive but within the margin.
    Semihard,
    /// `t > margin`: the triplets that do not violate the margin.
    Easy,
}

fn default_margin() -> f64 {
    0.2
}

/// Parameters of [`TripletMarginMiner`] (reference defaults: margin 0.2, all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripletMarginMinerParams {
    #[serde(default = "default_margin")]
    pub margin: f64,
    #[serde(default)]
    pub type_of_triplets: TypeOfTriplets,
}

impl Default for TripletMarginMinerParams {
    fn default() -> Self {
        TripletMarginMinerParams { margin: default_margin(), type_of_triplets: TypeOfTriplets::All }
    }
}

impl MinerParams for TripletMarginMinerParams {
    fn validate(&self) -> Result<()> {
        if !self.margin.is_finite() {
            return Err(invalid("triplet_margin miner", "margin must be finite"));
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(TripletMarginMiner { params: self.clone(), distance }))
    }
}

/// The triplets (a, p, n) whose margin `t = m(d_an, d_ap)` lies in the band chosen by
/// `type_of_triplets` (see [`TypeOfTriplets`]).
///
/// # Shapes
/// embeddings [n, d] → up to n·(M−1)·(n−M) triplets; temporaries bounded by the block budget.
pub struct TripletMarginMiner {
    pub params: TripletMarginMinerParams,
    pub distance: Distance,
}

impl Miner for TripletMarginMiner {
    fn name(&self) -> &'static str {
        "TripletMarginMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let (matches, diffs) = batch.label_masks();
        let margin = self.params.margin;
        // Non-negatives become NaN, which fails every comparison below: one gather instead of two.
        let neg_mat = mat.masked_fill(&diffs.logical_not(), f64::NAN);
        let triplets = collect_triplets(&matches, batch.ref_len(), batch.device(), |a, p| {
            let ap = mat.index(&[Some(a), Some(p)]).unsqueeze(1);
            let an = neg_mat.index_select(0, a);
            let t = self.distance.margin(&an, &ap);
            Ok(match self.params.type_of_triplets {
                TypeOfTriplets::Easy => t.gt(margin),
                TypeOfTriplets::All => t.le(margin),
                TypeOfTriplets::Hard => t.le(margin.min(0.0)),
                TypeOfTriplets::Semihard => t.le(margin).logical_and_(&t.gt(0.0)),
            })
        })?;
        Ok(Tuples::Triplets(triplets))
    }
}
