//! Retrieval metrics with the exact semantics of pytorch-metric-learning 2.9's
//! `AccuracyCalculator`.
//!
//! Why: published metric-learning numbers (P@1, R-Precision, MAP@R) are almost always
//! produced by that class, and its conventions change the numbers noticeably; matching
//! them exactly is what makes Proxima's results comparable with the literature.
//!
//! Conventions (all checked by the parity tests):
//! * `count(c)` is the number of references with label `c`; when the reference set *is*
//!   the query set, the query itself is not a reference, so its usable count is
//!   `count(c) − 1`.
//! * **Lone queries** — those with `count − self = 0`, i.e. no other member of their
//!   class among the references — are **excluded** from every metric (they neither count
//!   as 0 nor as 1) and from the per-class averages. With the query set as reference this
//!   is exactly *classes of size 1*; with separate sets it is a query label absent from
//!   the reference. A class of size 1 still serves as a distractor reference for the
//!   other queries. If every query is lone the metrics are undefined and
//!   [`EvalError::NoRetrievableQueries`] is returned (pytorch-metric-learning returns 0).
//! * `k`: [`KSpec::MaxBinCount`] is `max_c count(c) − self` over the query labels
//!   (pytorch-metric-learning's `"max_bin_count"`); [`KSpec::AllReferences`] is
//!   `nr − self` (its `k=None`); the k-NN of a query set against itself searches
//!   `k + 1` and drops the query's own row — here the own row is simply never a candidate.
//! * `R = count(c) − self` (all same-class references), `R_k = min(R, k)`.
//! * Ties in distance are broken by lower reference index (stable, as faiss).
//!
//! Per query `q` with neighbour relevance `m_1..m_k` (1 if same label) and
//! `P(i) = (Σ_{j≤i} m_j) / i`:
//! * `precision_at_1 = m_1`
//! * `r_precision = (Σ_{i≤R_k} m_i) / R_k`
//! * `mean_average_precision_at_r = (Σ_{i≤R_k} m_i P(i)) / R`
//! * `mean_average_precision = (Σ_{i≤k} m_i P(i)) / R`
//!
//! Note the denominators: both MAP variants divide by the *uncapped* `R` (so a `k`
//! smaller than a class lowers them), while `r_precision` divides by `R_k`; this is what
//! version 2.9 computes (checked against its recorded outputs), and with
//! [`KSpec::MaxBinCount`] or [`KSpec::AllReferences`] `R ≤ k` so the distinction vanishes.
//! * `mean_reciprocal_rank = 1 / min{i : m_i = 1}` (0 if no match within k)
//! * `precision_at(k') = (Σ_{i≤k'} m_i) / k'`
//! * `recall_at(k') = [∃ i ≤ k' : m_i = 1]` — the metric-learning "Recall@K" (hit rate).
//!
//! Each metric is averaged over the non-lone queries, or (with `avg_of_avgs`) averaged
//! per query class first and then over classes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::knn::{KnnResult, Metric, knn};
use crate::matrix::{Embeddings, check_labels, check_same_dim};

/// How many neighbours the k-NN based metrics look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KSpec {
    /// A fixed `k`.
    Fixed(usize),
    /// The size of the largest query class among the references, minus one when the
    /// reference set is the query set (pytorch-metric-learning's `"max_bin_count"`).
    MaxBinCount,
    /// Every reference (minus the query itself when the reference set is the query set);
    /// pytorch-metric-learning's `k=None`.
    AllReferences,
}

/// Options of [`evaluate_retrieval`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalConfig {
    /// Neighbour count of the AccuracyCalculator metrics.
    pub k: KSpec,
    /// Average per class first, then over classes.
    pub avg_of_avgs: bool,
    /// Cut-offs for `precision_at` / `recall_at` (may exceed `k`; the search goes deep enough).
    pub at_ks: Vec<usize>,
    /// Closeness measure of the k-NN (AccuracyCalculator's default is Euclidean).
    pub metric: Metric,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self { k: KSpec::MaxBinCount, avg_of_avgs: false, at_ks: vec![1, 5, 10], metric: Metric::L2 }
    }
}

/// A metric value at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtK {
    /// The cut-off.
    pub k: usize,
    /// The value.
    pub value: f64,
}

/// The five AccuracyCalculator metrics of one group of queries.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CoreMetrics {
    /// Fraction of queries whose nearest neighbour has their label.
    pub precision_at_1: f64,
    /// Precision within the first R neighbours.
    pub r_precision: f64,
    /// MAP@R.
    pub mean_average_precision_at_r: f64,
    /// MAP over the first k neighbours.
    pub mean_average_precision: f64,
    /// MRR over the first k neighbours.
    pub mean_reciprocal_rank: f64,
}

/// Metrics of the queries of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRetrieval {
    /// The class label.
    pub label: i64,
    /// Non-lone queries of that class.
    pub num_queries: usize,
    /// Their averaged metrics.
    pub metrics: CoreMetrics,
    /// Precision at each configured cut-off.
    pub precision_at: Vec<AtK>,
    /// Recall (hit rate) at each configured cut-off.
    pub recall_at: Vec<AtK>,
}

/// Result of [`evaluate_retrieval`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// The AccuracyCalculator metrics.
    pub metrics: CoreMetrics,
    /// Precision at each configured cut-off.
    pub precision_at: Vec<AtK>,
    /// Recall (hit rate) at each configured cut-off.
    pub recall_at: Vec<AtK>,
    /// The resolved k.
    pub k: usize,
    /// Whether the per-class average of averages was used.
    pub avg_of_avgs: bool,
    /// All queries.
    pub num_queries: usize,
    /// Queries with no same-class reference (excluded).
    pub num_lone_queries: usize,
    /// Per-class results (classes with at least one non-lone query), by label.
    pub per_class: Vec<ClassRetrieval>,
}

/// Embed-and-search entry point: exact k-NN then [`metrics_from_knn`].
///
/// # Shapes
/// `query`: `nq × d` with `nq` labels; `reference`: `None` (the query set, own row
/// excluded) or `nr × d` with `nr` labels.
pub fn evaluate_retrieval(
    query: Embeddings<'_>,
    query_labels: &[i64],
    reference: Option<(Embeddings<'_>, &[i64])>,
    config: &RetrievalConfig,
) -> Result<RetrievalMetrics> {
    check_labels("query", query.rows(), query_labels)?;
    if let Some((r, rl)) = reference {
        check_labels("reference", r.rows(), rl)?;
        check_same_dim(("query", query.dim()), ("reference", r.dim()))?;
    }
    let same = reference.is_none();
    let ref_labels = reference.map_or(query_labels, |r| r.1);
    let plan = plan_k(query_labels, ref_labels, same, config)?;
    let result = knn(query, reference.map(|r| r.0), plan.depth, config.metric)?;
    metrics_from_knn(&result, query_labels, ref_labels, same, config)
}

struct KPlan {
    /// The AccuracyCalculator k.
    k: usize,
    /// How many neighbours to search (≥ k, ≥ every cut-off).
    depth: usize,
}

/// Resolve `k` and the search depth from the labels.
fn plan_k(query_labels: &[i64], ref_labels: &[i64], same: bool, config: &RetrievalConfig) -> Result<KPlan> {
    if query_labels.is_empty() {
        return Err(EvalError::Empty { what: "query labels" });
    }
    if ref_labels.is_empty() {
        return Err(EvalError::Empty { what: "reference labels" });
    }
    let self_count = usize::from(same);
    let usable = ref_labels.len() - self_count.min(ref_labels.len());
    let first = ref_labels[0];
    if ref_labels.iter().all(|&l| l == first) {
        return Err(EvalError::SingleClass { what: "reference labels", label: first });
    }
    let counts = counts(ref_labels);
    let max_bin = query_labels.iter().map(|l| counts.get(l).copied().unwrap_or(0)).max().unwrap_or(0);
    let k = match config.k {
        KSpec::Fixed(k) => k,
        KSpec::MaxBinCount => max_bin.saturating_sub(self_count),
        KSpec::AllReferences => usable,
    };
    if k == 0 {
        if max_bin <= self_count {
            return Err(EvalError::NoRetrievableQueries { queries: query_labels.len() });
        }
        return Err(EvalError::InvalidK { k, max: usable, reason: "k must be positive" });
    }
    if k > usable {
        return Err(EvalError::InvalidK { k, max: usable, reason: "number of usable references" });
    }
    for &c in &config.at_ks {
        if c == 0 || c > usable {
            return Err(EvalError::InvalidParameter { name: "at_ks", value: c.to_string(), reason: "each cut-off must be in 1..=number of usable references" });
        }
    }
    let depth = config.at_ks.iter().copied().fold(k, usize::max);
    Ok(KPlan { k, depth })
}

fn counts(labels: &[i64]) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for &l in labels {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

/// The scores of one query, or their sum or mean over a group of queries: the five core metrics
/// and precision and recall at each cut-off of [`RetrievalConfig::at_ks`].
#[derive(Clone)]
struct Scores {
    core: CoreMetrics,
    precision_at: Vec<f64>,
    recall_at: Vec<f64>,
}

impl Scores {
    fn zero(cutoffs: usize) -> Self {
        Scores { core: CoreMetrics::default(), precision_at: vec![0.0; cutoffs], recall_at: vec![0.0; cutoffs] }
    }

    /// Every value, core metrics first (in [`CoreMetrics`] field order).
    fn values_mut(&mut self) -> impl Iterator<Item = &mut f64> {
        let c = &mut self.core;
        [&mut c.precision_at_1, &mut c.r_precision, &mut c.mean_average_precision_at_r, &mut c.mean_average_precision, &mut c.mean_reciprocal_rank]
            .into_iter()
            .chain(self.precision_at.iter_mut())
            .chain(self.recall_at.iter_mut())
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let c = &self.core;
        [c.precision_at_1, c.r_precision, c.mean_average_precision_at_r, c.mean_average_precision, c.mean_reciprocal_rank]
            .into_iter()
            .chain(self.precision_at.iter().copied())
            .chain(self.recall_at.iter().copied())
    }

    fn add(&mut self, other: &Scores) {
        for (acc, v) in self.values_mut().zip(other.values()) {
            *acc += v;
        }
    }

    fn divided_by(mut self, n: f64) -> Scores {
        self.values_mut().for_each(|v| *v /= n);
        self
    }

    /// The core metrics and the `AtK` lists for the cut-offs `ks`.
    fn into_parts(self, ks: &[usize]) -> (CoreMetrics, Vec<AtK>, Vec<AtK>) {
        let at = |values: Vec<f64>| ks.iter().zip(values).map(|(&k, value)| AtK { k, value }).collect();
        (self.core, at(self.precision_at), at(self.recall_at))
    }
}

/// Refuses a k-NN result that does not fit the labels or is shallower than `depth`.
fn check_knn(knn: &KnnResult, nq: usize, reference_labels: &[i64], depth: usize) -> Result<()> {
    if knn.num_queries() != nq {
        return Err(EvalError::LabelCountMismatch { what: "k-NN result", rows: knn.num_queries(), labels: nq });
    }
    if knn.k < depth {
        return Err(EvalError::InvalidK { k: depth, max: knn.k, reason: "neighbours available in the k-NN result" });
    }
    if let Some(&bad) = knn.indices.iter().find(|&&j| j >= reference_labels.len()) {
        return Err(EvalError::InvalidParameter { name: "knn.indices", value: bad.to_string(), reason: "neighbour index out of range of the reference labels" });
    }
    Ok(())
}

/// The scores of one query from whether each of its neighbours matches its label: `k` neighbours
/// count, `r_full` references share its label (R, capped at `k` for R-Precision and MAP@R).
fn query_scores(matches: &[bool], k: usize, r_full: usize, at_ks: &[usize]) -> Scores {
    let r = r_full.min(k);
    let mut cum = 0usize;
    let (mut hits_r, mut ap_r, mut ap, mut first) = (0usize, 0f64, 0f64, None::<usize>);
    for (pos, &m) in matches[..k].iter().enumerate() {
        if m {
            cum += 1;
            let p = cum as f64 / (pos + 1) as f64;
            ap += p;
            if pos < r {
                hits_r += 1;
                ap_r += p;
            }
            first.get_or_insert(pos);
        }
    }
    Scores {
        core: CoreMetrics {
            precision_at_1: f64::from(u8::from(matches[0])),
            r_precision: hits_r as f64 / r as f64,
            mean_average_precision_at_r: ap_r / r_full as f64,
            mean_average_precision: ap / r_full as f64,
            mean_reciprocal_rank: first.map_or(0.0, |p| 1.0 / (p + 1) as f64),
        },
        precision_at: at_ks.iter().map(|&c| matches[..c].iter().filter(|&&m| m).count() as f64 / c as f64).collect(),
        recall_at: at_ks.iter().map(|&c| f64::from(u8::from(matches[..c].iter().any(|&m| m)))).collect(),
    }
}

/// Compute the metrics from precomputed neighbours (exact or approximate).
///
/// `same_source` means the reference set is the query set and `knn` already excludes each
/// query's own row. `knn.k` must be at least the resolved k and every cut-off.
///
/// # Shapes
/// `knn`: `nq × K`; `query_labels`: `nq`; `reference_labels`: `nr` (the indices' range).
pub fn metrics_from_knn(knn: &KnnResult, query_labels: &[i64], reference_labels: &[i64], same_source: bool, config: &RetrievalConfig) -> Result<RetrievalMetrics> {
    let plan = plan_k(query_labels, reference_labels, same_source, config)?;
    let nq = query_labels.len();
    check_knn(knn, nq, reference_labels, plan.depth)?;
    let counts = counts(reference_labels);
    let self_count = usize::from(same_source);
    let k = plan.k;

    let mut per_query: Vec<(i64, Scores)> = Vec::with_capacity(nq);
    let mut lone = 0;
    for (i, &ql) in query_labels.iter().enumerate() {
        let count = counts.get(&ql).copied().unwrap_or(0);
        if count <= self_count {
            lone += 1;
            continue;
        }
        let matches: Vec<bool> = knn.row_indices(i).iter().map(|&j| reference_labels[j] == ql).collect();
        per_query.push((ql, query_scores(&matches, k, count - self_count, &config.at_ks)));
    }
    if per_query.is_empty() {
        return Err(EvalError::NoRetrievableQueries { queries: nq });
    }

    // Per-class means, classes sorted by label.
    let cutoffs = config.at_ks.len();
    let mut classes: HashMap<i64, (usize, Scores)> = HashMap::new();
    let mut total = Scores::zero(cutoffs);
    for (l, s) in &per_query {
        let e = classes.entry(*l).or_insert_with(|| (0, Scores::zero(cutoffs)));
        e.0 += 1;
        e.1.add(s);
        total.add(s);
    }
    let mut labels: Vec<i64> = classes.keys().copied().collect();
    labels.sort_unstable();
    let class_means: Vec<(i64, usize, Scores)> = labels
        .iter()
        .map(|l| {
            let (n, sums) = &classes[l];
            (*l, *n, sums.clone().divided_by(*n as f64))
        })
        .collect();
    let overall = if config.avg_of_avgs {
        let mut m = Scores::zero(cutoffs);
        for (_, _, v) in &class_means {
            m.add(v);
        }
        m.divided_by(class_means.len() as f64)
    } else {
        total.divided_by(per_query.len() as f64)
    };

    let (metrics, precision_at, recall_at) = overall.into_parts(&config.at_ks);
    let per_class = class_means
        .into_iter()
        .map(|(label, n, v)| {
            let (metrics, precision_at, recall_at) = v.into_parts(&config.at_ks);
            ClassRetrieval { label, num_queries: n, metrics, precision_at, recall_at }
        })
        .collect();
    Ok(RetrievalMetrics { metrics, precision_at, recall_at, k, avg_of_avgs: config.avg_of_avgs, num_queries: nq, num_lone_queries: lone, per_class })
}

/// The k rule: the AccuracyCalculator `k` that [`evaluate_retrieval`] and [`metrics_from_knn`]
/// resolve from the labels ([`KSpec`]; `same_source` when the reference set is, or contains, the
/// query set, so that each query's own row is not one of its references). Errors as they do.
pub fn resolve_k(query_labels: &[i64], reference_labels: &[i64], same_source: bool, config: &RetrievalConfig) -> Result<usize> {
    plan_k(query_labels, reference_labels, same_source, config).map(|p| p.k)
}

/// The reference set of [`evaluate_retrieval_chunked`], as the queries relate to it.
#[derive(Debug, Clone, Copy)]
pub enum Reference<'a> {
    /// The query set itself; a query's own row is never a candidate (`reference=None`).
    Queries,
    /// A separate set of references and their labels.
    Separate(Embeddings<'a>, &'a [i64]),
    /// A separate array that contains every query (pytorch-metric-learning's
    /// `ref_includes_query=True`): as the reference implementation does, the search goes one
    /// deeper and drops each row's first neighbour (the query itself), and the query counts as
    /// one of its class's references.
    IncludesQueries(Embeddings<'a>, &'a [i64]),
}

/// Bytes of neighbour lists (8-byte index + 4-byte score each) that [`evaluate_retrieval_chunked`]
/// holds at once by default: query sets whose `rows × k` lists exceed it are evaluated in chunks of
/// queries, so `k = AllReferences` at 50 000 rows needs about this much instead of 30 GB.
pub const KNN_BUDGET_BYTES: usize = 512 << 20;

/// [`evaluate_retrieval`] in chunks of `chunk_rows` queries (default: as many as fit
/// [`KNN_BUDGET_BYTES`] of neighbour lists), for any [`Reference`].
///
/// Chunks use the k resolved over all queries ([`resolve_k`]) and are merged per class (sums of
/// per-query values), so the result equals the one-shot computation up to summation order. Chunked
/// results carry no `precision_at`/`recall_at`: a configuration with cut-offs
/// ([`RetrievalConfig::at_ks`]) that needs more than one chunk is refused.
pub fn evaluate_retrieval_chunked(
    query: Embeddings<'_>,
    query_labels: &[i64],
    reference: Reference<'_>,
    config: &RetrievalConfig,
    chunk_rows: Option<usize>,
) -> Result<RetrievalMetrics> {
    check_labels("query", query.rows(), query_labels)?;
    let (r, rl, extra) = match reference {
        Reference::Queries => (query, query_labels, 1),
        Reference::Separate(r, rl) => (r, rl, 0),
        Reference::IncludesQueries(r, rl) => (r, rl, 1),
    };
    if !matches!(reference, Reference::Queries) {
        check_labels("reference", r.rows(), rl)?;
        check_same_dim(("query", query.dim()), ("reference", r.dim()))?;
    }
    let same_labels = !matches!(reference, Reference::Separate(..));
    let k = resolve_k(query_labels, rl, same_labels, config)?;
    let nq = query.rows();
    let chunk = chunk_rows.unwrap_or(KNN_BUDGET_BYTES / ((k + extra) * 12)).max(1);
    match reference {
        Reference::Queries if chunk >= nq => return evaluate_retrieval(query, query_labels, None, config),
        Reference::Separate(..) if chunk >= nq => return evaluate_retrieval(query, query_labels, Some((r, rl)), config),
        _ => {}
    }
    if !config.at_ks.is_empty() {
        return Err(EvalError::InvalidParameter {
            name: "at_ks",
            value: format!("{:?}", config.at_ks),
            reason: "cut-offs are not computed in chunks (leave at_ks empty)",
        });
    }
    let fixed = RetrievalConfig { k: KSpec::Fixed(k), ..config.clone() };
    let d = query.dim();
    let mut classes: std::collections::BTreeMap<i64, (usize, [f64; 5])> = Default::default();
    let mut lone = 0;
    for start in (0..nq).step_by(chunk) {
        let end = (start + chunk).min(nq);
        let qc = Embeddings::new("query", &query.data()[start * d..end * d], d)?;
        let found = knn(qc, Some(r), k + extra, config.metric)?;
        let found = match reference {
            Reference::Separate(..) => found,
            // The own row (global index start + i) is left out wherever it landed; when it is
            // not among the k + 1, the first k are the answer.
            Reference::Queries => keep_k(&found, k, |i, j| j == start + i),
            Reference::IncludesQueries(..) => keep_k(&found, k, |_, _| false),
        };
        match metrics_from_knn(&found, &query_labels[start..end], rl, same_labels, &fixed) {
            Ok(m) => {
                lone += m.num_lone_queries;
                for c in &m.per_class {
                    let e = classes.entry(c.label).or_insert((0, [0.0; 5]));
                    e.0 += c.num_queries;
                    for (acc, v) in e.1.iter_mut().zip(core_values(&c.metrics)) {
                        *acc += v * c.num_queries as f64;
                    }
                }
            }
            Err(EvalError::NoRetrievableQueries { .. }) => lone += end - start,
            Err(e) => return Err(e),
        }
    }
    if classes.is_empty() {
        return Err(EvalError::NoRetrievableQueries { queries: nq });
    }
    let per_class: Vec<ClassRetrieval> = classes
        .iter()
        .map(|(&label, &(n, sums))| ClassRetrieval { label, num_queries: n, metrics: core_from(sums.map(|s| s / n as f64)), precision_at: vec![], recall_at: vec![] })
        .collect();
    let mut overall = [0.0; 5];
    for (&(_, sums), c) in classes.values().zip(&per_class) {
        let add = if config.avg_of_avgs { core_values(&c.metrics) } else { sums };
        for (acc, v) in overall.iter_mut().zip(add) {
            *acc += v;
        }
    }
    let denom = if config.avg_of_avgs { per_class.len() } else { classes.values().map(|c| c.0).sum() } as f64;
    Ok(RetrievalMetrics {
        metrics: core_from(overall.map(|s| s / denom)),
        precision_at: vec![],
        recall_at: vec![],
        k,
        avg_of_avgs: config.avg_of_avgs,
        num_queries: nq,
        num_lone_queries: lone,
        per_class,
    })
}

/// The first `k` neighbours of every row after leaving out those `skip(row, index)` names, or the
/// first column when none is named (the list is `k + 1` long).
fn keep_k(found: &KnnResult, k: usize, skip: impl Fn(usize, usize) -> bool) -> KnnResult {
    let nq = found.num_queries();
    let mut indices = Vec::with_capacity(nq * k);
    let mut scores = Vec::with_capacity(nq * k);
    for i in 0..nq {
        let (idx, sc) = (found.row_indices(i), found.row_scores(i));
        let drop = idx.iter().position(|&j| skip(i, j)).unwrap_or(0);
        for (pos, (&j, &s)) in idx.iter().zip(sc).enumerate() {
            if pos != drop {
                indices.push(j);
                scores.push(s);
            }
        }
    }
    KnnResult { k, metric: found.metric, indices, scores }
}

fn core_values(m: &CoreMetrics) -> [f64; 5] {
    [m.precision_at_1, m.r_precision, m.mean_average_precision_at_r, m.mean_average_precision, m.mean_reciprocal_rank]
}

fn core_from(v: [f64; 5]) -> CoreMetrics {
    CoreMetrics { precision_at_1: v[0], r_precision: v[1], mean_average_precision_at_r: v[2], mean_average_precision: v[3], mean_reciprocal_rank: v[4] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(k: KSpec) -> RetrievalConfig {
        RetrievalConfig { k, avg_of_avgs: false, at_ks: vec![1, 2], metric: Metric::L2 }
    }

    /// 1-D points; hand-computed example.
    /// points: 0.0(a) 1.0(a) 2.1(b) 3.3(a) 4.6(b) 10.0(c: singleton)
    /// Chunks of any size give the one-shot answer (up to summation order), for every reference kind.
    #[test]
    fn chunked_equals_one_shot() {
        let mut rng = proxima_base::SplitMix64(7);
        let (n, d) = (37, 4);
        let pts: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32).collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 5 + i64::from(i == 36) * 10).collect();
        let e = Embeddings::new("q", &pts, d).unwrap();
        let rpts = &pts[5 * d..];
        let rlabels = &labels[5..];
        let r = Embeddings::new("r", rpts, d).unwrap();
        for k in [KSpec::Fixed(3), KSpec::MaxBinCount, KSpec::AllReferences] {
            for avg_of_avgs in [false, true] {
                let config = RetrievalConfig { k, avg_of_avgs, at_ks: vec![], metric: Metric::L2 };
                let cases: [(Reference<'_>, Option<(Embeddings<'_>, &[i64])>); 2] = [(Reference::Queries, None), (Reference::Separate(r, rlabels), Some((r, rlabels)))];
                for (reference, plain) in cases {
                    let one = evaluate_retrieval(e, &labels, plain, &config).unwrap();
                    for chunk in [1, 4, 36, 100] {
                        let c = evaluate_retrieval_chunked(e, &labels, reference, &config, Some(chunk)).unwrap();
                        assert_eq!((c.k, c.num_queries, c.num_lone_queries, c.per_class.len()), (one.k, one.num_queries, one.num_lone_queries, one.per_class.len()));
                        for (a, b) in core_values(&c.metrics).into_iter().zip(core_values(&one.metrics)) {
                            assert!((a - b).abs() < 1e-12, "{k:?} chunk {chunk}: {a} vs {b}");
                        }
                    }
                }
                // A reference array holding every query: the same as the query set with each row counted once more.
                let inc = evaluate_retrieval_chunked(e, &labels, Reference::IncludesQueries(e, &labels), &config, Some(5)).unwrap();
                let whole = evaluate_retrieval_chunked(e, &labels, Reference::IncludesQueries(e, &labels), &config, None).unwrap();
                assert_eq!(inc.k, whole.k);
                for (a, b) in core_values(&inc.metrics).into_iter().zip(core_values(&whole.metrics)) {
                    assert!((a - b).abs() < 1e-12);
                }
            }
        }
        let with_cutoffs = RetrievalConfig { at_ks: vec![1], ..RetrievalConfig::default() };
        assert!(matches!(evaluate_retrieval_chunked(e, &labels, Reference::Queries, &with_cutoffs, Some(4)), Err(EvalError::InvalidParameter { name: "at_ks", .. })));
        assert_eq!(resolve_k(&labels, &labels, true, &RetrievalConfig::default()).unwrap(), 8 - 1, "class 0 has 8 members");
    }

    #[test]
    fn hand_computed_same_source() {
        let pts = [0.0f32, 1.0, 2.1, 3.3, 4.6, 10.0];
        let labels = [0i64, 0, 1, 0, 1, 2];
        let e = Embeddings::new("q", &pts, 1).unwrap();
        let m = evaluate_retrieval(e, &labels, None, &cfg(KSpec::MaxBinCount)).unwrap();
        // count(a)=3 -> k = 3 - 1 = 2. Class c is a singleton -> lone, excluded.
        assert_eq!(m.k, 2);
        assert_eq!(m.num_lone_queries, 1);
        // neighbours (k=2): q0:[1(a),2(b)] q1:[0(a),2(b)] q2:[1(a),3(a)]
        //                    q3:[2(b),4(b)] q4:[3(a),2(b)]
        // P@1: q0 1, q1 1, q2 0, q3 0, q4 0  -> 2/5
        assert!((m.metrics.precision_at_1 - 0.4).abs() < 1e-12);
        // R: a -> 2, b -> 1. r_prec: q0 1/2, q1 1/2, q2 0/1, q3 0/2, q4 0/1 -> 1/5
        assert!((m.metrics.r_precision - 0.2).abs() < 1e-12);
        // MAP@R: q0 (1)/2, q1 (1)/2, others 0 -> 1/5
        assert!((m.metrics.mean_average_precision_at_r - 0.2).abs() < 1e-12);
        // MAP (k=2, divided by R): q0 1/2, q1 1/2, q2 0, q3 0, q4: match at pos 2 -> (1/2)/1
        assert!((m.metrics.mean_average_precision - 1.5 / 5.0).abs() < 1e-12);
        // MRR: 1, 1, 0, 0, 1/2
        assert!((m.metrics.mean_reciprocal_rank - 2.5 / 5.0).abs() < 1e-12);
        // recall@2 (hit): q0 1 q1 1 q2 0 q3 0 q4 1 -> 3/5; precision@2: (1+1+0+0+1)/2/5
        assert!((m.recall_at[1].value - 0.6).abs() < 1e-12);
        assert!((m.precision_at[1].value - 0.3).abs() < 1e-12);
        // avg of avgs: class a P@1 = (1+1+0)/3, class b P@1 = 0 -> 1/6
        let mut c = cfg(KSpec::MaxBinCount);
        c.avg_of_avgs = true;
        let m2 = evaluate_retrieval(e, &labels, None, &c).unwrap();
        assert!((m2.metrics.precision_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m2.per_class.len(), 2);
        assert!((m2.per_class[0].metrics.precision_at_1 - 2.0 / 3.0).abs() < 1e-12);
    }

    /// Classes of size 1: the singleton's query is excluded from every metric, but the
    /// singleton still acts as a (wrong) neighbour for the others.
    #[test]
    fn singleton_classes_are_excluded_but_distract() {
        let pts = [0.0f32, 0.1, 5.0, 5.2, 0.05];
        let labels = [0i64, 0, 1, 1, 9];
        let e = Embeddings::new("q", &pts, 1).unwrap();
        let m = evaluate_retrieval(e, &labels, None, &cfg(KSpec::Fixed(1))).unwrap();
        assert_eq!(m.num_lone_queries, 1);
        assert_eq!(m.num_queries, 5);
        // q0's and q1's nearest is the singleton at 0.05 -> wrong; q2, q3 right. 2/4.
        assert!((m.metrics.precision_at_1 - 0.5).abs() < 1e-12);
        assert!(m.per_class.iter().all(|c| c.label != 9));
        // All singletons: nothing to evaluate -> typed error, not 0 or NaN.
        let e2 = Embeddings::new("q", &pts[..3], 1).unwrap();
        let err = evaluate_retrieval(e2, &[1, 2, 3], None, &cfg(KSpec::MaxBinCount)).unwrap_err();
        assert!(matches!(err, EvalError::NoRetrievableQueries { queries: 3 }));
    }

    /// k smaller than a class: r_precision divides by min(R, k), both MAPs by the full R.
    #[test]
    fn k_below_class_size_truncates_map_but_not_r_precision_denominator() {
        let pts = [0.0f32, 1.0, 2.0, 10.0];
        let e = Embeddings::new("q", &pts, 1).unwrap();
        let m = evaluate_retrieval(e, &[0, 0, 0, 1], None, &cfg(KSpec::Fixed(1))).unwrap();
        // Each of q0..q2 has a same-class nearest neighbour (q1's tie 0/2 -> index 0); R = 2.
        assert_eq!(m.num_lone_queries, 1);
        assert_eq!(m.metrics.r_precision, 1.0);
        assert!((m.metrics.mean_average_precision_at_r - 0.5).abs() < 1e-12);
        assert!((m.metrics.mean_average_precision - 0.5).abs() < 1e-12);
        assert_eq!(m.metrics.mean_reciprocal_rank, 1.0);
    }

    #[test]
    fn separate_sets_exclude_unseen_query_labels() {
        let q = [0.0f32, 10.0];
        let r = [0.1f32, 0.2, 9.0];
        let qe = Embeddings::new("q", &q, 1).unwrap();
        let re = Embeddings::new("r", &r, 1).unwrap();
        let m = evaluate_retrieval(qe, &[0, 7], Some((re, &[0, 0, 1])), &cfg(KSpec::MaxBinCount)).unwrap();
        assert_eq!(m.k, 2);
        assert_eq!(m.num_lone_queries, 1);
        assert_eq!(m.metrics.precision_at_1, 1.0);
        assert_eq!(m.metrics.mean_average_precision_at_r, 1.0);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let p = [0.0f32, 1.0, 2.0];
        let e = Embeddings::new("q", &p, 1).unwrap();
        let c = cfg(KSpec::MaxBinCount);
        assert!(matches!(evaluate_retrieval(e, &[0, 1], None, &c), Err(EvalError::LabelCountMismatch { .. })));
        assert!(matches!(evaluate_retrieval(e, &[4, 4, 4], None, &c), Err(EvalError::SingleClass { label: 4, .. })));
        assert!(matches!(evaluate_retrieval(e, &[0, 0, 1], None, &cfg(KSpec::Fixed(3))), Err(EvalError::InvalidK { k: 3, max: 2, .. })));
        let r2 = [0.0f32, 1.0];
        let re = Embeddings::new("r", &r2, 2).unwrap();
        assert!(matches!(evaluate_retrieval(e, &[0, 0, 1], Some((re, &[0])), &c), Err(EvalError::DimensionMismatch { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Metrics lie in [0, 1], and relabelling classes by a bijection or permuting the
        /// rows leaves them unchanged (up to tie order: integer-free random data has no ties).
        #[test]
        fn bounded_and_invariant(n in 6usize..40, ncls in 2i64..5, seed in any::<u64>(), shift in 1i64..100) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 100_000) as f32 / 1000.0 };
            let d = 3;
            let pts: Vec<f32> = (0..n * d).map(|_| next()).collect();
            let labels: Vec<i64> = (0..n as i64).map(|i| i % ncls).collect();
            let e = Embeddings::new("q", &pts, d).unwrap();
            let c = cfg(KSpec::MaxBinCount);
            let m = evaluate_retrieval(e, &labels, None, &c).unwrap();
            let v = [m.metrics.precision_at_1, m.metrics.r_precision, m.metrics.mean_average_precision_at_r,
                     m.metrics.mean_average_precision, m.metrics.mean_reciprocal_rank];
            for x in v { prop_assert!((0.0..=1.0).contains(&x)); }
            prop_assert!(m.metrics.mean_average_precision_at_r <= m.metrics.r_precision + 1e-12);
            let relabelled: Vec<i64> = labels.iter().map(|l| l * 7 + shift).collect();
            let m2 = evaluate_retrieval(e, &relabelled, None, &c).unwrap();
            prop_assert!((m2.metrics.r_precision - m.metrics.r_precision).abs() < 1e-12);
            // Reverse the rows: tie-free data gives the same neighbours up to renaming.
            let rev: Vec<f32> = pts.chunks(d).rev().flatten().copied().collect();
            let rl: Vec<i64> = labels.iter().rev().copied().collect();
            let er = Embeddings::new("q", &rev, d).unwrap();
            let m3 = evaluate_retrieval(er, &rl, None, &c).unwrap();
            prop_assert!((m3.metrics.mean_average_precision_at_r - m.metrics.mean_average_precision_at_r).abs() < 1e-9);
            prop_assert!((m3.metrics.mean_reciprocal_rank - m.metrics.mean_reciprocal_rank).abs() < 1e-9);
        }
    }
}
