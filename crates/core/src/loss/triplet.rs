//! Triplet margin loss, with a streamed path for "all triplets".
//!
//! The reference materialises every (anchor, positive, negative) index — B·(M−1)·(B−M) triplets,
//! 7 million at B = 1024 — which is slow and memory-hungry. Here, when no tuples are mined and all
//! triplets are wanted, the loss is computed block by block over anchor–positive pairs from the
//! detached distance matrix: each block yields the kept sum, the kept count and the loss's
//! gradient with respect to the distance matrix. The result is then attached to the graph through
//! the distance matrix, so memory stays O(B²) while values and gradients equal the reference's.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::checks::finite;
use super::{DistanceLoss, DistanceLossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::fused::{SelfBatch, SelfKind, SelfMatrix};
use crate::reducer::{LossTerm, Reducer, Separable, StreamedTerm, TermIndices, TermLosses, zero_loss};
use crate::tuples::{Batch, Triplets, Tuples};

/// How many triplets per anchor the loss uses when none are mined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TripletsPerAnchor {
    /// Every valid triplet (`"all"`).
    All(AllTriplets),
    /// This many random triplets per anchor.
    Count(u32),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum AllTriplets {
    #[serde(rename = "all")]
    All,
}

/// Parameters of [`TripletMarginLoss`] (reference defaults: margin 0.05, no swap, hinge, all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TripletMarginParams {
    pub margin: f64,
    /// Use the closer of d(a,n) and d(p,n) as the negative distance.
    pub swap: bool,
    /// softplus instead of the hinge.
    pub smooth_loss: bool,
    pub triplets_per_anchor: TripletsPerAnchor,
}

impl Default for TripletMarginParams {
    fn default() -> Self {
        TripletMarginParams { margin: 0.05, swap: false, smooth_loss: false, triplets_per_anchor: TripletsPerAnchor::All(AllTriplets::All) }
    }
}

impl DistanceLossParams for TripletMarginParams {
    fn default_distance() -> Distance {
        Distance::lp()
    }
    fn validate(&self) -> Result<()> {
        finite("triplet_margin loss", &[("margin", self.margin)])?;
        if self.triplets_per_anchor == TripletsPerAnchor::Count(0) {
            return Err(invalid("triplet_margin loss", "triplets_per_anchor must be \"all\" or at least 1"));
        }
        Ok(())
    }
}

/// Triplet margin loss.
///
/// `L(a,p,n) = h(m(d_ap, d_an) + margin)` with `h` the hinge `[·]₊` (or softplus when
/// `smooth_loss`), `m(x, y) = x − y` for a distance (`y − x` for a similarity) and, with `swap`,
/// `d_an` replaced by the closer of `d_an` and `d_pn`. Reduced by avg-non-zero by default.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type TripletMarginLoss = DistanceLoss<TripletMarginParams>;

impl MetricLoss for TripletMarginLoss {
    fn default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if self.params.swap && !batch.is_self() {
            return Err(crate::error::CoreError::Unsupported("triplet_margin with swap = true needs the batch as its own reference set".into()));
        }
        if tuples.is_none()
            && let Some(terms) = self.terms_fused(batch)
        {
            return Ok(terms);
        }
        self.terms_reference(batch, tuples)
    }
}

impl TripletMarginLoss {
    fn clone_params(&self) -> TripletMarginLoss {
        TripletMarginLoss { params: self.params.clone(), distance: self.distance.clone() }
    }

    /// The tensor formulation (any device, distance, option or mined tuples): all triplets
    /// streamed block by block ([`StreamedTriplets`]), or explicit triplets.
    pub(crate) fn terms_reference(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let triplets = match (tuples, self.params.triplets_per_anchor) {
            (None, TripletsPerAnchor::All(_)) => {
                let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
                let (matches, diffs) = batch.label_masks();
                if matches.logical_and(&diffs.any_dim(1, true)).any().int64_value(&[]) == 0 {
                    return Ok(vec![LossTerm::zero("loss")]);
                }
                let streamed = StreamedTriplets { loss: self.clone_params(), mat, matches, diffs };
                return Ok(vec![LossTerm { name: "loss", losses: TermLosses::Streamed(Box::new(streamed)), indices: TermIndices::AlreadyReduced, divisor: None }]);
            }
            (None, TripletsPerAnchor::Count(k)) => random_triplets(batch, k as i64),
            (Some(t), _) => batch.to_triplets(Some(t)),
        };
        if triplets.is_empty() {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        Ok(vec![explicit_term(&self.clone_params(), &mat, triplets)])
    }

    /// All triplets of a float32 CPU self batch with the Euclidean distance, no swap, no smooth
    /// loss: one single-threaded Rust pass ([`crate::fused::triplet_scan`]) with the gradient in
    /// closed form; `None` when that does not apply.
    pub(crate) fn terms_fused(&self, batch: &Batch) -> Option<Vec<LossTerm>> {
        if !matches!(self.params.triplets_per_anchor, TripletsPerAnchor::All(_)) || self.params.swap || self.params.smooth_loss {
            return None;
        }
        let input = SelfBatch::for_distance(&self.distance, batch, &[SelfKind::Euclidean])?;
        let e = input.matrix()?;
        // The reference's "no triplet → zero loss": a triplet exists iff some class has two
        // members (a positive pair) and there are two classes (so that anchor has a negative).
        let (np, nn) = input.pair_counts();
        if np == 0 || nn == 0 {
            return Some(vec![LossTerm::zero("loss")]);
        }
        let streamed = FusedTriplets {
            e,
            labels: input.labels,
            embeddings: batch.embeddings.shallow_clone(),
            label_tensor: batch.labels.shallow_clone(),
            loss: self.clone_params(),
        };
        Some(vec![LossTerm { name: "loss", losses: TermLosses::Streamed(Box::new(streamed)), indices: TermIndices::AlreadyReduced, divisor: None }])
    }
}

/// All triplets of a self batch reduced by [`crate::fused::triplet_scan`].
struct FusedTriplets {
    e: SelfMatrix,
    labels: Vec<i64>,
    embeddings: Tensor,
    label_tensor: Tensor,
    loss: TripletMarginLoss,
}

impl StreamedTerm for FusedTriplets {
    fn reduce(&self, how: Separable) -> Result<Tensor> {
        let (sum, kept, entries) = crate::fused::triplet_scan(&self.e, &self.labels, self.loss.params.margin, how.low, how.high);
        let denominator = how.denominator.divisor(kept as f64);
        if denominator == 0.0 {
            return Ok(zero_loss(&self.embeddings));
        }
        Ok(self.e.attach_pair_weights(&self.embeddings, sum, denominator, entries))
    }

    fn materialize(&self) -> Result<(Tensor, TermIndices)> {
        let batch = Batch::new(&self.embeddings, &self.label_tensor);
        let mat = self.loss.distance.matrix(&self.embeddings, None)?;
        let (matches, diffs) = batch.label_masks();
        StreamedTriplets { loss: self.loss.clone_params(), mat, matches, diffs }.materialize()
    }
}

/// The loss of explicit triplets, as a triplet term.
fn explicit_term(loss: &TripletMarginLoss, mat: &Tensor, t: Triplets) -> LossTerm {
    let ap = mat.index(&[Some(&t.anchor), Some(&t.positive)]);
    let mut an = mat.index(&[Some(&t.anchor), Some(&t.negative)]);
    if loss.params.swap {
        let pn = mat.index(&[Some(&t.positive), Some(&t.negative)]);
        an = loss.distance.smallest(&an, &pn);
    }
    let v = loss.distance.margin(&ap, &an) + loss.params.margin;
    let l = if loss.params.smooth_loss { v.softplus() } else { v.relu() };
    LossTerm::new("loss", l, TermIndices::Triplet(t.anchor, t.positive, t.negative))
}

/// `k` random triplets per anchor that has a positive and a negative (the reference's sampling).
pub(crate) fn random_triplets(batch: &Batch, k: i64) -> Triplets {
    let (matches, diffs) = batch.label_masks();
    let (mut a, mut p, mut n) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..batch.len() {
        let pos = matches.get(i).nonzero().flatten(0, -1);
        let neg = diffs.get(i).nonzero().flatten(0, -1);
        let (np, nn) = (pos.size()[0], neg.size()[0]);
        if np == 0 || nn == 0 {
            continue;
        }
        let opts = (Kind::Int64, pos.device());
        a.push(Tensor::full([k], i, opts));
        p.push(pos.index_select(0, &Tensor::randint(np, [k], opts)));
        n.push(neg.index_select(0, &Tensor::randint(nn, [k], opts)));
    }
    if a.is_empty() {
        let e = Tensor::zeros([0], (Kind::Int64, batch.device()));
        return Triplets { anchor: e.shallow_clone(), positive: e.shallow_clone(), negative: e };
    }
    Triplets { anchor: Tensor::cat(&a, 0), positive: Tensor::cat(&p, 0), negative: Tensor::cat(&n, 0) }
}

/// All triplets of a batch, reduced block by block (see the module docs).
struct StreamedTriplets {
    loss: TripletMarginLoss,
    /// The distance matrix, attached to the graph.
    mat: Tensor,
    matches: Tensor,
    diffs: Tensor,
}

/// Elements per block of anchor–positive rows (bounds the temporary memory to a few × 16 MB).
const BLOCK_ELEMENTS: i64 = 1 << 22;

impl StreamedTerm for StreamedTriplets {
    fn reduce(&self, how: Separable) -> Result<Tensor> {
        let d = self.mat.detach();
        let m = d.size()[1];
        let pos = self.matches.nonzero();
        let (a_all, p_all) = (pos.select(1, 0), pos.select(1, 1));
        let num_pos = a_all.size()[0];
        let block = (BLOCK_ELEMENTS / m.max(1)).max(1);
        let dist = &self.loss.distance;
        // dv/d(ap) for the violation v = m(ap, an) + margin.
        let sign = if dist.is_inverted() { -1.0 } else { 1.0 };
        let mut grad = d.zeros_like();
        let mut total = Tensor::zeros([], (Kind::Double, d.device()));
        let mut kept = Tensor::zeros([], (Kind::Double, d.device()));
        let mut start = 0;
        tch::no_grad(|| {
            while start < num_pos {
                let len = block.min(num_pos - start);
                let a = a_all.narrow(0, start, len);
                let p = p_all.narrow(0, start, len);
                start += len;
                let ap = d.index(&[Some(&a), Some(&p)]).unsqueeze(1);
                let an = d.index_select(0, &a);
                let (an_eff, pn) = if self.loss.params.swap {
                    let pn = d.index_select(0, &p);
                    (dist.smallest(&an, &pn), Some(pn))
                } else {
                    (an.shallow_clone(), None)
                };
                let v = dist.margin(&ap, &an_eff) + self.loss.params.margin;
                let (l, dl) = if self.loss.params.smooth_loss { (v.softplus(), v.sigmoid()) } else { (v.relu(), v.gt(0.0).to_kind(v.kind())) };
                let mut keep = self.diffs.index_select(0, &a);
                if let Some(low) = how.low {
                    keep = keep.logical_and(&l.gt(low));
                }
                if let Some(high) = how.high {
                    keep = keep.logical_and(&l.lt(high));
                }
                let keepf = keep.to_kind(l.kind());
                total += (&l * &keepf).sum(Kind::Double);
                kept += keepf.sum(Kind::Double);
                let g = dl * keepf;
                let _ = grad.index_put_(&[Some(&a), Some(&p)], &(g.sum_dim_intlist(1, false, g.kind()) * sign), true);
                match pn {
                    None => {
                        let _ = grad.index_add_(0, &a, &(&g * -sign));
                    }
                    Some(pn) => {
                        // torch.minimum/maximum send the gradient to the chosen side, half to each on ties.
                        let an_chosen = dist.closer(&an, &pn, false).to_kind(g.kind()) + an.eq_tensor(&pn).to_kind(g.kind()) * 0.5;
                        let g_an = &g * &an_chosen;
                        let g_pn = &g - &g_an;
                        let _ = grad.index_add_(0, &a, &(g_an * -sign));
                        let _ = grad.index_add_(0, &p, &(g_pn * -sign));
                    }
                }
            }
        });
        let kept = kept.double_value(&[]);
        let denominator = how.denominator.divisor(kept);
        if denominator == 0.0 {
            return Ok(zero_loss(&self.mat));
        }
        let value = (total / denominator).to_kind(self.mat.kind());
        let grad = grad / denominator;
        Ok(value + ((&self.mat - &d) * grad).sum(self.mat.kind()))
    }

    fn materialize(&self) -> Result<(Tensor, TermIndices)> {
        let t = self.matches.unsqueeze(2).logical_and(&self.diffs.unsqueeze(1)).nonzero();
        let triplets = Triplets { anchor: t.select(1, 0), positive: t.select(1, 1), negative: t.select(1, 2) };
        let term = explicit_term(&self.loss, &self.mat, triplets);
        match term.losses {
            TermLosses::Values(v) => Ok((v, term.indices)),
            _ => unreachable!("explicit terms hold values"),
        }
    }
}
