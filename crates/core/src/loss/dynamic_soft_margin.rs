//! Dynamic soft margin loss (Zhang & Rusinkiewicz, ICCV 2019): each triplet's margin
//! `v = d(a,p) − d(a,n)` is weighted by the cumulative distribution of past margins, so the
//! loss focuses on the triplets that are hard *relative to the recent training history*.
//!
//! Why state: the weights come from a histogram of margins kept between calls (a moving
//! average with `momentum`). [`MetricLoss::terms`] takes `&self`, so the histogram lives in a
//! `Mutex` (interior mutability; the loss stays `Send` and calls are serialised).
//!
//! Why streamed: with no mined tuples the reference takes every triplet, B·(M−1)·(B−M) of them.
//! Here the margins are computed block by block over anchor–positive pairs of the detached
//! distance matrix, twice (once to update the histogram, once to weigh), and the result is
//! attached to the graph through the distance matrix — O(B²) memory, same value and gradient.
//!
//! Deviations from the reference (documented, deliberate):
//! - the histogram and the CDF weights are detached (no gradient flows through them, and the
//!   history holds no graph of earlier batches, which would otherwise fail on the next
//!   backward); the gradient is `w · ∂v`;
//! - margins outside `[min_val, −min_val)` would index outside the histogram in the
//!   reference (an error there); here positions are clamped into the histogram (mass beyond the
//!   last bin edge goes to the last bin). Inside the range the numbers are the reference's.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::LossTerm;
use crate::tuples::{Batch, Tuples};

/// Parameters of [`DynamicSoftMarginLoss`] (reference defaults: min_val −2, 10 bins, momentum 0.01).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicSoftMarginParams {
    /// Smallest significant margin `d_pos − d_neg`; the bins cover `[min_val, −min_val]`.
    pub min_val: f64,
    pub num_bins: i64,
    /// Weight of the current batch's histogram in the moving average.
    pub momentum: f64,
}

impl Default for DynamicSoftMarginParams {
    fn default() -> Self {
        DynamicSoftMarginParams { min_val: -2.0, num_bins: 10, momentum: 0.01 }
    }
}

const NAME: &str = "dynamic_soft_margin loss";

impl LossParams for DynamicSoftMarginParams {
    fn validate(&self) -> Result<()> {
        if !(self.min_val.is_finite() && self.min_val != 0.0) {
            return Err(invalid(NAME, format!("min_val must be finite and non-zero, got {}", self.min_val)));
        }
        if self.num_bins < 1 {
            return Err(invalid(NAME, format!("num_bins must be at least 1, got {}", self.num_bins)));
        }
        if !(self.momentum > 0.0 && self.momentum <= 1.0) {
            return Err(invalid(NAME, format!("momentum must be in (0, 1], got {}", self.momentum)));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::lp())
    }
    fn build(&self, distance: Option<Distance>, _ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let distance = distance.unwrap_or_else(Distance::lp);
        if distance != Distance::lp() {
            return Err(invalid(NAME, "the distance must be lp with normalize_embeddings = true, p = 2, power = 1 (as the reference asserts)"));
        }
        Ok(Box::new(DynamicSoftMarginLoss { params: self.clone(), distance, hist: Mutex::new(None) }))
    }
}

/// Dynamic soft margin loss.
///
/// For each triplet, `v = d(a,p) − d(a,n)` (normalised Euclidean distances). With bin width
/// `δ = 2|min_val| / num_bins`, `x = (v − min_val)/δ`, `i = ⌊x⌋`, `α = x − i`, the batch
/// histogram puts `(1−α)` at bin `i` and `α` at bin `i+1`; the kept histogram becomes
/// `h ← normalise((1−μ) h + μ h_batch)` (μ = 1 on the first call). Then
/// `L = mean_t CDF_h[i_t] · v_t` (already reduced; it can be negative).
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; histogram [num_bins] kept between calls.
pub struct DynamicSoftMarginLoss {
    pub params: DynamicSoftMarginParams,
    pub distance: Distance,
    /// The histogram of past margins (None before the first call with a triplet).
    hist: Mutex<Option<Tensor>>,
}

/// Elements per block of anchor–positive rows.
const BLOCK_ELEMENTS: i64 = 1 << 22;

impl DynamicSoftMarginLoss {
    /// The histogram kept between calls (None before the first batch with a triplet).
    pub fn histogram(&self) -> Option<Tensor> {
        self.hist.lock().ok().and_then(|h| h.as_ref().map(|t| t.shallow_clone()))
    }

    fn delta(&self) -> f64 {
        2.0 * self.params.min_val.abs() / self.params.num_bins as f64
    }

    /// Bin index (clamped to the histogram) and interpolation weight of each margin.
    fn positions(&self, v: &Tensor) -> (Tensor, Tensor) {
        let nb = self.params.num_bins;
        let x = ((v - self.params.min_val) / self.delta()).clamp(0.0, nb as f64);
        let idx = x.floor().clamp_max((nb - 1) as f64);
        let alpha = &x - &idx;
        (idx.to_kind(Kind::Int64), alpha)
    }

    /// Adds the margins `v` (detached, already masked) to the batch histogram `acc` [num_bins + 1].
    fn accumulate(&self, acc: &mut Tensor, v: &Tensor) {
        let (idx, alpha) = self.positions(v);
        let _ = acc.index_add_(0, &idx, &(-&alpha + 1.0));
        let _ = acc.index_add_(0, &(idx + 1), &alpha);
    }

    /// Folds the batch histogram into the kept one and returns the CDF used to weigh.
    fn update(&self, acc: &Tensor) -> Result<Tensor> {
        let nb = self.params.num_bins;
        let batch = acc.narrow(0, 0, nb).copy();
        let _ = batch.narrow(0, nb - 1, 1).g_add_(&acc.narrow(0, nb, 1));
        let mut guard = self.hist.lock().map_err(|_| CoreError::Unsupported("dynamic_soft_margin histogram lock poisoned".into()))?;
        let old = match guard.as_ref() {
            Some(h) => h.to_device(acc.device()).to_kind(acc.kind()),
            None => Tensor::zeros([nb], (acc.kind(), acc.device())),
        };
        let momentum = if old.sum(Kind::Double).double_value(&[]) != 0.0 { self.params.momentum } else { 1.0 };
        let h = old * (1.0 - momentum) + batch * momentum;
        let h = &h / h.sum(h.kind());
        let cdf = h.cumsum(0, h.kind());
        *guard = Some(h);
        Ok(cdf)
    }

    fn weights(&self, cdf: &Tensor, v: &Tensor) -> Tensor {
        let (idx, _) = self.positions(v);
        cdf.index_select(0, &idx.flatten(0, -1)).view_as(v)
    }
}

impl MetricLoss for DynamicSoftMarginLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let nb = self.params.num_bins;
        if let Some(t) = tuples {
            let t = batch.to_triplets(Some(t));
            if t.is_empty() {
                return Ok(vec![LossTerm::zero("loss")]);
            }
            let v = mat.index(&[Some(&t.anchor), Some(&t.positive)]) - mat.index(&[Some(&t.anchor), Some(&t.negative)]);
            let vd = v.detach();
            let mut acc = Tensor::zeros([nb + 1], (vd.kind(), vd.device()));
            self.accumulate(&mut acc, &vd);
            let cdf = self.update(&acc)?;
            let w = self.weights(&cdf, &vd);
            return Ok(vec![LossTerm::reduced("loss", (w * v).mean(mat.kind()))]);
        }
        let (matches, diffs) = batch.label_masks();
        let pos = matches.logical_and(&diffs.any_dim(1, true)).nonzero();
        let num_pos = pos.size()[0];
        if num_pos == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let d = mat.detach();
        let m = d.size()[1];
        let (a_all, p_all) = (pos.select(1, 0), pos.select(1, 1));
        let block = (BLOCK_ELEMENTS / m.max(1)).max(1);
        let blocks = |f: &mut dyn FnMut(&Tensor, &Tensor, &Tensor, &Tensor)| {
            let mut start = 0;
            while start < num_pos {
                let len = block.min(num_pos - start);
                let a = a_all.narrow(0, start, len);
                let p = p_all.narrow(0, start, len);
                start += len;
                let v = d.index(&[Some(&a), Some(&p)]).unsqueeze(1) - d.index_select(0, &a);
                let keep = diffs.index_select(0, &a);
                f(&a, &p, &v, &keep);
            }
        };
        let (total, count, grad) = tch::no_grad(|| -> Result<_> {
            let mut acc = Tensor::zeros([nb + 1], (d.kind(), d.device()));
            blocks(&mut |_, _, v, keep| self.accumulate(&mut acc, &v.masked_select(keep)));
            let cdf = self.update(&acc)?;
            let mut total = Tensor::zeros([], (Kind::Double, d.device()));
            let mut count = 0i64;
            let mut grad = d.zeros_like();
            blocks(&mut |a, p, v, keep| {
                let w = self.weights(&cdf, v) * keep.to_kind(v.kind());
                total += (&w * v).sum(Kind::Double);
                count += keep.sum(Kind::Int64).int64_value(&[]);
                let _ = grad.index_put_(&[Some(a), Some(p)], &w.sum_dim_intlist(1, false, w.kind()), true);
                let _ = grad.index_add_(0, a, &(-w));
            });
            Ok((total, count, grad))
        })?;
        let n = count as f64;
        let value = (total / n).to_kind(mat.kind());
        Ok(vec![LossTerm::reduced("loss", value + ((&mat - &d) * (grad / n)).sum(mat.kind()))])
    }
}
