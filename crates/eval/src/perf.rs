//! Benchmark entry point for the CLI: retrieval metrics on synthetic data.
//!
//! Why: the k-NN + metrics pipeline dominates evaluation time at N ≥ 50 000; a fixed,
//! seeded workload makes speed regressions visible and reports the GEMM rate reached.
//! Not a test — timings are returned, never asserted.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::knn::{CandidateUnit, Metric, knn_with_stats};
use crate::matrix::Embeddings;
use crate::retrieval::{CoreMetrics, KSpec, RetrievalConfig, metrics_from_knn};

/// Timings of [`perf_accuracy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfReport {
    /// Rows (queries = references).
    pub n: usize,
    /// Dimension.
    pub d: usize,
    /// Classes (`n / 10`).
    pub classes: usize,
    /// Resolved k (max bin count − 1).
    pub k: usize,
    /// Timed runs.
    pub runs: usize,
    /// Median seconds of k-NN + metrics.
    pub median_seconds: f64,
    /// All run times.
    pub seconds: Vec<f64>,
    /// Median seconds of the k-NN alone.
    pub median_knn_seconds: f64,
    /// End-to-end GFLOP/s of the k-NN (inner products only counted), median run.
    pub effective_gflops: f64,
    /// GEMM rate of one thread inside the tiles, median run.
    pub gemm_gflops_per_thread: f64,
    /// Thread-seconds inside GEMM calls, median run.
    pub gemm_thread_seconds: f64,
    /// Thread-seconds selecting the top-k from the tiles, median run.
    pub scan_thread_seconds: f64,
    /// Rayon threads used.
    pub threads: usize,
    /// The k-NN's exact candidate pass, when it ran: its unit and the fraction of row chunks it
    /// recomputed in fp32, median run.
    #[serde(default)]
    pub candidate_unit: Option<CandidateUnit>,
    #[serde(default)]
    pub recomputed_fraction: f64,
    /// The metrics (identical across runs).
    pub metrics: CoreMetrics,
}

/// P@1, R-Precision, MAP@R (k = max bin count, query = reference) on random data; median of 3 runs.
pub fn perf_accuracy(n: usize, d: usize, seed: u64) -> Result<PerfReport> {
    perf_accuracy_runs(n, d, seed, 3)
}

/// As [`perf_accuracy`] with a chosen number of timed runs.
///
/// Data: `n / 10` classes, label `i % (n/10)`; each row is its class centre (uniform in
/// [−1, 1]^d) plus uniform noise 1.6 times larger, so neighbourhoods are mixed (P@1 well below 1).
pub fn perf_accuracy_runs(n: usize, d: usize, seed: u64, runs: usize) -> Result<PerfReport> {
    if n < 20 || d == 0 || runs == 0 {
        return Err(EvalError::InvalidParameter { name: "n/d/runs", value: format!("{n}/{d}/{runs}"), reason: "need n >= 20, d >= 1, runs >= 1" });
    }
    let classes = n / 10;
    let mut s = seed;
    let mut uni = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let centres: Vec<f32> = (0..classes * d).map(|_| uni()).collect();
    let labels: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
    let data: Vec<f32> = (0..n).flat_map(|i| (0..d).map(move |t| (i, t))).map(|(i, t)| centres[(i % classes) * d + t] + 1.6 * uni()).collect();
    let e = Embeddings::new("perf data", &data, d)?;
    let config = RetrievalConfig { k: KSpec::MaxBinCount, avg_of_avgs: false, at_ks: vec![], metric: Metric::L2 };
    // Max bin count minus self: with labels i % classes, class 0 is (one of) the largest.
    let k = labels.iter().filter(|&&l| l == 0).count() - 1;
    let mut rows = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let (res, stats) = knn_with_stats(e, None, k, Metric::L2)?;
        let knn_s = t.elapsed().as_secs_f64();
        let m = metrics_from_knn(&res, &labels, &labels, true, &config)?;
        rows.push((t.elapsed().as_secs_f64(), knn_s, stats, m));
    }
    let mut order: Vec<usize> = (0..runs).collect();
    order.sort_by(|&a, &b| rows[a].0.total_cmp(&rows[b].0));
    let med = order[runs / 2];
    let mut knn_times: Vec<f64> = rows.iter().map(|r| r.1).collect();
    knn_times.sort_by(f64::total_cmp);
    let (total, _, stats, m) = &rows[med];
    Ok(PerfReport {
        n,
        d,
        classes,
        k: m.k,
        runs,
        median_seconds: *total,
        seconds: rows.iter().map(|r| r.0).collect(),
        median_knn_seconds: knn_times[runs / 2],
        effective_gflops: stats.effective_gflops,
        gemm_gflops_per_thread: stats.gemm_gflops_per_thread,
        gemm_thread_seconds: stats.gemm_thread_seconds,
        scan_thread_seconds: stats.scan_thread_seconds,
        threads: rayon::current_num_threads(),
        candidate_unit: stats.candidate_unit,
        recomputed_fraction: stats.recomputed_chunks as f64 / stats.candidate_chunks.max(1) as f64,
        metrics: m.metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_reports_consistent_metrics() {
        let r = perf_accuracy_runs(200, 8, 1, 1).unwrap();
        // 20 classes of exactly 10 rows -> k = 10 - 1.
        assert_eq!((r.classes, r.k, r.seconds.len()), (20, 9, 1));
        let m = r.metrics;
        for v in [m.precision_at_1, m.r_precision, m.mean_average_precision_at_r] {
            assert!((0.0..=1.0).contains(&v));
        }
        // Same seed, same data, same metrics.
        assert_eq!(perf_accuracy_runs(200, 8, 1, 1).unwrap().metrics, m);
        assert!(perf_accuracy_runs(10, 8, 1, 1).is_err());
    }
}
