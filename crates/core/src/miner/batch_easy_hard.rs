//! Batch easy/hard mining (Xuan et al., "Improved Embeddings with Easy Positive Triplet Mining"):
//! per anchor, one positive and one negative chosen by a strategy, returned as pairs.
//!
//! Follows the reference exactly, including its quirks: the "max" selection multiplies the
//! matrix by a 0/1 mask (so with a similarity, a masked 0 can win over negative values), the
//! "min" selection masks with `finfo.max`, and a semihard side uses the other side's chosen
//! value as its threshold.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::blocks::finfo_max;
use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::fused::{SelfBatch, SelfKind};
use crate::tuples::{Batch, Pairs, Tuples};

/// How [`BatchEasyHardMiner`] picks the positive or the negative of each anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The hardest one (farthest positive, closest negative).
    Hard,
    /// The hardest one that is still easier than the other side's pick.
    Semihard,
    /// The easiest one (closest positive, farthest negative).
    Easy,
    /// Every pair of that kind.
    All,
}

fn easy() -> Strategy {
    Strategy::Easy
}
fn semihard() -> Strategy {
    Strategy::Semihard
}

/// Parameters of [`BatchEasyHardMiner`] (reference defaults: easy positives, semihard negatives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchEasyHardParams {
    #[serde(default = "easy")]
    pub pos_strategy: Strategy,
    #[serde(default = "semihard")]
    pub neg_strategy: Strategy,
    /// Only positives whose value lies in `[low, high]` are candidates.
    #[serde(default)]
    pub allowed_pos_range: Option<[f64; 2]>,
    /// Only negatives whose value lies in `[low, high]` are candidates.
    #[serde(default)]
    pub allowed_neg_range: Option<[f64; 2]>,
}

impl Default for BatchEasyHardParams {
    fn default() -> Self {
        BatchEasyHardParams { pos_strategy: Strategy::Easy, neg_strategy: Strategy::Semihard, allowed_pos_range: None, allowed_neg_range: None }
    }
}

impl MinerParams for BatchEasyHardParams {
    fn validate(&self) -> Result<()> {
        use Strategy::*;
        let (p, n) = (self.pos_strategy, self.neg_strategy);
        if p == Semihard && n == Semihard {
            return Err(invalid("batch_easy_hard miner", "pos_strategy and neg_strategy cannot both be \"semihard\""));
        }
        if (p == All && n == Semihard) || (n == All && p == Semihard) {
            return Err(invalid("batch_easy_hard miner", "\"semihard\" cannot be used in combination with \"all\""));
        }
        for (name, r) in [("allowed_pos_range", self.allowed_pos_range), ("allowed_neg_range", self.allowed_neg_range)] {
            if let Some([lo, hi]) = r
                && (lo.is_nan() || hi.is_nan() || lo > hi)
            {
                return Err(invalid("batch_easy_hard miner", format!("{name} must be [low, high] with low ≤ high")));
            }
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(BatchEasyHardMiner { params: self.clone(), distance }))
    }
}

/// Per anchor: a positive and a negative picked by `pos_strategy` / `neg_strategy` (or all pairs
/// of a side whose strategy is `all`); anchors missing either pick are dropped.
///
/// # Shapes
/// embeddings [n, d] → pairs (at most n of each kind unless a strategy is `all`).
pub struct BatchEasyHardMiner {
    pub params: BatchEasyHardParams,
    pub distance: Distance,
}

/// One side's pick: values and indices per row, and which rows had a candidate.
struct Pick {
    values: Tensor,
    indices: Tensor,
    found: Tensor,
}

impl BatchEasyHardMiner {
    /// The row-wise largest candidate: `max(mat · mask)` as the reference computes it.
    fn max_per_row(mat: &Tensor, mask: &Tensor) -> Pick {
        let (values, indices) = (mat * mask.to_kind(mat.kind())).max_dim(1, false);
        Pick { values, indices, found: mask.any_dim(1, false) }
    }

    /// The row-wise smallest candidate, non-candidates set to `finfo.max`.
    fn min_per_row(mat: &Tensor, mask: &Tensor) -> Pick {
        let (values, indices) = mat.masked_fill(&mask.logical_not(), finfo_max(mat.kind())).min_dim(1, false);
        Pick { values, indices, found: mask.any_dim(1, false) }
    }

    /// Restricts candidates to a value range and below/above a semihard threshold, then picks.
    fn pick(&self, mat: &Tensor, pairs: &Tensor, largest: bool, range: Option<[f64; 2]>, thresholds: Option<&Tensor>) -> Pick {
        let mut mask = pairs.shallow_clone();
        if let Some(t) = thresholds {
            let t = t.unsqueeze(1);
            // The reference drops values at or beyond the threshold in the picking direction.
            mask = mask.logical_and(&if largest { mat.lt_tensor(&t) } else { mat.gt_tensor(&t) });
        }
        if let Some([lo, hi]) = range {
            mask = mask.logical_and(&mat.le(hi).logical_and(&mat.ge(lo)));
        }
        if largest { Self::max_per_row(mat, &mask) } else { Self::min_per_row(mat, &mask) }
    }

    /// Positives: hard/semihard take the farthest, easy the closest (reversed for a similarity).
    fn positives(&self, mat: &Tensor, matches: &Tensor, thresholds: Option<&Tensor>) -> Pick {
        let hard = matches!(self.params.pos_strategy, Strategy::Hard | Strategy::Semihard);
        self.pick(mat, matches, hard != self.distance.is_inverted(), self.params.allowed_pos_range, thresholds)
    }

    /// Negatives: hard/semihard take the closest, easy the farthest (reversed for a similarity).
    fn negatives(&self, mat: &Tensor, diffs: &Tensor, thresholds: Option<&Tensor>) -> Pick {
        let hard = matches!(self.params.neg_strategy, Strategy::Hard | Strategy::Semihard);
        self.pick(mat, diffs, hard == self.distance.is_inverted(), self.params.allowed_neg_range, thresholds)
    }
}

impl Miner for BatchEasyHardMiner {
    fn name(&self) -> &'static str {
        "BatchEasyHardMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        if let Some(p) = self.mine_fused(batch) {
            return Ok(Tuples::Pairs(p));
        }
        self.mine_reference(batch)
    }
}

impl BatchEasyHardMiner {
    /// A float32 CPU self batch, Euclidean/cosine/dot distance, the default strategies (easy
    /// positives, semihard negatives): one single-threaded Rust pass
    /// ([`crate::fused::batch_easy_hard_rows`]); `None` when that does not apply.
    pub(crate) fn mine_fused(&self, batch: &Batch) -> Option<Pairs> {
        use Strategy::*;
        let (ps, ns) = (self.params.pos_strategy, self.params.neg_strategy);
        // Only the default strategies: with a "largest" pick the tensor form's zero-filled max
        // can select a non-pair column when kept values tie with 0, which this pass does not
        // reproduce bit for bit (measured on integer data); those configurations keep the
        // tensor form.
        if (ps, ns) != (Easy, Semihard) {
            return None;
        }
        let input = SelfBatch::for_distance(&self.distance, batch, SelfKind::ALL)?;
        let e = input.matrix()?;
        let inv = self.distance.is_inverted();
        let pos_largest = matches!(ps, Hard | Semihard) != inv;
        let neg_largest = matches!(ns, Hard | Semihard) == inv;
        let semihard = if ps == Semihard {
            Some(true)
        } else if ns == Semihard {
            Some(false)
        } else {
            None
        };
        let rows = crate::fused::batch_easy_hard_rows(
            &e.values,
            e.n,
            &input.labels,
            pos_largest,
            neg_largest,
            semihard,
            self.params.allowed_pos_range,
            self.params.allowed_neg_range,
        )?;
        let col = |f: fn(&(i64, i64, i64)) -> i64| Tensor::from_slice(&rows.iter().map(f).collect::<Vec<i64>>());
        let a = col(|t| t.0);
        Some(Pairs { pos_anchor: a.shallow_clone(), pos_other: col(|t| t.1), neg_anchor: a, neg_other: col(|t| t.2) })
    }

    /// The tensor formulation (any device, dtype, reference set or strategy).
    pub(crate) fn mine_reference(&self, batch: &Batch) -> Result<Tuples> {
        use Strategy::*;
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let (matches, diffs) = batch.label_masks();
        let (ps, ns) = (self.params.pos_strategy, self.params.neg_strategy);
        let (pos, neg) = if ps == Semihard && ns != All {
            let neg = self.negatives(&mat, &diffs, None);
            (Some(self.positives(&mat, &matches, Some(&neg.values))), Some(neg))
        } else if ns == Semihard && ps != All {
            let pos = self.positives(&mat, &matches, None);
            let neg = self.negatives(&mat, &diffs, Some(&pos.values));
            (Some(pos), Some(neg))
        } else {
            ((ps != All).then(|| self.positives(&mat, &matches, None)), (ns != All).then(|| self.negatives(&mat, &diffs, None)))
        };
        // Only the strategies "all" keep every pair of a kind; listing them all (two `nonzero`
        // over B×B masks) is skipped otherwise.
        let all = || batch.all_pairs();
        let rows = |found: &Tensor| found.nonzero().flatten(0, -1);
        let pairs = match (pos, neg) {
            (Some(pos), Some(neg)) => {
                let a = rows(&pos.found.logical_and(&neg.found));
                Pairs { pos_other: pos.indices.index_select(0, &a), neg_other: neg.indices.index_select(0, &a), pos_anchor: a.shallow_clone(), neg_anchor: a }
            }
            (None, Some(neg)) => {
                let a = rows(&neg.found);
                Pairs { neg_other: neg.indices.index_select(0, &a), neg_anchor: a, ..all() }
            }
            (Some(pos), None) => {
                let a = rows(&pos.found);
                Pairs { pos_other: pos.indices.index_select(0, &a), pos_anchor: a, ..all() }
            }
            (None, None) => all(),
        };
        let to_i64 = |t: Tensor| t.to_kind(Kind::Int64);
        Ok(Tuples::Pairs(Pairs {
            pos_anchor: to_i64(pairs.pos_anchor),
            pos_other: to_i64(pairs.pos_other),
            neg_anchor: to_i64(pairs.neg_anchor),
            neg_other: to_i64(pairs.neg_other),
        }))
    }
}
