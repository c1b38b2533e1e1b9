//! Ranking-based losses: FastAP, Smooth-AP, PNP (rank of positives among negatives),
//! histogram loss and ranked-list loss.
//!
//! They optimise a smoothed retrieval metric of each anchor's ranked list rather than
//! individual pairs, so their terms are per anchor (or already reduced).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::pair_softmax::miner_weights;
use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::{LossTerm, TermIndices};
use crate::tuples::{Batch, Tuples};

fn no_reference(batch: &Batch, loss: &str) -> Result<()> {
    if batch.is_self() { Ok(()) } else { Err(CoreError::Unsupported(format!("{loss} does not support a separate reference set"))) }
}

fn ten() -> u32 {
    10
}

/// Parameters of [`FastAPLoss`] (reference default: 10 bins; squared normalised Euclidean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastAPParams {
    #[serde(default = "ten")]
    pub num_bins: u32,
}

impl Default for FastAPParams {
    fn default() -> Self {
        FastAPParams { num_bins: 10 }
    }
}

impl LossParams for FastAPParams {
    fn validate(&self) -> Result<()> {
        if self.num_bins == 0 {
            return Err(invalid("fast_ap loss", "num_bins must be at least 1"));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::lp_squared())
    }
    fn build(&self, distance: Option<Distance>, _ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let distance = distance.unwrap_or_else(Distance::lp_squared);
        match distance {
            Distance::Lp { normalize_embeddings: true, p, .. } if p == 2.0 => {}
            _ => return Err(invalid("fast_ap loss", "only the normalised Euclidean distance (lp, p = 2) is supported")),
        }
        Ok(Box::new(FastAPLoss { params: self.clone(), distance }))
    }
}

/// FastAP: average precision from soft distance histograms.
///
/// Distances are binned into `num_bins + 1` triangular kernels on `[0, 2^power]`; with `h⁺`,
/// `h` the positive and total histograms of anchor i and `H⁺`, `H` their cumulative sums:
/// `AP_i = Σ_k h⁺_k H⁺_k / H_k / N⁺_i`, `L_i = (1 − AP_i) · w_i` (miner weights) for anchors with
/// positives. Mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(num_bins · n²) memory.
pub struct FastAPLoss {
    pub params: FastAPParams,
    pub distance: Distance,
}

impl MetricLoss for FastAPLoss {
    fn name(&self) -> &'static str {
        "FastAPLoss"
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        no_reference(batch, "fast_ap loss")?;
        let kind = batch.embeddings.kind();
        let n = batch.len();
        let weights = miner_weights(tuples, n, kind, batch.device());
        let (matches, diffs) = batch.label_masks();
        let i_pos = matches.to_kind(kind);
        let i_neg = diffs.to_kind(kind);
        let n_pos = i_pos.sum_dim_intlist(1, false, kind);
        let safe_n = n_pos.gt(0.0);
        if safe_n.any().int64_value(&[]) == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, None)?;
        let power = match self.distance {
            Distance::Lp { power, .. } => power,
            _ => 1.0,
        };
        let bins = self.params.num_bins as i64;
        let hist_max = 2f64.powf(power);
        let delta = hist_max / bins as f64;
        let mids = Tensor::linspace(0.0, hist_max, bins + 1, (kind, mat.device()));
        let mut pos_cols = Vec::with_capacity(bins as usize + 1);
        let mut neg_cols = Vec::with_capacity(bins as usize + 1);
        for k in 0..=bins {
            let pulse = (-((&mat - mids.get(k)).abs() / delta) + 1.0).relu();
            pos_cols.push((&pulse * &i_pos).sum_dim_intlist(1, false, kind));
            neg_cols.push((&pulse * &i_neg).sum_dim_intlist(1, false, kind));
        }
        let pos_hist = Tensor::stack(&pos_cols, 1);
        let neg_hist = Tensor::stack(&neg_cols, 1);
        let total_pos = pos_hist.cumsum(1, kind);
        let total = (&pos_hist + &neg_hist).cumsum(1, kind);
        let product = &pos_hist * &total_pos;
        let safe_h = product.gt(0.0).logical_and(&total.gt(0.0));
        if safe_h.any().int64_value(&[]) == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let ratio = (&product / total.where_self(&safe_h, &total.ones_like())).where_self(&safe_h, &product.zeros_like());
        let ap = ratio.sum_dim_intlist(1, false, kind);
        let ap = ap.masked_select(&safe_n) / n_pos.masked_select(&safe_n);
        let losses = (-ap + 1.0) * weights.masked_select(&safe_n);
        let rows = Tensor::arange(n, (Kind::Int64, mat.device())).masked_select(&safe_n);
        Ok(vec![LossTerm::new("loss", losses, TermIndices::Element(rows))])
    }
}
