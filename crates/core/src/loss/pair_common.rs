//! Shared machinery of the pair-based losses: masked log-sum-exp with the reference's
//! conventions, pair masks and per-anchor multiplicities.
//!
//! Several reference losses build a `[num_pos_pairs × num_neg_pairs]` matrix only to take, for
//! each positive pair, a log-sum-exp over the negatives of the same anchor. That is the same
//! number as one log-sum-exp per anchor row of the `[n × m]` distance matrix, reused for every
//! positive of that anchor; these helpers provide the row-wise pieces so that every loss stays
//! O(n·m) in time and memory. Mined negative pairs may repeat: a row's log-sum-exp then adds
//! `log(count)` to each entry, which counts every repetition as the reference does.

use tch::{Kind, Tensor};

use crate::tuples::{Batch, Tuples};

/// `logsumexp` over `dim = 1` of the entries of `x` kept by `keep` (bool), as the reference's
/// `lmu.logsumexp`: masked entries are −∞, `add_one` appends a zero column, and rows with no
/// kept entry give 0.
///
/// # Shapes
/// `x`, `keep` [n, m] → [n].
pub fn masked_lse(x: &Tensor, keep: &Tensor, add_one: bool) -> Tensor {
    let masked = x.masked_fill(&keep.logical_not(), f64::NEG_INFINITY);
    let masked = if add_one {
        let zeros = Tensor::zeros([x.size()[0], 1], (x.kind(), x.device()));
        Tensor::cat(&[masked, zeros], 1)
    } else {
        masked
    };
    let out = masked.logsumexp([1i64].as_slice(), false);
    out.masked_fill(&keep.any_dim(1, false).logical_not(), 0.0)
}

/// Like [`masked_lse`] without `add_one`, but an empty row gives −∞ (so that rows can be
/// combined with `logaddexp`); gradients stay finite because masked entries receive none.
///
/// `weight` is the multiplicity of each entry (0 = masked): `log Σ_j w_ij · exp(x_ij)`.
///
/// # Shapes
/// `x`, `weight` [n, m] → [n].
pub fn weighted_row_lse(x: &Tensor, weight: &Tensor) -> Tensor {
    let keep = weight.gt(0.0);
    let logw = weight.clamp_min(1.0).log();
    let lse = masked_lse(&(x + logw), &keep, false);
    lse.masked_fill(&keep.any_dim(1, false).logical_not(), f64::NEG_INFINITY)
}

/// The positive and negative pairs of a batch as masks (duplicates collapse, as in the
/// reference's mask-based losses), with the pair counts used by the reference's
/// "at most one pair of each kind → zero loss" rule.
pub struct PairMasks {
    /// Bool [n, m].
    pub pos: Tensor,
    /// Bool [n, m].
    pub neg: Tensor,
    /// Number of positive pairs (with repetitions).
    pub num_pos: i64,
    /// Number of negative pairs (with repetitions).
    pub num_neg: i64,
}

impl PairMasks {
    /// The masks of `tuples` (all pairs when `None`).
    pub fn new(batch: &Batch, tuples: Option<&Tuples>) -> PairMasks {
        match tuples {
            None => {
                let (pos, neg) = batch.label_masks();
                let num_pos = pos.sum(Kind::Int64).int64_value(&[]);
                let num_neg = neg.sum(Kind::Int64).int64_value(&[]);
                PairMasks { pos, neg, num_pos, num_neg }
            }
            Some(t) => {
                let pairs = batch.to_pairs(Some(t));
                let (pos, neg) = pairs.masks(batch.len(), batch.ref_len(), batch.device());
                PairMasks { pos: pos.gt(0.0), neg: neg.gt(0.0), num_pos: pairs.num_pos(), num_neg: pairs.num_neg() }
            }
        }
    }

    /// The reference's `all(len(x) <= 1 for x in indices_tuple)`: no loss at all.
    pub fn trivial(&self) -> bool {
        self.num_pos <= 1 && self.num_neg <= 1
    }
}

/// Explicit positive pairs with per-anchor negative multiplicities, for the pair-based losses
/// whose value is per positive pair.
pub struct PosPairsNegCounts {
    /// Anchor of each positive pair, int64 [P].
    pub pos_anchor: Tensor,
    /// Other element of each positive pair, int64 [P].
    pub pos_other: Tensor,
    /// Multiplicity of every negative pair, float [n, m].
    pub neg_count: Tensor,
    pub num_pos: i64,
    pub num_neg: i64,
}

impl PosPairsNegCounts {
    /// The pairs of `tuples` (all pairs when `None`), with counts of kind `kind`.
    pub fn new(batch: &Batch, tuples: Option<&Tuples>, kind: Kind) -> PosPairsNegCounts {
        let (n, m, device) = (batch.len(), batch.ref_len(), batch.device());
        match tuples {
            None => {
                let (matches, diffs) = batch.label_masks();
                let p = matches.nonzero();
                let num_neg = diffs.sum(Kind::Int64).int64_value(&[]);
                PosPairsNegCounts { num_pos: p.size()[0], pos_anchor: p.select(1, 0), pos_other: p.select(1, 1), neg_count: diffs.to_kind(kind), num_neg }
            }
            Some(t) => {
                let pairs = batch.to_pairs(Some(t));
                let ones = Tensor::ones([pairs.num_neg()], (kind, device));
                let neg_count =
                    Tensor::zeros([n, m], (kind, device)).index_put(&[Some(pairs.neg_anchor.shallow_clone()), Some(pairs.neg_other.shallow_clone())], &ones, true);
                PosPairsNegCounts { num_pos: pairs.num_pos(), num_neg: pairs.num_neg(), pos_anchor: pairs.pos_anchor, pos_other: pairs.pos_other, neg_count }
            }
        }
    }

    /// The reference's `all(len(x) <= 1 for x in indices_tuple)`: no loss at all.
    pub fn trivial(&self) -> bool {
        self.num_pos <= 1 && self.num_neg <= 1
    }
}

/// `torch.finfo(kind).tiny`, the reference's `small_val`.
pub fn small_val(kind: Kind) -> f64 {
    match kind {
        Kind::Double => f64::MIN_POSITIVE,
        Kind::Half => 6.103_515_6e-5,
        Kind::BFloat16 => 1.175_494_4e-38,
        _ => f32::MIN_POSITIVE as f64,
    }
}

/// Row indices `0..n` on the device of `like`.
pub fn arange_like(n: i64, like: &Tensor) -> Tensor {
    Tensor::arange(n, (Kind::Int64, like.device()))
}
