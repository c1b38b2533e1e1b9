//! Distance-weighted sampling (Wu et al., "Sampling Matters in Deep Embedding Learning").
//!
//! On the unit sphere in d dimensions, pairwise distances of random points have the density
//! `q(x) ∝ x^(d−2) · (1 − x²/4)^((d−3)/2)`. Sampling negatives with probability ∝ 1/q(x) spreads
//! the chosen negatives evenly over distances instead of concentrating them near √2. Distances
//! are clipped below at `cutoff` (to bound the variance) and negatives at or beyond
//! `nonzero_loss_cutoff` are never drawn (they would give zero loss). Triplets are then drawn as
//! the reference does: per anchor, as many triplets as its class has members, each with a uniform
//! random positive and a weighted random negative. All randomness comes from libtorch, so
//! `tch::manual_seed` makes it repeatable.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::blocks::{empty_triplets, is_unit_euclidean};
use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::tuples::{Batch, Triplets, Tuples};

fn default_cutoff() -> f64 {
    0.5
}
fn default_nonzero_loss_cutoff() -> f64 {
    1.4
}

/// Parameters of [`DistanceWeightedMiner`] (reference defaults: cutoff 0.5, nonzero_loss_cutoff 1.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistanceWeightedMinerParams {
    #[serde(default = "default_cutoff")]
    pub cutoff: f64,
    #[serde(default = "default_nonzero_loss_cutoff")]
    pub nonzero_loss_cutoff: f64,
}

impl Default for DistanceWeightedMinerParams {
    fn default() -> Self {
        DistanceWeightedMinerParams { cutoff: default_cutoff(), nonzero_loss_cutoff: default_nonzero_loss_cutoff() }
    }
}

impl MinerParams for DistanceWeightedMinerParams {
    fn validate(&self) -> Result<()> {
        if !(self.cutoff.is_finite() && self.cutoff > 0.0 && self.nonzero_loss_cutoff.is_finite()) {
            return Err(invalid("distance_weighted miner", "cutoff must be positive and nonzero_loss_cutoff finite"));
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        if !is_unit_euclidean(&distance) {
            return Err(invalid("distance_weighted miner", "needs the lp distance with p = 2, power = 1 and normalize_embeddings = true"));
        }
        Ok(Box::new(DistanceWeightedMiner { params: self.clone(), distance }))
    }
}

/// Random triplets whose negatives are drawn with probability ∝ `1/q(max(d_an, cutoff))` among
/// the negatives with `d_an < nonzero_loss_cutoff`.
///
/// # Shapes
/// embeddings [n, d] → Σ over anchors of their class size triplets (fewer when an anchor has no
/// eligible negative).
pub struct DistanceWeightedMiner {
    pub params: DistanceWeightedMinerParams,
    pub distance: Distance,
}

impl DistanceWeightedMiner {
    /// The row-normalised sampling weights [n, m] (rows without an eligible negative are 0).
    pub fn weights(&self, batch: &Batch) -> Result<Tensor> {
        let dim = batch.embeddings.size()[1] as f64;
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?.clamp_min(self.params.cutoff);
        let log_w = mat.log() * (2.0 - dim) - (mat.square() * -0.25 + 1.0).log() * ((dim - 3.0) / 2.0);
        let bad = log_w.isinf().logical_or(&log_w.isnan());
        let same = batch.labels.unsqueeze(1).eq_tensor(&batch.ref_labels().unsqueeze(0));
        let mask = same.logical_not().to_kind(log_w.kind());
        let log_w = &log_w * &mask;
        let good = bad.logical_not();
        if good.any().int64_value(&[]) == 0 {
            return Ok(mat.zeros_like());
        }
        // Subtract the largest finite log-weight for stability (as the reference does).
        let top = log_w.masked_select(&good).max();
        let w = (log_w - top).exp() * mask * mat.lt(self.params.nonzero_loss_cutoff).to_kind(mat.kind());
        let w = w.masked_fill(&bad, 0.0);
        let sum = w.sum_dim_intlist(1, true, w.kind());
        Ok((&w / sum.clamp_min(f64::MIN_POSITIVE)).masked_fill(&sum.le(0.0), 0.0))
    }
}

impl Miner for DistanceWeightedMiner {
    fn name(&self) -> &'static str {
        "DistanceWeightedMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let weights = self.weights(batch)?;
        Ok(Tuples::Triplets(random_triplets(batch, &weights)?))
    }
}

/// Random triplets as the reference's `get_random_triplet_indices(labels, ref_labels, weights)`:
/// for every label (ascending), each anchor of that label gets `k` = (members of the label in
/// the reference set) triplets with a uniform positive (itself excluded) and a negative drawn
/// from its row of `weights`; anchors whose row has no weight on any negative are dropped.
fn random_triplets(batch: &Batch, weights: &Tensor) -> Result<Triplets> {
    let device = batch.device();
    let (labels, ref_labels) = (batch.labels, batch.ref_labels());
    let (unique, _, _) = labels.unique_dim(0, true, false, false);
    let unique = Vec::<i64>::try_from(unique.to_kind(Kind::Int64).to_device(tch::Device::Cpu))?;
    let opts = (Kind::Int64, device);
    let (mut aa, mut pp, mut nn) = (Vec::new(), Vec::new(), Vec::new());
    for label in unique {
        let p_inds = ref_labels.eq(label).nonzero().flatten(0, -1);
        let a_inds = if batch.is_self() { p_inds.shallow_clone() } else { labels.eq(label).nonzero().flatten(0, -1) };
        let n_inds = ref_labels.ne(label).nonzero().flatten(0, -1);
        let (n_a, n_p) = (a_inds.size()[0], p_inds.size()[0]);
        let min_p = if batch.is_self() { 2 } else { 1 };
        if n_p < min_p || n_inds.size()[0] == 0 {
            continue;
        }
        let k = n_p;
        let a_local = Tensor::arange(n_a, opts).repeat_interleave_self_int(k, Some(0), None::<i64>);
        // Candidate positives per anchor: all members, minus the anchor itself for a self batch.
        let candidates = if batch.is_self() {
            let all = p_inds.unsqueeze(0).expand([n_a, n_p], false);
            let off_diag = Tensor::eye(n_a, (Kind::Bool, device)).logical_not();
            all.masked_select(&off_diag).view([n_a, n_a - 1])
        } else {
            p_inds.unsqueeze(0).expand([n_a, n_p], false)
        };
        let p_choice = Tensor::randint(candidates.size()[1], [n_a * k], opts);
        let p = candidates.index(&[Some(&a_local), Some(&p_choice)]);
        let a = a_inds.index_select(0, &a_local);
        let w = weights.index_select(0, &a).index_select(1, &n_inds);
        let rows = w.sum_dim_intlist(1, false, w.kind()).gt(0.0).nonzero().flatten(0, -1);
        if rows.size()[0] == 0 {
            continue;
        }
        let n_choice = w.index_select(0, &rows).multinomial(1, true).flatten(0, -1);
        aa.push(a.index_select(0, &rows));
        pp.push(p.index_select(0, &rows));
        nn.push(n_inds.index_select(0, &n_choice));
    }
    if aa.is_empty() {
        return Ok(empty_triplets(device));
    }
    Ok(Triplets { anchor: Tensor::cat(&aa, 0), positive: Tensor::cat(&pp, 0), negative: Tensor::cat(&nn, 0) })
}
