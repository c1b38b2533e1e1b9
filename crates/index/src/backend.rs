//! Search backends: exact blocked-GEMM k-NN, or an approximate HNSW graph.
//!
//! Why two: a brand gallery of a few thousand logos is searched exactly in well under a
//! millisecond per query, and exact answers are what calibration assumes; but a gallery
//! of hundreds of thousands of crops makes every query scan everything. HNSW (Malkov &
//! Yashunin) answers in roughly logarithmic time at a small, measurable recall cost
//! ([`crate::bench_index`] measures it against the exact oracle).
//!
//! Which to use, measured on the 2-core dev machine (100 000 clustered 128-D rows,
//! defaults below, recall@10 0.9999): one query per call — the online scanner — HNSW
//! answers ~12× more queries per second than exact search (a GEMV over every row);
//! in batches of 1 000, exact blocked GEMM is still ~1.7× faster than the graph, and the
//! graph takes about two minutes to build. So: HNSW for large galleries served one crop
//! at a time, exact for offline batch scoring and for calibration.
//!
//! Why `hnsw_rs` and not `usearch`: both are well kept, and both build here, but `hnsw_rs`
//! is pure Rust (this crate promises no native toolchain beyond rustc, the same as
//! `proxima-eval`), is generic over the distance so the distances below can be our own,
//! and builds its graph with rayon, the thread pool the rest of Proxima already uses.
//! `usearch` compiles a large C++ core through `cxx` on every clean build — minutes on
//! the 2-core machines this project runs on — for speed we do not need at gallery sizes.
//!
//! Why own distances: `hnsw_rs`'s `DistDot` asserts `1 − q·r ≥ 0`, which rounding breaks
//! for a query identical to an enrolled row (a panic in production); ours clamp. The
//! graph only ranks candidates: every returned row's similarity is recomputed exactly
//! from the gallery's rows, so both backends report scores in the same units and the
//! calibrated threshold means the same thing whichever backend answered.
//!
//! Unit-norm cosine rows use `1 − q·r`; L2 and L2² use `‖q − r‖²` (same ranking). Inner
//! product search (`Metric::Dot`) is not a metric space and is refused by HNSW.

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;
use proxima_eval::{Embeddings, Metric, knn};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};

/// Which search backend a gallery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendConfig {
    /// Exact k-NN by blocked GEMM (`proxima_eval::knn`).
    #[default]
    Exact,
    /// Approximate search in an HNSW graph built from the gallery rows.
    Hnsw(HnswConfig),
}

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswConfig {
    /// Links per node and layer (`M`); more links, better recall, more memory. 2..=255.
    pub m: usize,
    /// Candidate list size while building; higher builds slower and better graphs.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to `k` when smaller); the recall knob.
    pub ef_search: usize,
    /// Galleries with fewer rows are searched exactly (a graph does not pay off there).
    pub exact_below: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self { m: 16, ef_construction: 100, ef_search: 64, exact_below: 10_000 }
    }
}

impl BackendConfig {
    /// Check the parameters and that the backend supports `metric`.
    pub fn validate(&self, metric: Metric) -> Result<()> {
        let BackendConfig::Hnsw(c) = self else {
            return Ok(());
        };
        if !(2..=255).contains(&c.m) {
            return Err(IndexError::InvalidParameter { name: "m", value: c.m.to_string(), reason: "must be in 2..=255" });
        }
        for (name, v) in [("ef_construction", c.ef_construction), ("ef_search", c.ef_search)] {
            if v == 0 {
                return Err(IndexError::InvalidParameter { name, value: v.to_string(), reason: "must be >= 1" });
            }
        }
        if metric == Metric::Dot {
            return Err(IndexError::UnsupportedMetric(metric));
        }
        Ok(())
    }
}

/// `1 − q·r` for unit-norm rows, clamped at 0.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// `‖q − r‖²`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SquaredL2;

impl Distance<f32> for SquaredL2 {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        sq_l2(va, vb)
    }
}

/// Inner product with 8 independent accumulators (vectorises without `unsafe`).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Squared Euclidean distance with 8 independent accumulators.
#[inline]
pub(crate) fn sq_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let t = x[i] - y[i];
            acc[i] += t * t;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Exact similarity (higher is closer) of a prepared query and a stored row.
///
/// Cosine rows and queries are unit-norm already, so cosine is the inner product.
pub(crate) fn similarity(metric: Metric, q: &[f32], r: &[f32]) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => q.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32,
        Metric::L2Squared => -(q.iter().zip(r).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>() as f32),
        Metric::L2 => -(q.iter().zip(r).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt() as f32),
    }
}

/// Candidate rows of one query: `(row, similarity)`, best first (ties: lower row first).
pub(crate) type Hits = Vec<(usize, f32)>;

/// Sort hits best first, ties by lower row (the exact backend's order).
fn sort_hits(h: &mut Hits) {
    h.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Exact top-`k` rows of every query (`k <= rows`).
///
/// # Shapes
/// `rows`: `n × dim` (unit-norm for cosine), `queries`: `nq × dim` prepared the same way;
/// result: `nq` lists of `k` hits.
pub(crate) fn exact_search(rows: &[f32], dim: usize, metric: Metric, queries: &[f32], k: usize) -> Result<Vec<Hits>> {
    let q = Embeddings::new("query", queries, dim)?;
    let r = Embeddings::new("gallery", rows, dim)?;
    // Cosine rows are stored unit-norm: the inner product is the cosine, without knn
    // re-normalising the whole gallery on every call.
    let kmetric = if metric == Metric::Cosine { Metric::Dot } else { metric };
    let res = knn(q, Some(r), k, kmetric)?;
    Ok((0..res.num_queries()).map(|i| res.row_indices(i).iter().zip(res.row_scores(i)).map(|(&j, &s)| (j, kmetric.to_similarity(s))).collect()).collect())
}

/// The HNSW graph, typed by its distance.
enum Graph {
    Cosine(Hnsw<'static, f32, UnitCosine>),
    L2(Hnsw<'static, f32, SquaredL2>),
}

/// An HNSW graph over a gallery's rows (the graph keeps its own copy of the vectors).
pub struct HnswIndex {
    graph: Graph,
    config: HnswConfig,
    metric: Metric,
    rows: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex").field("config", &self.config).field("metric", &self.metric).field("rows", &self.rows).finish()
    }
}

impl HnswIndex {
    /// Build a graph over `rows` (parallel insertion with rayon).
    ///
    /// # Shapes
    /// `rows`: `n × dim`, unit-norm for cosine.
    pub(crate) fn build(rows: &[f32], dim: usize, metric: Metric, config: HnswConfig) -> Result<Self> {
        BackendConfig::Hnsw(config).validate(metric)?;
        let n = rows.len() / dim;
        let items: Vec<(&[f32], usize)> = rows.chunks_exact(dim).enumerate().map(|(i, r)| (r, i)).collect();
        let graph = match metric {
            Metric::Cosine => {
                let mut h = Hnsw::new(config.m, n.max(1), 16, config.ef_construction, UnitCosine);
                h.parallel_insert_slice(&items);
                h.set_searching_mode(true);
                Graph::Cosine(h)
            }
            Metric::L2 | Metric::L2Squared => {
                let mut h = Hnsw::new(config.m, n.max(1), 16, config.ef_construction, SquaredL2);
                h.parallel_insert_slice(&items);
                h.set_searching_mode(true);
                Graph::L2(h)
            }
            Metric::Dot => return Err(IndexError::UnsupportedMetric(metric)),
        };
        Ok(Self { graph, config, metric, rows: n })
    }

    /// The parameters it was built with.
    pub fn config(&self) -> HnswConfig {
        self.config
    }

    /// Rows indexed.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate top-`k` rows of one prepared query, scores recomputed exactly.
    pub(crate) fn search_one(&self, rows: &[f32], dim: usize, q: &[f32], k: usize) -> Hits {
        let ef = self.config.ef_search.max(k);
        let found = match &self.graph {
            Graph::Cosine(h) => h.search(q, k, ef),
            Graph::L2(h) => h.search(q, k, ef),
        };
        let mut hits: Hits = found
            .iter()
            .map(|nb| {
                let j = nb.d_id;
                (j, similarity(self.metric, q, &rows[j * dim..(j + 1) * dim]))
            })
            .collect();
        sort_hits(&mut hits);
        hits.truncate(k);
        hits
    }

    /// Approximate top-`k` rows of every query, queries in parallel.
    ///
    /// # Shapes
    /// `rows`: the `n × dim` matrix the graph was built from; `queries`: `nq × dim`.
    pub(crate) fn search(&self, rows: &[f32], dim: usize, queries: &[f32], k: usize) -> Vec<Hits> {
        queries.par_chunks_exact(dim).map(|q| self.search_one(rows, dim, q, k)).collect()
    }
}

/// A ready-to-search backend.
#[derive(Debug)]
pub enum SearchIndex {
    /// Exact search over the rows.
    Exact,
    /// An HNSW graph over the rows.
    Hnsw(HnswIndex),
}

impl SearchIndex {
    /// Prepare `config` over `rows`: builds the graph for HNSW (unless the gallery is
    /// smaller than `exact_below`, where exact search is used).
    pub(crate) fn build(config: BackendConfig, rows: &[f32], dim: usize, metric: Metric) -> Result<Self> {
        match config {
            BackendConfig::Exact => Ok(SearchIndex::Exact),
            BackendConfig::Hnsw(c) if rows.len() / dim < c.exact_below => {
                BackendConfig::Hnsw(c).validate(metric)?;
                Ok(SearchIndex::Exact)
            }
            BackendConfig::Hnsw(c) => Ok(SearchIndex::Hnsw(HnswIndex::build(rows, dim, metric, c)?)),
        }
    }

    /// Top-`min(k, n)` rows of every prepared query, best first.
    ///
    /// Asking HNSW for a quarter of the gallery or more is answered exactly: the graph
    /// would visit most of it anyway, and callers that need that many rows (brand
    /// ranking over all brands, calibration) want exact answers.
    pub(crate) fn search(&self, rows: &[f32], dim: usize, metric: Metric, queries: &[f32], k: usize) -> Result<Vec<Hits>> {
        let n = rows.len() / dim;
        let k = k.min(n);
        match self {
            SearchIndex::Hnsw(h) if k.saturating_mul(4) < n => Ok(h.search(rows, dim, queries, k)),
            _ => exact_search(rows, dim, metric, queries, k),
        }
    }

    /// True for an approximate backend.
    pub fn is_approximate(&self) -> bool {
        matches!(self, SearchIndex::Hnsw(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut v: Vec<f32> = (0..n * d)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        for r in v.chunks_mut(d) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    #[test]
    fn kernels_match_naive() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..19).map(|i| (i * 7 % 5) as f32 - 2.0).collect();
        let nd: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let nl: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - nd).abs() < 1e-4);
        assert!((sq_l2(&a, &b) - nl).abs() < 1e-3);
        // A unit row against itself: rounding may push q·q above 1; the distance stays >= 0.
        let u = unit_rows(1, 37, 3);
        assert!(UnitCosine.eval(&u, &u) >= 0.0);
        assert_eq!(SquaredL2.eval(&u, &u), 0.0);
    }

    #[test]
    fn config_validation_and_serde() {
        let ok = BackendConfig::Hnsw(HnswConfig::default());
        ok.validate(Metric::Cosine).unwrap();
        assert!(matches!(ok.validate(Metric::Dot), Err(IndexError::UnsupportedMetric(Metric::Dot))));
        BackendConfig::Exact.validate(Metric::Dot).unwrap();
        let bad = BackendConfig::Hnsw(HnswConfig { m: 300, ..Default::default() });
        assert!(matches!(bad.validate(Metric::Cosine), Err(IndexError::InvalidParameter { name: "m", .. })));
        let bad = BackendConfig::Hnsw(HnswConfig { ef_search: 0, ..Default::default() });
        assert!(matches!(bad.validate(Metric::L2), Err(IndexError::InvalidParameter { name: "ef_search", .. })));

        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(json, r#"{"kind":"hnsw","m":16,"ef_construction":100,"ef_search":64,"exact_below":10000}"#);
        assert_eq!(serde_json::from_str::<BackendConfig>(&json).unwrap(), ok);
        // Missing fields take defaults; typos are rejected.
        let partial: BackendConfig = serde_json::from_str(r#"{"kind":"hnsw","ef_search":128}"#).unwrap();
        assert_eq!(partial, BackendConfig::Hnsw(HnswConfig { ef_search: 128, ..Default::default() }));
        assert!(serde_json::from_str::<BackendConfig>(r#"{"kind":"hnsw","ef_serch":128}"#).is_err());
        assert_eq!(serde_json::from_str::<BackendConfig>(r#"{"kind":"exact"}"#).unwrap(), BackendConfig::Exact);
    }

    #[test]
    fn hnsw_finds_exact_neighbours_on_a_small_set() {
        let (n, d) = (600, 16);
        let rows = unit_rows(n, d, 11);
        let queries = unit_rows(20, d, 12);
        let cfg = HnswConfig { exact_below: 0, ef_search: 200, ..Default::default() };
        let idx = SearchIndex::build(BackendConfig::Hnsw(cfg), &rows, d, Metric::Cosine).unwrap();
        assert!(idx.is_approximate());
        let approx = idx.search(&rows, d, Metric::Cosine, &queries, 5).unwrap();
        let exact = exact_search(&rows, d, Metric::Cosine, &queries, 5).unwrap();
        let mut hit = 0;
        for (a, e) in approx.iter().zip(&exact) {
            assert_eq!(a.len(), 5);
            // Scores are recomputed exactly, so shared rows carry (nearly) equal scores.
            for (j, s) in a {
                if let Some((_, se)) = e.iter().find(|(je, _)| je == j) {
                    assert!((s - se).abs() < 1e-5);
                    hit += 1;
                }
            }
            assert!(a.windows(2).all(|w| w[0].1 >= w[1].1));
        }
        // ef_search = 200 on 600 rows: essentially exhaustive.
        assert!(hit >= 95, "recall {hit}/100");
        // Asking for most of the gallery falls back to exact search.
        let big = idx.search(&rows, d, Metric::Cosine, &queries[..d], 400).unwrap();
        assert_eq!(big[0], exact_search(&rows, d, Metric::Cosine, &queries[..d], 400).unwrap()[0]);
    }

    #[test]
    fn small_galleries_stay_exact() {
        let rows = unit_rows(50, 8, 1);
        let idx = SearchIndex::build(BackendConfig::Hnsw(HnswConfig::default()), &rows, 8, Metric::L2).unwrap();
        assert!(!idx.is_approximate());
        assert!(SearchIndex::build(BackendConfig::Hnsw(HnswConfig::default()), &rows, 8, Metric::Dot).is_err());
    }
}
