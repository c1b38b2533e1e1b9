//! Loss kernels: ContrastiveLoss, all-triplets TripletMarginLoss (both on Euclidean distances),
//! MultiSimilarityLoss and CircleLoss (on inner products). Each returns the loss's value with
//! what the gradient needs (pair weights or `∂v_i/∂s_ij`); [`SelfMatrix`] maps those back to
//! the embeddings.

use super::{SelfKind, SelfMatrix};
use crate::lanes::{LANES, NO_LABEL, Scratch, avx2_dispatch, chunks, chunks_indexed, dense_labels, fast_exp, is_label, lanes_max, lanes_sum, max};

/// One contrastive term's scan: `(sum of kept values, number kept, entries (i, j, ∂v/∂d) of
/// kept values whose relu is active)`.
pub(crate) type ContrastiveSide = (f64, u64, Vec<(u32, u32, f32)>);

/// Both contrastive terms over all pairs of a self batch in one pass: positives
/// (`d − pos_margin`) and negatives (`neg_margin − d`), relu'd, then filtered by `low < v < high`
/// — `[positives, negatives]`.
///
/// `e` (distances) may be built with `upper`: only the pairs `j > i` are read, each standing for both
/// orders (`(i, j)` and `(j, i)` have the same distance, so they count twice and their entry
/// carries twice the weight). One lane-wise pass per row (see [`crate::lanes`]); the entries of
/// a chunk are collected only when one of its lanes is active (few: most negatives are beyond
/// the margin).
pub(crate) fn contrastive_scan(e: &SelfMatrix, labels: &[i64], [pos_margin, neg_margin]: [f64; 2], low: Option<f64>, high: Option<f64>) -> [ContrastiveSide; 2] {
    debug_assert_eq!(e.kind, SelfKind::Euclidean);
    let (ids, _) = dense_labels(labels);
    let range = [low.map_or(f32::NEG_INFINITY, |v| v as f32), high.map_or(f32::INFINITY, |v| v as f32)];
    contrastive_fill(&e.values, &ids, [pos_margin as f32, neg_margin as f32], range)
}

avx2_dispatch!(fn contrastive_fill(dist: &[f32], ids: &[u32], margins: [f32; 2], range: [f32; 2]) -> [ContrastiveSide; 2] => contrastive_fill_imp);

/// The rows of [`contrastive_scan`] (`range`: the reducer's exclusive `(low, high)`, ±∞ when
/// absent): a lane-wise pass per row for the sums and counts, which also notes the chunks with
/// an active pair; only those chunks are revisited for the entries.
#[inline(always)]
fn contrastive_fill_imp(dist: &[f32], ids: &[u32], [pos_margin, neg_margin]: [f32; 2], [low, high]: [f32; 2]) -> [ContrastiveSide; 2] {
    let n = ids.len();
    let mut out: [ContrastiveSide; 2] = [(0.0, 0, Vec::new()), (0.0, 0, Vec::new())];
    let lab = ids;
    let mut hot: Vec<usize> = Vec::new();
    // (value, kept, active) of one lane on its side (positive: 0, negative: 1, neither: None).
    let lane = |d: f32, l: u32, li: u32| -> (f32, bool, bool, bool) {
        let pos = l == li;
        let side = pos || (l != li && is_label(l));
        let pre = if pos { d - pos_margin } else { neg_margin - d };
        let v = max(pre, 0.0);
        let keep = side && v > low && v < high;
        (if keep { v } else { 0.0 }, keep, keep && pre > 0.0, pos)
    };
    for i in 0..n {
        let li = ids[i];
        // Columns after the diagonal only.
        let row = &dist[i * n + i + 1..(i + 1) * n];
        let lab = &lab[i + 1..];
        let (mut sp, mut sn, mut kp, mut kn) = ([0f32; LANES], [0f32; LANES], [0u32; LANES], [0u32; LANES]);
        hot.clear();
        chunks_indexed(row, lab, |j0, d, l| {
            let mut act = 0u32;
            for k in 0..LANES {
                let (v, keep, on, pos) = lane(d[k], l[k], li);
                sp[k] += if pos { v } else { 0.0 };
                sn[k] += if pos { 0.0 } else { v };
                kp[k] += (keep & pos) as u32;
                kn[k] += (keep & !pos) as u32;
                act |= on as u32;
            }
            if act != 0 {
                hot.push(j0);
            }
        });
        for &j0 in &hot {
            for j in j0..(j0 + LANES).min(row.len()) {
                let (_, _, on, pos) = lane(row[j], lab[j], li);
                if on {
                    out[usize::from(!pos)].2.push((i as u32, (i + 1 + j) as u32, if pos { 2.0 } else { -2.0 }));
                }
            }
        }
        out[0].0 += 2.0 * lanes_sum(&sp);
        out[1].0 += 2.0 * lanes_sum(&sn);
        out[0].1 += 2 * kp.iter().map(|&c| c as u64).sum::<u64>();
        out[1].1 += 2 * kn.iter().map(|&c| c as u64).sum::<u64>();
    }
    out
}

/// Per-row values `v_i` of a loss with their derivatives `∂v_i/∂s_ij` (row-major `n × n`).
pub(crate) struct RowValues {
    pub values: Vec<f32>,
    /// `∂v_i/∂s_ij` (0 off the pairs).
    pub dv_ds: Scratch,
}

/// Per-row multi-similarity values over all pairs of a self batch of similarities `s`
/// (a [`SelfKind::Dot`] matrix): `v_i = log(1 + Σ_pos e^{α(base − s_ij)})/α +
/// log(1 + Σ_neg e^{β(s_ij − base)})/β` (a row without positives or negatives contributes 0 for
/// that part, as the reference's masked log-sum-exp), with `∂v_i/∂s_ij`.
///
/// Three vectorised passes per row: exponents and their maxima, shifted exponentials and their
/// sums, then the soft-max weights.
pub(crate) fn multi_similarity_rows(e: &SelfMatrix, labels: &[i64], alpha: f64, beta: f64, base: f64) -> RowValues {
    debug_assert_eq!(e.kind, SelfKind::Dot);
    let n = e.n;
    let (ids, counts) = dense_labels(labels);
    let mut rows = RowValues { values: vec![0f32; n], dv_ds: Scratch::zeroed(n * n) };
    multi_similarity_fill(&e.values, &ids, &counts, [alpha as f32, beta as f32, base as f32], 0, &mut rows.dv_ds, &mut rows.values);
    rows
}

avx2_dispatch!(fn multi_similarity_fill(dist: &[f32], ids: &[u32], counts: &[usize], params: [f32; 3], i0: usize, out: &mut [f32], values: &mut [f32]) -> () => multi_similarity_fill_imp);

/// Rows `i0..` of [`multi_similarity_rows`] (as many as `values` holds) into `out`, `values`.
#[inline(always)]
fn multi_similarity_fill_imp(dist: &[f32], ids: &[u32], counts: &[usize], params: [f32; 3], i0: usize, out: &mut [f32], values: &mut [f32]) {
    let n = ids.len();
    let mut lab = ids.to_vec();
    for (r, (out, value)) in out.chunks_mut(n).zip(values.iter_mut()).enumerate() {
        let i = i0 + r;
        let c = counts[ids[i] as usize];
        lab[i] = NO_LABEL;
        *value = multi_similarity_row(&dist[i * n..(i + 1) * n], &lab, ids[i], params, (c > 1, c < n), out);
        lab[i] = ids[i];
    }
}

/// One row of [`multi_similarity_rows`] (`lab`: the labels with [`NO_LABEL`] in the row's own
/// column, `li` the row's label): writes `∂v_i/∂s_ij` into `out`, returns `v_i`.
///
/// Three passes: exponents and their maxima, shifted exponentials and their sums, then the
/// soft-max weights.
#[inline(always)]
fn multi_similarity_row(row: &[f32], lab: &[u32], li: u32, [alpha, beta, base]: [f32; 3], (has_p, has_n): (bool, bool), out: &mut [f32]) -> f32 {
    // Maxima start at 0: the appended zero of the reference's `add_one`.
    let ([mp, mn], [zp, zn]) = two_part_exp(row, lab, li, 0.0, out, |pos, s| if pos { alpha * (base - s) } else { beta * (s - base) });
    let (zp, zn) = (zp + (-mp as f64).exp(), zn + (-mn as f64).exp());
    // d/ds of log(Σ e^{α(base−s)})/α is −softmax; of log(Σ e^{β(s−base)})/β is +softmax.
    let (ip, inn) = ((1.0 / zp) as f32, (1.0 / zn) as f32);
    chunks(row, lab, out, |_, l, o| {
        for k in 0..LANES {
            let (pos, neg) = (l[k] == li, l[k] != li && is_label(l[k]));
            o[k] *= if pos {
                -ip
            } else if neg {
                inn
            } else {
                0.0
            };
        }
    });
    let pos_part = if has_p { (mp as f64 + zp.ln()) / alpha as f64 } else { 0.0 };
    let neg_part = if has_n { (mn as f64 + zn.ln()) / beta as f64 } else { 0.0 };
    (pos_part + neg_part) as f32
}

/// The two soft-max parts of a row shared by [`multi_similarity_row`] and [`circle_row`]: with
/// `x_j = exponent(positive?, s_j)`, the maxima `m` of the positives' and the negatives' `x`
/// (starting from `init`) and the sums `Σ e^{x_j − m}` of each part; `out` holds `e^{x_j − m}`
/// (0 in the row's own column). Two lane-wise passes.
#[inline(always)]
fn two_part_exp(row: &[f32], lab: &[u32], li: u32, init: f32, out: &mut [f32], exponent: impl Fn(bool, f32) -> f32) -> ([f32; 2], [f64; 2]) {
    const NEG: f32 = f32::NEG_INFINITY;
    let (mut mp, mut mn) = ([init; LANES], [init; LANES]);
    chunks(row, lab, out, |r, l, o| {
        for k in 0..LANES {
            let (pos, neg) = (l[k] == li, l[k] != li && is_label(l[k]));
            let x = exponent(pos, r[k]);
            o[k] = x;
            mp[k] = max(if pos { x } else { NEG }, mp[k]);
            mn[k] = max(if neg { x } else { NEG }, mn[k]);
        }
    });
    let (mp, mn) = (lanes_max(&mp), lanes_max(&mn));
    let (mut zp, mut zn) = ([0f32; LANES], [0f32; LANES]);
    chunks(row, lab, out, |_, l, o| {
        for k in 0..LANES {
            let (pos, neg) = (l[k] == li, l[k] != li && is_label(l[k]));
            let v = fast_exp(o[k] - if pos { mp } else { mn });
            let v = if pos || neg { v } else { 0.0 };
            o[k] = v;
            zp[k] += if pos { v } else { 0.0 };
            zn[k] += if neg { v } else { 0.0 };
        }
    });
    ([mp, mn], [lanes_sum(&zp), lanes_sum(&zn)])
}

/// Per-row circle-loss values over all pairs of a self batch of similarities `s` (a
/// [`SelfKind::Dot`] matrix): with the detached weights `a_p = [1 + m − s]₊`, `a_n = [s + m]₊`,
/// logits `−γ a_p (s − (1 − m))` (positives) and `γ a_n (s − m)` (negatives),
/// `v_i = softplus(lse_pos + lse_neg)` for rows with both kinds of pair (0 otherwise), and
/// `∂v_i/∂s_ij` (the weights are constants, as in the reference).
pub(crate) fn circle_rows(e: &SelfMatrix, labels: &[i64], m: f64, gamma: f64) -> RowValues {
    debug_assert_eq!(e.kind, SelfKind::Dot);
    let n = e.n;
    let (ids, counts) = dense_labels(labels);
    let mut rows = RowValues { values: vec![0f32; n], dv_ds: Scratch::zeroed(n * n) };
    circle_fill(&e.values, &ids, &counts, [m as f32, gamma as f32], 0, &mut rows.dv_ds, &mut rows.values);
    rows
}

avx2_dispatch!(fn circle_fill(dist: &[f32], ids: &[u32], counts: &[usize], params: [f32; 2], i0: usize, out: &mut [f32], values: &mut [f32]) -> () => circle_fill_imp);

/// Rows `i0..` of [`circle_rows`] (as many as `values` holds) into `out`, `values`.
#[inline(always)]
fn circle_fill_imp(dist: &[f32], ids: &[u32], counts: &[usize], [m, gamma]: [f32; 2], i0: usize, out: &mut [f32], values: &mut [f32]) {
    let n = ids.len();
    let mut lab = ids.to_vec();
    for (r, (out, value)) in out.chunks_mut(n).zip(values.iter_mut()).enumerate() {
        let i = i0 + r;
        let c = counts[ids[i] as usize];
        if c > 1 && c < n {
            lab[i] = NO_LABEL;
            *value = circle_row(&dist[i * n..(i + 1) * n], &lab, ids[i], m, gamma, out);
            lab[i] = ids[i];
        }
    }
}

/// One row of [`circle_rows`] with positives and negatives (`lab`, `li` as for
/// [`multi_similarity_row`]): writes `∂v_i/∂s_ij` into `out`, returns `v_i`.
#[inline(always)]
fn circle_row(row: &[f32], lab: &[u32], li: u32, m: f32, gamma: f32, out: &mut [f32]) -> f32 {
    const NEG: f32 = f32::NEG_INFINITY;
    // The logit of a similarity and its derivative (the weight a is detached).
    let logit = |pos: bool, s: f32| -> (f32, f32) {
        let a = if pos { 1.0 + m - s } else { s + m };
        let a = max(a, 0.0);
        if pos { (-gamma * a * (s - (1.0 - m)), -gamma * a) } else { (gamma * a * (s - m), gamma * a) }
    };
    let ([mp, mn], [zp, zn]) = two_part_exp(row, lab, li, NEG, out, |pos, s| logit(pos, s).0);
    let x = (mp as f64 + zp.ln()) + (mn as f64 + zn.ln());
    // torch's softplus (threshold 20) and its derivative.
    let (sp, dsp) = if x > 20.0 { (x, 1.0) } else { (x.exp().ln_1p(), 1.0 / (1.0 + (-x).exp())) };
    let (wp, wn) = ((dsp / zp) as f32, (dsp / zn) as f32);
    chunks(row, lab, out, |r, l, o| {
        for k in 0..LANES {
            let (pos, neg) = (l[k] == li, l[k] != li && is_label(l[k]));
            o[k] *= logit(pos, r[k]).1
                * if pos {
                    wp
                } else if neg {
                    wn
                } else {
                    0.0
                };
        }
    });
    sp as f32
}

/// All triplets `(a, p, n)` of a self batch of distances (`p` a positive of `a`, `n` a negative):
/// `l = [d_ap − d_an + margin]₊`, filtered by `low < l < high`. Returns `(sum of kept l, number
/// kept, entries (i, j, ∂Σl/∂d_ij) of the kept triplets whose relu is active)`.
///
/// For each anchor the negatives are sorted by distance once; along that order `l` never
/// increases (rounding is monotonic), so for each positive the scan stops at the first `l` at or
/// below `low` — or, without `low`, counts the remaining zeros at once. The work is then about
/// the number of active triplets plus O(B² log B), not O(B³).
pub(crate) fn triplet_scan(e: &SelfMatrix, labels: &[i64], margin: f64, low: Option<f64>, high: Option<f64>) -> (f64, u64, Vec<(u32, u32, f32)>) {
    debug_assert_eq!(e.kind, SelfKind::Euclidean);
    let n = e.n;
    let margin = margin as f32;
    let (low, high) = (low.map(|v| v as f32), high.map(|v| v as f32));
    let (mut sum, mut kept, mut entries) = (0f64, 0u64, Vec::new());
    let mut negs: Vec<(f32, u32)> = Vec::with_capacity(n);
    let mut neg_count = vec![0f32; n];
    for a in 0..n {
        let row = &e.values[a * n..(a + 1) * n];
        let la = labels[a];
        negs.clear();
        negs.extend(row.iter().zip(labels).enumerate().filter(|(_, (_, l))| **l != la).map(|(j, (&d, _))| (d, j as u32)));
        if negs.is_empty() {
            continue;
        }
        negs.sort_by(|x, y| x.0.total_cmp(&y.0));
        neg_count.iter_mut().for_each(|c| *c = 0.0);
        for (p, (&dap, &lp)) in row.iter().zip(labels).enumerate() {
            if lp != la || p == a {
                continue;
            }
            let mut active = 0u32;
            for (t, &(dan, j)) in negs.iter().enumerate() {
                // As the tensor form: (d_ap − d_an) + margin, then relu.
                let v = dap - dan + margin;
                let l = v.max(0.0);
                if low.is_some_and(|lo| l <= lo) {
                    break;
                }
                if v <= 0.0 {
                    // Every remaining l is 0 (and low is None here, or 0 < low would have broken).
                    if high.is_none_or(|hi| 0.0 < hi) {
                        kept += (negs.len() - t) as u64;
                    }
                    break;
                }
                if high.is_some_and(|hi| l >= hi) {
                    continue;
                }
                sum += l as f64;
                kept += 1;
                active += 1;
                neg_count[j as usize] += 1.0;
            }
            if active > 0 {
                entries.push((a as u32, p as u32, active as f32));
            }
        }
        for (j, &c) in neg_count.iter().enumerate() {
            if c > 0.0 {
                entries.push((a as u32, j as u32, -c));
            }
        }
    }
    (sum, kept, entries)
}
