//! Shared machinery of the miners: anchor–positive blocks, triplet collection, `finfo` limits.
//!
//! The exhaustive triplet miners (triplet margin, angular) consider every (anchor, positive,
//! negative) triplet. The reference builds all of them at once — B·(M−1)·(B−M) index triples, 7
//! million at B = 1024 — and then filters. Here the positive pairs are visited in blocks whose
//! candidate rows [block, m] stay within a fixed element budget, and only the kept triplets are
//! turned into explicit indices, so the peak memory is O(budget + kept) instead of O(B³).

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::tuples::Triplets;

/// Elements per block of candidate triplets: 4 MB per float32 temporary. Measured at B = 1024
/// (TripletMarginMiner, semihard), 2^20 is ~2× faster than 2^22: the temporaries are reused
/// by the allocator instead of being mapped and faulted in afresh for every block.
pub(crate) const BLOCK_ELEMENTS: i64 = 1 << 20;

/// Calls `f(a, p)` on consecutive blocks of the positive pairs of `matches` (boolean [n, m]),
/// in row-major order, with `block × per_pair_elements ≤ BLOCK_ELEMENTS` (at least one pair).
pub(crate) fn for_each_positive_block(matches: &Tensor, per_pair_elements: i64, mut f: impl FnMut(&Tensor, &Tensor) -> Result<()>) -> Result<()> {
    let pos = matches.nonzero();
    let (a_all, p_all) = (pos.select(1, 0), pos.select(1, 1));
    let num_pos = a_all.size()[0];
    let block = (BLOCK_ELEMENTS / per_pair_elements.max(1)).max(1);
    let mut start = 0;
    while start < num_pos {
        let len = block.min(num_pos - start);
        f(&a_all.narrow(0, start, len), &p_all.narrow(0, start, len))?;
        start += len;
    }
    Ok(())
}

/// Collects the kept triplets of each block.
#[derive(Default)]
pub(crate) struct TripletCollector {
    anchor: Vec<Tensor>,
    positive: Vec<Tensor>,
    negative: Vec<Tensor>,
}

impl TripletCollector {
    /// Keeps, for the block of positive pairs (`a`, `p`), the negatives where `keep` [block, m] is true.
    pub(crate) fn push_kept(&mut self, a: &Tensor, p: &Tensor, keep: &Tensor) {
        let nz = keep.nonzero();
        if nz.size()[0] == 0 {
            return;
        }
        let rows = nz.select(1, 0);
        self.anchor.push(a.index_select(0, &rows));
        self.positive.push(p.index_select(0, &rows));
        self.negative.push(nz.select(1, 1));
    }

    /// The collected triplets (int64, on `device`), in (anchor, positive, negative) order.
    pub(crate) fn finish(self, device: tch::Device) -> Triplets {
        if self.anchor.is_empty() {
            return empty_triplets(device);
        }
        Triplets { anchor: Tensor::cat(&self.anchor, 0), positive: Tensor::cat(&self.positive, 0), negative: Tensor::cat(&self.negative, 0) }
    }
}

/// No triplets.
pub(crate) fn empty_triplets(device: tch::Device) -> Triplets {
    let e = empty_index(device);
    Triplets { anchor: e.shallow_clone(), positive: e.shallow_clone(), negative: e }
}

/// An empty int64 index tensor.
pub(crate) fn empty_index(device: tch::Device) -> Tensor {
    Tensor::zeros([0], (Kind::Int64, device))
}

/// The largest finite value of a float kind (`torch.finfo(dtype).max`, the reference's "infinity").
pub(crate) fn finfo_max(kind: Kind) -> f64 {
    match kind {
        Kind::Double => f64::MAX,
        Kind::Half => 65504.0,
        Kind::BFloat16 => 3.389_531_389_251_535_5e38,
        _ => f32::MAX as f64,
    }
}

/// True when `distance` is the default Lp distance (p = 2, power = 1, normalised), which some
/// miners assume (their formulas are about points on the unit sphere).
pub(crate) fn is_unit_euclidean(distance: &crate::distance::Distance) -> bool {
    matches!(distance, crate::distance::Distance::Lp { normalize_embeddings: true, p, power } if *p == 2.0 && *power == 1.0)
}

/// The pairs at the true entries of two boolean [n, m] masks, in row-major order.
pub(crate) fn pairs_from_masks(pos: &Tensor, neg: &Tensor) -> crate::tuples::Pairs {
    let p = pos.nonzero();
    let n = neg.nonzero();
    crate::tuples::Pairs { pos_anchor: p.select(1, 0), pos_other: p.select(1, 1), neg_anchor: n.select(1, 0), neg_other: n.select(1, 1) }
}
