//! Uniform-histogram mining: sample pairs evenly across the range of their distances.
//!
//! The positive (and separately the negative) pair values are split into `num_bins` equal-width
//! bins between their minimum and maximum; from every non-empty bin, `pos_per_bin` (or
//! `neg_per_bin`) pairs are drawn uniformly with replacement. Rare distances are thereby
//! represented as often as common ones. Randomness comes from libtorch (`tch::manual_seed`).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::tuples::{Batch, Pairs, Tuples};

fn default_num_bins() -> i64 {
    100
}
fn default_per_bin() -> i64 {
    10
}

/// Parameters of [`UniformHistogramMiner`] (reference defaults: 100 bins, 10 pairs per bin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniformHistogramMinerParams {
    #[serde(default = "default_num_bins")]
    pub num_bins: i64,
    #[serde(default = "default_per_bin")]
    pub pos_per_bin: i64,
    #[serde(default = "default_per_bin")]
    pub neg_per_bin: i64,
}

impl Default for UniformHistogramMinerParams {
    fn default() -> Self {
        UniformHistogramMinerParams { num_bins: default_num_bins(), pos_per_bin: default_per_bin(), neg_per_bin: default_per_bin() }
    }
}

impl MinerParams for UniformHistogramMinerParams {
    fn validate(&self) -> Result<()> {
        if self.num_bins < 1 || self.pos_per_bin < 0 || self.neg_per_bin < 0 {
            return Err(invalid("uniform_histogram miner", "num_bins must be ≥ 1 and pos_per_bin, neg_per_bin ≥ 0"));
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(UniformHistogramMiner { params: self.clone(), distance }))
    }
}

/// `per_bin` random pairs (with replacement) from each non-empty bin of the pair values.
///
/// # Shapes
/// embeddings [n, d] → at most `num_bins · pos_per_bin` positive and `num_bins · neg_per_bin`
/// negative pairs.
pub struct UniformHistogramMiner {
    pub params: UniformHistogramMinerParams,
    pub distance: Distance,
}

impl UniformHistogramMiner {
    /// The bin (0..num_bins) of every value: `[edge_i, edge_i+1)`, the last bin closed, with the
    /// edges `linspace(min, max, num_bins + 1)`.
    pub fn bins(&self, values: &Tensor) -> Tensor {
        let nb = self.params.num_bins;
        let lo = values.min().double_value(&[]);
        let hi = values.max().double_value(&[]);
        let edges = Tensor::linspace(lo, hi, nb + 1, (values.kind(), values.device()));
        // Index of the first edge > value, minus one; the maximum falls into the last bin.
        let idx = Tensor::bucketize(values, &edges, false, true) - 1;
        idx.clamp(0, nb - 1)
    }

    /// Indices (into `values`) of `per_bin` uniform draws from each non-empty bin.
    fn sample(&self, values: &Tensor, per_bin: i64) -> Tensor {
        let device = values.device();
        let bins = self.bins(values);
        let counts = bins.bincount(None::<Tensor>, self.params.num_bins);
        let offsets = counts.cumsum(0, Kind::Int64) - &counts;
        let order = bins.argsort_stable(true, 0, false);
        let chosen = counts.gt(0).nonzero().flatten(0, -1).repeat_interleave_self_int(per_bin, Some(0), None::<i64>);
        let size = counts.index_select(0, &chosen);
        let r = (Tensor::rand([chosen.size()[0]], (Kind::Double, device)) * size.to_kind(Kind::Double)).floor().to_kind(Kind::Int64);
        let r = r.minimum(&(&size - 1));
        order.index_select(0, &(offsets.index_select(0, &chosen) + r))
    }
}

impl Miner for UniformHistogramMiner {
    fn name(&self) -> &'static str {
        "UniformHistogramMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let all = batch.all_pairs();
        let side = |a: Tensor, o: Tensor, per_bin: i64| {
            if a.size()[0] == 0 {
                return (a, o);
            }
            let values = mat.index(&[Some(&a), Some(&o)]);
            let idx = self.sample(&values, per_bin);
            (a.index_select(0, &idx), o.index_select(0, &idx))
        };
        let (pos_anchor, pos_other) = side(all.pos_anchor, all.pos_other, self.params.pos_per_bin);
        let (neg_anchor, neg_other) = side(all.neg_anchor, all.neg_other, self.params.neg_per_bin);
        Ok(Tuples::Pairs(Pairs { pos_anchor, pos_other, neg_anchor, neg_other }))
    }
}
