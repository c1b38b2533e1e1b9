//! Margin loss ("Sampling matters in deep embedding learning"), with an optional learnable
//! boundary `beta` (one, or one per class).
//!
//! The reference evaluates it on every (anchor, positive, negative) triplet, although each
//! triplet's value is a sum of an anchor–positive part and an anchor–negative part. With all
//! triplets of a batch the sums, counts and divisor are therefore weighted sums over the
//! `[n × m]` pair matrix (each positive pair weighted by its anchor's number of negatives and
//! vice versa): same numbers and gradients, O(B²) instead of O(B³). Only reducers that need
//! every single triplet value (per-anchor, class-weighted, two-sided thresholds) materialise them.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::triplet::{TripletsPerAnchor, random_triplets};
use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::{Denominator, LossTerm, Reducer, Separable, StreamedTerm, TermIndices, TermLosses, separable_reduce, zero_loss};
use crate::tuples::{Batch, Triplets, Tuples};

/// Parameters of [`MarginLoss`] (reference defaults: margin 0.2, nu 0, beta 1.2, all triplets,
/// fixed beta). The number of classes (one beta per class) comes from the build context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarginParams {
    pub margin: f64,
    /// Weight of the `beta` regularisation term (used when `learn_beta`).
    pub nu: f64,
    /// Initial boundary between positive and negative distances.
    pub beta: f64,
    pub triplets_per_anchor: TripletsPerAnchor,
    /// Make `beta` a learnable parameter (named `beta`).
    pub learn_beta: bool,
}

impl Default for MarginParams {
    fn default() -> Self {
        MarginParams { margin: 0.2, nu: 0.0, beta: 1.2, triplets_per_anchor: TripletsPerAnchor::All(super::triplet::AllTriplets::All), learn_beta: false }
    }
}

impl LossParams for MarginParams {
    fn validate(&self) -> Result<()> {
        for (name, v) in [("margin", self.margin), ("nu", self.nu), ("beta", self.beta)] {
            if !v.is_finite() {
                return Err(invalid("margin loss", format!("{name} must be finite, got {v}")));
            }
        }
        if self.triplets_per_anchor == TripletsPerAnchor::Count(0) {
            return Err(invalid("margin loss", "triplets_per_anchor must be \"all\" or at least 1"));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::lp())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let len = match ctx.num_classes {
            Some(c) if c <= 0 => return Err(invalid("margin loss", format!("num_classes must be positive, got {c}"))),
            Some(c) => c,
            None => 1,
        };
        let init = Tensor::full([len], self.beta, (Kind::Float, ctx.device()));
        let beta = if self.learn_beta { ctx.vars.var_copy("beta", &init) } else { init };
        Ok(Box::new(MarginLoss { params: self.clone(), distance: distance.unwrap_or_else(Distance::lp), beta, per_class: ctx.num_classes.is_some() }))
    }
}

/// Margin loss.
///
/// For a triplet (a, p, n) with boundary `β` (per class of a when built with classes):
/// `L = [m(d_ap, β) + margin]₊ + [m(β, d_an) + margin]₊` (`m(x, y) = x − y` for a distance);
/// the term `margin_loss` is divided by the number of non-zero parts (divisor reducer by
/// default). With `learn_beta`, the term `beta_reg_loss` adds `ν·β` (per anchor of each triplet
/// when β is per class, divided by the same divisor).
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; `beta` [1] or [num_classes].
pub struct MarginLoss {
    pub params: MarginParams,
    pub distance: Distance,
    /// The boundary, [1] or [num_classes]; a learnable variable when `learn_beta`.
    pub beta: Tensor,
    per_class: bool,
}

impl MarginLoss {
    /// The boundary of every row of the batch.
    fn beta_per_row(&self, batch: &Batch, kind: Kind) -> Result<Tensor> {
        let beta = self.beta.to_kind(kind).to_device(batch.device());
        if !self.per_class {
            return Ok(beta.expand([batch.len()], false));
        }
        let c = beta.size()[0];
        let (lo, hi) = (batch.labels.min().int64_value(&[]), batch.labels.max().int64_value(&[]));
        if lo < 0 || hi >= c {
            return Err(CoreError::LabelOutOfRange { label: if lo < 0 { lo } else { hi }, num_classes: c });
        }
        Ok(beta.index_select(0, &batch.labels.to_kind(Kind::Int64)))
    }

    fn reg_term(&self, beta_rows: &Tensor, counts: Option<&Tensor>, anchors: Option<&Tensor>, divisor: f64) -> LossTerm {
        if !self.params.learn_beta {
            return LossTerm::zero("beta_reg_loss");
        }
        if !self.per_class {
            let v = self.beta.to_kind(beta_rows.kind()).sum(beta_rows.kind()) * self.params.nu;
            return LossTerm { divisor: Some(divisor), ..LossTerm::reduced("beta_reg_loss", v) };
        }
        let values = beta_rows * self.params.nu;
        match (counts, anchors) {
            (Some(w), _) => LossTerm {
                name: "beta_reg_loss",
                losses: TermLosses::Streamed(Box::new(AnchorWeighted { values, weights: w.shallow_clone() })),
                indices: TermIndices::AlreadyReduced,
                divisor: Some(divisor),
            },
            (None, Some(a)) => LossTerm { divisor: Some(divisor), ..LossTerm::new("beta_reg_loss", values.index_select(0, a), TermIndices::Element(a.shallow_clone())) },
            (None, None) => LossTerm::zero("beta_reg_loss"),
        }
    }

    fn explicit(&self, batch: &Batch, mat: &Tensor, t: Triplets) -> Result<Vec<LossTerm>> {
        if t.is_empty() {
            return Ok(vec![LossTerm::zero("margin_loss"), LossTerm::zero("beta_reg_loss")]);
        }
        let beta_rows = self.beta_per_row(batch, mat.kind())?;
        let beta = beta_rows.index_select(0, &t.anchor);
        let d_ap = mat.index(&[Some(&t.anchor), Some(&t.positive)]);
        let d_an = mat.index(&[Some(&t.anchor), Some(&t.negative)]);
        let pos = (self.distance.margin(&d_ap, &beta) + self.params.margin).relu();
        let neg = (self.distance.margin(&beta, &d_an) + self.params.margin).relu();
        let divisor = (pos.gt(0.0).sum(Kind::Int64) + neg.gt(0.0).sum(Kind::Int64)).int64_value(&[]) as f64;
        let reg = self.reg_term(&beta_rows, None, Some(&t.anchor), divisor);
        let term = LossTerm { divisor: Some(divisor), ..LossTerm::new("margin_loss", pos + neg, TermIndices::Triplet(t.anchor, t.positive, t.negative)) };
        Ok(vec![term, reg])
    }
}

impl MetricLoss for MarginLoss {
    fn default_reducer(&self) -> Reducer {
        Reducer::Divisor
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        if self.params.learn_beta { vec![("beta", self.beta.shallow_clone())] } else { Vec::new() }
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let triplets = match (tuples, self.params.triplets_per_anchor) {
            (None, TripletsPerAnchor::All(_)) => None,
            (None, TripletsPerAnchor::Count(k)) => Some(random_triplets(batch, k as i64)),
            (Some(t), _) => Some(batch.to_triplets(Some(t))),
        };
        if let Some(t) = triplets {
            return self.explicit(batch, &mat, t);
        }
        let kind = mat.kind();
        let (matches, diffs) = batch.label_masks();
        let (mf, df) = (matches.to_kind(kind), diffs.to_kind(kind));
        let num_pos = mf.sum_dim_intlist(1, false, kind);
        let num_neg = df.sum_dim_intlist(1, false, kind);
        let triplets_per_row = &num_pos * &num_neg;
        let num_triplets = triplets_per_row.sum(Kind::Double).double_value(&[]);
        if num_triplets == 0.0 {
            return Ok(vec![LossTerm::zero("margin_loss"), LossTerm::zero("beta_reg_loss")]);
        }
        let beta_rows = self.beta_per_row(batch, kind)?;
        let beta_col = beta_rows.unsqueeze(1);
        let pos = (self.distance.margin(&mat, &beta_col) + self.params.margin).relu() * &mf;
        let neg = (self.distance.margin(&beta_col, &mat) + self.params.margin).relu() * &df;
        let (pos_nz, neg_nz) = (pos.gt(0.0).to_kind(kind), neg.gt(0.0).to_kind(kind));
        let divisor = ((pos_nz.sum_dim_intlist(1, false, kind) * &num_neg).sum(Kind::Double) + (neg_nz.sum_dim_intlist(1, false, kind) * &num_pos).sum(Kind::Double))
            .double_value(&[]);
        let reg = self.reg_term(&beta_rows, Some(&triplets_per_row), None, divisor);
        let streamed = AllTripletsMargin { pos, neg, matches, diffs, num_pos, num_neg, num_triplets, embeddings: batch.embeddings.shallow_clone() };
        let term = LossTerm { name: "margin_loss", losses: TermLosses::Streamed(Box::new(streamed)), indices: TermIndices::AlreadyReduced, divisor: Some(divisor) };
        Ok(vec![term, reg])
    }
}

/// The margin loss of every triplet, held as its positive-pair and negative-pair parts.
struct AllTripletsMargin {
    /// `[m(d_ap, β) + margin]₊` on positive cells, 0 elsewhere, [n, m].
    pos: Tensor,
    /// `[m(β, d_an) + margin]₊` on negative cells, 0 elsewhere, [n, m].
    neg: Tensor,
    matches: Tensor,
    diffs: Tensor,
    num_pos: Tensor,
    num_neg: Tensor,
    num_triplets: f64,
    embeddings: Tensor,
}

impl StreamedTerm for AllTripletsMargin {
    fn reduce(&self, how: Separable) -> Result<Tensor> {
        let kind = self.pos.kind();
        let non_zero_filter = match (how.low, how.high) {
            (None, None) => false,
            (Some(0.0), None) => true,
            _ => {
                let (values, _) = self.materialize()?;
                return Ok(separable_reduce(&values, how, &self.embeddings));
            }
        };
        // Σ over triplets of pos(a,p) + neg(a,n); zero values add nothing to a filtered sum.
        let total = (&self.pos * self.num_neg.unsqueeze(1)).sum(kind) + (&self.neg * self.num_pos.unsqueeze(1)).sum(kind);
        let denominator = match how.denominator {
            Denominator::One => 1.0,
            Denominator::Fixed(d) => d,
            Denominator::Kept if !non_zero_filter => self.num_triplets,
            Denominator::Kept => {
                // Triplets with a zero value have both parts zero.
                let pos_zero = self.matches.logical_and(&self.pos.le(0.0)).sum_dim_intlist(1, false, Kind::Double);
                let neg_zero = self.diffs.logical_and(&self.neg.le(0.0)).sum_dim_intlist(1, false, Kind::Double);
                self.num_triplets - (pos_zero * neg_zero).sum(Kind::Double).double_value(&[])
            }
        };
        if denominator == 0.0 {
            return Ok(zero_loss(&self.embeddings));
        }
        Ok(total / denominator)
    }

    fn materialize(&self) -> Result<(Tensor, TermIndices)> {
        let t = self.matches.unsqueeze(2).logical_and(&self.diffs.unsqueeze(1)).nonzero();
        let (a, p, n) = (t.select(1, 0), t.select(1, 1), t.select(1, 2));
        let v = self.pos.index(&[Some(&a), Some(&p)]) + self.neg.index(&[Some(&a), Some(&n)]);
        Ok((v, TermIndices::Triplet(a, p, n)))
    }
}

/// Per-row values that stand for `weights[i]` identical element values each.
struct AnchorWeighted {
    values: Tensor,
    weights: Tensor,
}

impl StreamedTerm for AnchorWeighted {
    fn reduce(&self, how: Separable) -> Result<Tensor> {
        let kind = self.values.kind();
        let mut keep = self.weights.gt(0.0);
        if let Some(l) = how.low {
            keep = keep.logical_and(&self.values.gt(l));
        }
        if let Some(h) = how.high {
            keep = keep.logical_and(&self.values.lt(h));
        }
        let w = &self.weights * keep.to_kind(kind);
        let total = (&self.values * &w).sum(kind);
        let denominator = match how.denominator {
            Denominator::One => 1.0,
            Denominator::Fixed(d) => d,
            Denominator::Kept => w.sum(Kind::Double).double_value(&[]),
        };
        if denominator == 0.0 {
            return Ok(&total * 0.0);
        }
        Ok(total / denominator)
    }

    fn materialize(&self) -> Result<(Tensor, TermIndices)> {
        let counts = self.weights.to_kind(Kind::Int64);
        let rows = Tensor::arange(self.values.size()[0], (Kind::Int64, self.values.device())).repeat_interleave_self_tensor(&counts, 0, None::<i64>);
        Ok((self.values.index_select(0, &rows), TermIndices::Element(rows)))
    }
}
