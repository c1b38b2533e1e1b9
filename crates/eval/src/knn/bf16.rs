//! A low-precision candidate pass for the symmetric exact k-NN, on AMX tiles, AVX512-BF16 or
//! AVX2 16-bit fixed point, that keeps results exact. (The module keeps its first unit's name.)
//!
//! Why: the fp32 GEMM of [`super::knn_self_symmetric`] already runs at the core's AVX-512 FMA
//! peak and is most of the search's time. An AMX unit multiplies bf16 matrices many times
//! faster. Rounding the inputs to bf16 changes the inner products, so the bf16 tile is used only
//! to decide which entries *cannot* enter a heap: every other entry is recomputed exactly, in the
//! same order of operations as the fp32 GEMM, and only exact keys reach the heaps. The result is
//! therefore bit-identical to the fp32 path (indices, scores and ties).
//!
//! Per tile:
//! 1. [`Prepared::approx_tile`]: `ŝ_ij ≈ a_i·b_j` with `TDPBF16PS` (AMX, bf16 inputs, fp32
//!    accumulation), through `asm!` because the AMX intrinsics are unstable.
//! 2. [`Prepared::feed_heaps`] / [`certify_tile`]: from `ŝ` a certified lower bound `lo_ij` of
//!    the exact heap key (see [`Prepared::c`] for the error bound). A 16-column chunk of a row
//!    whose lanes all have `lo` above both the row's and the column's heap threshold is skipped:
//!    no heap can take it (thresholds only decrease, and a heap ends with the `k` smallest
//!    `(key, index)` pairs it was offered, whatever the order). Every other chunk is recomputed
//!    exactly — `acc = fma(a_t, b_t, acc)` for `t = 0..d` from `acc = 0`, times `beta`, which
//!    is what the `gemm` crate's micro-kernel does for `d ≤ 512` (one depth block, one
//!    accumulator per output, `dst = beta·acc`) — and its keys are offered to the row's and
//!    the column's heaps with the fp32 scan's own key expression.
//!
//! The caller runs the diagonal tiles first; on those, a row whose heap is still empty gets a
//! certified upper bound of its `k`-th key from the bf16 values (see [`certify_tile`]), so a
//! row's first tile is not recomputed wholesale, and every later tile meets real thresholds.
//!
//! Step 1 runs on AMX when the CPU has AMX-BF16 and Linux grants the tile-data state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), else with AVX-512 `VDPBF16PS`
//! (AMD Zen 4 and later, Intel since Cooper Lake: twice the multiply-adds per instruction of an
//! fp32 FMA), else, on CPUs with AVX2 only (AMD Zen 1–3, Intel client cores), on 16-bit fixed
//! point with `VPMADDWD` (module `avx2`: its own, tighter bound; off-diagonal tiles test the
//! thresholds on the integer products in registers, so their tile is never stored); chosen at
//! run time ([`available`]); steps 2–3 are the same. For `d ≤ 512`, blocks that are a
//! multiple of 32 rows, tiles of at least 32 × 32 (smaller ones take other `gemm` kernels whose
//! order of operations differs) and data with every `|x| ≤ 2⁴⁰` (so the bound's absolute term
//! is tiny), and for the AVX2 unit no nonzero row of norm below 2⁻⁴⁰ (its grid must stay in
//! fp32's normal range); otherwise the fp32 path runs. `PROXIMA_KNN_BF16=0` turns it off.

use std::sync::OnceLock;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

mod avx2;

/// Largest depth whose exact recomputation matches the `gemm` crate (one depth block).
const MAX_D: usize = 512;
/// Extra floats per row of the approximate tile: a row stride of a power of two (2 KiB for
/// 512 columns) would put all 16 rows of an AMX tile store in two L1 cache sets.
const APPROX_PAD: usize = 16;
/// Largest magnitude of an input entry for the bf16 pass (keeps the absolute error term small).
const MAX_ABS: f32 = (1u64 << 40) as f32;

/// The unit that computes the candidate tile (the public name is [`super::CandidateUnit`]).
pub use super::CandidateUnit as Unit;

/// The unit this process uses for the candidate pass: AMX when the CPU has it and Linux grants
/// the tile state, else AVX512-BF16, else AVX2 (with FMA) when the CPU has it; `None` when none
/// of them, or when the pass is turned off with `PROXIMA_KNN_BF16=0`. Checked once.
pub fn available() -> Option<Unit> {
    static UNIT: OnceLock<Option<Unit>> = OnceLock::new();
    *UNIT.get_or_init(|| if std::env::var("PROXIMA_KNN_BF16").is_ok_and(|v| v == "0") { None } else { supported().first().copied() })
}

/// Every unit this CPU can run the pass on, best first (whatever `PROXIMA_KNN_BF16` says).
pub fn supported() -> Vec<Unit> {
    let mut units = Vec::new();
    if std::arch::is_x86_feature_detected!("avx512f") {
        if amx_permitted() {
            units.push(Unit::Amx);
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            units.push(Unit::Avx512Bf16);
        }
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        units.push(Unit::Avx2Int16);
    }
    units
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_permitted() -> bool {
    // CPUID leaf 7, sub-leaf 0: EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE.
    let max_leaf = __cpuid(0).eax;
    if max_leaf < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with ARCH_REQ_XCOMP_PERM only asks the kernel to enable
    // a state component for this process; it reads no memory. The syscall instruction clobbers
    // rcx and r11, declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn amx_permitted() -> bool {
    false
}

/// Round to the nearest bf16, ties to even (finite inputs well inside the range).
#[inline]
fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// The data in the layouts the bf16 pass reads, prepared once per search.
pub(super) struct Prepared {
    unit: Unit,
    d: usize,
    /// `d` rounded up to 32 (one AMX tile row of bf16).
    dp: usize,
    block: usize,
    /// Rows as bf16 (int16 for the AVX2 unit), `np × dp`, zero-padded (the A operand).
    rows: Vec<u16>,
    /// Groups of 16 rows in AMX's pair-interleaved layout: group `g`, pair `p`, row `r`:
    /// `[bf16(x[16g + r][2p]), bf16(x[16g + r][2p + 1])]`, zero-padded (the B operand).
    pairs: Vec<u16>,
    /// Each block transposed by 16-column chunks: block `b`, chunk `q`, depth `t`, lane `l` holds
    /// `x[b·block + 16q + l][t]`, zero-padded (for the exact recompute: one chunk's column
    /// values are contiguous, `d × 16`).
    tr: Vec<f32>,
    /// Upper bounds of the row norms `‖x_i‖`, zero-padded to `np`.
    norm_up: Vec<f32>,
    /// Row `i`'s fixed-point step `2^-e_i` for the AVX2 unit (`x_i ≈ rows_i · 2^-e_i`); 1 for
    /// padding rows and for the bf16 units.
    scale: Vec<f32>,
    /// See [`Prepared::c`].
    c: f32,
    /// Absolute term of the error bound.
    e_abs: f32,
}

impl Prepared {
    /// The layouts for `data` (`n × d` row-major) searched in square blocks of `block` rows, or
    /// `None` when the pass does not apply (see the module docs).
    pub(super) fn new(data: &[f32], d: usize, block: usize, unit: Unit) -> Option<Prepared> {
        if !supported().contains(&unit) || d == 0 || d > MAX_D || !block.is_multiple_of(32) || !data.iter().all(|x| x.abs() <= MAX_ABS) {
            return None;
        }
        let int16 = unit == Unit::Avx2Int16;
        let n = data.len() / d;
        let dp = d.div_ceil(32) * 32;
        let nb = n.div_ceil(block);
        let np = nb * block;
        let mut rows = vec![0u16; np * dp];
        let mut pairs = vec![0u16; np * dp];
        let mut tr = vec![0f32; nb * d * block];
        let mut norm_up = vec![0f32; np];
        let mut scale = vec![1f32; np];
        // Set when a row is too small for the AVX2 unit's grid (checked on the norms computed below).
        let too_small = std::sync::atomic::AtomicBool::new(false);
        // One block per task: its rows, pair groups (block is a multiple of 16), transposed
        // chunks, norms and scales are disjoint slices.
        rows.par_chunks_mut(block * dp)
            .zip(pairs.par_chunks_mut(block * dp))
            .zip(tr.par_chunks_mut(d * block))
            .zip(norm_up.par_chunks_mut(block))
            .zip(scale.par_chunks_mut(block))
            .zip(data.par_chunks(block * d))
            .for_each(|(((((rows, pairs), tr), norm_up), scale), x)| {
                for (c, x) in x.chunks_exact(d).enumerate() {
                    let (g, r) = (c / 16, c % 16);
                    let norm = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    norm_up[c] = (norm * (1.0 + 1e-6)) as f32;
                    let small = int16 && avx2::too_small(norm);
                    if small {
                        too_small.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    // The AVX2 unit's grid: x ≈ q · 2^-e with q = round(x · 2^e) in int16 (any
                    // `e` in range for a row too small for it: the layouts are then dropped).
                    let e = if int16 && !small { avx2::grid_exponent(norm, d) } else { 0 };
                    scale[c] = avx2::pow2(-e);
                    let up = avx2::pow2(e);
                    for (t, &v) in x.iter().enumerate() {
                        let h = if int16 { avx2::to_grid(v * up) as u16 } else { to_bf16(v) };
                        rows[c * dp + t] = h;
                        pairs[(g * (dp / 2) + t / 2) * 32 + r * 2 + t % 2] = h;
                        tr[(c / 16) * d * 16 + t * 16 + c % 16] = v;
                    }
                }
            });
        if too_small.into_inner() {
            return None;
        }
        let c = if int16 { avx2::c(d) } else { Self::c(d) };
        Some(Prepared { unit, d, dp, block, rows, pairs, tr, norm_up, scale, c, e_abs: (d as f32) * 2f32.powi(-80) })
    }

    /// The relative coefficient `c` of the certified bound `|ŝ − g| ≤ c·‖a‖‖b‖ + e_abs`, where
    /// `g` is the fp32 GEMM's `a·b` (a chain of `d` FMAs) and `ŝ` the AMX value.
    ///
    /// With `u = 2⁻⁸` (bf16 round-to-nearest-even keeps 8 significant bits), `ã = a(1 + θ)`,
    /// `|θ| ≤ u` per element, so `|ã_t b̃_t − a_t b_t| ≤ (2u + u²)|a_t b_t|` (bf16 products
    /// are exact in fp32). Let `S = Σ|a_t b_t| ≤ ‖a‖‖b‖` (Cauchy–Schwarz) and
    /// `γ_d(ε) = d·ε / (1 − d·ε)`. Any fp32 summation of `d` terms, in any order or grouping,
    /// with each step's relative error at most `ε`, errs by at most `γ_d(ε) Σ|terms|`, so
    /// * `|g − a·b| ≤ γ_d(2⁻²⁴) S` (the FMA chain, round to nearest),
    /// * `|ŝ − ã·b̃| ≤ γ_d(2⁻²³) Σ|ã_t b̃_t| ≤ γ_d(2⁻²³) (1 + u)² S` (the AMX accumulation;
    ///   Intel documents round to nearest even, `2⁻²³` also covers a directed rounding),
    /// * `|ã·b̃ − a·b| ≤ (2u + u²) S`,
    ///
    /// hence `|ŝ − g| ≤ (2u + u² + γ_d(2⁻²⁴) + γ_d(2⁻²³)(1 + u)²)·S`. AMX flushes denormal inputs and
    /// results to zero; with `|x| ≤ 2⁴⁰` each of the `d` steps loses at most `2⁻¹²⁶·2⁴¹`
    /// more, and gradual underflow in the FMA chain less, covered by `e_abs = d·2⁻⁸⁰`. For
    /// `d = 128`: `c ≈ 2⁻⁷ + 2⁻¹⁶ + 2⁻¹⁷ + 2⁻¹⁶`. The value is rounded up by a factor `1 + 2⁻²⁰`.
    fn c(d: usize) -> f32 {
        let u = 2f64.powi(-8);
        let gamma = |eps: f64| d as f64 * eps / (1.0 - d as f64 * eps);
        let c = 2.0 * u + u * u + gamma(2f64.powi(-24)) + gamma(2f64.powi(-23)) * (1.0 + u) * (1.0 + u);
        (c * (1.0 + 2f64.powi(-20))) as f32
    }

    /// Step 1 for tile `(bi, bj)` (`m × w`): the approximate inner products into `scratch`.
    pub(super) fn approx_tile(&self, scratch: &mut Scratch, bi: usize, bj: usize, m: usize, w: usize) {
        let (mp, wp) = (m.div_ceil(32) * 32, w.div_ceil(32) * 32);
        scratch.approx.resize(self.block * (self.block + APPROX_PAD), 0.0);
        self.approx_into(bi * self.block, bj * self.block, mp, wp, &mut scratch.approx, wp + APPROX_PAD);
    }

    /// Whether off-diagonal tiles take the fused path ([`Prepared::snapshot`],
    /// [`Prepared::approx_masks`], [`Prepared::feed_from_masks`]): the AVX2 unit, whose step 2 runs
    /// on the integer products still in registers, so the tile is never stored.
    pub(super) fn fuses(&self) -> bool {
        self.unit == Unit::Avx2Int16
    }

    /// Fused path, under the heaps' locks: the row and column thresholds the tile `m × w` will be
    /// tested against. Thresholds only decrease, so testing against these (possibly older)
    /// values is conservative.
    pub(super) fn snapshot(&self, scratch: &mut Scratch, rows: &[super::TopK], cols: &[super::TopK]) {
        let f = &mut scratch.fused;
        let (mp, wp) = (rows.len().div_ceil(32) * 32, cols.len().div_ceil(32) * 32);
        f.row_thr.clear();
        f.row_thr.extend(rows.iter().map(super::TopK::worst_key));
        f.row_thr.resize(mp, f32::NEG_INFINITY);
        f.col_thr.clear();
        f.col_thr.extend(cols.iter().map(super::TopK::worst_key));
        f.col_thr.resize(wp, f32::NEG_INFINITY);
    }

    /// Fused path, without a lock: steps 1 and 2 of off-diagonal tile `(bi, bj)` (`m × w`;
    /// `a_sq`, `b_sq` as for [`Prepared::feed_heaps`]) against the last [`Prepared::snapshot`],
    /// as hit masks in `scratch`.
    pub(super) fn approx_masks(&self, scratch: &mut Scratch, bi: usize, bj: usize, a_sq: &[f32], b_sq: &[f32], beta: f32) {
        let (i0, j0) = (bi * self.block, bj * self.block);
        let (mp, wp) = (a_sq.len().div_ceil(32) * 32, b_sq.len().div_ceil(32) * 32);
        assert!(scratch.fused.row_thr.len() == mp && scratch.fused.col_thr.len() == wp, "approx_masks: snapshot of another tile");
        scratch.fused.prepare(self, i0, j0, a_sq, b_sq, beta);
        assert!((i0 + mp) * self.dp <= self.rows.len() && (j0 + wp) * self.dp <= self.pairs.len(), "approx_masks: range");
        // SAFETY: only the AVX2 unit fuses, and a `Prepared` for it exists only where
        // `supported()` found AVX2 and FMA; the ranges were asserted above and by `prepare`.
        unsafe { avx2::approx_masks(self, i0, j0, mp, wp, &mut scratch.fused) }
    }

    /// Fused path, under the heaps' locks: step 3 for the masks of the last
    /// [`Prepared::approx_masks`] call (arguments as for [`Prepared::feed_heaps`]). Returns the
    /// number of 16-column chunks with an entry to recompute.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn feed_from_masks(&self, scratch: &mut Scratch, a_rows: &[f32], a_sq: &[f32], b_sq: &[f32], beta: f32, l2: bool, heaps: Heaps<'_>) -> usize {
        let x = Certify { a_rows, d: self.d, bt: self.transposed(heaps.j0 / self.block), a_sq, b_sq, a_norm: &[], b_norm: &[], row_thr: &[], col_thr: &[], beta, l2 };
        // SAFETY: as in `approx_masks`.
        unsafe { avx2::feed_from_masks(&scratch.fused, a_sq.len(), b_sq.len(), &x, heaps, &mut scratch.hits) }
    }

    /// Steps 2–3 for the tile of the last [`Prepared::approx_tile`] call: recomputes what can
    /// reach a heap and pushes the exact keys. `a_rows`: the tile's rows (`m × d`); `a_sq`,
    /// `b_sq`: squared norms (zeros unless `l2`); `beta`: −2 (L2) or −1. Returns the number of
    /// 16-column chunks recomputed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn feed_heaps(&self, scratch: &mut Scratch, a_rows: &[f32], a_sq: &[f32], b_sq: &[f32], beta: f32, l2: bool, k: usize, heaps: Heaps<'_>) -> usize {
        let (m, w) = (a_sq.len(), b_sq.len());
        let wp = w.div_ceil(32) * 32;
        let (i0, j0) = (heaps.i0, heaps.j0);
        let s = scratch;
        s.b_sq.clear();
        s.b_sq.extend_from_slice(b_sq);
        // +∞ past the tile: those lanes get lo = ∞ − ∞ = NaN, which no threshold test passes.
        s.b_sq.resize(wp, f32::INFINITY);
        s.row_thr.clear();
        s.row_thr.extend(heaps.rows.iter().map(super::TopK::worst_key));
        // On the diagonal the columns are the rows: entry (i, j) reaches heap j as entry (j, i),
        // so the row test alone decides (column thresholds −∞).
        s.col_thr.clear();
        if let Some(c) = heaps.cols.as_deref() {
            s.col_thr.extend(c.iter().map(super::TopK::worst_key));
        }
        s.col_thr.resize(wp, f32::NEG_INFINITY);
        let x = Certify {
            a_rows,
            d: self.d,
            bt: self.transposed(j0 / self.block),
            a_sq,
            b_sq: &s.b_sq,
            a_norm: self.norms(i0, m),
            b_norm: self.norms(j0, wp),
            row_thr: &s.row_thr,
            col_thr: &s.col_thr,
            beta,
            l2,
        };
        // SAFETY: a `Prepared` exists only for a unit of `supported()`, which checks AVX-512F
        // for AMX and AVX512-BF16, and AVX2 and FMA for the AVX2 unit.
        unsafe {
            match self.unit {
                Unit::Avx2Int16 => avx2::certify_tile(self, &s.approx, wp + APPROX_PAD, m, w, &x, k, heaps, &mut s.hits),
                Unit::Amx | Unit::Avx512Bf16 => certify_tile(self, &s.approx, wp + APPROX_PAD, m, w, &x, k, heaps, &mut s.hits),
            }
        }
    }

    /// Norm upper bounds of rows `r0..r0 + len` (`len` may run into the zero padding).
    fn norms(&self, r0: usize, len: usize) -> &[f32] {
        &self.norm_up[r0..r0 + len]
    }

    /// The transposed block `b` (`block / 16` chunks of `d × 16`).
    fn transposed(&self, b: usize) -> &[f32] {
        &self.tr[b * self.d * self.block..(b + 1) * self.d * self.block]
    }

    /// `out[i·ws + j] ≈ a_{i0+i} · a_{j0+j}` for `i < mp`, `j < wp` (both multiples of 32, the
    /// padded tile; `ws ≥ wp`), on the prepared unit.
    fn approx_into(&self, i0: usize, j0: usize, mp: usize, wp: usize, out: &mut [f32], ws: usize) {
        assert!(mp.is_multiple_of(32) && wp.is_multiple_of(32) && ws >= wp && out.len() >= mp * ws, "approx_tile: shape");
        assert!(
            (i0 + mp) * self.dp <= self.rows.len() && (j0 + wp) * self.dp <= self.pairs.len() && i0.is_multiple_of(16) && j0.is_multiple_of(16),
            "approx_tile: range"
        );
        match self.unit {
            Unit::Amx => self.approx_amx(i0, j0, mp, wp, out, ws),
            // SAFETY: a `Prepared` for this unit exists only where `supported()` found
            // AVX-512F and AVX512-BF16; the ranges were asserted above.
            Unit::Avx512Bf16 => unsafe { self.approx_avx512bf16(i0, j0, mp, wp, out, ws) },
            // SAFETY: as above, with AVX2 and FMA.
            Unit::Avx2Int16 => unsafe { avx2::approx(self, i0, j0, mp, wp, out, ws) },
        }
    }

    /// [`Prepared::approx_into`] with `VDPBF16PS`: 8 rows × 32 columns of accumulators (16 zmm),
    /// per pair of depth one broadcast of each row's bf16 pair and one load of each 16-column
    /// group's pairs (the `pairs` layout AMX reads as its B operand serves here unchanged).
    /// Each instruction adds two exact bf16 products to an fp32 lane, so the error bound of
    /// [`Prepared::c`] holds as for AMX (any summation order, round to nearest, denormals
    /// flushed).
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn approx_avx512bf16(&self, i0: usize, j0: usize, mp: usize, wp: usize, out: &mut [f32], ws: usize) {
        const R: usize = 8;
        let pairs_per_row = self.dp / 2;
        let group = pairs_per_row * 32;
        for ii in (0..mp).step_by(R) {
            let a_base = (i0 + ii) * self.dp;
            for jj in (0..wp).step_by(32) {
                let g0 = (j0 + jj) / 16 * group;
                let g1 = g0 + group;
                let mut acc0 = [_mm512_setzero_ps(); R];
                let mut acc1 = [_mm512_setzero_ps(); R];
                for p in 0..pairs_per_row {
                    // SAFETY: groups (j0+jj)/16 and the next hold `pairs_per_row` pairs of 64
                    // bytes each, and rows i0+ii.. i0+ii+R hold dp bf16 each (asserted by the
                    // caller: (j0+wp)·dp ≤ pairs.len(), (i0+mp)·dp ≤ rows.len()).
                    unsafe {
                        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(self.pairs.as_ptr().add(g0 + p * 32).cast()));
                        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(self.pairs.as_ptr().add(g1 + p * 32).cast()));
                        for r in 0..R {
                            let pair = self.rows.as_ptr().add(a_base + r * self.dp + 2 * p).cast::<i32>().read_unaligned();
                            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                            acc0[r] = _mm512_dpbf16_ps(acc0[r], a, b0);
                            acc1[r] = _mm512_dpbf16_ps(acc1[r], a, b1);
                        }
                    }
                }
                for r in 0..R {
                    let o = (ii + r) * ws + jj;
                    // SAFETY: row ii + r < mp and columns jj..jj+32 ≤ wp ≤ ws of `out`
                    // (out.len() ≥ mp·ws, asserted by the caller).
                    unsafe {
                        _mm512_storeu_ps(out.as_mut_ptr().add(o), acc0[r]);
                        _mm512_storeu_ps(out.as_mut_ptr().add(o + 16), acc1[r]);
                    }
                }
            }
        }
    }

    /// [`Prepared::approx_into`] on AMX tiles: 2 × 2 output tiles of 16 × 16 per step of 32 depth.
    fn approx_amx(&self, i0: usize, j0: usize, mp: usize, wp: usize, out: &mut [f32], ws: usize) {
        // Palette 1; tmm0..tmm7 all 16 rows × 64 bytes (16 fp32 / 32 bf16 / 16 bf16 pairs).
        #[repr(C, align(64))]
        struct TileConfig([u8; 64]);
        let mut cfg = TileConfig([0u8; 64]);
        cfg.0[0] = 1;
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64;
            cfg.0[48 + t] = 16;
        }
        let sa = self.dp * 2; // bytes between A rows
        let sc = ws * 4; // bytes between output rows
        let steps = self.dp / 32;
        let group = (self.dp / 2) * 32; // u16s per 16-row group in `pairs`
        // SAFETY: the CPU has AMX and the process holds the tile-data permission (`available`,
        // checked by `new`); the config is 64 valid bytes, aligned.
        unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
        for ii in (0..mp).step_by(32) {
            for jj in (0..wp).step_by(32) {
                let a0 = self.rows[(i0 + ii) * self.dp..].as_ptr();
                let a1 = self.rows[(i0 + ii + 16) * self.dp..].as_ptr();
                let b0 = self.pairs[(j0 + jj) / 16 * group..].as_ptr();
                let b1 = self.pairs[(j0 + jj + 16) / 16 * group..].as_ptr();
                let c0 = out[ii * ws + jj..].as_mut_ptr();
                let c2 = out[(ii + 16) * ws + jj..].as_mut_ptr();
                // SAFETY: by the assertions above, the A tiles read rows i0+ii.. i0+ii+32 of
                // `rows` (dp bf16 each, `steps` × 64 bytes), the B tiles read groups
                // (j0+jj)/16 and the next (each `steps` × 1024 bytes), and the stores write
                // rows ii..ii+32, columns jj..jj+32 of `out` (row stride ws). The tile
                // registers are not used by compiled Rust code.
                unsafe {
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        "2:",
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        "add {a0}, 64",
                        "add {a1}, 64",
                        "add {b0}, 1024",
                        "add {b1}, 1024",
                        "dec {k}",
                        "jnz 2b",
                        "tilestored [{c0} + {sc}*1], tmm0",
                        "tilestored [{c0} + {sc}*1 + 64], tmm1",
                        "tilestored [{c2} + {sc}*1], tmm2",
                        "tilestored [{c2} + {sc}*1 + 64], tmm3",
                        a0 = inout(reg) a0 => _,
                        a1 = inout(reg) a1 => _,
                        b0 = inout(reg) b0 => _,
                        b1 = inout(reg) b1 => _,
                        k = inout(reg) steps => _,
                        sa = in(reg) sa,
                        sb = in(reg) 64usize,
                        sc = in(reg) sc,
                        c0 = in(reg) c0,
                        c2 = in(reg) c2,
                        options(nostack),
                    );
                }
            }
        }
        // SAFETY: releases the tile state loaded above (AMX is available).
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Per-thread buffers of the bf16 pass.
#[derive(Default)]
pub(super) struct Scratch {
    approx: Vec<f32>,
    b_sq: Vec<f32>,
    row_thr: Vec<f32>,
    col_thr: Vec<f32>,
    hits: Hits,
    fused: avx2::Fused,
}

/// Scratch of [`certify_tile`]: the chunks to recompute (row, first column, lanes), sorted.
#[derive(Default)]
struct Hits {
    hits: Vec<(u32, u32, u16)>,
    order: Vec<(u32, u32, u16)>,
    starts: Vec<usize>,
}

/// The heaps a tile feeds: its rows' and, off the diagonal, its columns' (`None` on the
/// diagonal, where entry `(i, j)` reaches heap `j` as entry `(j, i)`), and the tile's first
/// row and column indices.
pub(super) struct Heaps<'a> {
    pub rows: &'a mut [super::TopK],
    pub cols: Option<&'a mut [super::TopK]>,
    pub i0: usize,
    pub j0: usize,
}

/// Everything [`certify_tile`] reads besides the approximate tile.
struct Certify<'a> {
    /// The tile's rows (`m × d`, row-major fp32) and `d`.
    pub a_rows: &'a [f32],
    pub d: usize,
    /// The column block transposed by chunks ([`Prepared::transposed`]).
    pub bt: &'a [f32],
    /// Squared norms for L2 (zeros otherwise): rows (`m`), columns (`≥ wp`, padded).
    pub a_sq: &'a [f32],
    pub b_sq: &'a [f32],
    /// Norm upper bounds: rows (`m`), columns (`≥ wp`).
    pub a_norm: &'a [f32],
    pub b_norm: &'a [f32],
    /// Current heap thresholds: rows (`m`), columns (`≥ wp`, padding at −∞).
    pub row_thr: &'a [f32],
    pub col_thr: &'a [f32],
    /// `−2` (L2) or `−1`: the tile holds `beta · a·b`.
    pub beta: f32,
    /// Keys are `‖a‖² + ‖b‖² − 2a·b` (L2) rather than `−a·b`.
    pub l2: bool,
}

/// Feeds the heaps from the approximate `m × w` tile `approx` (row stride `ws`): every
/// 16-column chunk of a row with a lane whose `lo` is at most the row's or the column's
/// threshold is recomputed exactly and its keys offered to both heaps (the row's only, on the
/// diagonal); the other chunks are skipped. Returns the number of chunks recomputed.
///
/// The lower bound of the key `K = max(0, (‖a‖² + ‖b‖²) + beta·g)` (`x + beta·g` with
/// `x = 0` for similarities), from `s = fl(x + beta·ŝ)` and `E = c·‖a‖‖b‖ + e_abs ≥ |ŝ − g|`:
/// `lo = s − δ`, `δ = |beta|·E·(1 + 2⁻²⁰) + 2⁻²¹·(|x| + |beta·ŝ| + |beta|·E)`. The second term
/// covers the rounding of `s`, of the exact key and of `lo` itself (each at most `2⁻²⁴`
/// relative to `|x| + |beta·ŝ| + |beta|·E`), and the factor on the first the rounding of
/// `E` and `δ` (a few relative `2⁻²⁴` steps); so `lo ≤ K` whenever `|ŝ − g| ≤ E`. In the
/// same way `hi = max(0, s + δ) ≥ K`.
///
/// On a diagonal tile (`heaps.cols` is `None`), a row whose heap is not yet full (threshold `+∞`) gets the
/// threshold `U` = the `k`-th smallest, over the row's 16-column chunks, of the chunk's
/// smallest `hi` (the row's own column left out): `k` distinct entries have exact keys `≤ U`,
/// all of them are recomputed (their `lo ≤ hi ≤ U`) and pushed, so an entry with `lo > U`
/// has `k` entries with strictly smaller keys and can never be kept. Without this, the first
/// tile of every row would be recomputed entirely.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn certify_tile(p: &Prepared, approx: &[f32], ws: usize, m: usize, w: usize, x: &Certify<'_>, k: usize, heaps: Heaps<'_>, scratch: &mut Hits) -> usize {
    let Hits { hits, order, starts } = scratch;
    let Heaps { rows, mut cols, i0, j0 } = heaps;
    let diag = cols.is_none();
    let d = x.d;
    assert!(rows.len() >= m && cols.as_ref().is_none_or(|c| c.len() >= w), "certify_tile: heaps");
    assert!(approx.len() >= m * ws && x.a_rows.len() >= m * d && x.bt.len() >= d * w.div_ceil(16) * 16, "certify_tile: shape");
    let wp = w.div_ceil(16) * 16;
    assert!(wp <= ws && x.b_sq.len() >= wp && x.b_norm.len() >= wp && x.col_thr.len() >= wp, "certify_tile: padding");
    assert!(x.a_sq.len() >= m && x.a_norm.len() >= m && x.row_thr.len() >= m, "certify_tile: rows");
    let beta = _mm512_set1_ps(x.beta);
    let be_abs = _mm512_set1_ps(x.beta.abs() * p.e_abs);
    let widen = _mm512_set1_ps(1.0 + 2f32.powi(-20));
    let slack = _mm512_set1_ps(2f32.powi(-21));
    let zero = _mm512_setzero_ps();
    let chunks = wp / 16;
    let mut minima = Vec::new();
    hits.clear();
    for i in 0..m {
        let a_sq = _mm512_set1_ps(x.a_sq[i]);
        // |beta|·c·‖a_i‖: E·|beta| = fma(ca, ‖b_j‖, |beta|·e_abs).
        let ca = _mm512_set1_ps(x.beta.abs() * p.c * x.a_norm[i]);
        // (lo, hi) of chunk c0 of this row.
        let bounds = |s_hat: __m512, b_sq: __m512, b_norm: __m512| {
            let xs = _mm512_add_ps(a_sq, b_sq);
            let bv = _mm512_mul_ps(beta, s_hat);
            let s = _mm512_add_ps(xs, bv);
            let be = _mm512_fmadd_ps(ca, b_norm, be_abs);
            let sum = _mm512_add_ps(_mm512_add_ps(_mm512_abs_ps(xs), _mm512_abs_ps(bv)), be);
            let delta = _mm512_fmadd_ps(slack, sum, _mm512_mul_ps(be, widen));
            (_mm512_sub_ps(s, delta), _mm512_max_ps(_mm512_add_ps(s, delta), zero))
        };
        let row = approx[i * ws..i * ws + wp].as_ptr();
        let load = |c0: usize| {
            // SAFETY: callers pass c0 + 16 ≤ wp ≤ ws, and the row of `approx` and the padded
            // column slices `b_sq`, `b_norm` hold at least wp floats (asserted above).
            unsafe { (_mm512_loadu_ps(row.add(c0)), _mm512_loadu_ps(x.b_sq.as_ptr().add(c0)), _mm512_loadu_ps(x.b_norm.as_ptr().add(c0))) }
        };
        let lanes_of = |c0: usize| -> __mmask16 { if w - c0 >= 16 { 0xffff } else { (1u16 << (w - c0)) - 1 } };
        let mut thr_i = x.row_thr[i];
        if diag && thr_i == f32::INFINITY && k <= chunks.saturating_sub(1) {
            minima.clear();
            for c0 in (0..w).step_by(16) {
                let mut keep = lanes_of(c0);
                if (c0..c0 + 16).contains(&i) {
                    keep &= !(1u16 << (i - c0));
                }
                let (sh, bs, bn) = load(c0);
                let (_, hi) = bounds(sh, bs, bn);
                minima.push(_mm512_mask_reduce_min_ps(keep, hi));
            }
            let (_, &mut u, _) = minima.select_nth_unstable_by(k - 1, f32::total_cmp);
            thr_i = u;
        }
        let row_thr = _mm512_set1_ps(thr_i);
        for c0 in (0..w).step_by(16) {
            let (sh, bs, bn) = load(c0);
            let (lo, _) = bounds(sh, bs, bn);
            // SAFETY: c0 + 16 ≤ wp ≤ col_thr.len().
            let col_thr = unsafe { _mm512_loadu_ps(x.col_thr.as_ptr().add(c0)) };
            // No lane mask: the padded columns' lo is NaN (`b_sq` is +∞ there).
            let mut hit = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(lo, row_thr) | _mm512_cmp_ps_mask::<_CMP_LE_OQ>(lo, col_thr);
            if hit != 0 {
                if diag && (c0..c0 + 16).contains(&i) {
                    hit &= !(1u16 << (i - c0));
                }
                if hit != 0 {
                    hits.push((i as u32, c0 as u32, hit));
                }
            }
        }
    }
    // The exact recompute, by column chunk (counting sort), eight rows at a time: each load of
    // the column chunk feeds eight independent FMA chains.
    sort_by_chunk(hits, order, starts, chunks, 16);
    let mut from = 0;
    while from < order.len() {
        let c0 = order[from].1;
        let mut to = from;
        while to < order.len() && to - from < 8 && order[to].1 == c0 {
            to += 1;
        }
        let group = &order[from..to];
        from = to;
        let g = group.len();
        let mut acc = [zero; 8];
        let mut a_ptr = [x.a_rows.as_ptr(); 8];
        for (l, &(i, _, _)) in group.iter().enumerate() {
            a_ptr[l] = x.a_rows[i as usize * d..].as_ptr();
        }
        let b_ptr = x.bt[c0 as usize * d..].as_ptr();
        // SAFETY: row i < m of a_rows has d entries; chunk c0 / 16 < wp / 16 of bt has d × 16
        // entries from c0·d (asserted above).
        unsafe {
            if g == 8 {
                for t in 0..d {
                    let b = _mm512_loadu_ps(b_ptr.add(t * 16));
                    for l in 0..8 {
                        acc[l] = _mm512_fmadd_ps(_mm512_set1_ps(*a_ptr[l].add(t)), b, acc[l]);
                    }
                }
            } else {
                for t in 0..d {
                    let b = _mm512_loadu_ps(b_ptr.add(t * 16));
                    for l in 0..g {
                        acc[l] = _mm512_fmadd_ps(_mm512_set1_ps(*a_ptr[l].add(t)), b, acc[l]);
                    }
                }
            }
            for (l, &(i, c0, lanes)) in group.iter().enumerate() {
                let mut v = [0f32; 16];
                _mm512_storeu_ps(v.as_mut_ptr(), _mm512_mul_ps(beta, acc[l]));
                offer(&v, i as usize, c0 as usize, lanes, x, rows, cols.as_deref_mut(), i0, j0);
            }
        }
    }
    hits.len()
}

/// Orders the hits `(row, first column, lanes)` by column chunk of `width` columns (a counting
/// sort into `order`; `starts` is scratch; `chunks` chunks in all), so the exact recompute loads
/// each chunk's column values once per group of rows.
fn sort_by_chunk(hits: &[(u32, u32, u16)], order: &mut Vec<(u32, u32, u16)>, starts: &mut Vec<usize>, chunks: usize, width: usize) {
    order.clear();
    order.resize(hits.len(), (0, 0, 0));
    starts.clear();
    starts.resize(chunks + 1, 0);
    for &(_, c0, _) in hits {
        starts[c0 as usize / width + 1] += 1;
    }
    for q in 0..chunks {
        starts[q + 1] += starts[q];
    }
    for &h in hits {
        let q = h.1 as usize / width;
        order[starts[q]] = h;
        starts[q] += 1;
    }
}

/// Offers the exact values `v` (`beta · a_i·b_j` for columns `c0..c0 + 16` of tile row `i`) of
/// the lanes in `lanes` to row `i`'s heap and, off the diagonal, to the columns' heaps.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn offer(v: &[f32; 16], i: usize, c0: usize, lanes: u16, x: &Certify<'_>, rows: &mut [super::TopK], mut cols: Option<&mut [super::TopK]>, i0: usize, j0: usize) {
    let heap = &mut rows[i];
    let mut bits = lanes;
    while bits != 0 {
        let t = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let j = c0 + t;
        // The scan's key expression (`super::tile_key`), so keys are bit-identical.
        let key = if x.l2 { super::tile_key::<true>(x.a_sq[i], x.b_sq[j], v[t]) } else { v[t] };
        if key <= heap.worst_key() {
            heap.push(key, j0 + j);
        }
        if let Some(cols) = cols.as_deref_mut()
            && key <= cols[j].worst_key()
        {
            cols[j].push(key, i0 + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_tile_is_within_the_bound_on_every_unit_this_cpu_has() {
        let units = supported();
        eprintln!("bf16 units on this CPU: {units:?}");
        for unit in units {
            approx_tile_within_the_bound(unit);
        }
    }

    fn approx_tile_within_the_bound(unit: Unit) {
        let (n, d) = (96, 100);
        let mut s = 9u64;
        let data: Vec<f32> = (0..n * d)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        let p = Prepared::new(&data, d, 64, unit).unwrap();
        let mut out = vec![0f32; 64 * 64];
        p.approx_into(0, 64, 64, 64, &mut out, 64);
        let mut worst = 0f64;
        for i in 0..64 {
            for j in 0..32 {
                let (a, b) = (&data[i * d..(i + 1) * d], &data[(64 + j) * d..(65 + j) * d]);
                let exact: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
                let bound = p.c as f64 * p.norm_up[i] as f64 * p.norm_up[64 + j] as f64;
                let err = (out[i * 64 + j] as f64 - exact).abs();
                worst = worst.max(err / bound);
            }
            // Columns past the data are zero padding.
            assert!(out[i * 64 + 32..i * 64 + 64].iter().all(|&v| v == 0.0));
        }
        assert!(worst <= 1.0 && worst > 0.01, "{unit:?}: worst error / bound = {worst}");
    }
}
