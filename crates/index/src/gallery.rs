//! The brand gallery: enrolled logo embeddings with their brands, sources and model.
//!
//! Why a gallery object and not just a matrix: deciding "this crop is brand X" needs
//! more than neighbours. It needs to know which brand every row belongs to (to rank
//! brands, not crops), which image every row came from (to show the analyst *why*),
//! which model produced the rows (embeddings of two models are not comparable, and
//! mixing them silently gives confident nonsense), and the threshold calibrated for that
//! model, so that "unknown" is a measured answer rather than a guess.
//!
//! Invariants kept by every operation: all rows have the gallery's dimension and are
//! finite; cosine galleries store unit-norm rows (cosine ignores norms, and unit rows
//! make search a plain inner product); every brand has at least one row; brand ids are
//! `0..num_brands` in order of first enrolment and are renumbered when a brand is
//! removed (names, not ids, are the stable identity).
//!
//! Similarities are "higher is closer" everywhere: cosine and dot as is, L2 distances
//! negated, so one decision rule — known when `similarity >= threshold` — serves all
//! metrics.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proxima_domain::Domain;
use proxima_eval::Metric;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendConfig, Hits, SearchIndex};
use crate::background::is_background;
use crate::calibrate::Calibration;
use crate::error::{IndexError, Result};

/// One enrolled row returned by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowHit {
    /// Row index in the gallery.
    pub row: usize,
    /// Brand of the row.
    pub brand: String,
    /// Image the row was computed from.
    pub path: PathBuf,
    /// Similarity to the query (higher is closer; L2 distances negated).
    pub similarity: f32,
}

/// A brand's best match for a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrandMatch {
    /// Brand name.
    pub brand: String,
    /// Best similarity of any of the brand's rows.
    pub similarity: f32,
    /// The row that achieved it.
    pub row: usize,
    /// The image of that row.
    pub path: PathBuf,
}

/// The open-set answer for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The best brand's similarity reached the threshold.
    Known {
        /// The brand.
        brand: String,
        /// Its similarity.
        similarity: f32,
    },
    /// No enrolled brand is similar enough, or the query is nearer to the gallery's background
    /// examples than to every brand (not a logo; see [`crate::background`]).
    Unknown {
        /// The best brand's similarity (below the threshold unless the background was nearer).
        best_similarity: f32,
        /// The background's similarity when it was nearer than every brand; absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        background_similarity: Option<f32>,
    },
}

/// Ranked brands and the decision for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identification {
    /// Known brand or unknown.
    pub decision: Decision,
    /// Threshold the decision used.
    pub threshold: f32,
    /// Up to `k` brands, best first (never the background).
    pub candidates: Vec<BrandMatch>,
}

/// A brand, how many rows it has and its legitimate domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrandCount {
    /// Brand name.
    pub brand: String,
    /// Enrolled rows.
    pub rows: usize,
    /// The brand's registrable domains (empty when none are on record).
    #[serde(default)]
    pub domains: Vec<Domain>,
}

/// Enrolled embeddings of known brands, searchable by similarity.
///
/// # Shapes
/// `rows × dim` row-major `f32`, one brand label and one source path per row.
pub struct Gallery {
    pub(crate) metric: Metric,
    pub(crate) dim: usize,
    pub(crate) model_fingerprint: String,
    pub(crate) brands: Vec<String>,
    pub(crate) labels: Vec<u32>,
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) data: Vec<f32>,
    pub(crate) calibration: Option<Calibration>,
    pub(crate) backend: BackendConfig,
    /// Brand name → its legitimate registrable domains (sorted, non-empty); enrolled brands only.
    pub(crate) domains: BTreeMap<String, Vec<Domain>>,
    pub(crate) index: OnceLock<SearchIndex>,
}

impl std::fmt::Debug for Gallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gallery")
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .field("model_fingerprint", &self.model_fingerprint)
            .field("brands", &self.brands.len())
            .field("rows", &self.len())
            .field("calibration", &self.calibration)
            .field("backend", &self.backend)
            .field("index_built", &self.index.get().is_some())
            .finish()
    }
}

impl Clone for Gallery {
    /// Clones the contents; the search index is rebuilt on demand.
    fn clone(&self) -> Self {
        Self {
            metric: self.metric,
            dim: self.dim,
            model_fingerprint: self.model_fingerprint.clone(),
            brands: self.brands.clone(),
            labels: self.labels.clone(),
            paths: self.paths.clone(),
            data: self.data.clone(),
            calibration: self.calibration.clone(),
            backend: self.backend,
            domains: self.domains.clone(),
            index: OnceLock::new(),
        }
    }
}

/// Check a row-major buffer against `dim`: whole rows, at least one, all finite; returns rows.
pub(crate) fn check_rows(what: &'static str, data: &[f32], dim: usize) -> Result<usize> {
    if data.is_empty() {
        return Err(IndexError::EmptyInput { what });
    }
    if !data.len().is_multiple_of(dim) {
        // A single vector of the wrong length is the common mistake: report its length.
        return Err(IndexError::DimensionMismatch { what, expected: dim, got: data.len() });
    }
    if let Some(p) = data.iter().position(|v| !v.is_finite()) {
        return Err(IndexError::NonFinite { what, row: p / dim, col: p % dim, value: data[p] });
    }
    Ok(data.len() / dim)
}

/// Cosine similarity of two vectors, accumulated in f64 (0 when either is zero): how two
/// embeddings compare under a gallery's metric (`proxima match`, `POST /v1/compare`).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { (ab / (aa.sqrt() * bb.sqrt())) as f32 }
}

/// Scale every row to unit L2 norm (norm accumulated in f64); zero rows are errors.
pub(crate) fn normalize_rows(what: &'static str, data: &mut [f32], dim: usize) -> Result<()> {
    for (i, row) in data.chunks_mut(dim).enumerate() {
        let n = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if n == 0.0 || !n.is_finite() {
            return Err(IndexError::ZeroVector { what, row: i });
        }
        row.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
    }
    Ok(())
}

impl Gallery {
    /// An empty cosine gallery of `dim`-dimensional embeddings from the model `model_fingerprint`.
    pub fn new(dim: usize, model_fingerprint: impl Into<String>) -> Result<Self> {
        Self::with_metric(dim, model_fingerprint, Metric::Cosine)
    }

    /// An empty gallery searched with `metric`.
    pub fn with_metric(dim: usize, model_fingerprint: impl Into<String>, metric: Metric) -> Result<Self> {
        if dim == 0 {
            return Err(IndexError::InvalidParameter { name: "dim", value: "0".into(), reason: "must be >= 1" });
        }
        Ok(Self {
            metric,
            dim,
            model_fingerprint: model_fingerprint.into(),
            brands: Vec::new(),
            labels: Vec::new(),
            paths: Vec::new(),
            data: Vec::new(),
            calibration: None,
            backend: BackendConfig::Exact,
            domains: BTreeMap::new(),
            index: OnceLock::new(),
        })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The similarity metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Fingerprint of the model that produced the rows.
    pub fn model_fingerprint(&self) -> &str {
        &self.model_fingerprint
    }

    /// Enrolled rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when no row is enrolled.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Brand names, indexed by brand id.
    pub fn brands(&self) -> &[String] {
        &self.brands
    }

    /// Brand id of a name.
    pub fn brand_id(&self, brand: &str) -> Option<u32> {
        self.brands.iter().position(|b| b == brand).map(|i| i as u32)
    }

    /// Id of a brand named as stored or, failing that, by the NFC form of `brand`.
    pub fn resolve_brand(&self, brand: &str) -> Option<u32> {
        self.brand_id(brand).or_else(|| crate::brand_name::normalize(brand).ok().and_then(|n| self.brand_id(&n)))
    }

    /// Brand id of every row.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Source path of every row.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Row `i` as stored (unit-norm for cosine).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All rows, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The calibrated decision threshold, if any.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Store (or clear) the decision threshold.
    pub fn set_calibration(&mut self, calibration: Option<Calibration>) {
        self.calibration = calibration;
    }

    /// The search backend configuration.
    pub fn backend(&self) -> BackendConfig {
        self.backend
    }

    /// Choose the search backend (the index is rebuilt on the next search).
    pub fn set_backend(&mut self, backend: BackendConfig) -> Result<()> {
        backend.validate(self.metric)?;
        self.backend = backend;
        self.index = OnceLock::new();
        Ok(())
    }

    /// Build the search index now instead of on the first search (HNSW takes a while).
    pub fn build_index(&self) -> Result<&SearchIndex> {
        if self.is_empty() {
            return Err(IndexError::EmptyGallery);
        }
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let built = SearchIndex::build(self.backend, &self.data, self.dim, self.metric)?;
        // A concurrent caller may have won the race; either index is equivalent.
        Ok(self.index.get_or_init(|| built))
    }

    /// Enrol `embeddings` (one row per image in `paths`) under `brand`; returns the rows added.
    ///
    /// The name must pass [`crate::brand_name::normalize`] and is stored in its NFC form. A new brand gets the next id; an existing one gains rows. Nothing is changed when
    /// any check fails.
    ///
    /// # Shapes
    /// `embeddings`: `paths.len() × dim`.
    pub fn add<P: AsRef<Path>>(&mut self, brand: &str, embeddings: &[f32], paths: &[P]) -> Result<usize> {
        let brand = &crate::brand_name::normalize(brand)?;
        let rows = check_rows("enrolled embeddings", embeddings, self.dim)?;
        if rows != paths.len() {
            return Err(IndexError::CountMismatch { what: "add", rows, count: paths.len(), items: "paths" });
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        if let Some(p) = paths.iter().find(|p| p.to_str().is_none()) {
            return Err(IndexError::NonUtf8Path(p.clone()));
        }
        let mut rows_data = embeddings.to_vec();
        if self.metric == Metric::Cosine {
            normalize_rows("enrolled embeddings", &mut rows_data, self.dim)?;
        }
        let id = match self.brand_id(brand) {
            Some(id) => id,
            None => {
                if self.brands.len() >= u32::MAX as usize {
                    return Err(IndexError::InvalidBrand { name: brand.into(), reason: "too many brands" });
                }
                self.brands.push(brand.to_string());
                (self.brands.len() - 1) as u32
            }
        };
        self.data.extend_from_slice(&rows_data);
        self.labels.extend(std::iter::repeat_n(id, rows));
        self.paths.extend(paths);
        self.index = OnceLock::new();
        Ok(rows)
    }

    /// Remove a brand and all its rows; returns the rows removed.
    ///
    /// `brand` is matched as stored, else by its NFC form (so either spelling of a name removes it).
    pub fn remove(&mut self, brand: &str) -> Result<usize> {
        let id = self.resolve_brand(brand).ok_or_else(|| IndexError::UnknownBrand(brand.to_string()))?;
        let d = self.dim;
        let (mut data, mut labels, mut paths) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (&l, p)) in self.labels.iter().zip(self.paths.drain(..)).enumerate() {
            if l != id {
                data.extend_from_slice(&self.data[i * d..(i + 1) * d]);
                labels.push(if l > id { l - 1 } else { l });
                paths.push(p);
            }
        }
        let removed = self.labels.len() - labels.len();
        self.brands.remove(id as usize);
        self.domains.remove(brand);
        (self.data, self.labels, self.paths) = (data, labels, paths);
        self.index = OnceLock::new();
        Ok(removed)
    }

    /// Every brand with its number of rows, in brand-id order.
    pub fn list(&self) -> Vec<BrandCount> {
        let mut counts = vec![0usize; self.brands.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        self.brands.iter().zip(counts).map(|(b, rows)| BrandCount { brand: b.clone(), rows, domains: self.domains(b).to_vec() }).collect()
    }

    /// The legitimate registrable domains of `brand` (empty when none are on record or the
    /// brand is not enrolled).
    pub fn domains(&self, brand: &str) -> &[Domain] {
        self.domains.get(brand).map_or(&[], Vec::as_slice)
    }

    /// Every brand that has domains, with them.
    pub fn all_domains(&self) -> &BTreeMap<String, Vec<Domain>> {
        &self.domains
    }

    /// Replaces the domains of an enrolled brand (sorted, de-duplicated; an empty list removes
    /// them); returns the stored list. The background is no brand and has no domains.
    ///
    /// `brand` is matched as stored, else by its NFC form, as [`Gallery::remove`] matches it.
    pub fn set_domains(&mut self, brand: &str, domains: &[Domain]) -> Result<&[Domain]> {
        let id = self.resolve_brand(brand).ok_or_else(|| IndexError::UnknownBrand(brand.to_string()))?;
        let brand = self.brands[id as usize].clone();
        let brand = brand.as_str();
        if is_background(brand) {
            return Err(IndexError::InvalidBrand { name: brand.to_string(), reason: "the background examples are no brand and have no domains" });
        }
        let mut list = domains.to_vec();
        list.sort();
        list.dedup();
        if list.is_empty() {
            self.domains.remove(brand);
            return Ok(&[]);
        }
        self.domains.insert(brand.to_string(), list);
        Ok(&self.domains[brand])
    }

    /// Validate queries and bring them into the stored rows' form (unit-norm for cosine).
    fn prepare(&self, queries: &[f32]) -> Result<Vec<f32>> {
        if self.is_empty() {
            return Err(IndexError::EmptyGallery);
        }
        check_rows("query", queries, self.dim)?;
        let mut q = queries.to_vec();
        if self.metric == Metric::Cosine {
            normalize_rows("query", &mut q, self.dim)?;
        }
        Ok(q)
    }

    fn raw_search(&self, prepared: &[f32], k: usize) -> Result<Vec<Hits>> {
        self.build_index()?.search(&self.data, self.dim, self.metric, prepared, k)
    }

    pub(crate) fn check_k(k: usize) -> Result<()> {
        if k == 0 {
            return Err(IndexError::InvalidParameter { name: "k", value: "0".into(), reason: "must be >= 1" });
        }
        Ok(())
    }

    fn row_hit(&self, (row, similarity): (usize, f32)) -> RowHit {
        RowHit { row, brand: self.brands[self.labels[row] as usize].clone(), path: self.paths[row].clone(), similarity }
    }

    /// The `min(k, len)` most similar rows to one query, best first.
    ///
    /// # Shapes
    /// `query`: `dim`.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<RowHit>> {
        self.check_single(query)?;
        Ok(self.search_batch(query, k)?.pop().expect("one query"))
    }

    /// [`Gallery::search`] for many queries at once (parallel).
    ///
    /// # Shapes
    /// `queries`: `nq × dim`; result: `nq` lists.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<RowHit>>> {
        Self::check_k(k)?;
        let q = self.prepare(queries)?;
        let hits = self.raw_search(&q, k)?;
        Ok(hits.into_iter().map(|h| h.into_iter().map(|x| self.row_hit(x)).collect()).collect())
    }

    pub(crate) fn check_single(&self, query: &[f32]) -> Result<()> {
        if query.len() != self.dim {
            return Err(IndexError::DimensionMismatch { what: "query", expected: self.dim, got: query.len() });
        }
        Ok(())
    }

    /// The `min(k, brands().len())` most similar brands to one query (best row per brand), best
    /// first. A raw ranking: the background, when enrolled, is ranked like a brand; [`Gallery::rank`]
    /// sets it apart.
    ///
    /// # Shapes
    /// `query`: `dim`.
    pub fn rank_brands(&self, query: &[f32], k: usize) -> Result<Vec<BrandMatch>> {
        self.check_single(query)?;
        Ok(self.rank_brands_batch(query, k)?.pop().expect("one query"))
    }

    /// [`Gallery::rank_brands`] for many queries at once.
    ///
    /// Searches the top `m` rows and widens `m` (×4) for the queries that saw fewer than
    /// `k` distinct brands. With exact search the result is exact: every brand that did
    /// not appear among the top `m` rows is no closer than the `m`-th row.
    ///
    /// # Shapes
    /// `queries`: `nq × dim`; result: `nq` lists.
    pub fn rank_brands_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<BrandMatch>>> {
        Self::check_k(k)?;
        let q = self.prepare(queries)?;
        let d = self.dim;
        let nq = q.len() / d;
        let n = self.len();
        let k = k.min(self.brands.len());
        let mut out: Vec<Option<Vec<BrandMatch>>> = vec![None; nq];
        let mut pending: Vec<usize> = (0..nq).collect();
        let mut m = (4 * k).max(16).min(n);
        loop {
            let sub: Vec<f32> = pending.iter().flat_map(|&i| q[i * d..(i + 1) * d].iter().copied()).collect();
            let hits = self.raw_search(&sub, m)?;
            let mut still = Vec::new();
            for (&qi, h) in pending.iter().zip(hits) {
                let ranked = self.best_per_brand(&h);
                if ranked.len() >= k || m >= n {
                    out[qi] = Some(ranked.into_iter().take(k).collect());
                } else {
                    still.push(qi);
                }
            }
            if still.is_empty() {
                break;
            }
            pending = still;
            m = (m * 4).min(n);
        }
        Ok(out.into_iter().map(|o| o.expect("every query answered")).collect())
    }

    /// Keep the first (best) hit of every brand, in order.
    fn best_per_brand(&self, hits: &Hits) -> Vec<BrandMatch> {
        let mut seen: HashMap<u32, ()> = HashMap::new();
        hits.iter()
            .filter(|(row, _)| seen.insert(self.labels[*row], ()).is_none())
            .map(|&(row, similarity)| BrandMatch { brand: self.brands[self.labels[row] as usize].clone(), similarity, row, path: self.paths[row].clone() })
            .collect()
    }

    /// Rank the top `k` brands for one query and decide with the calibrated threshold; a query
    /// nearer to the background than to every brand is unknown ([`crate::Ranking::decide`]).
    ///
    /// # Shapes
    /// `query`: `dim`.
    pub fn identify(&self, query: &[f32], k: usize) -> Result<Identification> {
        self.identify_with_threshold(query, k, self.decision_threshold(None)?)
    }

    /// The decision threshold to use: `explicit` when given (a `--threshold` flag, a server
    /// setting), else the one calibrated in this gallery; [`IndexError::NotCalibrated`] when
    /// there is neither. Every caller (CLI, server, find pipeline) chooses it here.
    pub fn decision_threshold(&self, explicit: Option<f32>) -> Result<f32> {
        explicit.or(self.calibration.as_ref().map(|c| c.threshold)).ok_or(IndexError::NotCalibrated)
    }

    /// As [`Gallery::identify`] with an explicit threshold (similarity units).
    pub fn identify_with_threshold(&self, query: &[f32], k: usize, threshold: f32) -> Result<Identification> {
        if threshold.is_nan() {
            return Err(IndexError::InvalidParameter { name: "threshold", value: "NaN".into(), reason: "must be a number" });
        }
        let ranking = self.rank(query, k)?;
        let decision = ranking.decide(threshold)?;
        Ok(Identification { decision, threshold, candidates: ranking.brands })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Three brands in 3-D: a near e0, b near e1, c near e2.
    fn gallery() -> Gallery {
        let mut g = Gallery::new(3, "model-A").unwrap();
        g.add("a", &[1.0, 0.0, 0.0, 2.0, 0.2, 0.0], &["a0.png", "a1.png"]).unwrap();
        g.add("b", &[0.0, 1.0, 0.0], &["b0.png"]).unwrap();
        g.add("c", &[0.0, 0.1, 1.0, 0.0, 0.0, 3.0], &["c0.png", "c1.png"]).unwrap();
        g
    }

    #[test]
    fn cosine_is_scale_free_and_zero_safe() {
        assert!((cosine(&[1.0, 0.0], &[5.0, 0.0]) - 1.0).abs() < 1e-7);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-7);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn add_list_remove_keep_rows_brands_and_paths_aligned() {
        let mut g = gallery();
        assert_eq!(g.len(), 5);
        assert_eq!(
            g.list(),
            vec![
                BrandCount { brand: "a".into(), rows: 2, domains: vec![] },
                BrandCount { brand: "b".into(), rows: 1, domains: vec![] },
                BrandCount { brand: "c".into(), rows: 2, domains: vec![] }
            ]
        );
        // Cosine rows are stored unit-norm.
        assert!((g.row(1).iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-6);
        // Adding to an existing brand reuses its id.
        g.add("b", &[0.0, 2.0, 0.1], &["b1.png"]).unwrap();
        assert_eq!(g.labels(), &[0, 0, 1, 2, 2, 1]);
        assert_eq!(g.remove("a").unwrap(), 2);
        assert_eq!(g.brands(), &["b".to_string(), "c".to_string()]);
        assert_eq!(g.labels(), &[0, 1, 1, 0]);
        let p: Vec<&str> = g.paths().iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(p, ["b0.png", "c0.png", "c1.png", "b1.png"]);
        assert_eq!(g.row(0), &[0.0, 1.0, 0.0]);
        assert!(matches!(g.remove("a"), Err(IndexError::UnknownBrand(_))));
    }

    #[test]
    fn add_rejects_bad_input_without_changing_anything() {
        let mut g = gallery();
        let before = (g.len(), g.brands().len());
        assert!(matches!(g.add("", &[1.0, 0.0, 0.0], &["x"]), Err(IndexError::InvalidBrand { .. })));
        assert!(matches!(g.add(" x", &[1.0, 0.0, 0.0], &["x"]), Err(IndexError::InvalidBrand { .. })));
        assert!(matches!(g.add("x", &[1.0, 0.0], &["x"]), Err(IndexError::DimensionMismatch { got: 2, .. })));
        assert!(matches!(g.add("x", &[1.0, f32::NAN, 0.0], &["x"]), Err(IndexError::NonFinite { col: 1, .. })));
        assert!(matches!(g.add("x", &[0.0, 0.0, 0.0], &["x"]), Err(IndexError::ZeroVector { row: 0, .. })));
        assert!(matches!(g.add("x", &[1.0, 0.0, 0.0], &["x", "y"]), Err(IndexError::CountMismatch { .. })));
        assert!(matches!(g.add::<&str>("x", &[], &[]), Err(IndexError::EmptyInput { .. })));
        assert_eq!((g.len(), g.brands().len()), before);
        assert!(Gallery::new(0, "m").is_err());
    }

    #[test]
    fn search_ranks_rows_and_identify_ranks_brands() {
        let g = gallery();
        let hits = g.search(&[1.0, 0.05, 0.0], 3).unwrap();
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), [1, 0, 2]);
        assert_eq!(hits[0].brand, "a");
        assert_eq!(hits[0].path, Path::new("a1.png"));
        assert!(hits[0].similarity > hits[1].similarity);
        // k larger than the gallery returns everything.
        assert_eq!(g.search(&[1.0, 0.0, 0.0], 50).unwrap().len(), 5);

        let r = g.rank_brands(&[0.1, 0.0, 1.0], 3).unwrap();
        assert_eq!(r.iter().map(|b| b.brand.as_str()).collect::<Vec<_>>(), ["c", "a", "b"]);
        assert_eq!(r[0].row, 4); // (0, 0, 3) is closer in angle than (0, 0.1, 1)
        assert!((r[0].similarity - 0.1f32.hypot(1.0).recip()).abs() < 1e-6);

        let id = g.identify_with_threshold(&[0.1, 0.0, 1.0], 2, 0.9).unwrap();
        assert_eq!(id.decision, Decision::Known { brand: "c".into(), similarity: r[0].similarity });
        assert_eq!(id.candidates.len(), 2);
        // The same query against a stricter threshold is unknown.
        let id = g.identify_with_threshold(&[0.1, 0.0, 1.0], 2, 0.999).unwrap();
        assert!(matches!(id.decision, Decision::Unknown { .. }));
        assert!(matches!(g.identify(&[0.1, 0.0, 1.0], 2), Err(IndexError::NotCalibrated)));
    }

    #[test]
    fn rank_brands_widens_until_k_brands_are_seen() {
        // 40 rows of brand "big" right next to the query, 1 row each of two far brands:
        // the first pass (m = 16) sees only "big" and must widen.
        let mut g = Gallery::new(2, "m").unwrap();
        let big: Vec<f32> = (0..40).flat_map(|i| [1.0, 0.001 * i as f32]).collect();
        let paths: Vec<String> = (0..40).map(|i| format!("big{i}")).collect();
        g.add("big", &big, &paths).unwrap();
        g.add("far", &[-1.0, 0.5], &["f"]).unwrap();
        g.add("mid", &[0.5, 1.0], &["m"]).unwrap();
        let r = g.rank_brands(&[1.0, 0.0], 3).unwrap();
        assert_eq!(r.iter().map(|b| b.brand.as_str()).collect::<Vec<_>>(), ["big", "mid", "far"]);
        let batch = g.rank_brands_batch(&[1.0, 0.0, -1.0, 0.4], 2).unwrap();
        assert_eq!(batch[1][0].brand, "far");
        assert_eq!(batch[0].len(), 2);
    }

    #[test]
    fn queries_are_validated() {
        let g = gallery();
        assert!(matches!(g.search(&[1.0, 0.0], 1), Err(IndexError::DimensionMismatch { expected: 3, got: 2, .. })));
        assert!(matches!(g.search(&[1.0, f32::INFINITY, 0.0], 1), Err(IndexError::NonFinite { .. })));
        assert!(matches!(g.search(&[0.0, 0.0, 0.0], 1), Err(IndexError::ZeroVector { .. })));
        assert!(matches!(g.search(&[1.0, 0.0, 0.0], 0), Err(IndexError::InvalidParameter { name: "k", .. })));
        assert!(matches!(g.search_batch(&[1.0, 0.0, 0.0, 1.0], 1), Err(IndexError::DimensionMismatch { .. })));
        assert!(matches!(g.identify_with_threshold(&[1.0, 0.0, 0.0], 1, f32::NAN), Err(IndexError::InvalidParameter { .. })));
        let empty = Gallery::new(3, "m").unwrap();
        assert!(matches!(empty.search(&[1.0, 0.0, 0.0], 1), Err(IndexError::EmptyGallery)));
        assert!(matches!(empty.rank_brands(&[1.0, 0.0, 0.0], 1), Err(IndexError::EmptyGallery)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn rank_brands_is_the_brute_force_per_brand_maximum(
            labels in proptest::collection::vec(0u32..6, 1..80),
            seed in any::<u64>(),
            k in 1usize..8,
            l2 in any::<bool>(),
            drop_brand in 0u32..6,
        ) {
            // Small-integer rows: every L2 distance is exact, so ranks must match exactly
            // (cosine is compared by value).
            let d = 3;
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) % 7) as f32 - 3.0 };
            let metric = if l2 { Metric::L2Squared } else { Metric::Cosine };
            let mut g = Gallery::with_metric(d, "m", metric).unwrap();
            for (i, &l) in labels.iter().enumerate() {
                let mut row: Vec<f32> = (0..d).map(|_| next()).collect();
                if row.iter().all(|&v| v == 0.0) { row[0] = 1.0; }
                g.add(&format!("brand{l}"), &row, &[format!("{i}.png")]).unwrap();
            }
            // Removing a brand must keep rows, labels and paths aligned.
            let dropped = format!("brand{drop_brand}");
            if g.brands().len() > 1 && g.remove(&dropped).is_ok() {
                prop_assert!(g.list().iter().all(|b| b.rows > 0 && b.brand != dropped));
                // Every surviving row still carries its original brand and path.
                for i in 0..g.len() {
                    let original: usize = g.paths()[i].to_str().unwrap().trim_end_matches(".png").parse().unwrap();
                    prop_assert_eq!(&g.brands()[g.labels()[i] as usize], &format!("brand{}", labels[original]));
                }
            }
            prop_assert_eq!(g.list().iter().map(|b| b.rows).sum::<usize>(), g.len());
            let q: Vec<f32> = vec![1.0, -2.0, 0.5];
            let got = g.rank_brands(&q, k).unwrap();
            // Brute force: best similarity per brand.
            let qn = if l2 { q.clone() } else { let n = q.iter().map(|v| v * v).sum::<f32>().sqrt(); q.iter().map(|v| v / n).collect() };
            let mut best: Vec<(f32, usize)> = vec![(f32::NEG_INFINITY, usize::MAX); g.brands().len()];
            for i in 0..g.len() {
                let sim = crate::backend::similarity(metric, &qn, g.row(i));
                let b = &mut best[g.labels()[i] as usize];
                if sim > b.0 { *b = (sim, i); }
            }
            let mut want: Vec<(f32, usize)> = best;
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            prop_assert_eq!(got.len(), k.min(g.brands().len()));
            for (m, w) in got.iter().zip(&want) {
                prop_assert!((m.similarity - w.0).abs() < 1e-5, "{} vs {}", m.similarity, w.0);
                prop_assert_eq!(g.brand_id(&m.brand), Some(g.labels()[m.row]));
                if l2 { prop_assert_eq!(m.row, w.1); }
            }
        }
    }

    #[test]
    fn l2_gallery_reports_negated_distances() {
        let mut g = Gallery::with_metric(2, "m", Metric::L2).unwrap();
        g.add("a", &[0.0, 0.0, 10.0, 0.0], &["a0", "a1"]).unwrap();
        // Not normalised: (10, 0) stays where it is.
        assert_eq!(g.row(1), &[10.0, 0.0]);
        let hits = g.search(&[3.0, 4.0], 2).unwrap();
        assert_eq!(hits[0].row, 0);
        assert!((hits[0].similarity + 5.0).abs() < 1e-5);
        assert!(g.set_backend(BackendConfig::Hnsw(Default::default())).is_ok());
        let mut d = Gallery::with_metric(2, "m", Metric::Dot).unwrap();
        assert!(matches!(d.set_backend(BackendConfig::Hnsw(Default::default())), Err(IndexError::UnsupportedMetric(_))));
    }

    #[test]
    fn domains_belong_to_enrolled_brands_and_leave_with_them() {
        let d = |s: &str| Domain::parse(s).unwrap();
        let mut g = Gallery::new(2, "fp").unwrap();
        g.add("acme", &[1.0, 0.0], &["a.png"]).unwrap();
        g.add(crate::BACKGROUND_BRAND, &[0.0, 1.0], &["bg.png"]).unwrap();
        assert_eq!(g.set_domains("acme", &[d("acme.com"), d("www.acme.com"), d("acme.io")]).unwrap(), [d("acme.com"), d("acme.io")]);
        assert_eq!(g.list()[0].domains, [d("acme.com"), d("acme.io")]);
        assert!(matches!(g.set_domains("globex", &[d("globex.com")]), Err(IndexError::UnknownBrand(_))));
        assert!(g.set_domains(crate::BACKGROUND_BRAND, &[d("x.com")]).is_err());
        assert!(g.set_domains("acme", &[]).unwrap().is_empty());
        assert!(g.all_domains().is_empty());
        g.set_domains("acme", &[d("acme.com")]).unwrap();
        g.remove("acme").unwrap();
        assert!(g.domains("acme").is_empty() && g.all_domains().is_empty());
    }
}
