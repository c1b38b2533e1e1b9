//! Miner kernels: BatchHardMiner, MultiSimilarityMiner and BatchEasyHardMiner (default
//! strategies) over a row-major matrix of distances or similarities, with the tensor
//! formulation's tie rule (first index wins, as `max`/`min` along a dimension).

use super::pair_counts;
use crate::lanes::{LANES, NO_LABEL, PAD, avx2_dispatch, chunks_indexed, dense_labels, is_label};

/// Batch-hard selection for every row: the farthest positive and the closest negative.
///
/// `mat` is row-major `n × m`; `inverted` says the values are similarities (larger = closer);
/// `is_self` removes the diagonal from the positives. Returns `(anchor, positive, negative)` for
/// the rows that have at least one positive and one negative, in row order; ties resolve to the
/// lowest column. `None` when a value is NaN or infinite (the tensor formulation then decides:
/// its masking values ±∞ could tie with real entries).
pub(crate) fn batch_hard_rows(mat: &[f32], n: usize, m: usize, labels: &[i64], ref_labels: &[i64], inverted: bool, is_self: bool) -> Option<Vec<(i64, i64, i64)>> {
    if mat.len() != n * m || labels.len() != n || ref_labels.len() != m {
        return None;
    }
    // "Farther" for a distance is larger; for a similarity smaller. Strict comparisons keep the
    // first of equal values.
    let farther = |a: f32, b: f32| if inverted { a < b } else { a > b };
    let rows: Vec<Option<Option<(i64, i64, i64)>>> = (0..n)
        .map(|i| {
            let row = &mat[i * m..(i + 1) * m];
            let li = labels[i];
            let (mut pos, mut neg): (Option<(f32, usize)>, Option<(f32, usize)>) = (None, None);
            for (j, (&v, &lj)) in row.iter().zip(ref_labels).enumerate() {
                if !v.is_finite() {
                    return None;
                }
                if lj == li {
                    if is_self && j == i {
                        continue;
                    }
                    if pos.is_none_or(|(b, _)| farther(v, b)) {
                        pos = Some((v, j));
                    }
                } else if neg.is_none_or(|(b, _)| farther(b, v)) {
                    neg = Some((v, j));
                }
            }
            Some(match (pos, neg) {
                (Some((_, p)), Some((_, q))) => Some((i as i64, p as i64, q as i64)),
                _ => None,
            })
        })
        .collect();
    rows.into_iter().try_fold(Vec::new(), |mut acc, r| {
        if let Some(t) = r? {
            acc.push(t);
        }
        Some(acc)
    })
}

/// Multi-similarity mining over a self batch's `n × n` matrix: positive pairs `(i, j)` with
/// `m_ij − ε < max_neg m_i·` and negative pairs with `m_ij + ε > min_pos m_i·` for similarities
/// (the mirror image for distances), in row-major order; empty when the batch has no positive
/// or no negative pair at all. `None` on a non-finite value (the tensor formulation decides).
pub(crate) fn multi_similarity_pairs(mat: &[f32], n: usize, labels: &[i64], epsilon: f64, inverted: bool) -> Option<(Vec<(i64, i64)>, Vec<(i64, i64)>)> {
    if mat.len() != n * n || labels.len() != n || mat.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (np, nn) = pair_counts(labels);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    if np == 0 || nn == 0 {
        return Some((pos, neg));
    }
    let eps = epsilon as f32;
    let big = f32::MAX;
    for i in 0..n {
        let row = &mat[i * n..(i + 1) * n];
        let li = labels[i];
        // Hardest negative and easiest positive, with the reference's ±finfo.max fill values.
        let (mut hard_neg, mut easy_pos) = if inverted { (-big, big) } else { (big, -big) };
        for (j, (&v, &lj)) in row.iter().zip(labels).enumerate() {
            if lj != li {
                hard_neg = if inverted { hard_neg.max(v) } else { hard_neg.min(v) };
            } else if j != i {
                easy_pos = if inverted { easy_pos.min(v) } else { easy_pos.max(v) };
            }
        }
        for (j, (&v, &lj)) in row.iter().zip(labels).enumerate() {
            if lj == li {
                let keep = if inverted { v - eps < hard_neg } else { v + eps > hard_neg };
                if j != i && keep {
                    pos.push((i as i64, j as i64));
                }
            } else {
                let keep = if inverted { v + eps > easy_pos } else { v - eps < easy_pos };
                if keep {
                    neg.push((i as i64, j as i64));
                }
            }
        }
    }
    Some((pos, neg))
}

/// One row's pick of [`batch_easy_hard_rows`] among the positives (`POSITIVE`) or negatives of
/// the row (`lab`, `li` as for [`multi_similarity_row`]) with a value in `[lo, hi]` and beyond
/// `t` (below it for a largest pick, above for a smallest): the largest (`LARGEST`, as the
/// tensor form's `(m · mask).max`, whose masked-out entries count as 0) or the smallest
/// (masked-out entries filled with `f32::MAX`), first index on ties. Returns `(value, index,
/// found)`.
///
/// One pass with a running extreme and its first index per lane; the lanes then give the
/// extreme with the lowest index.
#[inline(always)]
fn pick_row<const POSITIVE: bool, const LARGEST: bool>(row: &[f32], lab: &[u32], li: u32, [lo, hi]: [f32; 2], t: Option<f32>) -> (f32, usize, bool) {
    let fill = if LARGEST { 0.0 } else { f32::MAX };
    // Padding lanes never win.
    let neutral = if LARGEST { f32::NEG_INFINITY } else { f32::INFINITY };
    let t = t.unwrap_or(-neutral);
    let (mut best, mut at, mut found) = ([neutral; LANES], [0u32; LANES], [0u32; LANES]);
    chunks_indexed(row, lab, |j0, r, l| {
        for k in 0..LANES {
            let v = r[k];
            let side = if POSITIVE { l[k] == li } else { l[k] != li && is_label(l[k]) };
            let keep = side && v >= lo && v <= hi && if LARGEST { v < t } else { v > t };
            found[k] |= keep as u32;
            let x = if keep {
                v
            } else if l[k] == PAD {
                neutral
            } else {
                fill
            };
            let better = if LARGEST { x > best[k] } else { x < best[k] };
            best[k] = if better { x } else { best[k] };
            at[k] = if better { (j0 + k) as u32 } else { at[k] };
        }
    });
    let mut pick = (neutral, u32::MAX);
    for k in 0..LANES {
        let better = if LARGEST { best[k] > pick.0 } else { best[k] < pick.0 };
        if better || (best[k] == pick.0 && at[k] < pick.1) {
            pick = (best[k], at[k]);
        }
    }
    (pick.0, pick.1 as usize, found.iter().any(|&f| f != 0))
}

/// [`pick_row`] with the side and direction chosen at run time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pick_row_dyn(positive: bool, largest: bool, row: &[f32], lab: &[u32], li: u32, range: [f32; 2], t: Option<f32>) -> (f32, usize, bool) {
    match (positive, largest) {
        (true, true) => pick_row::<true, true>(row, lab, li, range, t),
        (true, false) => pick_row::<true, false>(row, lab, li, range, t),
        (false, true) => pick_row::<false, true>(row, lab, li, range, t),
        (false, false) => pick_row::<false, false>(row, lab, li, range, t),
    }
}

/// Batch easy/hard mining (no "all" strategy) over a self batch's `n × n` matrix: per anchor one
/// positive and one negative, picked in the tensor form's order (the semihard side is picked
/// against the other side's value), with the optional value ranges. `pos_largest`/`neg_largest`
/// say which extreme each side takes; `semihard` is `Some(true)` when the positive is semihard
/// (picked after the negative), `Some(false)` when the negative is, `None` for neither.
/// Returns `(anchor, positive, negative)` for the anchors where both were found, in row order;
/// `None` on a non-finite value.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_easy_hard_rows(
    mat: &[f32],
    n: usize,
    labels: &[i64],
    pos_largest: bool,
    neg_largest: bool,
    semihard: Option<bool>,
    pos_range: Option<[f64; 2]>,
    neg_range: Option<[f64; 2]>,
) -> Option<Vec<(i64, i64, i64)>> {
    if mat.len() != n * n || labels.len() != n || mat.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let range = |r: Option<[f64; 2]>| r.map_or([f32::NEG_INFINITY, f32::INFINITY], |[lo, hi]| [lo as f32, hi as f32]);
    let (ids, _) = dense_labels(labels);
    let ranges = [range(pos_range), range(neg_range)];
    Some(easy_hard_fill(mat, &ids, [pos_largest, neg_largest], semihard, ranges, 0..n))
}

avx2_dispatch!(fn easy_hard_fill(mat: &[f32], ids: &[u32], largest: [bool; 2], semihard: Option<bool>, ranges: [[f32; 2]; 2], rows: std::ops::Range<usize>) -> Vec<(i64, i64, i64)> => easy_hard_fill_imp);

/// The picks of [`batch_easy_hard_rows`] for `rows` (`largest` and `ranges`: positives, negatives).
#[inline(always)]
fn easy_hard_fill_imp(
    mat: &[f32],
    ids: &[u32],
    [pos_largest, neg_largest]: [bool; 2],
    semihard: Option<bool>,
    [pos_range, neg_range]: [[f32; 2]; 2],
    rows: std::ops::Range<usize>,
) -> Vec<(i64, i64, i64)> {
    let n = ids.len();
    let mut out = Vec::new();
    let mut lab = ids.to_vec();
    for i in rows {
        let row = &mat[i * n..(i + 1) * n];
        let li = ids[i];
        lab[i] = NO_LABEL;
        // (Direct calls, not closures: a closure would be compiled outside the AVX2 wrapper.)
        let (p, q) = match semihard {
            Some(true) => {
                let q = pick_row_dyn(false, neg_largest, row, &lab, li, neg_range, None);
                (pick_row_dyn(true, pos_largest, row, &lab, li, pos_range, Some(q.0)), q)
            }
            Some(false) => {
                let p = pick_row_dyn(true, pos_largest, row, &lab, li, pos_range, None);
                (p, pick_row_dyn(false, neg_largest, row, &lab, li, neg_range, Some(p.0)))
            }
            None => (pick_row_dyn(true, pos_largest, row, &lab, li, pos_range, None), pick_row_dyn(false, neg_largest, row, &lab, li, neg_range, None)),
        };
        lab[i] = li;
        if p.2 && q.2 {
            out.push((i as i64, p.1 as i64, q.1 as i64));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_hard_rows_picks_extremes_with_first_index_ties() {
        // Row 0: positives at columns 1, 2 (equal distance 3 -> column 1), negatives at 3, 4
        // (equal distance 1 -> column 3).
        let labels = [0i64, 0, 0, 1, 1];
        #[rustfmt::skip]
        let mat = [
            0.0, 3.0, 3.0, 1.0, 1.0,
            3.0, 0.0, 2.0, 5.0, 4.0,
            3.0, 2.0, 0.0, 0.5, 6.0,
            1.0, 5.0, 0.5, 0.0, 2.0,
            1.0, 4.0, 6.0, 2.0, 0.0,
        ];
        let t = batch_hard_rows(&mat, 5, 5, &labels, &labels, false, true).unwrap();
        assert_eq!(t, vec![(0, 1, 3), (1, 0, 4), (2, 0, 3), (3, 4, 2), (4, 3, 0)]);
        // As similarities the extremes swap: farthest positive = smallest value.
        let t = batch_hard_rows(&mat, 5, 5, &labels, &labels, true, true).unwrap();
        assert_eq!(t, vec![(0, 1, 3), (1, 2, 3), (2, 1, 4), (3, 4, 1), (4, 3, 2)]);
        // A row without a positive is dropped.
        let lone = [0i64, 1, 1];
        let m3 = [0.0, 1.0, 2.0, 1.0, 0.0, 3.0, 2.0, 3.0, 0.0];
        assert_eq!(batch_hard_rows(&m3, 3, 3, &lone, &lone, false, true).unwrap(), vec![(1, 2, 0), (2, 1, 0)]);
        // Non-finite values defer to the tensor formulation.
        let mut bad = m3;
        bad[4] = f32::NAN;
        assert!(batch_hard_rows(&bad, 3, 3, &lone, &lone, false, true).is_none());
    }
}
