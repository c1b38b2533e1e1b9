//! Fused CPU row scans over a detached distance matrix.
//!
//! Why: at B = 1024 a miner or loss written as a chain of tensor ops (label masks, two
//! `masked_fill`s, two reductions, `any`, `nonzero`, gathers) makes ~10 passes over the B×B
//! matrix and allocates a temporary for each, which costs more than the distance GEMM itself.
//! One Rust pass per row that reads the distances and the labels and keeps what it needs does the
//! same work in a single sweep. Kernels here: BatchHardMiner, MultiSimilarityMiner,
//! BatchEasyHardMiner (default strategies), ContrastiveLoss, MultiSimilarityLoss, CircleLoss and
//! all-triplets TripletMarginLoss; the losses return their value with the gradient with respect to
//! the embeddings computed in closed form. These kernels are used only for contiguous float32 CPU tensors
//! (every other case, CUDA included, keeps the tensor formulation) and give the same indices as
//! the tensor formulation, ties included (first index wins, as `max`/`min` along a dimension).
//!
//! The kernels (normalisation, the B×B GEMMs through the `gemm` crate, the scans) are
//! single-threaded on purpose and make no libtorch call in between: every libtorch op above
//! ~32k elements is an OpenMP parallel region that ends in a barrier, and on a shared 2-core
//! machine a descheduled worker stalls that barrier — measured at B = 1024 on this project's
//! machine under load: BatchHardMiner 140 ms with 2 OpenMP threads against 7 ms with 1, the
//! time in libgomp's spin loop. One thread does the B = 1024 distances in about 2 ms.

use tch::{Device, Kind, Tensor};

use crate::lanes::{LANES, NO_LABEL, PAD, Scratch, avx2_dispatch, chunks, chunks_indexed, dense_labels, fast_exp, is_label, lanes_max, lanes_sum, max};

/// Calls `f` on the elements of a contiguous float32 CPU tensor, read in place (no libtorch
/// op, so no OpenMP region); `None` for any other tensor.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let numel = t.numel();
    if numel == 0 {
        return Some(f(&[]));
    }
    let ptr = t.data_ptr() as *const f32;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a contiguous float32 CPU tensor stores `numel` f32 values from `data_ptr`; `t` is
    // borrowed for the whole call, so the storage outlives the slice, and nothing here writes it.
    let data = unsafe { std::slice::from_raw_parts(ptr, numel) };
    Some(f(data))
}

/// The matrix as a row-major `f32` vector, when it is a 2-D float32 CPU tensor; `None` otherwise.
pub(crate) fn cpu_f32_matrix(mat: &Tensor) -> Option<(Vec<f32>, usize, usize)> {
    if mat.device() != Device::Cpu || mat.kind() != Kind::Float || mat.dim() != 2 {
        return None;
    }
    let (n, m) = (mat.size()[0] as usize, mat.size()[1] as usize);
    let v = match with_cpu_f32(mat, |s| s.to_vec()) {
        Some(v) => v,
        None => Vec::<f32>::try_from(mat.contiguous().view([-1])).ok()?,
    };
    Some((v, n, m))
}

/// The labels as `i64`s, when they are a 1-D CPU integer tensor; `None` otherwise.
pub(crate) fn cpu_labels(labels: &Tensor) -> Option<Vec<i64>> {
    if labels.device() != Device::Cpu || labels.dim() != 1 || labels.is_floating_point() {
        return None;
    }
    Vec::<i64>::try_from(labels.to_kind(Kind::Int64).contiguous()).ok()
}

/// `out (m × n) = a (m × k) · b (k × n)` with row strides `out_rs`, `a_rs`, `b_rs` and column
/// strides 1, or with `b` read transposed (`b_t`: `b` is `n × k` with row stride `b_rs`);
/// single-threaded.
///
/// # Safety
/// Each pointer must cover its matrix: `out` `(m−1)·out_rs + n` elements, `a` `(m−1)·a_rs + k`,
/// `b` `(k−1)·b_rs + n` (or `(n−1)·b_rs + k` when `b_t`).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(out: *mut f32, out_rs: usize, a: *const f32, a_rs: usize, b: *const f32, b_rs: usize, b_t: bool, [m, n, k]: [usize; 3]) {
    let (b_cs, b_rs) = if b_t { (b_rs as isize, 1) } else { (1, b_rs as isize) };
    // SAFETY: the caller's contract covers every element the kernel touches.
    unsafe { gemm::gemm(m, n, k, out, 1, out_rs as isize, false, a, 1, a_rs as isize, b, b_cs, b_rs, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None) }
}

/// Rows per block of [`gram`]'s upper-triangle form.
const UPPER_BLOCK: usize = 256;

/// `x xᵀ` for row-major `x (n × d)` as a row-major `n × n` matrix; with `upper`, only the
/// entries `j ≥ i` are guaranteed (blocks of rows from their first row on: about 60 % of the
/// flops at B = 1024; the rest of the matrix is left 0). Mirroring the upper half into a full
/// matrix would cost what it saves, so only passes that read `j > i` use it.
fn gram(x: &[f32], n: usize, d: usize, upper: bool) -> Scratch {
    assert!(x.len() == n * d, "gram: x is not n × d");
    let mut out = Scratch::zeroed(n * n);
    if !upper {
        // SAFETY: out is n × n, x is n × d (read as lhs and, transposed, as rhs).
        unsafe { gemm_raw(out.as_mut_ptr(), n, x.as_ptr(), d, x.as_ptr(), d, true, [n, n, d]) };
        return out;
    }
    for (b, rows) in out.chunks_mut(UPPER_BLOCK * n).enumerate() {
        let (i0, m) = (b * UPPER_BLOCK, rows.len() / n);
        // SAFETY: rows i0..i0+m, columns i0..n lie in `rows` (row stride n); x's rows i0.. give
        // the m lhs rows and the n − i0 rhs rows (read transposed), d values each.
        unsafe { gemm_raw(rows.as_mut_ptr().add(i0), n, x.as_ptr().add(i0 * d), d, x.as_ptr().add(i0 * d), d, true, [m, n - i0, d]) };
    }
    out
}

/// `out (m × n) = a (m × k) · b (k × n)`, all row-major.
fn gemm_ab(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize) {
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "gemm_ab: buffers too small");
    // SAFETY: the assertion makes every pointer cover its matrix.
    unsafe { gemm_raw(out.as_mut_ptr(), n, a.as_ptr(), k, b.as_ptr(), n, false, [m, n, k]) };
}

/// Numbers of positive pairs (same label, `i ≠ j`) and negative pairs of a self batch.
pub(crate) fn pair_counts(labels: &[i64]) -> (i64, i64) {
    let mut sorted = labels.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as i64;
    let same: i64 = sorted.chunk_by(|a, b| a == b).map(|c| (c.len() as i64).pow(2)).sum();
    (same - n, n * n - same)
}

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

/// Euclidean distances of a self batch, computed once on the CPU for the fused pair losses:
/// the (optionally L2-normalised) rows and the `n × n` distance matrix, with torch's `cdist`
/// conventions (`sqrt(max(‖a‖² + ‖b‖² − 2a·b, 1e-30))`, as its matrix-multiply path).
pub(crate) struct EuclideanSelf {
    /// Rows compared (normalised when asked), row-major `n × d`.
    pub xn: Vec<f32>,
    /// `1 / max(‖x_i‖, 1e-12)` of the raw rows (1 when not normalising).
    pub inv_norm: Vec<f32>,
    /// Whether a row's norm was below the normalisation epsilon (its Jacobian is `I / 1e-12`).
    pub tiny: Vec<bool>,
    /// Distances (or inner products, see [`EuclideanSelf::gram`]), row-major `n × n`.
    pub dist: Scratch,
    pub n: usize,
    pub d: usize,
    pub normalize: bool,
}

/// Epsilon of torch's `F.normalize` (and of [`crate::distance::normalize`]).
const NORM_EPS: f64 = 1e-12;

impl EuclideanSelf {
    /// Computes the distances of the rows of `x` (float32 CPU `n × d`); `None` otherwise.
    pub(crate) fn new(x: &Tensor, normalize: bool) -> Option<Self> {
        Self::distances(x, normalize, false)
    }

    /// As [`EuclideanSelf::new`], with only the distances `j > i` computed (see [`gram`]): for
    /// passes over unordered pairs.
    pub(crate) fn upper(x: &Tensor, normalize: bool) -> Option<Self> {
        Self::distances(x, normalize, true)
    }

    fn distances(x: &Tensor, normalize: bool, upper: bool) -> Option<Self> {
        let mut e = Self::gram_of(x, normalize, upper)?;
        let sq: Vec<f32> = e.xn.chunks(e.d).map(|r| r.iter().map(|v| v * v).sum()).collect();
        e.dist.chunks_mut(e.n).enumerate().for_each(|(i, row)| {
            let from = if upper { i } else { 0 };
            for (v, &s) in row[from..].iter_mut().zip(&sq[from..]) {
                *v = (sq[i] + s - 2.0 * *v).max(1e-30).sqrt();
            }
        });
        Some(e)
    }

    /// As [`EuclideanSelf::new`] but `dist` holds the inner products `x̂_i · x̂_j` (cosine
    /// similarity when normalising, dot product otherwise).
    pub(crate) fn gram(x: &Tensor, normalize: bool) -> Option<Self> {
        Self::gram_of(x, normalize, false)
    }

    fn gram_of(x: &Tensor, normalize: bool, upper: bool) -> Option<Self> {
        if x.device() != Device::Cpu || x.kind() != Kind::Float || x.dim() != 2 {
            return None;
        }
        let (raw, n, d) = cpu_f32_matrix(&x.detach())?;
        if n == 0 || d == 0 {
            return None;
        }
        let mut xn = raw;
        let mut inv_norm = vec![1f32; n];
        let mut tiny = vec![false; n];
        if normalize {
            // torch's F.normalize: x / max(‖x‖, ε).
            for (i, row) in xn.chunks_mut(d).enumerate() {
                let norm = row.iter().map(|&v| v * v).sum::<f32>().sqrt() as f64;
                tiny[i] = norm < NORM_EPS;
                let denom = norm.max(NORM_EPS) as f32;
                row.iter_mut().for_each(|v| *v /= denom);
                inv_norm[i] = (1.0 / norm.max(NORM_EPS)) as f32;
            }
        }
        let dist = gram(&xn, n, d, upper);
        Some(EuclideanSelf { xn, inv_norm, tiny, dist, n, d, normalize })
    }

    /// The gradient with respect to the raw rows of `Σ_ij w_i c_ij (x̂_i · x̂_j)` for a dense
    /// row-major `n × n` coefficient matrix `c` and per-row weights `w` (for a
    /// [`EuclideanSelf::gram`]): `S x̂` with the symmetric `S = diag(w) C + Cᵀ diag(w)` (built
    /// tile by tile), then through the normalisation.
    pub(crate) fn grad_from_gram_weights(&self, c: &[f32], w: &[f32]) -> Vec<f32> {
        let (n, d) = (self.n, self.d);
        assert!(c.len() == n * n && w.len() == n, "grad_from_gram_weights: c is not n × n");
        let mut sym = Scratch::zeroed(n * n);
        // Tile by tile: the transposed tile of C goes through a small buffer first, so that both
        // reads and writes run along rows.
        const T: usize = 32;
        let mut ct = [[0f32; T]; T];
        for r0 in (0..n).step_by(T) {
            let rows = T.min(n - r0);
            for c0 in (0..n).step_by(T) {
                let cols = T.min(n - c0);
                for (a, ct_col) in (c0..c0 + cols).zip(0..) {
                    for (b, v) in c[a * n + r0..a * n + r0 + rows].iter().enumerate() {
                        ct[b][ct_col] = *v;
                    }
                }
                for (b, r) in (r0..r0 + rows).enumerate() {
                    let (srow, crow, wr) = (&mut sym[r * n + c0..r * n + c0 + cols], &c[r * n + c0..r * n + c0 + cols], w[r]);
                    for (((s, &cv), &ctv), &wc) in srow.iter_mut().zip(crow).zip(&ct[b][..cols]).zip(&w[c0..c0 + cols]) {
                        *s = wr * cv + wc * ctv;
                    }
                }
            }
        }
        let mut g = vec![0f32; n * d];
        gemm_ab(&mut g, &sym, &self.xn, n, d, n);
        self.normalize_backward(&mut g);
        g
    }

    /// Maps a gradient with respect to x̂ to one with respect to x (in place).
    fn normalize_backward(&self, g: &mut [f32]) {
        if !self.normalize {
            return;
        }
        let d = self.d;
        // Through x̂ = x / max(‖x‖, ε): (g − x̂ (x̂·g)) / ‖x‖, or g / ε below ε.
        g.chunks_mut(d).enumerate().for_each(|(i, gi)| {
            if self.tiny[i] {
                gi.iter_mut().for_each(|v| *v = (*v as f64 / NORM_EPS) as f32);
                return;
            }
            let xi = &self.xn[i * d..(i + 1) * d];
            let dot: f32 = xi.iter().zip(gi.iter()).map(|(a, b)| a * b).sum();
            for (v, &x) in gi.iter_mut().zip(xi) {
                *v = (*v - x * dot) * self.inv_norm[i];
            }
        });
    }

    /// The gradient with respect to the raw rows of `Σ a_ij · d_ij` over the given entries
    /// `(i, j, a_ij)` (j ≠ i), row-major `n × d`.
    /// `sum / divisor` as a scalar whose gradient with respect to `embeddings` is that of the
    /// pair values behind `entries` (weights `∂value/∂d_ij`), each divided by `divisor`.
    ///
    /// One BLAS dot attaches the gradient: `value + a − a.detach()` with `a = x · g`.
    pub(crate) fn attach_pair_weights(&self, embeddings: &Tensor, sum: f64, divisor: f64, entries: Vec<(u32, u32, f32)>) -> Tensor {
        let inv = (1.0 / divisor) as f32;
        let scaled: Vec<(u32, u32, f32)> = entries.into_iter().map(|(i, j, a)| (i, j, a * inv)).collect();
        let g = self.grad_from_pair_weights(&scaled);
        let g = Tensor::from_slice(&g).view([self.n as i64, self.d as i64]);
        let attach = embeddings.reshape([-1]).dot(&g.reshape([-1]));
        Tensor::from((sum / divisor) as f32) + &attach - attach.detach()
    }

    pub(crate) fn grad_from_pair_weights(&self, entries: &[(u32, u32, f32)]) -> Vec<f32> {
        let (n, d) = (self.n, self.d);
        // ∂d_ij/∂x̂_i = (x̂_i − x̂_j) / d_ij, and the opposite for x̂_j.
        let mut g = vec![0f32; n * d];
        if entries.len() <= 16 * n {
            for &(i, j, a) in entries {
                let (i, j) = (i as usize, j as usize);
                let w = a / self.dist[i * n + j];
                for t in 0..d {
                    let diff = w * (self.xn[i * d + t] - self.xn[j * d + t]);
                    g[i * d + t] += diff;
                    g[j * d + t] -= diff;
                }
            }
        } else {
            // Dense: with W_ij = a_ij / d_ij and M = W + Wᵀ, g = diag(M·1) x̂ − M x̂.
            let mut w = Scratch::zeroed(n * n);
            for &(i, j, a) in entries {
                let (i, j) = (i as usize, j as usize);
                let v = a / self.dist[i * n + j];
                w[i * n + j] += v;
                w[j * n + i] += v;
            }
            // g_i = (Σ_j M_ij) x̂_i − (M x̂)_i
            gemm_ab(&mut g, &w, &self.xn, n, d, n);
            for (i, gi) in g.chunks_mut(d).enumerate() {
                let rowsum: f32 = w[i * n..(i + 1) * n].iter().sum();
                for (v, &x) in gi.iter_mut().zip(&self.xn[i * d..(i + 1) * d]) {
                    *v = rowsum * x - *v;
                }
            }
        }
        self.normalize_backward(&mut g);
        g
    }
}

/// One contrastive term's scan: `(sum of kept values, number kept, entries (i, j, ∂v/∂d) of
/// kept values whose relu is active)`.
pub(crate) type ContrastiveSide = (f64, u64, Vec<(u32, u32, f32)>);

/// Both contrastive terms over all pairs of a self batch in one pass: positives
/// (`d − pos_margin`) and negatives (`neg_margin − d`), relu'd, then filtered by `low < v < high`
/// — `[positives, negatives]`.
///
/// `e` may be [`EuclideanSelf::upper`]: only the pairs `j > i` are read, each standing for both
/// orders (`(i, j)` and `(j, i)` have the same distance, so they count twice and their entry
/// carries twice the weight). One lane-wise pass per row (see [`crate::lanes`]); the entries of
/// a chunk are collected only when one of its lanes is active (few: most negatives are beyond
/// the margin).
pub(crate) fn contrastive_scan(e: &EuclideanSelf, labels: &[i64], [pos_margin, neg_margin]: [f64; 2], low: Option<f64>, high: Option<f64>) -> [ContrastiveSide; 2] {
    let (ids, _) = dense_labels(labels);
    let range = [low.map_or(f32::NEG_INFINITY, |v| v as f32), high.map_or(f32::INFINITY, |v| v as f32)];
    contrastive_fill(&e.dist, &ids, [pos_margin as f32, neg_margin as f32], range)
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
/// (a [`EuclideanSelf::gram`]): `v_i = log(1 + Σ_pos e^{α(base − s_ij)})/α +
/// log(1 + Σ_neg e^{β(s_ij − base)})/β` (a row without positives or negatives contributes 0 for
/// that part, as the reference's masked log-sum-exp), with `∂v_i/∂s_ij`.
///
/// Three vectorised passes per row: exponents and their maxima, shifted exponentials and their
/// sums, then the soft-max weights.
pub(crate) fn multi_similarity_rows(e: &EuclideanSelf, labels: &[i64], alpha: f64, beta: f64, base: f64) -> RowValues {
    let n = e.n;
    let (ids, counts) = dense_labels(labels);
    let mut rows = RowValues { values: vec![0f32; n], dv_ds: Scratch::zeroed(n * n) };
    multi_similarity_fill(&e.dist, &ids, &counts, [alpha as f32, beta as f32, base as f32], 0, &mut rows.dv_ds, &mut rows.values);
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

/// Per-row circle-loss values over all pairs of a self batch of similarities `s` (a
/// [`EuclideanSelf::gram`]): with the detached weights `a_p = [1 + m − s]₊`, `a_n = [s + m]₊`,
/// logits `−γ a_p (s − (1 − m))` (positives) and `γ a_n (s − m)` (negatives),
/// `v_i = softplus(lse_pos + lse_neg)` for rows with both kinds of pair (0 otherwise), and
/// `∂v_i/∂s_ij` (the weights are constants, as in the reference).
pub(crate) fn circle_rows(e: &EuclideanSelf, labels: &[i64], m: f64, gamma: f64) -> RowValues {
    let n = e.n;
    let (ids, counts) = dense_labels(labels);
    let mut rows = RowValues { values: vec![0f32; n], dv_ds: Scratch::zeroed(n * n) };
    circle_fill(&e.dist, &ids, &counts, [m as f32, gamma as f32], 0, &mut rows.dv_ds, &mut rows.values);
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
pub(crate) fn triplet_scan(e: &EuclideanSelf, labels: &[i64], margin: f64, low: Option<f64>, high: Option<f64>) -> (f64, u64, Vec<(u32, u32, f32)>) {
    let n = e.n;
    let margin = margin as f32;
    let (low, high) = (low.map(|v| v as f32), high.map(|v| v as f32));
    let (mut sum, mut kept, mut entries) = (0f64, 0u64, Vec::new());
    let mut negs: Vec<(f32, u32)> = Vec::with_capacity(n);
    let mut neg_count = vec![0f32; n];
    for a in 0..n {
        let row = &e.dist[a * n..(a + 1) * n];
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
