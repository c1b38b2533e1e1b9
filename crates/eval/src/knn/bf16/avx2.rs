//! The AVX2 unit of the candidate pass: 16-bit fixed point multiplied with `VPMADDWD`.
//!
//! Why: on a CPU with neither AMX nor AVX512-BF16 (AMD Zen 1–3, Intel client cores) the fp32
//! GEMM runs at the AVX2 FMA rate, 8 multiply-adds per instruction. `VPMADDWD` multiplies 16
//! pairs of int16 and adds neighbouring products into 8 int32 lanes: 16 multiply-adds per
//! instruction, and exact ones. Each row `x` is put on its own power-of-two grid,
//! `q = round(x · 2^e)`, with `e` the largest exponent that keeps `‖q‖ ≤ 32766`, so
//! * no int16 overflows (`|q_t| ≤ ‖q‖`), and no int32 sum does: by Cauchy–Schwarz every partial
//!   sum of `q_a,t · q_b,t` (and `VPMADDWD`'s pair sum) is at most `‖q_a‖‖q_b‖ < 2³⁰`;
//! * the integer dot product `D = q_a·q_b` is exact, and `ŝ = fl(D) · 2^-e_a · 2^-e_b` errs only
//!   by the grid and one rounding of `D` to fp32 (the bound: [`c`]).
//!
//! The bound is about `√d · 2⁻¹⁴` relative to `‖a‖‖b‖` (`d = 128`: 2⁻¹⁰·⁵), some ten times
//! tighter than bf16's 2⁻⁷, so fewer entries are recomputed. Steps 2 and 3 (certify, recompute
//! exactly in the GEMM's order, push) are those of the AVX-512 code on pairs of 8-lane
//! registers, with the same lower bound `lo` and the same exact values.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{Certify, Heaps, Hits, Prepared, offer, sort_by_chunk};

/// Smallest nonzero row norm the grid takes: keeps `2^e` within fp32's normal range
/// (with `|x| ≤ 2⁴⁰` and `d ≤ 512`, `-31 ≤ e ≤ 55`). A data set with a smaller nonzero row
/// runs the fp32 path.
const MIN_NORM: f64 = 1.0 / (1u64 << 40) as f64;

/// Rows per step of [`approx`]: 6 rows × 16 columns = 12 int32 accumulators, plus two column
/// loads and one broadcast, within AVX2's 16 registers.
const R: usize = 6;

/// Rows per group of the exact recompute: 12 rows × 8 columns = 12 fp32 accumulators, plus a
/// column load and a broadcast, within AVX2's 16 registers.
const G: usize = 12;

/// True when a row of norm `norm` (computed in f64) is nonzero but too small for the grid (see
/// [`MIN_NORM`]).
pub(super) fn too_small(norm: f64) -> bool {
    norm > 0.0 && norm < MIN_NORM
}

/// `M`, the largest `2^e · ‖x‖` allowed: rounding moves `q` by at most `√d / 2` in norm, so
/// `‖q‖ ≤ M + √d / 2 = 32766`.
fn target(d: usize) -> f64 {
    32766.0 - (d as f64).sqrt() / 2.0
}

/// The grid exponent of a row of norm `norm` (computed in f64): the `e` with
/// `2^e · u ≤ M < 2^(e+1) · u` for `u = norm · (1 + 10⁻⁶)`; 0 for a zero row.
pub(super) fn grid_exponent(norm: f64, d: usize) -> i32 {
    if norm == 0.0 {
        return 0;
    }
    let (u, m) = (norm * (1.0 + 1e-6), target(d));
    let mut e = (m / u).log2().floor() as i32;
    while 2f64.powi(e) * u > m {
        e -= 1;
    }
    while 2f64.powi(e + 1) * u <= m {
        e += 1;
    }
    e
}

/// `y` rounded to the nearest integer, ties to even, for `|y| ≤ 32767`: adding and subtracting
/// `1.5 · 2²³` leaves no fraction bits (IEEE round to nearest), without the call to `rintf` that
/// `f32::round_ties_even` costs on baseline x86-64.
#[inline]
pub(super) fn to_grid(y: f32) -> i16 {
    const MAGIC: f32 = 12_582_912.0;
    ((y + MAGIC) - MAGIC) as i16
}

/// `2^e` as an fp32, exactly (`-126 ≤ e ≤ 127`).
pub(super) fn pow2(e: i32) -> f32 {
    assert!((-126..=127).contains(&e), "pow2: exponent {e} out of the normal range");
    f32::from_bits(((127 + e) as u32) << 23)
}

/// The relative coefficient `c` of `|ŝ − g| ≤ c·‖a‖‖b‖ + e_abs` on the grid, where `g` is the
/// fp32 GEMM's `a·b` (compare [`Prepared::c`], the bf16 one).
///
/// Let `â = q_a · 2^-e_a`, so `‖â − a‖ ≤ √d / 2 · 2^-e_a`. Since `2^e_a · ‖a‖ > M / 2`
/// (up to the `10⁻⁶` widening of the norm), `‖â − a‖ ≤ ρ‖a‖` with `ρ = √d (1 + 10⁻⁵) / M`
/// (a zero row is exact). Then
/// * `|â·b̂ − a·b| ≤ ‖â − a‖‖b̂‖ + ‖a‖‖b̂ − b‖ ≤ ρ(2 + ρ)‖a‖‖b‖`,
/// * `|ŝ − â·b̂| ≤ 2⁻²⁴ |â·b̂| ≤ 2⁻²⁴ (1 + ρ)² ‖a‖‖b‖` (the integer sum is exact; its
///   conversion to fp32 rounds once; the two power-of-two scalings are exact, results normal),
/// * `|g − a·b| ≤ γ_d(2⁻²⁴) ‖a‖‖b‖` (the FMA chain; `γ_d(ε) = dε / (1 − dε)`).
///
/// `e_abs` covers gradual underflow in the FMA chain, as for bf16. The sum is rounded up by a
/// factor `1 + 2⁻²⁰`. For `d = 128`: `c ≈ 6.9 · 10⁻⁴ ≈ 2⁻¹⁰·⁵`.
pub(super) fn c(d: usize) -> f32 {
    let rho = (d as f64).sqrt() * (1.0 + 1e-5) / target(d);
    let u = 2f64.powi(-24);
    let gamma = d as f64 * u / (1.0 - d as f64 * u);
    ((rho * (2.0 + rho) + u * (1.0 + rho) * (1.0 + rho) + gamma) * (1.0 + 2f64.powi(-20))) as f32
}

/// [`Prepared::approx_into`] with `VPMADDWD`: blocks of 6 rows × 16 columns (12 int32
/// accumulators; 2 rows for the last ones, as `mp` is a multiple of 32); per pair of depth one
/// broadcast of each row's int16 pair and one load of each 8-column half of the 16-column
/// group's pairs (the `pairs` layout, as for bf16); then `ŝ = fl(D) · 2^-e_i · 2^-e_j`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `i0`, `j0` are multiples of 16, `mp`, `wp` of 32, rows
/// `i0..i0 + mp` and `j0..j0 + wp` exist in the prepared layouts, `ws ≥ wp` and
/// `out.len() ≥ mp · ws` (all asserted by `approx_into`).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn approx(p: &Prepared, i0: usize, j0: usize, mp: usize, wp: usize, out: &mut [f32], ws: usize) {
    let full = mp / R * R;
    for ii in (0..full).step_by(R) {
        // SAFETY: as for this function, for rows ii..ii + R ≤ mp.
        unsafe { approx_rows::<R>(p, i0, j0, ii, wp, out, ws) };
    }
    for ii in (full..mp).step_by(2) {
        // SAFETY: mp − full is even (mp is a multiple of 32), so rows ii..ii + 2 ≤ mp.
        unsafe { approx_rows::<2>(p, i0, j0, ii, wp, out, ws) };
    }
}

/// The integer products `D` of `N` rows (int16 from `a_base` in `rows`) with one 16-column group
/// (pairs from `g0` in `pairs`), as two 8-lane halves per row. Not inlined: on its own the loop
/// keeps every row pointer in a register, which the callers' epilogues would otherwise take.
///
/// # Safety
/// The CPU has AVX2; `N` rows of `dp` int16 from `a_base` and the group's `dp / 2` pairs of 32
/// int16 from `g0` exist.
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn madd_block<const N: usize>(p: &Prepared, a_base: usize, g0: usize) -> [[__m256i; 2]; N] {
    let mut acc = [[_mm256_setzero_si256(); 2]; N];
    for q in 0..p.dp / 2 {
        // SAFETY: the caller's contract.
        unsafe {
            let b0 = _mm256_loadu_si256(p.pairs.as_ptr().add(g0 + q * 32).cast());
            let b1 = _mm256_loadu_si256(p.pairs.as_ptr().add(g0 + q * 32 + 16).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = p.rows.as_ptr().add(a_base + r * p.dp + 2 * q).cast::<i32>().read_unaligned();
                let a = _mm256_set1_epi32(pair);
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(a, b0));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(a, b1));
            }
        }
    }
    acc
}

/// Rows `ii..ii + N` of [`approx`]'s tile, every 16-column group.
///
/// # Safety
/// As [`approx`], with `ii + N ≤ mp`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn approx_rows<const N: usize>(p: &Prepared, i0: usize, j0: usize, ii: usize, wp: usize, out: &mut [f32], ws: usize) {
    let pairs_per_row = p.dp / 2;
    let group = pairs_per_row * 32;
    let a_base = (i0 + ii) * p.dp;
    for jj in (0..wp).step_by(16) {
        let g0 = (j0 + jj) / 16 * group;
        // SAFETY: as for this function.
        let acc = unsafe { madd_block::<N>(p, a_base, g0) };
        // SAFETY: `scale` holds np ≥ j0 + wp entries, and rows ii + r < mp, columns
        // jj..jj + 16 ≤ wp ≤ ws of `out` exist (see above).
        unsafe {
            let cs0 = _mm256_loadu_ps(p.scale.as_ptr().add(j0 + jj));
            let cs1 = _mm256_loadu_ps(p.scale.as_ptr().add(j0 + jj + 8));
            for (r, acc) in acc.iter().enumerate() {
                let rs = _mm256_set1_ps(p.scale[i0 + ii + r]);
                let o = out.as_mut_ptr().add((ii + r) * ws + jj);
                _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[0]), rs), cs0));
                _mm256_storeu_ps(o.add(8), _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[1]), rs), cs1));
            }
        }
    }
}

/// `s` of the three-operation lower bound (see [`certify_tile`]).
const S: f64 = 1.0 / (1u64 << 19) as f64;

/// The row constants of the three-operation lower bound (see [`certify_tile`]), shared by the
/// stored-tile and the fused path so that both compute the same `lo`.
struct RowBound {
    /// `|β|(c(1 + 2⁻²⁰ + 2s) + s(1 + 2⁻¹⁴))`: `α_i` per unit of `‖a_i‖`.
    c1: f64,
    /// `|β|(1 + 2⁻²⁰ + 2s)·e_abs`.
    c0_abs: f64,
}

impl RowBound {
    fn new(p: &Prepared, beta: f32) -> RowBound {
        let w = beta.abs() as f64 * (1.0 + 2f64.powi(-20) + 2.0 * S);
        RowBound { c1: w * p.c as f64 + beta.abs() as f64 * S * (1.0 + 2f64.powi(-14)), c0_abs: w * p.e_abs as f64 }
    }

    /// `α_i` of a row whose norm bound is `a_norm` (rounded up).
    fn alpha(&self, a_norm: f32) -> f32 {
        (self.c1 * a_norm as f64 * (1.0 + 2f64.powi(-20))) as f32
    }

    /// `r_i = (1 − s)‖a_i‖² − |β|(1 + 2⁻²⁰ + 2s)e_abs`.
    fn r(&self, a_sq: f32) -> f32 {
        ((1.0 - S) * a_sq as f64 - self.c0_abs) as f32
    }
}

/// The per-row and per-column constants of the three-operation lower bound of
/// [`certify_tile`], and the thresholds: `lo = fma(β·2^-e_i, 2^-e_j·D, fnmadd(α_i, ‖b_j‖,
/// fma(‖b_j‖², 1 − s, r_i)))`, where `fl(D)·2^-e_j` is exact, so `lo` is bit for bit the value
/// `certify_tile` computes from the stored `ŝ`.
#[derive(Default)]
pub(super) struct Fused {
    /// Per row of the padded tile (`mp`): `β·2^-e_i`, `r_i`, `α_i` and the row's threshold
    /// (−∞ on padding rows, set by `snapshot`).
    beta_rs: Vec<f32>,
    r: Vec<f32>,
    alpha: Vec<f32>,
    pub(super) row_thr: Vec<f32>,
    /// Per column of the padded tile (`wp`): `‖b‖²`, `‖b‖`, `2^-e_j` and the column's threshold
    /// (−∞ on padding columns, set by `snapshot`).
    b_sq: Vec<f32>,
    b_norm: Vec<f32>,
    cs: Vec<f32>,
    pub(super) col_thr: Vec<f32>,
    /// Hit masks, `mp × wp / 16`, row-major; rows and columns past the tile are masked out by
    /// [`feed_from_masks`].
    masks: Vec<u16>,
}

impl Fused {
    /// The constants of tile rows `i0..` and columns `j0..` (`a_sq`, `b_sq`: the tile's squared
    /// norms, zeros unless L2; `beta`: −2 or −1), padded to the thresholds' lengths.
    pub(super) fn prepare(&mut self, p: &Prepared, i0: usize, j0: usize, a_sq: &[f32], b_sq: &[f32], beta: f32) {
        let (mp, wp) = (self.row_thr.len(), self.col_thr.len());
        assert!(i0 + mp <= p.norm_up.len() && j0 + wp <= p.norm_up.len() && a_sq.len() <= mp && b_sq.len() <= wp, "Fused::prepare: range");
        let bound = RowBound::new(p, beta);
        let sq = |v: &[f32], i: usize| v.get(i).copied().unwrap_or(0.0);
        self.beta_rs.clear();
        self.r.clear();
        self.alpha.clear();
        for i in 0..mp {
            self.beta_rs.push(beta * p.scale[i0 + i]);
            self.r.push(bound.r(sq(a_sq, i)));
            self.alpha.push(bound.alpha(p.norm_up[i0 + i]));
        }
        self.b_sq.clear();
        self.b_sq.extend((0..wp).map(|j| sq(b_sq, j)));
        self.b_norm.clear();
        self.b_norm.extend_from_slice(&p.norm_up[j0..j0 + wp]);
        self.cs.clear();
        self.cs.extend_from_slice(&p.scale[j0..j0 + wp]);
        self.masks.clear();
        self.masks.resize(mp * wp / 16, 0);
    }
}

/// Steps 1 and 2 of an off-diagonal tile in one pass: the integer products of [`approx`], and
/// from them, still in registers, the lower bound `lo` of every entry tested against the row's
/// and the column's threshold (as [`certify_tile`] does from a stored tile), into `f.masks`.
///
/// # Safety
/// As [`approx`]; `f` was prepared for this tile (`mp` rows, `wp` columns).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn approx_masks(p: &Prepared, i0: usize, j0: usize, mp: usize, wp: usize, f: &mut Fused) {
    assert!(mp.is_multiple_of(32) && wp.is_multiple_of(32), "approx_masks: padding");
    assert!([f.beta_rs.len(), f.r.len(), f.alpha.len(), f.row_thr.len()] == [mp; 4], "approx_masks: row constants");
    assert!([f.b_sq.len(), f.b_norm.len(), f.cs.len(), f.col_thr.len()] == [wp; 4] && f.masks.len() == mp * wp / 16, "approx_masks: column constants");
    let full = mp / R * R;
    for ii in (0..full).step_by(R) {
        // SAFETY: as for this function, for rows ii..ii + R ≤ mp.
        unsafe { masks_rows::<R>(p, i0, j0, ii, wp, f) };
    }
    for ii in (full..mp).step_by(2) {
        // SAFETY: mp − full is even (mp is a multiple of 32), so rows ii..ii + 2 ≤ mp.
        unsafe { masks_rows::<2>(p, i0, j0, ii, wp, f) };
    }
}

/// Rows `ii..ii + N` of [`approx_masks`].
///
/// # Safety
/// As [`approx_masks`], with `ii + N ≤ mp`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn masks_rows<const N: usize>(p: &Prepared, i0: usize, j0: usize, ii: usize, wp: usize, f: &mut Fused) {
    let pairs_per_row = p.dp / 2;
    let group = pairs_per_row * 32;
    let a_base = (i0 + ii) * p.dp;
    let chunks = wp / 16;
    let keep_b = _mm256_set1_ps((1.0 - S) as f32);
    for jj in (0..wp).step_by(16) {
        let g0 = (j0 + jj) / 16 * group;
        // SAFETY: as in `approx_rows`.
        let acc = unsafe { madd_block::<N>(p, a_base, g0) };
        for (r, acc) in acc.iter().enumerate() {
            let i = ii + r;
            let (beta_rs, r_i, alpha, row_thr) = (_mm256_set1_ps(f.beta_rs[i]), _mm256_set1_ps(f.r[i]), _mm256_set1_ps(f.alpha[i]), _mm256_set1_ps(f.row_thr[i]));
            let mut bits = 0u16;
            for (h, &acc) in acc.iter().enumerate() {
                let c = jj + 8 * h;
                // SAFETY: c + 8 ≤ wp, the length of the column constants (asserted above).
                let (cs, b_sq, b_norm, col_thr) = unsafe {
                    (
                        _mm256_loadu_ps(f.cs.as_ptr().add(c)),
                        _mm256_loadu_ps(f.b_sq.as_ptr().add(c)),
                        _mm256_loadu_ps(f.b_norm.as_ptr().add(c)),
                        _mm256_loadu_ps(f.col_thr.as_ptr().add(c)),
                    )
                };
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), cs);
                let lo = _mm256_fmadd_ps(beta_rs, t, _mm256_fnmadd_ps(alpha, b_norm, _mm256_fmadd_ps(b_sq, keep_b, r_i)));
                let le = _mm256_or_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(lo, row_thr), _mm256_cmp_ps::<_CMP_LE_OQ>(lo, col_thr));
                bits |= (_mm256_movemask_ps(le) as u16) << (8 * h);
            }
            f.masks[i * chunks + jj / 16] = bits;
        }
    }
}

/// Step 3 of the fused path: the hits of `f.masks` for the tile's `m × w` entries, recomputed
/// and offered as in [`certify_tile`]. Returns the number of 16-column chunks with a hit.
///
/// # Safety
/// The CPU has AVX2 and FMA; `f` holds the masks of this tile.
pub(super) unsafe fn feed_from_masks(f: &Fused, m: usize, w: usize, x: &Certify<'_>, heaps: Heaps<'_>, scratch: &mut Hits) -> usize {
    let Hits { hits, order, starts } = scratch;
    let Heaps { rows, cols, i0, j0 } = heaps;
    let chunks = f.col_thr.len() / 16;
    assert!(m * chunks <= f.masks.len() && w <= chunks * 16 && rows.len() >= m && cols.as_ref().is_some_and(|c| c.len() >= w), "feed_from_masks: shape");
    assert!(x.a_rows.len() >= m * x.d && x.bt.len() >= x.d * w.div_ceil(16) * 16 && x.a_sq.len() >= m && x.b_sq.len() >= w, "feed_from_masks: data");
    let used = w.div_ceil(16);
    let last = if w.is_multiple_of(16) { 0xffff } else { (1u16 << (w % 16)) - 1 };
    let mut with_hits = 0;
    hits.clear();
    for i in 0..m {
        for q in 0..used {
            let mut mask = f.masks[i * chunks + q];
            if q + 1 == used {
                mask &= last;
            }
            with_hits += push_halves(hits, i, q, mask);
        }
    }
    // SAFETY: the CPU has AVX2 and FMA; rows < m and columns < w (asserted above).
    unsafe { recompute(x, hits, order, starts, used, rows, cols, i0, j0) };
    with_hits
}

/// The AVX2 twin of [`super::certify_tile`] (same arguments, thresholds and exact values; see
/// there): each 16-column chunk is two 8-lane halves, and the lower bound is the same one
/// rearranged to cost three operations per entry instead of eleven.
///
/// With `X = ‖a‖² + ‖b‖²` (0 for similarities), `E = c‖a‖‖b‖ + e_abs ≥ |ŝ − g|` and
/// `T = X + |β|(1 + 2⁻¹⁴)‖a‖‖b‖ + 2|β|E` (which bounds `|X| + |βŝ| + |β|E`, as
/// `|g| ≤ (1 + γ_d)‖a‖‖b‖`), the key satisfies `K ≥ X + βŝ − |β|E − 3u·T` (`u = 2⁻²⁴`: the
/// roundings of `X` and of the key). The bound
/// `lo = X + βŝ − |β|E(1 + 2⁻²⁰) − s·T`, `s = 2⁻¹⁹`, is affine in the column's `‖b‖²` and
/// `‖b‖`: `lo = fma(β, ŝ, fnmadd(α_i, ‖b_j‖, fma(‖b_j‖², 1 − s, r_i)))` with
/// `α_i = |β|(c(1 + 2⁻²⁰ + 2s) + s(1 + 2⁻¹⁴))‖a_i‖` and `r_i = (1 − s)‖a_i‖² − |β|e_abs(1 + 2⁻²⁰ + 2s)`.
/// Its few roundings (three operations and the row constants, each at most `u` relative to a
/// value below `T`) add less than `5u·T`, so the computed `lo` stays below `K` by `(s − 8u)·T ≥ 0`.
/// The diagonal's first-tile threshold keeps [`super::certify_tile`]'s upper bound `hi`.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn certify_tile(p: &Prepared, approx: &[f32], ws: usize, m: usize, w: usize, x: &Certify<'_>, k: usize, heaps: Heaps<'_>, scratch: &mut Hits) -> usize {
    let Hits { hits, order, starts } = scratch;
    let Heaps { rows, cols, i0, j0 } = heaps;
    let diag = cols.is_none();
    let d = x.d;
    assert!(rows.len() >= m && cols.as_ref().is_none_or(|c| c.len() >= w), "certify_tile: heaps");
    assert!(approx.len() >= m * ws && x.a_rows.len() >= m * d && x.bt.len() >= d * w.div_ceil(16) * 16, "certify_tile: shape");
    let wp = w.div_ceil(16) * 16;
    assert!(wp <= ws && x.b_sq.len() >= wp && x.b_norm.len() >= wp && x.col_thr.len() >= wp, "certify_tile: padding");
    assert!(x.a_sq.len() >= m && x.a_norm.len() >= m && x.row_thr.len() >= m, "certify_tile: rows");
    let beta = _mm256_set1_ps(x.beta);
    let be_abs = _mm256_set1_ps(x.beta.abs() * p.e_abs);
    let widen = _mm256_set1_ps(1.0 + 2f32.powi(-20));
    let slack = _mm256_set1_ps(2f32.powi(-21));
    let zero = _mm256_setzero_ps();
    let abs = |v: __m256| _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    // The constants of the three-operation lower bound (see above).
    let bound = RowBound::new(p, x.beta);
    let keep_b = _mm256_set1_ps((1.0 - S) as f32);
    let chunks = wp / 16;
    let mut minima = Vec::new();
    let mut masks = vec![0u16; chunks];
    let mut with_hits = 0;
    hits.clear();
    for i in 0..m {
        let a_sq = _mm256_set1_ps(x.a_sq[i]);
        // |beta|·c·‖a_i‖: E·|beta| = fma(ca, ‖b_j‖, |beta|·e_abs).
        let ca = _mm256_set1_ps(x.beta.abs() * p.c * x.a_norm[i]);
        // super::certify_tile's upper bound hi of the keys of the 8 columns from c0 of this row.
        let upper = |c0: usize| {
            // SAFETY: callers pass c0 + 8 ≤ wp ≤ ws; the row of `approx` and the padded
            // column slices `b_sq`, `b_norm` hold at least wp floats (asserted above).
            let (s_hat, b_sq, b_norm) =
                unsafe { (_mm256_loadu_ps(approx.as_ptr().add(i * ws + c0)), _mm256_loadu_ps(x.b_sq.as_ptr().add(c0)), _mm256_loadu_ps(x.b_norm.as_ptr().add(c0))) };
            let xs = _mm256_add_ps(a_sq, b_sq);
            let bv = _mm256_mul_ps(beta, s_hat);
            let s = _mm256_add_ps(xs, bv);
            let be = _mm256_fmadd_ps(ca, b_norm, be_abs);
            let sum = _mm256_add_ps(_mm256_add_ps(abs(xs), abs(bv)), be);
            let delta = _mm256_fmadd_ps(slack, sum, _mm256_mul_ps(be, widen));
            _mm256_max_ps(_mm256_add_ps(s, delta), zero)
        };
        let mut thr_i = x.row_thr[i];
        if diag && thr_i == f32::INFINITY && k <= chunks.saturating_sub(1) {
            minima.clear();
            for c0 in (0..w).step_by(16) {
                let mut hi = [0f32; 16];
                // SAFETY: 16 floats.
                unsafe {
                    _mm256_storeu_ps(hi.as_mut_ptr(), upper(c0));
                    _mm256_storeu_ps(hi.as_mut_ptr().add(8), upper(c0 + 8));
                }
                // The chunk's smallest hi over its columns inside the tile, the row's own left out.
                hi[(w - c0).min(16)..].fill(f32::INFINITY);
                if (c0..c0 + 16).contains(&i) {
                    hi[i - c0] = f32::INFINITY;
                }
                // SAFETY: 16 floats.
                let m = unsafe { _mm256_min_ps(_mm256_loadu_ps(hi.as_ptr()), _mm256_loadu_ps(hi.as_ptr().add(8))) };
                let m = _mm_min_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
                let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
                minima.push(_mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps::<1>(m, m))));
            }
            let (_, &mut u, _) = minima.select_nth_unstable_by(k - 1, f32::total_cmp);
            thr_i = u;
        }
        let row_thr = _mm256_set1_ps(thr_i);
        let alpha = _mm256_set1_ps(bound.alpha(x.a_norm[i]));
        let r_i = _mm256_set1_ps(bound.r(x.a_sq[i]));
        // The masks first, with no call in the loop (a call would clobber every ymm register
        // and make the constants above spill), then the pushes.
        for (q, mask) in masks.iter_mut().enumerate() {
            let mut hit = 0u16;
            for half in 0..2 {
                let c = 16 * q + 8 * half;
                // SAFETY: c + 8 ≤ wp: the row of `approx` and the padded column slices hold at
                // least wp floats (asserted above).
                let (s_hat, b_sq, b_norm, col_thr) = unsafe {
                    (
                        _mm256_loadu_ps(approx.as_ptr().add(i * ws + c)),
                        _mm256_loadu_ps(x.b_sq.as_ptr().add(c)),
                        _mm256_loadu_ps(x.b_norm.as_ptr().add(c)),
                        _mm256_loadu_ps(x.col_thr.as_ptr().add(c)),
                    )
                };
                let lo = _mm256_fmadd_ps(beta, s_hat, _mm256_fnmadd_ps(alpha, b_norm, _mm256_fmadd_ps(b_sq, keep_b, r_i)));
                let le = _mm256_or_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(lo, row_thr), _mm256_cmp_ps::<_CMP_LE_OQ>(lo, col_thr));
                hit |= (_mm256_movemask_ps(le) as u16) << (8 * half);
            }
            *mask = hit;
        }
        // Lanes past the tile (padding: `b_sq` is +∞ there, which makes lo +∞ or NaN).
        if !w.is_multiple_of(16) {
            masks[chunks - 1] &= (1u16 << (w % 16)) - 1;
        }
        if diag {
            masks[i / 16] &= !(1u16 << (i % 16));
        }
        for (q, &mask) in masks.iter().enumerate() {
            with_hits += push_halves(hits, i, q, mask);
        }
    }
    // SAFETY: the CPU has AVX2 and FMA (this function's contract); shapes asserted above.
    unsafe { recompute(x, hits, order, starts, chunks, rows, cols, i0, j0) };
    with_hits
}

/// Pushes one hit per 8-column half of chunk `q` of row `i` with a lane in `mask` to recompute
/// (lanes in the low 8 bits); returns 1 when the chunk had any, else 0.
fn push_halves(hits: &mut Vec<(u32, u32, u16)>, i: usize, q: usize, mask: u16) -> usize {
    if mask & 0xff != 0 {
        hits.push((i as u32, 16 * q as u32, mask & 0xff));
    }
    if mask >> 8 != 0 {
        hits.push((i as u32, 16 * q as u32 + 8, mask >> 8));
    }
    usize::from(mask != 0)
}

/// Step 3: recomputes the `hits` (row, first column of an 8-column half, lanes) exactly, in the
/// GEMM's order of operations, and offers the keys to the heaps. `order`, `starts`: scratch;
/// `chunks`: 16-column chunks of the tile.
///
/// # Safety
/// The CPU has AVX2 and FMA; every hit's row is below `x.a_rows.len() / d` and its columns
/// inside `x.bt`'s chunks.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn recompute(
    x: &Certify<'_>,
    hits: &[(u32, u32, u16)],
    order: &mut Vec<(u32, u32, u16)>,
    starts: &mut Vec<usize>,
    chunks: usize,
    rows: &mut [super::super::TopK],
    mut cols: Option<&mut [super::super::TopK]>,
    i0: usize,
    j0: usize,
) {
    let d = x.d;
    let beta = _mm256_set1_ps(x.beta);
    let zero = _mm256_setzero_ps();
    // The exact recompute, by 8-column half chunk, G rows at a time: each load of the half's
    // column values feeds G independent FMA chains. Halves rather than whole chunks: most
    // chunks that are recomputed have one or two lanes to recompute.
    sort_by_chunk(hits, order, starts, 2 * chunks, 8);
    let mut from = 0;
    while from < order.len() {
        let c0 = order[from].1 as usize;
        let mut to = from;
        while to < order.len() && to - from < G && order[to].1 as usize == c0 {
            to += 1;
        }
        let group = &order[from..to];
        from = to;
        let g = group.len();
        let mut acc = [zero; G];
        let mut a_ptr = [x.a_rows.as_ptr(); G];
        for (l, &(i, _, _)) in group.iter().enumerate() {
            a_ptr[l] = x.a_rows[i as usize * d..].as_ptr();
        }
        // Column c0's chunk holds d × 16 values from (c0 / 16)·16·d, depth-major; the half's
        // lanes start at c0 % 16.
        let b_ptr = x.bt[c0 / 16 * 16 * d + c0 % 16..].as_ptr();
        // SAFETY: row i < m of a_rows has d entries; chunk c0 / 16 < wp / 16 of bt has d × 16
        // entries, and t·16 + c0 % 16 + 8 ≤ d·16 (asserted above).
        unsafe {
            if g == G {
                for t in 0..d {
                    let b = _mm256_loadu_ps(b_ptr.add(t * 16));
                    for l in 0..G {
                        acc[l] = _mm256_fmadd_ps(_mm256_set1_ps(*a_ptr[l].add(t)), b, acc[l]);
                    }
                }
            } else {
                for t in 0..d {
                    let b = _mm256_loadu_ps(b_ptr.add(t * 16));
                    for l in 0..g {
                        acc[l] = _mm256_fmadd_ps(_mm256_set1_ps(*a_ptr[l].add(t)), b, acc[l]);
                    }
                }
            }
            for (l, &(i, c0, lanes)) in group.iter().enumerate() {
                let mut v = [0f32; 16];
                _mm256_storeu_ps(v.as_mut_ptr(), _mm256_mul_ps(beta, acc[l]));
                offer(&v, i as usize, c0 as usize, lanes, x, rows, cols.as_deref_mut(), i0, j0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_keeps_the_integer_norm_in_range_and_fills_it() {
        for d in [1usize, 3, 100, 128, 512] {
            for norm in [1e-12f64, 1e-3, 0.7, 1.0, 12.3, 3.0e5, 1.7e13] {
                let e = grid_exponent(norm, d);
                let scaled = 2f64.powi(e) * norm * (1.0 + 1e-6);
                assert!(scaled <= target(d) && 2.0 * scaled > target(d), "d = {d}, norm = {norm}: e = {e}");
                assert!(scaled + (d as f64).sqrt() / 2.0 <= 32766.0);
            }
        }
        assert_eq!(grid_exponent(0.0, 128), 0);
        assert_eq!((pow2(0), pow2(-3), pow2(55)), (1.0, 0.125, 2f32.powi(55)));
        for y in [0.0f32, 0.5, 1.5, 2.5, -0.5, -2.5, 3.4999, -7.6, 32766.4, -32766.5, 1e-30] {
            assert_eq!(to_grid(y), y.round_ties_even() as i16, "{y}");
        }
    }

    #[test]
    fn fused_masks_keep_every_entry_at_or_below_its_threshold() {
        use super::super::{Scratch, Unit, supported};
        if !supported().contains(&Unit::Avx2Int16) {
            eprintln!("this CPU has no AVX2 + FMA: the int16 unit cannot run here");
            return;
        }
        let (n, d, block) = (128, 100, 64);
        let mut s = 17u64;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as i32
        };
        // Rows on half-grid points, all positive and with even integer parts, so every entry
        // rounds down by exactly half a step (ties to even) and the errors of a product all add
        // up: the bound's worst case (a norm near 24 000 puts the grid step at exactly 2^k).
        // Scales 2^-50, 1 and 2^25; zero rows; plain rows.
        let mut data = Vec::with_capacity(n * d);
        for i in 0..n {
            for _ in 0..d {
                data.push(match i % 5 {
                    0 => 0.0,
                    kind @ 1..=3 => ((2 * (next() % 2101)) as f32 + 0.5) * 2f32.powi([-50, 0, 25][kind - 1]),
                    _ => (next() % 1001) as f32 * 1e-3,
                });
            }
        }
        let p = Prepared::new(&data, d, block, Unit::Avx2Int16).unwrap();
        let e = crate::matrix::Embeddings::new("t", &data, d).unwrap();
        let norms = crate::knn::sq_norms("t", e).unwrap();
        let (mut checked, mut spurious, mut above) = (0, 0, 0);
        for (l2, beta) in [(true, -2f32), (false, -1f32)] {
            let sq: Vec<f32> = if l2 { norms.clone() } else { vec![0.0; n] };
            let key = |i: usize, j: usize| {
                let g = (0..d).fold(0f32, |acc, t| data[i * d + t].mul_add(data[j * d + t], acc));
                if l2 { crate::knn::tile_key::<true>(sq[i], sq[j], beta * g) } else { beta * g }
            };
            let keys: Vec<Vec<f32>> = (0..block).map(|i| (block..2 * block).map(|j| key(i, j)).collect()).collect();
            let eighth = |mut v: Vec<f32>| *v.select_nth_unstable_by(7, f32::total_cmp).1;
            let row_thr: Vec<f32> = keys.iter().map(|r| eighth(r.clone())).collect();
            let col_thr: Vec<f32> = (0..block).map(|j| eighth(keys.iter().map(|r| r[j]).collect())).collect();
            for by_rows in [true, false] {
                let mut scratch = Scratch::default();
                let none = vec![f32::NEG_INFINITY; block];
                scratch.fused.row_thr = if by_rows { row_thr.clone() } else { none.clone() };
                scratch.fused.col_thr = if by_rows { none } else { col_thr.clone() };
                p.approx_masks(&mut scratch, 0, 1, &sq[..block], &sq[block..], beta);
                for (i, row) in keys.iter().enumerate() {
                    for (j, &k) in row.iter().enumerate() {
                        let bit = scratch.fused.masks[i * block / 16 + j / 16] >> (j % 16) & 1 == 1;
                        let thr = if by_rows { row_thr[i] } else { col_thr[j] };
                        if k <= thr {
                            assert!(bit, "l2 = {l2}, by rows = {by_rows}: entry ({i}, {j}) key {k} ≤ threshold {thr} was skipped");
                            checked += 1;
                        } else {
                            above += 1;
                            spurious += usize::from(bit);
                        }
                    }
                }
            }
        }
        eprintln!("fused masks: {checked} entries at or below a threshold kept; {spurious} of {above} above it kept");
        assert!(checked > 4 * 8 * block && spurious * 2 < above, "{checked} checked, {spurious} of {above} spurious");
    }

    #[test]
    fn bound_is_much_tighter_than_bf16() {
        let (c16, cbf) = (c(128), Prepared::c(128));
        assert!(c16 > 6.0e-4 && c16 < 7.5e-4 && cbf / c16 > 8.0, "int16 c = {c16}, bf16 c = {cbf}");
    }
}
