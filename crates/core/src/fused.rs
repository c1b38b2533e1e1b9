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

/// `out (m × n) = a (m × k) · b (n × k)ᵀ`, all row-major; single-threaded (see the module docs).
fn gemm_abt(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize) {
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= n * k, "gemm_abt: buffers too small");
    // SAFETY: the assertion makes every pointer cover its extent: out is m×n row-major (row
    // stride n), a is m×k row-major, b is n×k row-major read as the k×n matrix bᵀ (column
    // stride k, row stride 1).
    unsafe {
        gemm::gemm(m, n, k, out.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), k as isize, 1, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
    }
}

/// `out (m × n) = a (m × k) · b (k × n)`, all row-major; single-threaded.
fn gemm_ab(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize) {
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "gemm_ab: buffers too small");
    // SAFETY: the assertion makes every pointer cover its extent; all three are row-major
    // (column stride 1, row strides n, k and n).
    unsafe {
        gemm::gemm(m, n, k, out.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
    }
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
pub(crate) fn batch_hard_rows(
    mat: &[f32],
    n: usize,
    m: usize,
    labels: &[i64],
    ref_labels: &[i64],
    inverted: bool,
    is_self: bool,
) -> Option<Vec<(i64, i64, i64)>> {
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
    pub dist: Vec<f32>,
    pub n: usize,
    pub d: usize,
    pub normalize: bool,
}

/// Epsilon of torch's `F.normalize` (and of [`crate::distance::normalize`]).
const NORM_EPS: f64 = 1e-12;

impl EuclideanSelf {
    /// Computes the distances of the rows of `x` (float32 CPU `n × d`); `None` otherwise.
    pub(crate) fn new(x: &Tensor, normalize: bool) -> Option<Self> {
        let mut e = Self::gram(x, normalize)?;
        let sq: Vec<f32> = e.xn.chunks(e.d).map(|r| r.iter().map(|v| v * v).sum()).collect();
        e.dist.chunks_mut(e.n).enumerate().for_each(|(i, row)| {
            for (v, &s) in row.iter_mut().zip(&sq) {
                *v = (sq[i] + s - 2.0 * *v).max(1e-30).sqrt();
            }
        });
        Some(e)
    }

    /// As [`EuclideanSelf::new`] but `dist` holds the inner products `x̂_i · x̂_j` (cosine
    /// similarity when normalising, dot product otherwise).
    pub(crate) fn gram(x: &Tensor, normalize: bool) -> Option<Self> {
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
        let mut dist = vec![0f32; n * n];
        gemm_abt(&mut dist, &xn, &xn, n, n, d);
        Some(EuclideanSelf { xn, inv_norm, tiny, dist, n, d, normalize })
    }

    /// The gradient with respect to the raw rows of `Σ c_ij · (x̂_i · x̂_j)` for a dense
    /// row-major `n × n` coefficient matrix `c` (for a [`EuclideanSelf::gram`]).
    pub(crate) fn grad_from_gram_weights(&self, c: &[f32]) -> Vec<f32> {
        let n = self.n;
        // (C + Cᵀ) x̂
        let mut sym = c.to_vec();
        for i in 0..n {
            for j in 0..i {
                let v = c[i * n + j] + c[j * n + i];
                sym[i * n + j] = v;
                sym[j * n + i] = v;
            }
            sym[i * n + i] = 2.0 * c[i * n + i];
        }
        let mut g = vec![0f32; n * self.d];
        gemm_ab(&mut g, &sym, &self.xn, n, self.d, n);
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
            let mut w = vec![0f32; n * n];
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

/// One contrastive term over all pairs of a self batch: positives (`d − pos_margin`) or
/// negatives (`neg_margin − d`), relu'd, then filtered by `low < v < high`.
/// Returns `(sum of kept values, number kept, entries (i, j, ∂v/∂d) of kept values whose
/// relu is active)`.
pub(crate) fn contrastive_scan(
    e: &EuclideanSelf,
    labels: &[i64],
    positive: bool,
    margin: f64,
    low: Option<f64>,
    high: Option<f64>,
) -> (f64, u64, Vec<(u32, u32, f32)>) {
    let n = e.n;
    let margin = margin as f32;
    let (low, high) = (low.map(|v| v as f32), high.map(|v| v as f32));
    let sign = if positive { 1.0f32 } else { -1.0 };
    let parts: Vec<(f64, u64, Vec<(u32, u32, f32)>)> = (0..n)
        .map(|i| {
            let row = &e.dist[i * n..(i + 1) * n];
            let li = labels[i];
            let (mut sum, mut count, mut active) = (0f64, 0u64, Vec::new());
            for (j, (&dij, &lj)) in row.iter().zip(labels).enumerate() {
                if (lj == li) != positive || j == i {
                    continue;
                }
                let pre = if positive { dij - margin } else { margin - dij };
                let v = pre.max(0.0);
                if low.is_some_and(|l| v <= l) || high.is_some_and(|h| v >= h) {
                    continue;
                }
                sum += v as f64;
                count += 1;
                if pre > 0.0 {
                    active.push((i as u32, j as u32, sign));
                }
            }
            (sum, count, active)
        })
        .collect();
    let mut total = (0f64, 0u64, Vec::new());
    for (s, c, a) in parts {
        total.0 += s;
        total.1 += c;
        total.2.extend(a);
    }
    total
}

/// Per-row values `v_i` of a loss with their derivatives `∂v_i/∂s_ij` (row-major `n × n`).
pub(crate) struct RowValues {
    pub values: Vec<f32>,
    /// `∂v_i/∂s_ij` (0 off the pairs).
    pub dv_ds: Vec<f32>,
}

/// Per-row multi-similarity values over all pairs of a self batch of similarities `s`
/// (a [`EuclideanSelf::gram`]): `v_i = log(1 + Σ_pos e^{α(base − s_ij)})/α +
/// log(1 + Σ_neg e^{β(s_ij − base)})/β` (a row without positives or negatives contributes 0 for
/// that part, as the reference's masked log-sum-exp), with `∂v_i/∂s_ij`.

pub(crate) fn multi_similarity_rows(e: &EuclideanSelf, labels: &[i64], alpha: f64, beta: f64, base: f64) -> RowValues {
    let n = e.n;
    let (alpha, beta, base) = (alpha as f32, beta as f32, base as f32);
    let mut dv_ds = vec![0f32; n * n];
    let mut values = vec![0f32; n];
    dv_ds.chunks_mut(n).zip(values.iter_mut()).enumerate().for_each(|(i, (out, value))| {
        let row = &e.dist[i * n..(i + 1) * n];
        let li = labels[i];
        let x = |j: usize, s: f32| if labels[j] == li { alpha * (base - s) } else { beta * (s - base) };
        // Maxima of each part, with the appended zero of the reference's `add_one`.
        let (mut mp, mut mn, mut has_p, mut has_n) = (0f32, 0f32, false, false);
        for (j, &s) in row.iter().enumerate() {
            if j == i {
                continue;
            }
            if labels[j] == li {
                has_p = true;
                mp = mp.max(x(j, s));
            } else {
                has_n = true;
                mn = mn.max(x(j, s));
            }
        }
        let (mut zp, mut zn) = ((-mp as f64).exp(), (-mn as f64).exp());
        for (j, (&s, o)) in row.iter().zip(out.iter_mut()).enumerate() {
            if j == i {
                continue;
            }
            let pos = labels[j] == li;
            let v = (x(j, s) - if pos { mp } else { mn }).exp();
            *o = v;
            if pos { zp += v as f64 } else { zn += v as f64 }
        }
        // d/ds of log(Σ e^{α(base−s)})/α is −softmax; of log(Σ e^{β(s−base)})/β is +softmax.
        let (ip, inn) = ((1.0 / zp) as f32, (1.0 / zn) as f32);
        for (j, o) in out.iter_mut().enumerate() {
            if j != i {
                *o *= if labels[j] == li { -ip } else { inn };
            }
        }
        let pos_part = if has_p { (mp as f64 + zp.ln()) / alpha as f64 } else { 0.0 };
        let neg_part = if has_n { (mn as f64 + zn.ln()) / beta as f64 } else { 0.0 };
        *value = (pos_part + neg_part) as f32;
    });
    RowValues { values, dv_ds }
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
    let (m, gamma) = (m as f32, gamma as f32);
    let mut dv_ds = vec![0f32; n * n];
    let mut values = vec![0f32; n];
    for (i, (out, value)) in dv_ds.chunks_mut(n).zip(values.iter_mut()).enumerate() {
        let row = &e.dist[i * n..(i + 1) * n];
        let li = labels[i];
        // logit and d logit / ds of entry j (None on the diagonal).
        let logit = |j: usize, s: f32| -> (f32, f32) {
            if labels[j] == li {
                let a = (1.0 + m - s).max(0.0);
                (-gamma * a * (s - (1.0 - m)), -gamma * a)
            } else {
                let a = (s + m).max(0.0);
                (gamma * a * (s - m), gamma * a)
            }
        };
        let (mut mp, mut mn, mut has_p, mut has_n) = (f32::NEG_INFINITY, f32::NEG_INFINITY, false, false);
        for (j, &s) in row.iter().enumerate() {
            if j == i {
                continue;
            }
            let (l, _) = logit(j, s);
            if labels[j] == li {
                has_p = true;
                mp = mp.max(l);
            } else {
                has_n = true;
                mn = mn.max(l);
            }
        }
        if !(has_p && has_n) {
            continue;
        }
        let (mut zp, mut zn) = (0f64, 0f64);
        for (j, (&s, o)) in row.iter().zip(out.iter_mut()).enumerate() {
            if j == i {
                continue;
            }
            let pos = labels[j] == li;
            let v = (logit(j, s).0 - if pos { mp } else { mn }).exp();
            *o = v;
            if pos { zp += v as f64 } else { zn += v as f64 }
        }
        let x = (mp as f64 + zp.ln()) + (mn as f64 + zn.ln());
        // torch's softplus (threshold 20) and its derivative.
        let (sp, dsp) = if x > 20.0 { (x, 1.0) } else { (x.exp().ln_1p(), 1.0 / (1.0 + (-x).exp())) };
        *value = sp as f32;
        let (wp, wn) = ((dsp / zp) as f32, (dsp / zn) as f32);
        for (j, (o, &s)) in out.iter_mut().zip(row).enumerate() {
            if j != i {
                let pos = labels[j] == li;
                *o *= logit(j, s).1 * if pos { wp } else { wn };
            }
        }
    }
    RowValues { values, dv_ds }
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

/// One row's pick of [`batch_easy_hard_rows`]: among the entries where `keep` holds, the
/// largest (as the tensor form's `(m · mask).max`, whose masked-out entries count as 0) or the
/// smallest (masked-out entries filled with `f32::MAX`), first index on ties.
/// Returns `(value, index, found)`.
fn pick_row(row: &[f32], keep: impl Fn(usize, f32) -> bool, largest: bool) -> (f32, usize, bool) {
    let (mut best, mut idx, mut found) = (0f32, 0usize, false);
    for (j, &v) in row.iter().enumerate() {
        let k = keep(j, v);
        found |= k;
        let x = match (k, largest) {
            (true, _) => v,
            (false, true) => v * 0.0,
            (false, false) => f32::MAX,
        };
        if j == 0 || (largest && x > best) || (!largest && x < best) {
            best = x;
            idx = j;
        }
    }
    (best, idx, found)
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
    let in_range = |r: Option<[f64; 2]>, v: f32| r.is_none_or(|[lo, hi]| v <= hi as f32 && v >= lo as f32);
    // Threshold t: a largest pick keeps m < t, a smallest pick keeps m > t.
    let beyond = |largest: bool, t: Option<f32>, v: f32| t.is_none_or(|t| if largest { v < t } else { v > t });
    let mut out = Vec::new();
    for i in 0..n {
        let row = &mat[i * n..(i + 1) * n];
        let li = labels[i];
        let is_pos = |j: usize| labels[j] == li && j != i;
        let is_neg = |j: usize| labels[j] != li;
        let pos_pick = |t: Option<f32>| pick_row(row, |j, v| is_pos(j) && beyond(pos_largest, t, v) && in_range(pos_range, v), pos_largest);
        let neg_pick = |t: Option<f32>| pick_row(row, |j, v| is_neg(j) && beyond(neg_largest, t, v) && in_range(neg_range, v), neg_largest);
        let (p, q) = match semihard {
            Some(true) => {
                let q = neg_pick(None);
                (pos_pick(Some(q.0)), q)
            }
            Some(false) => {
                let p = pos_pick(None);
                let q = neg_pick(Some(p.0));
                (p, q)
            }
            None => (pos_pick(None), neg_pick(None)),
        };
        if p.2 && q.2 {
            out.push((i as i64, p.1 as i64, q.1 as i64));
        }
    }
    Some(out)
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
