//! Benchmark entry point: HNSW recall and throughput against exact search.
//!
//! Why: an approximate index is only acceptable with a measured recall at a measured
//! speed-up; this seeded workload gives both for `proxima perf` (and the
//! `bench_index` example). Not a test — timings are returned, never asserted; the
//! recall, which is a correctness property, is also checked by the tests on a small set.
//!
//! Data: `max(n / 100, 1)` Gaussian clusters in `d` dimensions (centres `N(0, 1)`,
//! members centre + `N(0, 0.6²)` noise, so each cluster is a diffuse blob with overlapping
//! neighbours, like logo crops of one brand), L2-normalised and searched with cosine.
//! Queries are fresh draws from the same mixture (not indexed rows).

use std::time::Instant;

use proxima_eval::Metric;
use serde::{Deserialize, Serialize};

use crate::backend::{HnswConfig, HnswIndex, exact_search};
use crate::error::{IndexError, Result};
use crate::gallery::normalize_rows;

/// Neighbours compared for recall.
pub const BENCH_K: usize = 10;

/// Result of [`bench_index`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexBenchReport {
    /// Indexed rows.
    pub n: usize,
    /// Dimension.
    pub d: usize,
    /// Queries.
    pub queries: usize,
    /// Neighbours per query.
    pub k: usize,
    /// Data seed.
    pub seed: u64,
    /// Rayon threads used by both backends.
    pub threads: usize,
    /// HNSW parameters.
    pub hnsw: HnswConfig,
    /// Seconds to build the HNSW graph.
    pub hnsw_build_seconds: f64,
    /// Seconds of the exact search of all queries (one batch, blocked GEMM, parallel).
    pub exact_seconds: f64,
    /// Exact queries per second.
    pub exact_qps: f64,
    /// Seconds of the HNSW search of all queries (parallel over queries).
    pub hnsw_seconds: f64,
    /// HNSW queries per second.
    pub hnsw_qps: f64,
    /// Queries answered one at a time (the online service pattern) for the `*_single_qps` rates.
    pub single_queries: usize,
    /// Exact queries per second, one query per call.
    pub exact_single_qps: f64,
    /// HNSW queries per second, one query per call on one thread.
    pub hnsw_single_qps: f64,
    /// Mean fraction of the exact top-k found by HNSW.
    pub recall_at_k: f64,
}

/// Seeded standard normals (SplitMix64 + Box–Muller).
struct Normal(proxima_base::SplitMix64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0.next_f64()
    }
    fn sample(&mut self) -> f32 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Clustered, unit-norm benchmark rows and queries (see the module doc).
///
/// # Shapes
/// Returns `(n × d, queries × d)`.
pub fn clustered_data(n: usize, d: usize, queries: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut g = Normal(proxima_base::SplitMix64(seed));
    let c = (n / 100).max(1);
    let centres: Vec<f32> = (0..c * d).map(|_| g.sample()).collect();
    let draw = |m: usize, g: &mut Normal| -> Vec<f32> {
        let mut v = Vec::with_capacity(m * d);
        for _ in 0..m {
            let ci = (g.uniform() * c as f64) as usize % c;
            v.extend(centres[ci * d..(ci + 1) * d].iter().map(|&x| x + 0.6 * g.sample()));
        }
        normalize_rows("bench data", &mut v, d).expect("Gaussian rows are never zero");
        v
    };
    let rows = draw(n, &mut g);
    let q = draw(queries, &mut g);
    (rows, q)
}

/// Recall@10 and queries/s of HNSW (default parameters) vs exact search.
pub fn bench_index(n: usize, d: usize, queries: usize, seed: u64) -> Result<IndexBenchReport> {
    bench_index_with(n, d, queries, seed, HnswConfig { exact_below: 0, ..HnswConfig::default() })
}

/// As [`bench_index`] with chosen HNSW parameters.
pub fn bench_index_with(n: usize, d: usize, queries: usize, seed: u64, hnsw: HnswConfig) -> Result<IndexBenchReport> {
    if n <= BENCH_K || d == 0 || queries == 0 {
        return Err(IndexError::InvalidParameter { name: "n/d/queries", value: format!("{n}/{d}/{queries}"), reason: "need n > 10, d >= 1, queries >= 1" });
    }
    let (rows, q) = clustered_data(n, d, queries, seed);
    let t = Instant::now();
    let index = HnswIndex::build(&rows, d, Metric::Cosine, hnsw)?;
    let hnsw_build_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let exact = exact_search(&rows, d, Metric::Cosine, &q, BENCH_K)?;
    let exact_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let approx = index.search(&rows, d, &q, BENCH_K);
    let hnsw_seconds = t.elapsed().as_secs_f64();

    // One query per call, as an online scanner sees them: no batching for the GEMM, one
    // thread for the graph.
    let single_queries = queries.min(200);
    let t = Instant::now();
    for qi in q.chunks_exact(d).take(single_queries) {
        exact_search(&rows, d, Metric::Cosine, qi, BENCH_K)?;
    }
    let exact_single_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for qi in q.chunks_exact(d).take(single_queries) {
        std::hint::black_box(index.search_one(&rows, d, qi, BENCH_K));
    }
    let hnsw_single_seconds = t.elapsed().as_secs_f64();

    let found: usize = approx.iter().zip(&exact).map(|(a, e)| a.iter().filter(|(j, _)| e.iter().any(|(je, _)| je == j)).count()).sum();
    Ok(IndexBenchReport {
        n,
        d,
        queries,
        k: BENCH_K,
        seed,
        threads: rayon::current_num_threads(),
        hnsw,
        hnsw_build_seconds,
        exact_seconds,
        exact_qps: queries as f64 / exact_seconds.max(1e-12),
        hnsw_seconds,
        hnsw_qps: queries as f64 / hnsw_seconds.max(1e-12),
        single_queries,
        exact_single_qps: single_queries as f64 / exact_single_seconds.max(1e-12),
        hnsw_single_qps: single_queries as f64 / hnsw_single_seconds.max(1e-12),
        recall_at_k: found as f64 / (queries * BENCH_K) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_seeded_unit_norm_and_clustered() {
        let (r, q) = clustered_data(300, 8, 5, 7);
        assert_eq!((r.len(), q.len()), (300 * 8, 5 * 8));
        assert_eq!(clustered_data(300, 8, 5, 7).0, r);
        assert_ne!(clustered_data(300, 8, 5, 8).0, r);
        for row in r.chunks(8) {
            assert!((row.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(bench_index(10, 8, 5, 0).is_err());
    }
}
