//! Exact k-nearest-neighbour search: blocked GEMM + per-query bounded heaps.
//!
//! Why: retrieval metrics need the exact neighbours of every query, and this search is
//! the oracle that approximate indexes are checked against later. A naive N×N distance
//! matrix needs 10 GB at N = 50 000, so the search streams over
//! `query block × reference block` tiles: each tile's inner products come from one
//! cache-friendly GEMM call (the `gemm` crate, single-threaded per tile), then every row
//! of the tile is scanned against the query's current k-th best, and only the running
//! top-k survives. Query blocks run in parallel with rayon. Memory is
//! `O(threads · QB · RB + N · k)`.
//!
//! When the reference is the query set itself (the usual evaluation, query = reference) the
//! distance matrix is symmetric, so only the tiles on and above the block diagonal are
//! computed: each off-diagonal tile feeds the heaps of its rows *and*, transposed, the heaps of
//! its columns. That halves the GEMM work (`N²D` instead of `2N²D` flops). Each pair's key is
//! then computed once and used for both rows, so the result does not depend on which thread
//! touched which heap first: a heap keeps the `k` smallest `(key, index)` pairs, a set that is
//! independent of insertion order.
//!
//! On x86-64 CPUs (module `knn::bf16`: AMX-BF16 or AVX512-BF16, else 16-bit fixed point on
//! AVX2), the symmetric search computes its tiles in low precision first and recomputes in fp32,
//! in the GEMM's own order of operations, only the entries that could still enter a heap: the
//! results are bit-identical, in about 60–70 % of the time.
//!
//! Ordering is total and deterministic: by distance (or negated similarity), then by
//! lower reference index — the same tie rule as faiss's exact `IndexFlatL2`.
//!
//! Numerics for L2: `‖q − r‖² = ‖q‖² + ‖r‖² − 2 q·r`, with norms accumulated in `f64`,
//! the product in `f32`, and the result clamped at 0 (cancellation can make it slightly
//! negative for near-identical vectors, exactly as faiss clamps).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::matrix::{Embeddings, check_same_dim};

#[cfg(target_arch = "x86_64")]
mod bf16;
/// The candidate pass needs x86-64 (AMX, AVX512-BF16 or AVX2): elsewhere it never applies.
#[cfg(not(target_arch = "x86_64"))]
mod bf16 {
    /// Never constructed.
    pub(super) enum Prepared {}
    #[derive(Default)]
    pub(super) struct Scratch;
    pub(super) struct Heaps<'a> {
        pub rows: &'a mut [super::TopK],
        pub cols: Option<&'a mut [super::TopK]>,
        pub i0: usize,
        pub j0: usize,
    }
    pub use super::CandidateUnit as Unit;
    pub fn available() -> Option<Unit> {
        None
    }
    pub fn supported() -> Vec<Unit> {
        Vec::new()
    }
    impl Prepared {
        pub(super) fn new(_: &[f32], _: usize, _: usize, _: Unit) -> Option<Prepared> {
            None
        }
        pub(super) fn approx_tile(&self, _: &mut Scratch, _: usize, _: usize, _: usize, _: usize) {
            match *self {}
        }
        #[allow(clippy::too_many_arguments)]
        pub(super) fn feed_heaps(&self, _: &mut Scratch, _: &[f32], _: &[f32], _: &[f32], _: f32, _: bool, _: usize, _: Heaps<'_>) -> usize {
            match *self {}
        }
        pub(super) fn fuses(&self) -> bool {
            match *self {}
        }
        pub(super) fn snapshot(&self, _: &mut Scratch, _: &[super::TopK], _: &[super::TopK]) {
            match *self {}
        }
        pub(super) fn approx_masks(&self, _: &mut Scratch, _: usize, _: usize, _: &[f32], _: &[f32], _: f32) {
            match *self {}
        }
        #[allow(clippy::too_many_arguments)]
        pub(super) fn feed_from_masks(&self, _: &mut Scratch, _: &[f32], _: &[f32], _: &[f32], _: f32, _: bool, _: Heaps<'_>) -> usize {
            match *self {}
        }
    }
}

/// The unit that computed the approximate tiles of the exact candidate pass (see [`bf16`]):
/// chosen at run time, best first; `PROXIMA_KNN_BF16=0` turns the pass off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateUnit {
    /// AMX tiles (`TDPBF16PS`, bf16): Intel Sapphire Rapids and later.
    Amx,
    /// AVX-512 `VDPBF16PS` (bf16): AMD Zen 4 and later, Intel since Cooper Lake.
    Avx512Bf16,
    /// AVX2 `VPMADDWD` on 16-bit fixed point: every x86-64 CPU since Intel Haswell and AMD
    /// Zen 1, for those with neither of the units above (e.g. AMD Zen 3).
    Avx2Int16,
}

/// Query rows per tile.
const QB: usize = 512;
/// Reference rows per tile.
const RB: usize = 1024;
/// Heap memory budget per query block, in bytes (limits QB when k is very large).
const HEAP_BUDGET: usize = 64 << 20;

/// How closeness between two embeddings is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Euclidean distance `‖q − r‖` (lower is closer).
    L2,
    /// Squared Euclidean distance `‖q − r‖²` (lower is closer); same ranking as `L2`.
    L2Squared,
    /// Cosine similarity `q·r / (‖q‖‖r‖)` (higher is closer).
    Cosine,
    /// Inner product `q·r` (higher is closer).
    Dot,
}

impl Metric {
    /// True when the reported score is a similarity (higher is closer).
    pub fn higher_is_closer(self) -> bool {
        matches!(self, Metric::Cosine | Metric::Dot)
    }

    /// Convert a reported score into a similarity (higher is closer): distances are negated.
    pub fn to_similarity(self, score: f32) -> f32 {
        if self.higher_is_closer() { score } else { -score }
    }
}

/// The k nearest references of every query, closest first.
///
/// # Shapes
/// `indices` and `scores` are row-major `num_queries × k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnResult {
    /// Neighbours per query.
    pub k: usize,
    /// The metric the scores are in.
    pub metric: Metric,
    /// Reference indices, `num_queries × k`.
    pub indices: Vec<usize>,
    /// Distances (L2, L2Squared) or similarities (Cosine, Dot), `num_queries × k`.
    pub scores: Vec<f32>,
}

impl KnnResult {
    /// Number of queries.
    pub fn num_queries(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    /// Neighbour indices of query `i`, closest first.
    pub fn row_indices(&self, i: usize) -> &[usize] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Scores of query `i`'s neighbours, closest first.
    pub fn row_scores(&self, i: usize) -> &[f32] {
        &self.scores[i * self.k..(i + 1) * self.k]
    }
}

/// Timing of one k-NN search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnnStats {
    /// Floating-point operations of all inner products, `2·nq·nr·d` (the nominal work).
    pub flops: f64,
    /// Floating-point operations the GEMM calls actually did (about half of `flops` when the
    /// reference is the query set: symmetric tiles are computed once).
    pub gemm_flops: f64,
    /// Wall-clock seconds of the whole search (GEMM + selection + setup).
    pub seconds: f64,
    /// Summed thread-seconds spent inside GEMM calls (the bf16 candidate products where they replace
    /// the GEMM; `gemm_gflops_per_thread` then counts the fp32 flops they stand for).
    pub gemm_thread_seconds: f64,
    /// Summed thread-seconds spent selecting the top-k from the tiles (symmetric path; 0 otherwise).
    #[serde(default)]
    pub scan_thread_seconds: f64,
    /// `flops / seconds / 1e9`: end-to-end rate, counting the nominal work.
    pub effective_gflops: f64,
    /// `gemm_flops / gemm_thread_seconds / 1e9`: GEMM rate of one thread.
    pub gemm_gflops_per_thread: f64,
    /// The unit of the exact candidate pass, when it ran (symmetric search only).
    #[serde(default)]
    pub candidate_unit: Option<CandidateUnit>,
    /// Tiles that took the candidate pass.
    #[serde(default)]
    pub candidate_tiles: u64,
    /// Of those tiles' 16-column chunks of a row, how many were examined and how many had to be
    /// recomputed exactly (`recomputed / examined` is the pass's overhead).
    #[serde(default)]
    pub candidate_chunks: u64,
    #[serde(default)]
    pub recomputed_chunks: u64,
}

/// Exact k-NN of `query` rows among `reference` rows (`None`: the query set itself, each
/// query's own row excluded).
///
/// # Shapes
/// `query`: `nq × d`, `reference`: `nr × d`; result `nq × k`. Requires
/// `1 <= k <= nr` (or `nr − 1` when the reference is the query set).
pub fn knn(query: Embeddings<'_>, reference: Option<Embeddings<'_>>, k: usize, metric: Metric) -> Result<KnnResult> {
    knn_with_stats(query, reference, k, metric).map(|(r, _)| r)
}

/// As [`knn`], also returning timing and GEMM rate.
pub fn knn_with_stats(query: Embeddings<'_>, reference: Option<Embeddings<'_>>, k: usize, metric: Metric) -> Result<(KnnResult, KnnStats)> {
    knn_impl(query, reference, k, metric, true)
}

/// The search; `symmetric` allows the half-matrix path when the reference is the query set
/// (false only in tests, to compare both paths).
fn knn_impl(query: Embeddings<'_>, reference: Option<Embeddings<'_>>, k: usize, metric: Metric, symmetric: bool) -> Result<(KnnResult, KnnStats)> {
    let start = Instant::now();
    let same = reference.is_none();
    let reference = reference.unwrap_or(query);
    check_same_dim(("query", query.dim()), ("reference", reference.dim()))?;
    let nq = query.rows();
    let nr = reference.rows();
    let d = query.dim();
    let max_k = if same { nr - 1 } else { nr };
    if k == 0 || k > max_k {
        return Err(EvalError::InvalidK { k, max: max_k, reason: if same { "reference is the query set minus the query itself" } else { "number of reference rows" } });
    }

    // Prepare operands: cosine works on normalised copies; L2 needs squared norms.
    let (qbuf, rbuf);
    let (qdata, rdata): (&[f32], &[f32]) = if metric == Metric::Cosine {
        qbuf = normalized("query", query)?;
        if same {
            (&qbuf, &qbuf)
        } else {
            rbuf = normalized("reference", reference)?;
            (&qbuf, &rbuf)
        }
    } else {
        (query.data(), reference.data())
    };
    let l2 = matches!(metric, Metric::L2 | Metric::L2Squared);
    let (qn, rn) = if l2 {
        let qn = sq_norms("query", query)?;
        let rn = if same { qn.clone() } else { sq_norms("reference", reference)? };
        (qn, rn)
    } else {
        (Vec::new(), Vec::new())
    };

    let qb = (HEAP_BUDGET / (k * 16).max(1)).clamp(1, QB);
    let mut indices = vec![0usize; nq * k];
    let mut scores = vec![0f32; nq * k];
    let gemm_nanos = AtomicU64::new(0);
    let scan_nanos = AtomicU64::new(0);
    let finish = |indices, scores, gemm_flops: f64, gemm_nanos: &AtomicU64, candidate: Option<(CandidateUnit, [u64; 3])>| {
        let seconds = start.elapsed().as_secs_f64();
        let flops = 2.0 * nq as f64 * nr as f64 * d as f64;
        let gemm_thread_seconds = gemm_nanos.load(Ordering::Relaxed) as f64 * 1e-9;
        let stats = KnnStats {
            flops,
            gemm_flops,
            seconds,
            gemm_thread_seconds,
            scan_thread_seconds: scan_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
            effective_gflops: flops / seconds.max(1e-12) / 1e9,
            gemm_gflops_per_thread: gemm_flops / gemm_thread_seconds.max(1e-12) / 1e9,
            candidate_unit: candidate.map(|c| c.0),
            candidate_tiles: candidate.map_or(0, |c| c.1[0]),
            candidate_chunks: candidate.map_or(0, |c| c.1[1]),
            recomputed_chunks: candidate.map_or(0, |c| c.1[2]),
        };
        (KnnResult { k, metric, indices, scores }, stats)
    };
    if same && symmetric {
        let block = qb.min(SYM_B);
        let unit = bf16::available();
        let (gemm_flops, counts) = knn_self_symmetric(qdata, &qn, d, k, block, l2, metric, &mut indices, &mut scores, [&gemm_nanos, &scan_nanos], unit);
        let candidate = unit.filter(|_| counts[0] > 0).map(|u| (u, counts));
        return Ok(finish(indices, scores, gemm_flops, &gemm_nanos, candidate));
    }

    indices.par_chunks_mut(qb * k).zip(scores.par_chunks_mut(qb * k)).enumerate().for_each(|(bi, (idx_out, score_out))| {
        let q0 = bi * qb;
        let m = idx_out.len() / k;
        let qblock = &qdata[q0 * d..(q0 + m) * d];
        let mut heaps: Vec<TopK> = (0..m).map(|_| TopK::new(k)).collect();
        let mut tile = vec![0f32; m * RB.min(nr)];
        let mut r0 = 0;
        while r0 < nr {
            let n = RB.min(nr - r0);
            let rblock = &rdata[r0 * d..(r0 + n) * d];
            let t = Instant::now();
            // tile[i, j] = -2 q_i · r_j  (or -q_i · r_j for similarities)
            let beta = if l2 { -2.0f32 } else { -1.0f32 };
            gemm_abt(&mut tile, qblock, rblock, m, n, d, beta);
            gemm_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            for (i, heap) in heaps.iter_mut().enumerate() {
                let row = &mut tile[i * n..(i + 1) * n];
                if l2 {
                    keys_in_place(row, qn[q0 + i], &rn[r0..r0 + n], true);
                }
                let self_j = if same { (q0 + i).checked_sub(r0).filter(|&j| j < n) } else { None };
                if let Some(j) = self_j {
                    row[j] = f32::INFINITY;
                }
                scan_row(row, r0, self_j, heap);
            }
            r0 += n;
        }
        for (i, heap) in heaps.into_iter().enumerate() {
            for (slot, (key, j)) in heap.into_sorted().into_iter().enumerate() {
                idx_out[i * k + slot] = j;
                score_out[i * k + slot] = final_score(metric, key);
            }
        }
    });

    let gemm_flops = 2.0 * nq as f64 * nr as f64 * d as f64;
    Ok(finish(indices, scores, gemm_flops, &gemm_nanos, None))
}

/// `tile[i, j] = beta · a_i · b_j` for row-major `a` (`m × d`) and `b` (`n × d`); `tile` is
/// `m × n` row-major. Single-threaded (callers parallelise over tiles).
fn gemm_abt(tile: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, d: usize, beta: f32) {
    assert!(tile.len() >= m * n && a.len() >= m * d && b.len() >= n * d, "gemm_abt: buffers too small");
    // SAFETY: the assertion above makes all pointers cover the stated extents: tile is m×n
    // row-major (row stride n), a is m×d row-major, b is n×d row-major read as the d×n matrix
    // bᵀ (column stride d, row stride 1).
    unsafe {
        gemm::gemm(
            m,
            n,
            d,
            tile.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            d as isize,
            b.as_ptr(),
            d as isize,
            1,
            0.0f32,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Turns raw tile values into keys (smaller is closer): for L2, `‖a_i‖² + ‖b_j‖² − 2 a_i·b_j`
/// clamped at 0 (the tile holds `−2 a_i·b_j`); for similarities the tile already holds `−a_i·b_j`.
#[inline]
fn keys_in_place(row: &mut [f32], a_norm: f32, b_norms: &[f32], l2: bool) {
    if l2 {
        for (v, &r) in row.iter_mut().zip(b_norms) {
            *v = (a_norm + r + *v).max(0.0);
        }
    }
}

/// The heap key of a tile value: `(‖a‖² + ‖b‖²) − 2a·b` clamped at 0 for L2 (the tile holds
/// `−2a·b`), the tile value itself (`−a·b`) for similarities. Both scans of a tile use this one
/// expression, so a pair gets the same key in its row's heap and in its column's.
#[inline(always)]
fn tile_key<const L2: bool>(a: f32, b: f32, v: f32) -> f32 {
    if L2 { (a + b + v).max(0.0) } else { v }
}

/// The column side of an off-diagonal tile: the heaps of its columns (the transposed tile),
/// the tile's first row index, and two `w`-long scratch rows.
struct ColumnHeaps<'a> {
    heaps: &'a mut [TopK],
    i0: usize,
    colmin: &'a mut [f32],
    thr: &'a mut [f32],
}

/// Offers every entry of a `m × w` tile to its row's heap and, for an off-diagonal tile
/// (`cols`), to its column's heap — the transposed tile, without transposing it. One sweep:
/// each key is computed once (on the fly, never stored); a 16-column chunk of a row is pushed
/// only when one of its keys can enter the row's heap; a running minimum per column over 16
/// rows decides which columns are pushed. On the diagonal (`cols` = None) column `i` of row `i`
/// is the query itself and is skipped.
#[inline(always)]
fn scan_tile<const L2: bool, const DIAG: bool>(
    tile: &[f32],
    w: usize,
    a_norms: &[f32],
    b_norms: &[f32],
    j0: usize,
    rows: &mut [TopK],
    mut cols: Option<ColumnHeaps<'_>>,
) {
    const W: usize = 16;
    const R: usize = 16;
    // A compile-time flag, so that the off-diagonal tiles (all but one in a block row) carry
    // neither the self-column test nor a run-time branch on `cols` in their inner loop.
    debug_assert_eq!(DIAG, cols.is_none());
    let diag = DIAG;
    if let Some(c) = cols.as_mut() {
        for (t, h) in c.thr[..w].iter_mut().zip(c.heaps.iter()) {
            *t = h.worst_key();
        }
        c.colmin[..w].fill(f32::INFINITY);
    }
    let m = tile.len() / w;
    let full = w / W * W;
    for (i, (row, heap)) in tile.chunks_exact(w).zip(rows.iter_mut()).enumerate() {
        let a = a_norms[i];
        let mut thr = heap.worst_key();
        let mut colmin = cols.as_mut().map(|c| &mut c.colmin[..w]);
        // Whole 16-column chunks as fixed-size arrays (no bounds checks or masks inside), then
        // the tile's last, partial chunk padded with keys that never enter a heap.
        for c0 in (0..full).step_by(W) {
            let vs: &[f32; W] = row[c0..c0 + W].try_into().expect("W columns");
            let bs: &[f32; W] = b_norms[c0..c0 + W].try_into().expect("W columns");
            let mut keys = [0f32; W];
            for t in 0..W {
                keys[t] = tile_key::<L2>(a, bs[t], vs[t]);
            }
            if !DIAG && let Some(cm) = &mut colmin {
                let cm: &mut [f32; W] = (&mut cm[c0..c0 + W]).try_into().expect("W columns");
                for t in 0..W {
                    cm[t] = if keys[t] < cm[t] { keys[t] } else { cm[t] };
                }
            }
            // The query's own column on the diagonal, as a lane number (W: none). A lane test,
            // not a write into `keys` at a computed index, which would keep `keys` in memory.
            let self_lane = if diag && (c0..c0 + W).contains(&i) { i - c0 } else { W };
            // A branch-free OR of comparisons (vectorises), not a `min` fold (a serial chain).
            let hit = if DIAG {
                keys.iter().enumerate().fold(false, |h, (t, &key)| h | (key <= thr && t != self_lane))
            } else {
                keys.iter().fold(false, |h, &key| h | (key <= thr))
            };
            if hit {
                for (t, &key) in keys.iter().enumerate() {
                    if key <= thr && t != self_lane {
                        heap.push(key, j0 + c0 + t);
                        thr = heap.worst_key();
                    }
                }
            }
        }
        if full < w {
            let mut keys = [f32::INFINITY; W];
            for (t, key) in keys[..w - full].iter_mut().enumerate() {
                *key = tile_key::<L2>(a, b_norms[full + t], row[full + t]);
            }
            if let Some(cm) = &mut colmin {
                for (c, &key) in cm[full..].iter_mut().zip(&keys) {
                    *c = if key < *c { key } else { *c };
                }
            }
            if diag && i >= full {
                keys[i - full] = f32::INFINITY;
            }
            for (t, &key) in keys.iter().enumerate() {
                if key <= thr {
                    heap.push(key, j0 + full + t);
                    thr = heap.worst_key();
                }
            }
        }
        // Every R rows (and at the end), push the columns whose minimum can enter their heap.
        if let Some(c) = cols.as_mut()
            && ((i + 1) % R == 0 || i + 1 == m)
        {
            let r0 = i + 1 - ((i % R) + 1);
            for c0 in (0..w).step_by(W) {
                let end = (c0 + W).min(w);
                // The chunk's columns with a candidate, as bits (one vectorised test); most
                // chunks have none.
                let mask = c.colmin[c0..end].iter().zip(&c.thr[c0..end]).enumerate().fold(0u32, |m, (t, (&cm, &th))| m | (((cm <= th) as u32) << t));
                let mut bits = mask;
                while bits != 0 {
                    let j = c0 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let heap = &mut c.heaps[j];
                    for r in r0..=i {
                        let key = tile_key::<L2>(a_norms[r], b_norms[j], tile[r * w + j]);
                        if key <= c.thr[j] {
                            heap.push(key, c.i0 + r);
                            c.thr[j] = heap.worst_key();
                        }
                    }
                }
            }
            c.colmin[..w].fill(f32::INFINITY);
        }
    }
}

/// [`scan_tile`] compiled for AVX-512 (16 lanes: one chunk per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scan_tile_avx512<const L2: bool, const DIAG: bool>(
    tile: &[f32],
    w: usize,
    a_norms: &[f32],
    b_norms: &[f32],
    j0: usize,
    rows: &mut [TopK],
    cols: Option<ColumnHeaps<'_>>,
) {
    scan_tile::<L2, DIAG>(tile, w, a_norms, b_norms, j0, rows, cols)
}

/// [`scan_tile`] compiled for AVX2 (8 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_tile_avx2<const L2: bool, const DIAG: bool>(
    tile: &[f32],
    w: usize,
    a_norms: &[f32],
    b_norms: &[f32],
    j0: usize,
    rows: &mut [TopK],
    cols: Option<ColumnHeaps<'_>>,
) {
    scan_tile::<L2, DIAG>(tile, w, a_norms, b_norms, j0, rows, cols)
}

/// [`scan_tile`] with the widest vector instructions this CPU has (the build targets baseline
/// x86-64, whose SSE2 handles 4 lanes; the scan costs about as much as the GEMM without this).
fn scan_tile_best<const L2: bool, const DIAG: bool>(
    tile: &[f32],
    w: usize,
    a_norms: &[f32],
    b_norms: &[f32],
    j0: usize,
    rows: &mut [TopK],
    cols: Option<ColumnHeaps<'_>>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { scan_tile_avx512::<L2, DIAG>(tile, w, a_norms, b_norms, j0, rows, cols) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { scan_tile_avx2::<L2, DIAG>(tile, w, a_norms, b_norms, j0, rows, cols) };
        }
    }
    scan_tile::<L2, DIAG>(tile, w, a_norms, b_norms, j0, rows, cols)
}

/// Square blocks of the symmetric (query = reference) search.
const SYM_B: usize = 512;

/// The query-set-is-reference search over the upper block triangle only (see the module docs);
/// writes `indices`/`scores` (`n × k`). Uses the exact bf16 candidate pass ([`bf16`]) where the CPU
/// allows and `bf16_unit` names a unit. Returns the flops of the GEMM calls made, the number of tiles
/// that took the candidate pass, the number of row chunks (16 columns) those tiles hold and the
/// number it recomputed exactly.
#[allow(clippy::too_many_arguments)]
fn knn_self_symmetric(
    data: &[f32],
    norms: &[f32],
    d: usize,
    k: usize,
    block: usize,
    l2: bool,
    metric: Metric,
    indices: &mut [usize],
    scores: &mut [f32],
    [gemm_nanos, scan_nanos]: [&AtomicU64; 2],
    bf16_unit: Option<bf16::Unit>,
) -> (f64, [u64; 3]) {
    let n = data.len() / d;
    let nb = n.div_ceil(block);
    let rows_of = |b: usize| block.min(n - b * block);
    let heaps: Vec<Mutex<Vec<TopK>>> = (0..nb).map(|b| Mutex::new((0..rows_of(b)).map(|_| TopK::new(k)).collect())).collect();
    let pairs: Vec<(usize, usize)> = (0..nb).flat_map(|i| (i..nb).map(move |j| (i, j))).collect();
    let beta = if l2 { -2.0f32 } else { -1.0f32 };
    let zeros = vec![0f32; if l2 { 0 } else { block }];
    let norms_of = |r0: usize, len: usize| if l2 { &norms[r0..r0 + len] } else { &zeros[..len] };
    let amx = bf16_unit.and_then(|u| bf16::Prepared::new(data, d, block, u));
    let bf16_tiles = AtomicU64::new(0);
    let recomputed = AtomicU64::new(0);
    let examined = AtomicU64::new(0);
    // The diagonal tiles first: they fill every heap, so the other tiles start from real
    // thresholds (the bf16 pass then recomputes few of their entries).
    let run_tile = |(tile, colmin, thr, scratch): &mut (Vec<f32>, Vec<f32>, Vec<f32>, bf16::Scratch), &(bi, bj): &(usize, usize)| {
        let (i0, j0) = (bi * block, bj * block);
        let (m, w) = (rows_of(bi), rows_of(bj));
        let (an, bn) = (norms_of(i0, m), norms_of(j0, w));
        // The bf16 pass needs tiles of at least 32 × 32: smaller ones take `gemm` kernels
        // with another order of operations, which the exact recompute would not match.
        let amx = amx.as_ref().filter(|_| m >= 32 && w >= 32);
        // Off the diagonal the AVX2 unit tests its products against the thresholds while they
        // are still in registers (read first, under the locks), and never stores the tile.
        let fused = amx.filter(|p| bi != bj && p.fuses());
        let t = Instant::now();
        if let Some(p) = fused {
            {
                let rows = heaps[bi].lock().unwrap_or_else(|e| e.into_inner());
                let cols = heaps[bj].lock().unwrap_or_else(|e| e.into_inner());
                p.snapshot(scratch, &rows, &cols);
            }
            p.approx_masks(scratch, bi, bj, an, bn, beta);
        } else if let Some(p) = amx {
            p.approx_tile(scratch, bi, bj, m, w);
        } else {
            gemm_abt(tile, &data[i0 * d..(i0 + m) * d], &data[j0 * d..(j0 + w) * d], m, w, d, beta);
        }
        gemm_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let t = Instant::now();
        // A poisoned lock only means another tile panicked; the heaps are still valid. Locks
        // are taken in block order (bi ≤ bj), so two tiles can never wait on each other.
        let mut rows = heaps[bi].lock().unwrap_or_else(|e| e.into_inner());
        let mut cols = if bi == bj { None } else { Some(heaps[bj].lock().unwrap_or_else(|e| e.into_inner())) };
        if let Some(p) = amx {
            let heaps = bf16::Heaps { rows: &mut rows[..], cols: cols.as_deref_mut().map(|c| &mut c[..]), i0, j0 };
            let a_rows = &data[i0 * d..(i0 + m) * d];
            let r = if fused.is_some() { p.feed_from_masks(scratch, a_rows, an, bn, beta, l2, heaps) } else { p.feed_heaps(scratch, a_rows, an, bn, beta, l2, k, heaps) };
            recomputed.fetch_add(r as u64, Ordering::Relaxed);
            examined.fetch_add((m * w.div_ceil(16)) as u64, Ordering::Relaxed);
            bf16_tiles.fetch_add(1, Ordering::Relaxed);
        } else if let Some(cols) = cols.as_mut() {
            let cols = Some(ColumnHeaps { heaps: &mut cols[..], i0, colmin, thr });
            if l2 {
                scan_tile_best::<true, false>(&tile[..m * w], w, an, bn, j0, &mut rows, cols);
            } else {
                scan_tile_best::<false, false>(&tile[..m * w], w, an, bn, j0, &mut rows, cols);
            }
        } else if l2 {
            scan_tile_best::<true, true>(&tile[..m * w], w, an, bn, j0, &mut rows, None);
        } else {
            scan_tile_best::<false, true>(&tile[..m * w], w, an, bn, j0, &mut rows, None);
        }
        drop(cols);
        drop(rows);
        scan_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    };
    let init = || (vec![0f32; block * block], vec![0f32; block], vec![0f32; block], bf16::Scratch::default());
    pairs.par_iter().filter(|p| p.0 == p.1).for_each_init(init, run_tile);
    pairs.par_iter().filter(|p| p.0 != p.1).for_each_init(init, run_tile);
    for (b, hs) in heaps.into_iter().enumerate() {
        let hs = hs.into_inner().unwrap_or_else(|e| e.into_inner());
        for (i, heap) in hs.into_iter().enumerate() {
            let q = b * block + i;
            for (slot, (key, j)) in heap.into_sorted().into_iter().enumerate() {
                indices[q * k + slot] = j;
                scores[q * k + slot] = final_score(metric, key);
            }
        }
    }
    let flops = pairs.iter().map(|&(i, j)| 2.0 * (rows_of(i) * rows_of(j) * d) as f64).sum();
    (flops, [bf16_tiles.into_inner(), examined.into_inner(), recomputed.into_inner()])
}

/// The reported score of a heap key.
#[inline]
fn final_score(metric: Metric, key: f32) -> f32 {
    match metric {
        Metric::L2Squared => key,
        Metric::L2 => key.sqrt(),
        Metric::Cosine | Metric::Dot => -key,
    }
}

/// Push every entry of `row` (keys of references `r0..`) that can enter the heap.
#[inline]
fn scan_row(row: &[f32], r0: usize, self_j: Option<usize>, heap: &mut TopK) {
    const W: usize = 16;
    let mut base = 0;
    for chunk in row.chunks(W) {
        let thr = heap.worst_key();
        let min = chunk.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        if min <= thr {
            for (o, &key) in chunk.iter().enumerate() {
                let j = base + o;
                if Some(j) != self_j {
                    heap.push(key, r0 + j);
                }
            }
        }
        base += chunk.len();
    }
}

/// Copy rows scaled to unit L2 norm.
fn normalized(what: &'static str, e: Embeddings<'_>) -> Result<Vec<f32>> {
    let d = e.dim();
    let mut out = e.data().to_vec();
    for (i, row) in out.chunks_mut(d).enumerate() {
        let n = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        if n == 0.0 {
            return Err(EvalError::ZeroVector { what, row: i });
        }
        for v in row.iter_mut() {
            *v = (*v as f64 / n) as f32;
        }
    }
    Ok(out)
}

/// Squared row norms (accumulated in f64), rejecting rows whose norm overflows.
fn sq_norms(what: &'static str, e: Embeddings<'_>) -> Result<Vec<f32>> {
    let limit = (f32::MAX / 8.0) as f64;
    (0..e.rows())
        .map(|i| {
            let n: f64 = e.row(i).iter().map(|&v| (v as f64) * (v as f64)).sum();
            if n > limit { Err(EvalError::NormOverflow { what, row: i }) } else { Ok(n as f32) }
        })
        .collect()
}

/// A bounded max-heap keeping the `k` smallest `(key, index)` pairs (lexicographic).
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    /// The worst kept key once `k` are kept, infinity before: read for every tile row and
    /// column, so it sits in the struct (no pointer chase to `keys`).
    worst: f32,
    k: usize,
    keys: Vec<f32>,
    idx: Vec<usize>,
}

impl TopK {
    /// An empty heap of capacity `k`.
    pub(crate) fn new(k: usize) -> Self {
        Self { worst: if k == 0 { f32::NEG_INFINITY } else { f32::INFINITY }, k, keys: Vec::with_capacity(k), idx: Vec::with_capacity(k) }
    }

    /// The key an entry must not exceed to be considered (infinity while not full).
    #[inline]
    pub(crate) fn worst_key(&self) -> f32 {
        self.worst
    }

    #[inline]
    fn greater(&self, a: usize, b: usize) -> bool {
        (self.keys[a], self.idx[a]) > (self.keys[b], self.idx[b])
    }

    /// Offer one candidate.
    #[inline]
    pub(crate) fn push(&mut self, key: f32, j: usize) {
        self.insert(key, j);
        if self.keys.len() == self.k {
            self.worst = self.keys[0];
        }
    }

    /// The heap update of [`TopK::push`].
    #[inline]
    fn insert(&mut self, key: f32, j: usize) {
        if self.k == 0 {
            return;
        }
        if self.keys.len() < self.k {
            self.keys.push(key);
            self.idx.push(j);
            let mut c = self.keys.len() - 1;
            while c > 0 {
                let p = (c - 1) / 2;
                if self.greater(c, p) {
                    self.keys.swap(c, p);
                    self.idx.swap(c, p);
                    c = p;
                } else {
                    break;
                }
            }
        } else if (key, j) < (self.keys[0], self.idx[0]) {
            self.keys[0] = key;
            self.idx[0] = j;
            let len = self.keys.len();
            let mut p = 0;
            loop {
                let l = 2 * p + 1;
                if l >= len {
                    break;
                }
                let r = l + 1;
                let c = if r < len && self.greater(r, l) { r } else { l };
                if self.greater(c, p) {
                    self.keys.swap(c, p);
                    self.idx.swap(c, p);
                    p = c;
                } else {
                    break;
                }
            }
        }
    }

    /// The kept pairs, smallest first.
    pub(crate) fn into_sorted(self) -> Vec<(f32, usize)> {
        let mut v: Vec<(f32, usize)> = self.keys.into_iter().zip(self.idx).collect();
        // partial_cmp: -0.0 and +0.0 are the same distance (keys are never NaN).
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Brute-force reference: all pairs in f64, sorted by (key, index).
    fn brute(q: &[f32], r: &[f32], d: usize, k: usize, metric: Metric, same: bool) -> Vec<Vec<usize>> {
        let nq = q.len() / d;
        let nr = r.len() / d;
        (0..nq)
            .map(|i| {
                let qi = &q[i * d..(i + 1) * d];
                let mut c: Vec<(f64, usize)> = (0..nr)
                    .filter(|&j| !(same && j == i))
                    .map(|j| {
                        let rj = &r[j * d..(j + 1) * d];
                        let dot: f64 = qi.iter().zip(rj).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let key = match metric {
                            Metric::L2 | Metric::L2Squared => qi.iter().zip(rj).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum(),
                            Metric::Dot => -dot,
                            Metric::Cosine => {
                                let na: f64 = qi.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                                let nb: f64 = rj.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                                -dot / (na * nb)
                            }
                        };
                        (key, j)
                    })
                    .collect();
                c.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
                c.into_iter().take(k).map(|x| x.1).collect()
            })
            .collect()
    }

    #[test]
    fn tiny_hand_example_with_ties() {
        // 1-D points 0, 1, 2, 3: neighbours of 1 (excluding itself) are 0 and 2 at distance 1
        // (tie -> lower index first), then 3.
        let pts = [0.0f32, 1.0, 2.0, 3.0];
        let e = Embeddings::new("q", &pts, 1).unwrap();
        let r = knn(e, None, 3, Metric::L2).unwrap();
        assert_eq!(r.row_indices(1), &[0, 2, 3]);
        assert_eq!(r.row_scores(1), &[1.0, 1.0, 2.0]);
        assert_eq!(r.row_indices(0), &[1, 2, 3]);
        let r = knn(e, None, 2, Metric::L2Squared).unwrap();
        assert_eq!(r.row_scores(0), &[1.0, 4.0]);
    }

    #[test]
    fn duplicates_clamp_to_zero_and_order_by_index() {
        let pts = [1.0f32, 1.0, 1.0, 1.0, 5.0, 5.0];
        let e = Embeddings::new("q", &pts, 2).unwrap();
        let r = knn(e, Some(e), 3, Metric::L2Squared).unwrap();
        assert_eq!(r.row_indices(1), &[0, 1, 2]);
        assert_eq!(r.row_scores(1)[..2], [0.0, 0.0]);
        assert!(r.scores.iter().all(|&s| s >= 0.0));
    }

    #[test]
    fn similarity_metrics_rank_descending() {
        let q = [1.0f32, 0.0];
        let r = [0.0f32, 1.0, 2.0, 0.1, 1.0, 1.0];
        let qe = Embeddings::new("q", &q, 2).unwrap();
        let re = Embeddings::new("r", &r, 2).unwrap();
        let dot = knn(qe, Some(re), 3, Metric::Dot).unwrap();
        assert_eq!(dot.row_indices(0), &[1, 2, 0]);
        let cos = knn(qe, Some(re), 3, Metric::Cosine).unwrap();
        assert_eq!(cos.row_indices(0), &[1, 2, 0]);
        assert!((cos.row_scores(0)[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_k_dims_and_zero_vectors() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let e = Embeddings::new("q", &a, 2).unwrap();
        assert!(matches!(knn(e, None, 2, Metric::L2), Err(EvalError::InvalidK { max: 1, .. })));
        assert!(matches!(knn(e, Some(e), 0, Metric::L2), Err(EvalError::InvalidK { .. })));
        let b = [1.0f32, 2.0, 3.0];
        let f = Embeddings::new("r", &b, 3).unwrap();
        assert!(matches!(knn(e, Some(f), 1, Metric::L2), Err(EvalError::DimensionMismatch { .. })));
        let z = [0.0f32, 0.0, 1.0, 1.0];
        let ze = Embeddings::new("q", &z, 2).unwrap();
        assert!(matches!(knn(ze, None, 1, Metric::Cosine), Err(EvalError::ZeroVector { row: 0, .. })));
        let big = [3e19f32, 0.0, 1.0, 1.0];
        let be = Embeddings::new("q", &big, 2).unwrap();
        assert!(matches!(knn(be, None, 1, Metric::L2), Err(EvalError::NormOverflow { row: 0, .. })));
    }

    #[test]
    fn spans_several_tiles() {
        // More rows than one tile in both directions, integer-valued data (exact in f32).
        let d = 3;
        let n = QB + RB + 37;
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919 + 13) % 61) as f32 - 30.0).collect();
        let e = Embeddings::new("q", &data, d).unwrap();
        let r = knn(e, None, 5, Metric::L2Squared).unwrap();
        let b = brute(&data, &data, d, 5, Metric::L2Squared, true);
        for (i, want) in b.iter().enumerate() {
            assert_eq!(r.row_indices(i), want.as_slice(), "row {i}");
        }
    }

    #[test]
    fn symmetric_tiling_equals_full_tiling_ties_included() {
        // Several blocks in both directions (last one partial), small-integer data so many
        // distances tie exactly: the half-matrix path must give the same neighbours and scores.
        let d = 4;
        let n = 2 * SYM_B + 77;
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919 + 13) % 7) as f32 - 3.0).collect();
        let e = Embeddings::new("q", &data, d).unwrap();
        for metric in [Metric::L2, Metric::L2Squared, Metric::Dot] {
            let (sym, s1) = knn_impl(e, None, 6, metric, true).unwrap();
            let (full, s2) = knn_impl(e, None, 6, metric, false).unwrap();
            assert_eq!(sym.indices, full.indices, "{metric:?}");
            assert_eq!(sym.scores, full.scores, "{metric:?}");
            // Blocks of 512, 512 and 77 rows: only the 6 tiles on and above the diagonal.
            let upper = 3 * 512 * 512 + 2 * 512 * 77 + 77 * 77;
            assert_eq!(s1.gemm_flops, 2.0 * (upper * d) as f64);
            assert_eq!((s2.gemm_flops, s1.flops), (2.0 * (n * n * d) as f64, s2.flops));
        }
        // Cosine on rows with one non-zero entry (exact norms).
        let cos: Vec<f32> = (0..n)
            .flat_map(|i| {
                let mut r = vec![0.0f32; d];
                r[i % d] = 1.0 + (i % 3) as f32;
                r
            })
            .collect();
        let ce = Embeddings::new("q", &cos, d).unwrap();
        assert_eq!(knn_impl(ce, None, 5, Metric::Cosine, true).unwrap().0, knn_impl(ce, None, 5, Metric::Cosine, false).unwrap().0);
    }

    #[test]
    fn symmetric_kernel_with_small_blocks_agrees_with_brute_force() {
        // Blocks of 64 rows (as when a large k shrinks them), a partial last block, ties.
        let d = 2;
        let n = 300;
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 31 + 5) % 11) as f32).collect();
        let norms: Vec<f32> = data.chunks(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let k = 40;
        let (mut idx, mut sc) = (vec![0usize; n * k], vec![0f32; n * k]);
        let nanos = AtomicU64::new(0);
        knn_self_symmetric(&data, &norms, d, k, 64, true, Metric::L2Squared, &mut idx, &mut sc, [&nanos, &nanos], bf16::available());
        let b = brute(&data, &data, d, k, Metric::L2Squared, true);
        for (i, want) in b.iter().enumerate() {
            assert_eq!(&idx[i * k..(i + 1) * k], want.as_slice(), "row {i}");
        }
    }

    #[test]
    fn bf16_candidate_pass_is_bit_identical_to_fp32() {
        // Random floats (not exactly representable products), with many near-ties: groups of rows
        // that are copies of one prototype nudged by a few ulps, and exact duplicates. d = 100
        // pads to the AMX depth of 128. 1100 rows make blocks of 512, 512 and 76 (all six tiles
        // take the bf16 pass); 1040 rows end with a block of 16, whose three tiles take the fp32
        // GEMM. k = 40 exceeds the 31 chunks that bound a diagonal row's first threshold.
        for (n, k, bf16_tiles) in [(1100, 12, 6), (1040, 12, 3), (1100, 40, 6)] {
            let d = 100;
            let mut s = 5u64;
            let mut uni = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            };
            let protos: Vec<f32> = (0..40 * d).map(|_| uni()).collect();
            let mut data = Vec::with_capacity(n * d);
            for i in 0..n {
                let p = &protos[(i % 40) * d..(i % 40 + 1) * d];
                match i % 3 {
                    0 => data.extend_from_slice(p),
                    1 => data.extend(p.iter().map(|&v| v * (1.0 + 1e-6 * uni()))),
                    _ => data.extend(p.iter().map(|&v| v + 0.05 * uni())),
                }
            }
            let e = Embeddings::new("q", &data, d).unwrap();
            let cos = normalized("q", e).unwrap();
            let norms = sq_norms("q", e).unwrap();
            for metric in [Metric::L2, Metric::L2Squared, Metric::Dot, Metric::Cosine] {
                let l2 = matches!(metric, Metric::L2 | Metric::L2Squared);
                let x: &[f32] = if metric == Metric::Cosine { &cos } else { &data };
                let run = |unit: Option<bf16::Unit>| {
                    let (mut idx, mut sc) = (vec![0usize; n * k], vec![0f32; n * k]);
                    let t = AtomicU64::new(0);
                    let (_, counts) = knn_self_symmetric(x, &norms, d, k, SYM_B, l2, metric, &mut idx, &mut sc, [&t, &t], unit);
                    (idx, sc.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(), counts)
                };
                let (i32_, s32, c32) = run(None);
                assert_eq!(c32, [0, 0, 0]);
                // Every unit this CPU has (AMX, AVX512-BF16, AVX2 int16), whichever `available()` would pick.
                for unit in bf16::supported() {
                    if metric == Metric::L2 && n == 1100 && k == 12 {
                        eprintln!("bf16 candidate pass checked on {unit:?}");
                    }
                    let (ibf, sbf, cbf) = run(Some(unit));
                    assert_eq!(cbf[0], bf16_tiles, "{unit:?} {metric:?} n = {n}");
                    assert!(cbf[2] > 0 && cbf[2] <= cbf[1], "{unit:?} {metric:?} n = {n}: {cbf:?}");
                    assert_eq!(ibf, i32_, "{unit:?} {metric:?} n = {n} k = {k}");
                    assert_eq!(sbf, s32, "{unit:?} {metric:?} n = {n} k = {k}");
                }
                if bf16::supported().is_empty() {
                    eprintln!("this CPU has no candidate unit (AMX-BF16, AVX512-BF16, AVX2): only the fp32 path ran");
                }
            }
        }
    }

    #[test]
    fn candidate_pass_is_bit_identical_across_depths_and_row_scales() {
        // Rows scaled by 10^-6 .. 10^6 (each unit's grid or bf16 rounding is relative to the
        // row), zero rows, depths that pad (7, 100) and the largest depth the pass takes (512).
        for d in [7usize, 128, 512] {
            let (n, k) = (700, 9);
            let mut s = 11u64 + d as u64;
            let mut uni = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            };
            let mut data = Vec::with_capacity(n * d);
            for i in 0..n {
                let scale = if i % 97 == 5 { 0.0 } else { 10f32.powf(6.0 * uni()) };
                let proto = (i % 50) as f32;
                data.extend((0..d).map(|t| scale * ((proto * 0.37 + t as f32 * 0.11).sin() + 0.3 * uni())));
            }
            let norms = sq_norms("q", Embeddings::new("q", &data, d).unwrap()).unwrap();
            for metric in [Metric::L2Squared, Metric::Dot] {
                let l2 = metric == Metric::L2Squared;
                let run = |unit: Option<bf16::Unit>| {
                    let (mut idx, mut sc) = (vec![0usize; n * k], vec![0f32; n * k]);
                    let t = AtomicU64::new(0);
                    let (_, counts) = knn_self_symmetric(&data, &norms, d, k, SYM_B, l2, metric, &mut idx, &mut sc, [&t, &t], unit);
                    (idx, sc.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(), counts)
                };
                let (i32_, s32, _) = run(None);
                for unit in bf16::supported() {
                    let (ibf, sbf, cbf) = run(Some(unit));
                    assert!(cbf[0] > 0, "{unit:?} {metric:?} d = {d}: no tile took the pass");
                    assert_eq!((ibf, sbf), (i32_.clone(), s32.clone()), "{unit:?} {metric:?} d = {d}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn int16_grid_declines_rows_too_small_for_it() {
        if !bf16::supported().contains(&bf16::Unit::Avx2Int16) {
            eprintln!("this CPU has no AVX2: the int16 unit cannot run here");
            return;
        }
        let d = 16;
        let mut data: Vec<f32> = (0..64 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        assert!(bf16::Prepared::new(&data, d, 32, bf16::Unit::Avx2Int16).is_some());
        data[..d].iter_mut().for_each(|v| *v = 1e-20);
        assert!(bf16::Prepared::new(&data, d, 32, bf16::Unit::Avx2Int16).is_none());
        data[..d].iter_mut().for_each(|v| *v = 1e-44);
        assert!(bf16::Prepared::new(&data, d, 32, bf16::Unit::Avx2Int16).is_none());
        data[..d].iter_mut().for_each(|v| *v = 0.0);
        assert!(bf16::Prepared::new(&data, d, 32, bf16::Unit::Avx2Int16).is_some());
    }

    #[test]
    fn topk_keeps_smallest_with_index_ties() {
        let mut h = TopK::new(3);
        for (key, j) in [(5.0, 0), (1.0, 1), (3.0, 2), (1.0, 3), (0.5, 4), (3.0, 5)] {
            h.push(key, j);
        }
        assert_eq!(h.into_sorted(), vec![(0.5, 4), (1.0, 1), (1.0, 3)]);
    }

    #[test]
    fn topk_keeps_the_k_smallest_pairs_under_many_ties() {
        // Few distinct keys, so ties decide most places.
        let mut s = 11u64;
        for k in [1, 3, 32, 70] {
            let stream: Vec<(f32, usize)> = (0..500)
                .map(|j| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (((s >> 33) % 13) as f32, (j * 7919) % 500)
                })
                .collect();
            let mut h = TopK::new(k);
            for &(key, j) in &stream {
                h.push(key, j);
            }
            let mut expected = stream.clone();
            expected.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
            expected.truncate(k);
            assert_eq!(h.worst_key(), expected[k - 1].0, "k = {k}");
            assert_eq!(h.into_sorted(), expected, "k = {k}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn agrees_with_brute_force(
            nq in 1usize..40, nr in 2usize..60, d in 1usize..9, kk in 1usize..8,
            seed in any::<u64>(), m in 0usize..4, same in any::<bool>(),
        ) {
            // Small-integer data: every dot product is exact in f32, so the orders must agree
            // exactly, ties included.
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) % 9) as f32 - 4.0 };
            let q: Vec<f32> = (0..nq * d).map(|_| next()).collect();
            let mut r: Vec<f32> = (0..nr * d).map(|_| next()).collect();
            let metric = [Metric::L2, Metric::L2Squared, Metric::Dot, Metric::Cosine][m];
            if metric == Metric::Cosine {
                // Avoid zero rows and irrational norms: keep only rows with a single non-zero.
                for (i, row) in r.chunks_mut(d).enumerate() { row.fill(0.0); row[i % d] = 1.0 + (i % 3) as f32; }
            }
            let (qq, same) = if same { (r.clone(), true) } else { (q, false) };
            let nqq = qq.len() / d;
            let k = kk.min(if same { nr - 1 } else { nr }).max(1);
            prop_assume!(!(same && nr < 2));
            if metric == Metric::Cosine && !same {
                prop_assume!(qq.chunks(d).all(|row| row.iter().any(|&v| v != 0.0)));
            }
            let qe = Embeddings::new("q", &qq, d).unwrap();
            let re = Embeddings::new("r", &r, d).unwrap();
            let res = knn(qe, if same { None } else { Some(re) }, k, metric).unwrap();
            let b = brute(&qq, &r, d, k, metric, same);
            if metric == Metric::Cosine && !same {
                // Cosine of integer vectors is not exact: compare scores, not indices.
                for i in 0..nqq {
                    for (slot, &j) in b[i].iter().enumerate() {
                        let rj = &r[j * d..(j + 1) * d];
                        let qi = &qq[i * d..(i + 1) * d];
                        let dot: f64 = qi.iter().zip(rj).map(|(&a, &c)| a as f64 * c as f64).sum();
                        let na: f64 = qi.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                        let nb: f64 = rj.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                        prop_assert!((res.row_scores(i)[slot] as f64 - dot / (na * nb)).abs() < 1e-5);
                    }
                }
            } else {
                for (i, want) in b.iter().enumerate() {
                    prop_assert_eq!(res.row_indices(i), want.as_slice());
                }
            }
        }
    }
}
