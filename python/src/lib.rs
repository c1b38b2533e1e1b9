//! `proxima._proxima`: the Rust half of the `proxima` Python package.
//!
//! Why a binding: most people who train embeddings evaluate them in Python with
//! pytorch-metric-learning, whose `AccuracyCalculator` is slow or runs out of memory on large
//! sets and has no gallery that can be saved and reopened. `proxima-eval` (blocked-GEMM exact
//! k-NN, metrics equal to the reference's) and `proxima-index` (checksummed galleries, the file
//! format of the `proxima` CLI and server) solve both without libtorch, so this crate exposes
//! them to NumPy.
//!
//! Division of labour: the pure-Python layer (`python/proxima/__init__.py`) turns whatever the
//! user passes (lists, float64, torch tensors through `__array__`, string labels) into
//! C-contiguous `float32` matrices and `int64` label vectors, naming the argument when it cannot;
//! this module checks what only the Rust side knows (finite values, shapes against each other,
//! `k` against the labels) and runs the computation with the GIL released. Every Rust error
//! becomes `ValueError` (bad input) or `OSError` (a file, with its path).
//!
//! `images` adds the preprocessing of models exported by `proxima export` (`proxima-data`, also
//! pure Rust), so `proxima.Embedder` feeds an ONNX model the pixels `proxima embed` would.

mod images;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use proxima_domain::{Catalogue, PageHost, Shown, decide, normalize_domains};
use proxima_eval::{Embeddings, EvalError, KSpec, Metric, Reference, RetrievalConfig, RetrievalMetrics, evaluate_clustering, evaluate_retrieval_chunked};
use proxima_index::{BackendConfig, Calibration, Decision, Domain, Gallery, HnswConfig, ImpostorScores, IndexError, is_background};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Row search result: (similarities, rows), both `nq × k`.
type ScoresAndRows<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);
/// One brand candidate: (brand, similarity, row, path).
type BrandHit = (String, f32, usize, String);
/// One open-set answer: (brand if known, best similarity, threshold, candidates).
type Answer = (Option<String>, f32, f32, Vec<BrandHit>);
/// Retrieval metrics and (NMI, AMI), each only when asked for.
type Computed = (Option<RetrievalMetrics>, Option<(f64, f64)>);

fn eval_err(e: EvalError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn index_err(e: IndexError) -> PyErr {
    match e {
        // OSError(errno, strerror, filename) picks the subclass (FileNotFoundError, ...).
        IndexError::Io { ref path, ref source } => match source.raw_os_error() {
            Some(code) => PyOSError::new_err((code, source.to_string(), path.display().to_string())),
            None => PyOSError::new_err(e.to_string()),
        },
        other => PyValueError::new_err(other.to_string()),
    }
}

/// A unit-like enum's serde name (`HostKind::NoPublicSuffix` → `no_public_suffix`).
fn serde_json_value_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Parse a metric name (pytorch-metric-learning / faiss spellings accepted).
fn parse_metric(name: &str) -> PyResult<Metric> {
    match name.to_ascii_lowercase().as_str() {
        "euclidean" | "l2" => Ok(Metric::L2),
        "squared_euclidean" | "l2_squared" | "sqeuclidean" => Ok(Metric::L2Squared),
        "cosine" => Ok(Metric::Cosine),
        "dot" | "inner_product" | "ip" => Ok(Metric::Dot),
        _ => Err(PyValueError::new_err(format!("metric: unknown metric {name:?}; expected one of 'euclidean', 'squared_euclidean', 'cosine', 'dot'"))),
    }
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::L2 => "euclidean",
        Metric::L2Squared => "squared_euclidean",
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
    }
}

/// Borrow a C-contiguous 2-D array as validated embeddings (`what` names it in errors).
fn matrix<'a>(what: &'static str, a: &'a PyReadonlyArray2<'_, f32>) -> PyResult<(&'a [f32], usize)> {
    let dim = a.shape()[1];
    let data = a.as_slice().map_err(|_| PyValueError::new_err(format!("{what}: the array must be C-contiguous")))?;
    if a.shape()[0] == 0 {
        return Err(PyValueError::new_err(format!("{what}: the array has no rows")));
    }
    Embeddings::new(what, data, dim).map_err(eval_err)?;
    Ok((data, dim))
}

fn labels<'a>(what: &'static str, a: &'a PyReadonlyArray1<'_, i64>) -> PyResult<&'a [i64]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what}: the array must be contiguous")))
}

fn to_2d<'py, T: numpy::Element>(py: Python<'py>, v: Vec<T>, rows: usize, cols: usize) -> Bound<'py, PyArray2<T>> {
    Array2::from_shape_vec((rows, cols), v).expect("rows × cols values").into_pyarray(py)
}

/// The k of pytorch-metric-learning: an int, `"max_bin_count"`, or `None` (every reference).
#[derive(FromPyObject)]
enum KArg {
    Fixed(usize),
    Named(String),
}

fn parse_k(k: Option<KArg>) -> PyResult<KSpec> {
    match k {
        None => Ok(KSpec::AllReferences),
        Some(KArg::Fixed(0)) => Err(PyValueError::new_err("k: must be a positive integer, 'max_bin_count' or None")),
        Some(KArg::Fixed(k)) => Ok(KSpec::Fixed(k)),
        Some(KArg::Named(s)) if s == "max_bin_count" => Ok(KSpec::MaxBinCount),
        Some(KArg::Named(s)) => Err(PyValueError::new_err(format!("k: must be a positive integer, 'max_bin_count' or None, not {s:?}"))),
    }
}

/// Retrieval metrics (and optionally NMI/AMI) with AccuracyCalculator's semantics.
#[pyfunction]
#[pyo3(signature = (query, query_labels, reference, reference_labels, ref_includes_query, k, avg_of_avgs, metric, knn_metrics, clustering, seed, chunk_rows = None))]
#[allow(clippy::too_many_arguments)]
fn accuracy<'py>(
    py: Python<'py>,
    query: PyReadonlyArray2<'py, f32>,
    query_labels: PyReadonlyArray1<'py, i64>,
    reference: Option<PyReadonlyArray2<'py, f32>>,
    reference_labels: Option<PyReadonlyArray1<'py, i64>>,
    ref_includes_query: bool,
    k: Option<KArg>,
    avg_of_avgs: bool,
    metric: &str,
    knn_metrics: bool,
    clustering: bool,
    seed: u64,
    chunk_rows: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let metric = parse_metric(metric)?;
    let k = parse_k(k)?;
    let (q, d) = matrix("query", &query)?;
    let ql = labels("query_labels", &query_labels)?;
    if ql.len() != q.len() / d {
        return Err(PyValueError::new_err(format!("query_labels: {} labels for {} query rows", ql.len(), q.len() / d)));
    }
    let reference = match (&reference, &reference_labels) {
        (Some(r), Some(rl)) => {
            let (r, rd) = matrix("reference", r)?;
            let rl = labels("reference_labels", rl)?;
            if rd != d {
                return Err(PyValueError::new_err(format!("reference: dimension {rd} differs from the query's dimension {d}")));
            }
            if rl.len() != r.len() / rd {
                return Err(PyValueError::new_err(format!("reference_labels: {} labels for {} reference rows", rl.len(), r.len() / rd)));
            }
            Some((r, rl))
        }
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err("reference and reference_labels must be given together"));
        }
    };
    let config = RetrievalConfig { k, avg_of_avgs, at_ks: vec![], metric };
    let out = PyDict::new(py);
    let (retrieval, cluster) = py
        .detach(|| -> Result<Computed, EvalError> {
            let qe = Embeddings::new("query", q, d)?;
            let retrieval = if knn_metrics {
                let reference = match reference {
                    None => Reference::Queries,
                    Some((r, rl)) => {
                        let re = Embeddings::new("reference", r, d)?;
                        if ref_includes_query { Reference::IncludesQueries(re, rl) } else { Reference::Separate(re, rl) }
                    }
                };
                Some(evaluate_retrieval_chunked(qe, ql, reference, &config, chunk_rows)?)
            } else {
                None
            };
            let cluster = if clustering {
                let c = evaluate_clustering(qe, ql, seed)?;
                Some((c.nmi, c.ami))
            } else {
                None
            };
            Ok((retrieval, cluster))
        })
        .map_err(eval_err)?;
    if let Some(m) = retrieval {
        out.set_item("k", m.k)?;
        out.set_item("num_queries", m.num_queries)?;
        out.set_item("num_lone_queries", m.num_lone_queries)?;
        let c = &m.metrics;
        out.set_item("precision_at_1", c.precision_at_1)?;
        out.set_item("r_precision", c.r_precision)?;
        out.set_item("mean_average_precision_at_r", c.mean_average_precision_at_r)?;
        out.set_item("mean_average_precision", c.mean_average_precision)?;
        out.set_item("mean_reciprocal_rank", c.mean_reciprocal_rank)?;
        let per = PyDict::new(py);
        let pc = &m.per_class;
        per.set_item("labels", PyArray1::from_vec(py, pc.iter().map(|c| c.label).collect()))?;
        per.set_item("num_queries", PyArray1::from_vec(py, pc.iter().map(|c| c.num_queries as i64).collect()))?;
        type Get = fn(&proxima_eval::CoreMetrics) -> f64;
        let fields: [(&str, Get); 5] = [
            ("precision_at_1", |c| c.precision_at_1),
            ("r_precision", |c| c.r_precision),
            ("mean_average_precision_at_r", |c| c.mean_average_precision_at_r),
            ("mean_average_precision", |c| c.mean_average_precision),
            ("mean_reciprocal_rank", |c| c.mean_reciprocal_rank),
        ];
        for (name, get) in fields {
            per.set_item(name, PyArray1::from_vec(py, pc.iter().map(|c| get(&c.metrics)).collect()))?;
        }
        out.set_item("per_class", per)?;
    }
    if let Some((nmi, ami)) = cluster {
        out.set_item("NMI", nmi)?;
        out.set_item("AMI", ami)?;
    }
    Ok(out)
}

/// Exact k nearest references of every query: (scores, indices), closest first.
#[pyfunction]
#[pyo3(signature = (query, reference, k, metric))]
fn knn<'py>(py: Python<'py>, query: PyReadonlyArray2<'py, f32>, reference: Option<PyReadonlyArray2<'py, f32>>, k: usize, metric: &str) -> PyResult<ScoresAndRows<'py>> {
    let metric = parse_metric(metric)?;
    let (q, d) = matrix("query", &query)?;
    let r = match &reference {
        Some(r) => {
            let (r, rd) = matrix("reference", r)?;
            if rd != d {
                return Err(PyValueError::new_err(format!("reference: dimension {rd} differs from the query's dimension {d}")));
            }
            Some(r)
        }
        None => None,
    };
    let res = py
        .detach(|| {
            let qe = Embeddings::new("query", q, d)?;
            let re = r.map(|r| Embeddings::new("reference", r, d)).transpose()?;
            proxima_eval::knn(qe, re, k, metric)
        })
        .map_err(eval_err)?;
    let nq = res.num_queries();
    let idx: Vec<i64> = res.indices.iter().map(|&i| i as i64).collect();
    Ok((to_2d(py, res.scores, nq, res.k), to_2d(py, idx, nq, res.k)))
}

fn calibration_dict<'py>(py: Python<'py>, c: &Calibration) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("threshold", c.threshold)?;
    d.set_item("target_fmr", c.target_fmr)?;
    d.set_item("achieved_fmr", c.achieved_fmr)?;
    d.set_item("fnmr", c.fnmr)?;
    d.set_item("num_genuine", c.num_genuine)?;
    d.set_item("num_impostor", c.num_impostor)?;
    Ok(d)
}

/// A brand gallery (`proxima_index::Gallery`), the file format of `proxima gallery` and `proxima serve`.
#[pyclass(name = "Gallery", module = "proxima._proxima")]
struct PyGallery {
    inner: Gallery,
}

fn gallery_rows<'a>(g: &Gallery, what: &'static str, a: &'a PyReadonlyArray2<'_, f32>) -> PyResult<&'a [f32]> {
    if a.shape()[1] != g.dim() {
        return Err(PyValueError::new_err(format!("{what}: dimension {} differs from the gallery's dimension {}", a.shape()[1], g.dim())));
    }
    Ok(matrix(what, a)?.0)
}

#[pymethods]
impl PyGallery {
    /// An empty gallery of `dim`-dimensional embeddings of the model `model_fingerprint`.
    #[new]
    #[pyo3(signature = (dim, model_fingerprint, metric = "cosine"))]
    fn new(dim: usize, model_fingerprint: String, metric: &str) -> PyResult<Self> {
        let metric = parse_metric(metric)?;
        Ok(Self { inner: Gallery::with_metric(dim, model_fingerprint, metric).map_err(index_err)? })
    }

    /// Read a gallery file; with `model_fingerprint`, refuse one built with another model.
    #[staticmethod]
    #[pyo3(signature = (path, model_fingerprint = None))]
    fn load(py: Python<'_>, path: std::path::PathBuf, model_fingerprint: Option<String>) -> PyResult<Self> {
        let g = py
            .detach(|| match &model_fingerprint {
                Some(fp) => Gallery::load_for_model(&path, fp),
                None => Gallery::load(&path),
            })
            .map_err(index_err)?;
        Ok(Self { inner: g })
    }

    /// Write the gallery atomically.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let g = &self.inner;
        py.detach(|| g.save(&path)).map_err(index_err)
    }

    /// Enrol rows under `brand`; returns the number of rows added.
    fn add(&mut self, brand: &str, embeddings: PyReadonlyArray2<'_, f32>, paths: Vec<String>) -> PyResult<usize> {
        let rows = gallery_rows(&self.inner, "embeddings", &embeddings)?;
        self.inner.add(brand, rows, &paths).map_err(index_err)
    }

    /// Remove a brand; returns the number of rows removed.
    fn remove(&mut self, brand: &str) -> PyResult<usize> {
        self.inner.remove(brand).map_err(index_err)
    }

    /// Replace an enrolled brand's legitimate domains (stored registrable, sorted); returns them.
    fn set_domains(&mut self, brand: &str, domains: Vec<String>) -> PyResult<Vec<String>> {
        let parsed = normalize_domains(&domains).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(self.inner.set_domains(brand, &parsed).map_err(index_err)?.iter().map(Domain::to_string).collect())
    }

    /// The brand's legitimate domains (empty when none are on record).
    fn domains(&self, brand: &str) -> Vec<String> {
        self.inner.domains(brand).iter().map(Domain::to_string).collect()
    }

    /// Every brand with domains, with them.
    fn all_domains(&self) -> Vec<(String, Vec<String>)> {
        self.inner.all_domains().iter().map(|(b, ds)| (b.clone(), ds.iter().map(Domain::to_string).collect())).collect()
    }

    /// Imports a brand catalogue (JSON or TOML): each gallery brand it names gains (or, with
    /// `replace`, gets) its domains; returns (matched brands, unmatched brands).
    fn import_catalogue(&mut self, py: Python<'_>, path: std::path::PathBuf, replace: bool) -> PyResult<(Vec<String>, Vec<String>)> {
        let c = py.detach(|| Catalogue::load(&path)).map_err(|e| match e {
            proxima_domain::DomainError::Io { ref path, ref source } => match source.raw_os_error() {
                Some(code) => PyOSError::new_err((code, source.to_string(), path.display().to_string())),
                None => PyOSError::new_err(e.to_string()),
            },
            other => PyValueError::new_err(other.to_string()),
        })?;
        let brands: Vec<String> = self.inner.brands().iter().filter(|b| !is_background(b)).cloned().collect();
        let plan = c.plan_import(&brands);
        let mut next = self.inner.clone();
        for (brand, i) in &plan.matched {
            let mut list = c.brands[*i].domains.clone();
            if !replace {
                list.extend(next.domains(brand).iter().cloned());
            }
            next.set_domains(brand, &list).map_err(index_err)?;
        }
        self.inner = next;
        Ok((plan.matched.into_iter().map(|(b, _)| b).collect(), plan.unmatched))
    }

    /// The phishing verdict for a page at `url` showing `brands` (known brands, most confident
    /// first): a dict of verdict, brand, url, host, host_kind, domain, brand_domains, reason.
    fn check<'py>(&self, py: Python<'py>, url: &str, brands: Vec<String>) -> PyResult<Bound<'py, PyDict>> {
        let page = PageHost::from_url(url).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if let Some(b) = brands.iter().find(|b| self.inner.brand_id(b).is_none()) {
            return Err(PyValueError::new_err(format!("brand {b:?} is not in the gallery")));
        }
        let shown: Vec<Shown> = brands.iter().map(|b| Shown { brand: b, domains: self.inner.domains(b) }).collect();
        let d = decide(&page, &shown);
        let brand = d.brand.map(|i| brands[i].clone());
        let out = PyDict::new(py);
        out.set_item("verdict", d.verdict.as_str())?;
        out.set_item("brand", brand.clone())?;
        out.set_item("url", &page.url)?;
        out.set_item("host", &page.host)?;
        out.set_item("host_kind", serde_json_value_str(&page.kind))?;
        out.set_item("domain", page.domain())?;
        out.set_item("brand_domains", brand.as_deref().map_or_else(Vec::new, |b| self.domains(b)))?;
        out.set_item("reason", d.reason)?;
        Ok(out)
    }

    /// Row search: (similarities, rows), `nq × min(k, len)`, best first.
    fn search<'py>(&self, py: Python<'py>, queries: PyReadonlyArray2<'py, f32>, k: usize) -> PyResult<ScoresAndRows<'py>> {
        let q = gallery_rows(&self.inner, "queries", &queries)?;
        let g = &self.inner;
        let hits = py.detach(|| g.search_batch(q, k)).map_err(index_err)?;
        let nq = hits.len();
        let kk = hits.first().map_or(0, Vec::len);
        let sims = hits.iter().flat_map(|h| h.iter().map(|x| x.similarity)).collect();
        let rows = hits.iter().flat_map(|h| h.iter().map(|x| x.row as i64)).collect();
        Ok((to_2d(py, sims, nq, kk), to_2d(py, rows, nq, kk)))
    }

    /// Brand ranking per query: lists of (brand, similarity, row, path), best first. This is
    /// the raw ranking of the gallery's entries, so "(background)" examples, if enrolled, appear
    /// in it like a brand; `identify` applies the rule that a query nearest them is unknown.
    fn rank_brands<'py>(&self, py: Python<'py>, queries: PyReadonlyArray2<'py, f32>, k: usize) -> PyResult<Vec<Vec<BrandHit>>> {
        let q = gallery_rows(&self.inner, "queries", &queries)?;
        let g = &self.inner;
        let ranked = py.detach(|| g.rank_brands_batch(q, k)).map_err(index_err)?;
        Ok(ranked.into_iter().map(|r| r.into_iter().map(|m| (m.brand, m.similarity, m.row, m.path.display().to_string())).collect()).collect())
    }

    /// Open-set decisions per query: (brand or None, similarity, threshold, candidates).
    #[pyo3(signature = (queries, k, threshold = None))]
    fn identify<'py>(&self, py: Python<'py>, queries: PyReadonlyArray2<'py, f32>, k: usize, threshold: Option<f32>) -> PyResult<Vec<Answer>> {
        let q = gallery_rows(&self.inner, "queries", &queries)?;
        let g = &self.inner;
        let d = g.dim();
        let ids = py
            .detach(|| {
                q.chunks(d)
                    .map(|row| match threshold {
                        Some(t) => g.identify_with_threshold(row, k, t),
                        None => g.identify(row, k),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(index_err)?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let (brand, sim) = match id.decision {
                    Decision::Known { brand, similarity } => (Some(brand), similarity),
                    Decision::Unknown { best_similarity, .. } => (None, best_similarity),
                };
                let cands = id.candidates.into_iter().map(|m| (m.brand, m.similarity, m.row, m.path.display().to_string())).collect();
                (brand, sim, id.threshold, cands)
            })
            .collect())
    }

    /// Calibrate the decision threshold on labelled queries for `target_fmr`; returns the calibration.
    #[pyo3(signature = (queries, true_brands, target_fmr, impostors = "best_wrong_brand"))]
    fn calibrate<'py>(
        &mut self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        true_brands: Vec<String>,
        target_fmr: f64,
        impostors: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mode = match impostors {
            "best_wrong_brand" => ImpostorScores::BestWrongBrand,
            "every_wrong_brand" => ImpostorScores::EveryWrongBrand,
            other => {
                return Err(PyValueError::new_err(format!("impostors: expected 'best_wrong_brand' or 'every_wrong_brand', not {other:?}")));
            }
        };
        let q = gallery_rows(&self.inner, "queries", &queries)?;
        let g = &mut self.inner;
        let c = py.detach(|| g.calibrate(q, &true_brands, target_fmr, mode).cloned()).map_err(index_err)?;
        calibration_dict(py, &c)
    }

    /// Calibrate from precomputed genuine and impostor similarities; returns the calibration.
    fn calibrate_from_scores<'py>(&mut self, py: Python<'py>, genuine: Vec<f64>, impostor: Vec<f64>, target_fmr: f64) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.calibrate_from_scores(&genuine, &impostor, target_fmr).map_err(index_err)?.clone();
        calibration_dict(py, &c)
    }

    /// Drop the calibrated threshold.
    fn clear_calibration(&mut self) {
        self.inner.set_calibration(None);
    }

    /// The calibration as a dict, or None.
    #[getter]
    fn calibration<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner.calibration().map(|c| calibration_dict(py, c)).transpose()
    }

    /// Use exact search (the default).
    fn use_exact(&mut self) -> PyResult<()> {
        self.inner.set_backend(BackendConfig::Exact).map_err(index_err)
    }

    /// Use HNSW search for galleries of at least `exact_below` rows.
    #[pyo3(signature = (m = 16, ef_construction = 100, ef_search = 64, exact_below = 10_000))]
    fn use_hnsw(&mut self, m: usize, ef_construction: usize, ef_search: usize, exact_below: usize) -> PyResult<()> {
        self.inner.set_backend(BackendConfig::Hnsw(HnswConfig { m, ef_construction, ef_search, exact_below })).map_err(index_err)
    }

    /// The search backend as a dict.
    #[getter]
    fn backend<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        match self.inner.backend() {
            BackendConfig::Exact => d.set_item("kind", "exact")?,
            BackendConfig::Hnsw(c) => {
                d.set_item("kind", "hnsw")?;
                d.set_item("m", c.m)?;
                d.set_item("ef_construction", c.ef_construction)?;
                d.set_item("ef_search", c.ef_search)?;
                d.set_item("exact_below", c.exact_below)?;
            }
        }
        Ok(d)
    }

    /// Embedding dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Similarity metric name.
    #[getter]
    fn metric(&self) -> &'static str {
        metric_name(self.inner.metric())
    }

    /// Fingerprint of the model the rows came from.
    #[getter]
    fn model_fingerprint(&self) -> String {
        self.inner.model_fingerprint().to_string()
    }

    /// Brand names by brand id.
    #[getter]
    fn brands(&self) -> Vec<String> {
        self.inner.brands().to_vec()
    }

    /// Brand id of every row.
    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_vec(py, self.inner.labels().iter().map(|&l| i64::from(l)).collect())
    }

    /// Source path of every row.
    #[getter]
    fn paths(&self) -> Vec<String> {
        self.inner.paths().iter().map(|p| p.display().to_string()).collect()
    }

    /// A copy of the stored rows (unit-norm for cosine galleries).
    #[getter]
    fn embeddings<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        to_2d(py, self.inner.data().to_vec(), self.inner.len(), self.inner.dim())
    }

    /// (brand, rows) per brand, in brand-id order.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.list().into_iter().map(|b| (b.brand, b.rows)))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// The compiled half of the `proxima` package; use the `proxima` module, not this one.
#[pymodule]
fn _proxima(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(accuracy, m)?)?;
    m.add_function(wrap_pyfunction!(knn, m)?)?;
    m.add_class::<PyGallery>()?;
    images::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
