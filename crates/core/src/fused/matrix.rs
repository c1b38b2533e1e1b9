//! The self batch's matrix ([`SelfMatrix`]): normalisation, the B×B products through the `gemm`
//! crate (single-threaded), and the closed-form gradients that map the kernels' weights on
//! matrix entries back to the embeddings.

use tch::{Device, Kind, Tensor};

use super::{SelfKind, cpu_f32_matrix};
use crate::lanes::Scratch;

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

/// The `n × n` matrix of a self batch that the fused kernels scan, computed once on the CPU:
/// the (optionally L2-normalised) rows and, by [`SelfKind`], their Euclidean distances (torch's
/// `cdist` conventions: `sqrt(max(‖a‖² + ‖b‖² − 2a·b, 1e-30))`, as its matrix-multiply path) or
/// their inner products `x̂_i · x̂_j` (cosine similarity when normalising, dot product otherwise).
pub(crate) struct SelfMatrix {
    /// What [`SelfMatrix::values`] holds.
    pub kind: SelfKind,
    /// Rows compared (normalised when asked), row-major `n × d`.
    pub xn: Vec<f32>,
    /// `1 / max(‖x_i‖, 1e-12)` of the raw rows (1 when not normalising).
    pub inv_norm: Vec<f32>,
    /// Whether a row's norm was below the normalisation epsilon (its Jacobian is `I / 1e-12`).
    pub tiny: Vec<bool>,
    /// Distances ([`SelfKind::Euclidean`]) or inner products ([`SelfKind::Dot`]), row-major
    /// `n × n` (only `j ≥ i` when built with `upper`).
    pub values: Scratch,
    pub n: usize,
    pub d: usize,
    pub normalize: bool,
}

/// Epsilon of torch's `F.normalize` (and of [`crate::distance::normalize`]).
const NORM_EPS: f64 = 1e-12;

impl SelfMatrix {
    /// Computes the matrix of `kind` for the rows of `x` (float32 CPU `n × d`, `n, d > 0`;
    /// `None` otherwise), normalising them first when `normalize`. With `upper`, only the
    /// entries `j ≥ i` are computed (see [`gram`]): for passes over unordered pairs.
    pub(super) fn compute(x: &Tensor, kind: SelfKind, normalize: bool, upper: bool) -> Option<Self> {
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
        let mut values = gram(&xn, n, d, upper);
        if kind == SelfKind::Euclidean {
            let sq: Vec<f32> = xn.chunks(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
            values.chunks_mut(n).enumerate().for_each(|(i, row)| {
                let from = if upper { i } else { 0 };
                for (v, &s) in row[from..].iter_mut().zip(&sq[from..]) {
                    *v = (sq[i] + s - 2.0 * *v).max(1e-30).sqrt();
                }
            });
        }
        Some(SelfMatrix { kind, xn, inv_norm, tiny, values, n, d, normalize })
    }

    /// The gradient with respect to the raw rows of `Σ_ij w_i c_ij (x̂_i · x̂_j)` for a dense
    /// row-major `n × n` coefficient matrix `c` and per-row weights `w` (for a
    /// [`SelfKind::Dot`] matrix): `S x̂` with the symmetric `S = diag(w) C + Cᵀ diag(w)` (built
    /// tile by tile), then through the normalisation.
    pub(crate) fn grad_from_gram_weights(&self, c: &[f32], w: &[f32]) -> Vec<f32> {
        let (n, d) = (self.n, self.d);
        assert!(c.len() == n * n && w.len() == n, "grad_from_gram_weights: c is not n × n");
        debug_assert_eq!(self.kind, SelfKind::Dot, "gram weights are on inner products");
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

    /// `sum / divisor` as a scalar whose gradient with respect to `embeddings` is that of the
    /// pair values behind `entries` (weights `∂value/∂d_ij`), each divided by `divisor`
    /// (a [`SelfKind::Euclidean`] matrix).
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

    /// The gradient with respect to the raw rows of `Σ a_ij · d_ij` over the given entries
    /// `(i, j, a_ij)` (j ≠ i), row-major `n × d`.
    fn grad_from_pair_weights(&self, entries: &[(u32, u32, f32)]) -> Vec<f32> {
        debug_assert_eq!(self.kind, SelfKind::Euclidean, "pair weights are on distances");
        let (n, d) = (self.n, self.d);
        // ∂d_ij/∂x̂_i = (x̂_i − x̂_j) / d_ij, and the opposite for x̂_j.
        let mut g = vec![0f32; n * d];
        if entries.len() <= 16 * n {
            for &(i, j, a) in entries {
                let (i, j) = (i as usize, j as usize);
                let w = a / self.values[i * n + j];
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
                let v = a / self.values[i * n + j];
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
