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

/// The triplets (a, p, n) of every positive pair (a, p) of `matches` and every column n where
/// `keep(a_block, p_block)` ([block, m] boolean) is true, in (a, p, n) order.
///
/// Two passes over the blocks: the first counts the kept triplets, the second writes them into
/// output tensors allocated once. Collecting per-block pieces and concatenating them would hold
/// the output twice (and fragment the heap); recomputing the masks is cheaper than that memory.
pub(crate) fn collect_triplets(matches: &Tensor, per_pair_elements: i64, device: tch::Device, keep: impl Fn(&Tensor, &Tensor) -> Result<Tensor>) -> Result<Triplets> {
    let mut counts = Vec::new();
    for_each_positive_block(matches, per_pair_elements, |a, p| {
        counts.push(keep(a, p)?.sum(Kind::Int64).int64_value(&[]));
        Ok(())
    })?;
    let total: i64 = counts.iter().sum();
    if total == 0 {
        return Ok(empty_triplets(device));
    }
    let opts = (Kind::Int64, device);
    let out = Triplets { anchor: Tensor::empty([total], opts), positive: Tensor::empty([total], opts), negative: Tensor::empty([total], opts) };
    let (mut block, mut offset) = (0, 0);
    for_each_positive_block(matches, per_pair_elements, |a, p| {
        let k = counts[block];
        block += 1;
        if k == 0 {
            return Ok(());
        }
        let nz = keep(a, p)?.nonzero();
        if nz.size()[0] != k {
            return Err(crate::error::CoreError::Unsupported("the mining mask changed between passes (non-deterministic device kernels?)".into()));
        }
        let rows = nz.select(1, 0);
        out.anchor.narrow(0, offset, k).copy_(&a.index_select(0, &rows));
        out.positive.narrow(0, offset, k).copy_(&p.index_select(0, &rows));
        out.negative.narrow(0, offset, k).copy_(&nz.select(1, 1));
        offset += k;
        Ok(())
    })?;
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn collect_triplets_keeps_order_across_blocks_and_handles_none() {
        // 3 anchors × 2 columns; every positive pair is its own block (per-pair budget).
        let matches = Tensor::from_slice(&[false, true, true, false, true, false]).view([3, 2]);
        let t = collect_triplets(&matches, BLOCK_ELEMENTS, Device::Cpu, |a, _| Ok(Tensor::ones([a.size()[0], 2], (Kind::Bool, Device::Cpu)))).unwrap();
        assert_eq!(t.to_vec(), vec![(0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (2, 0, 0), (2, 0, 1)]);
        let none = collect_triplets(&matches, 1, Device::Cpu, |a, _| Ok(Tensor::zeros([a.size()[0], 2], (Kind::Bool, Device::Cpu)))).unwrap();
        assert!(none.is_empty());
    }
}
