//! Routes, request limits and the mapping of every failure to a status and a JSON error.
//!
//! Why this shape: a scanner sends whatever it scraped, so bad input is normal traffic. Each
//! kind of bad input has its own status — empty or malformed request 400, body over the limit
//! or image over the pixel limit 413, bytes that are no image format 415, an image that is
//! recognised but broken 422, a full queue 429 with `Retry-After`, a request past its deadline
//! 503 — and a JSON body `{"error": "..."}`, so clients can tell "retry" from "give up" and an
//! operator can read the reason. None of them is a 500.
//!
//! The gallery is an `Arc` swapped under a lock: readers take a snapshot and never wait for a
//! writer; writers (enrol, delete) are serialised, change a copy, write it to the gallery file
//! atomically (`Gallery::save`: temp file, fsync, rename) and only then publish it, so the
//! file and what the server answers never disagree after a successful response.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proxima_data::{DataError, DecodeOptions, Pipeline};
use proxima_detect::FindAnswer;
use proxima_detect::find::{FindOptions, answer as find_answer, crop, downscale, regions as find_regions};
use proxima_gallery_db::{DbError, GalleryDb};
use proxima_index::{BrandCount, BrandMatch, Calibration, Decision, Gallery, IndexError, cosine};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::ServerConfig;
use crate::auth::Caller;
use crate::locate::LocaliserHandle;
use crate::metrics::{Gauges, Metrics};
use crate::worker::{ModelInfo, SubmitError, WorkerHandle};

/// Where a server's gallery lives.
pub enum GalleryStore {
    /// A gallery file, rewritten atomically by enrolment and removal.
    File(PathBuf),
    /// A PostgreSQL + pgvector database shared with other replicas (`proxima_gallery_db`).
    Db {
        /// This replica's connection (its writes go through it one at a time; boxed, as the
        /// client is large next to a path).
        db: Box<tokio::sync::Mutex<GalleryDb>>,
        /// The database version this replica serves.
        version: AtomicI64,
    },
}

impl GalleryStore {
    /// A database store serving `version` of the gallery behind `db`.
    pub fn db(db: GalleryDb, version: i64) -> Self {
        GalleryStore::Db { db: Box::new(tokio::sync::Mutex::new(db)), version: AtomicI64::new(version) }
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// Limits and batching.
    pub config: ServerConfig,
    /// The model behind the worker.
    pub info: ModelInfo,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    worker: WorkerHandle,
    pipeline: Pipeline,
    gallery: RwLock<Arc<Gallery>>,
    store: GalleryStore,
    /// Serialises this replica's writes.
    pub(crate) writer: tokio::sync::Mutex<()>,
    decode_slots: Semaphore,
    localiser: Option<LocaliserHandle>,
    /// A file gallery's audit log (a database gallery audits in its own transactions).
    pub(crate) audit: Option<std::sync::Mutex<crate::audit::AuditLog>>,
}

impl AppState {
    /// State for a loaded gallery and a running worker.
    pub fn new(config: ServerConfig, worker: WorkerHandle, info: ModelInfo, gallery: Gallery, gallery_path: PathBuf, metrics: Arc<Metrics>) -> Result<Self, String> {
        Self::with_store(config, worker, info, gallery, GalleryStore::File(gallery_path), metrics)
    }

    /// State whose gallery lives in `store`.
    pub fn with_store(config: ServerConfig, worker: WorkerHandle, info: ModelInfo, gallery: Gallery, store: GalleryStore, metrics: Arc<Metrics>) -> Result<Self, String> {
        let pipeline = Pipeline::new(info.pipeline.clone(), 0).map_err(|e| format!("model pipeline: {e}"))?;
        // Decoding is CPU work off the async threads; more parallel decodes than cores only
        // adds memory (each holds a decoded image).
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(AppState {
            config,
            info,
            metrics,
            worker,
            pipeline,
            gallery: RwLock::new(Arc::new(gallery)),
            store,
            writer: tokio::sync::Mutex::new(()),
            decode_slots: Semaphore::new(2 * cores),
            localiser: None,
            audit: None,
        })
    }

    /// Serves `POST /v1/find` with this localiser.
    pub fn with_localiser(mut self, localiser: LocaliserHandle) -> Self {
        self.localiser = Some(localiser);
        self
    }

    /// Records a file gallery's changes in `log` (see [`crate::audit`]).
    pub fn with_audit(mut self, log: crate::audit::AuditLog) -> Self {
        self.audit = Some(std::sync::Mutex::new(log));
        self
    }

    /// The gallery as of now.
    pub fn gallery(&self) -> Arc<Gallery> {
        self.gallery.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Jobs waiting for the model worker.
    pub fn queue_depth(&self) -> usize {
        self.worker.depth()
    }

    pub(crate) fn publish(&self, g: Gallery) {
        *self.gallery.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(g);
    }

    /// Publishes a database gallery at `version` unless a newer one is already served (a
    /// follower's load can finish after this replica's own, later write).
    pub fn publish_version(&self, g: Gallery, version: i64) {
        let GalleryStore::Db { version: current, .. } = &self.store else { return };
        let mut slot = self.gallery.write().unwrap_or_else(|p| p.into_inner());
        if version > current.load(Ordering::SeqCst) {
            current.store(version, Ordering::SeqCst);
            *slot = Arc::new(g);
        }
    }

    /// Where the gallery lives.
    pub fn store(&self) -> &GalleryStore {
        &self.store
    }

    /// The decision threshold: the configured one, else the gallery's calibration.
    fn threshold(&self, g: &Gallery) -> Result<f32, ApiError> {
        g.decision_threshold(self.config.threshold).map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the gallery has no calibrated threshold"))
    }

    /// Decodes and preprocesses uploads (name, bytes) into model input, off the async threads.
    async fn prepare(self: &Arc<Self>, uploads: Vec<(String, Bytes)>) -> Result<Vec<f32>, ApiError> {
        let _slot = self.decode_slots.acquire().await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let s = self.clone();
        tokio::task::spawn_blocking(move || {
            let size = s.info.image_size;
            let per = 3 * (size as usize) * (size as usize);
            let opts = DecodeOptions { max_pixels: s.config.max_pixels, ..Default::default() };
            let mut out = vec![0f32; per * uploads.len()];
            for (i, (name, bytes)) in uploads.iter().enumerate() {
                if bytes.is_empty() {
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("{name}: empty image (0 bytes)")));
                }
                let img = proxima_data::decode_bytes(bytes, Path::new(name), &opts).map_err(decode_error)?;
                s.pipeline.run_into(&img, 0, 0, [size, size], &mut out[i * per..(i + 1) * per]);
            }
            Ok(out)
        })
        .await
        .map_err(|_| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the image could not be processed (decoder failure)"))?
    }

    /// Embeds `n` preprocessed images through the worker queue.
    async fn embed(&self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>, ApiError> {
        let rx = match self.worker.submit(pixels, n) {
            Ok(rx) => rx,
            Err(SubmitError::Full) => {
                self.metrics.record_queue_full();
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("the model queue is full ({} waiting); retry later", self.config.batch.queue_capacity));
                e.retry_after = Some(1);
                return Err(e);
            }
            Err(SubmitError::Closed) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model worker has stopped")),
        };
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("embedding failed: {e}"))),
            Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model worker has stopped")),
        }
    }

    /// Runs a request body under the request timeout.
    pub(crate) async fn timed<T>(&self, f: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
        let t = self.config.request_timeout;
        tokio::time::timeout(t, f)
            .await
            .unwrap_or_else(|_| Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("request timed out after {:.1} s", t.as_secs_f64()))))
    }
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable reason.
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The status for an image that failed to decode: 413 over the pixel limit, 415 not an
/// image format at all, 422 a recognised but broken or unsupported image.
pub fn decode_error(e: DataError) -> ApiError {
    let status = match &e {
        DataError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DataError::Decode { reason, .. } if reason.starts_with("not a recognised image format") => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.to_string())
}

pub(crate) fn index_error(e: IndexError) -> ApiError {
    let status = match &e {
        IndexError::InvalidBrand { .. } => StatusCode::BAD_REQUEST,
        IndexError::UnknownBrand(_) => StatusCode::NOT_FOUND,
        IndexError::EmptyGallery | IndexError::OnlyBackground => StatusCode::CONFLICT,
        IndexError::ZeroVector { .. } | IndexError::NonFinite { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// One multipart part: field name, file name (if any), bytes.
pub(crate) struct Part {
    pub(crate) field: String,
    pub(crate) file_name: Option<String>,
    pub(crate) bytes: Bytes,
}

pub(crate) fn is_multipart(req: &Request) -> bool {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// An error reading the body; a 413 names the configured limit.
fn body_error(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, format!("request body over the limit of {limit} bytes ({text})"))
    } else {
        ApiError::new(status, text)
    }
}

/// Reads every part of a multipart body (at most `max_parts`, at most `limit` bytes in all).
pub(crate) async fn read_parts(req: Request, max_parts: usize, limit: usize) -> Result<Vec<Part>, ApiError> {
    let mut mp = Multipart::from_request(req, &()).await.map_err(|r| body_error(r.status(), r.body_text(), limit))?;
    let mut parts = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(body_error(e.status(), format!("reading the multipart body: {}", e.body_text()), limit)),
        };
        if parts.len() == max_parts {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("too many parts: at most {max_parts} images per request")));
        }
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(|e| body_error(e.status(), format!("reading part {name:?}: {}", e.body_text()), limit))?;
        parts.push(Part { field: name, file_name, bytes });
    }
    Ok(parts)
}

pub(crate) fn take_part(parts: &mut Vec<Part>, name: &str) -> Result<Part, ApiError> {
    let i = parts.iter().position(|p| p.field == name).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("multipart field {name:?} is missing")))?;
    Ok(parts.swap_remove(i))
}

/// The body of `/v1/identify`: a raw image, or the multipart field `image`.
async fn image_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let bytes = if is_multipart(&req) {
        take_part(&mut read_parts(req, 8, limit).await?, "image")?.bytes
    } else {
        Bytes::from_request(req, &()).await.map_err(|r| body_error(r.status(), format!("reading the body: {}", r.body_text()), limit))?
    };
    if bytes.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty body: send the image bytes, or multipart/form-data with a field named image"));
    }
    Ok(bytes)
}

/// Query parameters of `/v1/find`.
#[derive(Debug, Deserialize)]
pub struct FindParams {
    /// Also identify the whole image as one region.
    #[serde(default)]
    pub whole_image: bool,
}

/// Query parameters of `/v1/identify`.
#[derive(Debug, Deserialize)]
pub struct IdentifyParams {
    /// Brands to return (default from the configuration).
    pub top_k: Option<usize>,
}

/// The answer of `/v1/identify` (and of `proxima query --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentifyAnswer {
    /// `known` (with `brand` and `similarity`) or `unknown` (with `best_similarity`, and
    /// `background_similarity` when the image is nearer to the gallery's background examples
    /// than to any brand: not a logo). Never names the background as the brand.
    #[serde(flatten)]
    pub decision: Decision,
    /// Threshold of the decision.
    pub threshold: f32,
    /// Best brands, most similar first (never the background).
    pub candidates: Vec<BrandMatch>,
}

/// The answer of `/v1/compare` (and of `proxima match --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareAnswer {
    /// Cosine similarity of the two embeddings.
    pub similarity: f32,
    /// Threshold of the decision.
    pub threshold: f32,
    /// `same` when `similarity >= threshold`, else `different`.
    pub decision: String,
}

/// The answer of `GET /v1/gallery`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryInfo {
    /// Fingerprint of the model the gallery belongs to.
    pub model_fingerprint: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Enrolled rows.
    pub rows: usize,
    /// Decision threshold in use.
    pub threshold: Option<f32>,
    /// The gallery's calibration.
    pub calibration: Option<Calibration>,
    /// Brands and their rows.
    pub brands: Vec<BrandCount>,
}

pub(crate) type Shared = State<Arc<AppState>>;

async fn identify(State(s): Shared, q: Result<Query<IdentifyParams>, axum::extract::rejection::QueryRejection>, req: Request) -> Result<Json<IdentifyAnswer>, ApiError> {
    let q = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    let k = q.top_k.unwrap_or(s.config.default_top_k);
    if k == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "top_k must be >= 1"));
    }
    s.timed(async {
        let bytes = image_body(req, s.config.max_body_bytes).await?;
        let pixels = s.prepare(vec![("upload".into(), bytes)]).await?;
        let emb = s.embed(pixels, 1).await?;
        let g = s.gallery();
        let t = s.threshold(&g)?;
        let id = tokio::task::spawn_blocking(move || g.identify_with_threshold(&emb, k, t))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search failed: {e}")))?
            .map_err(index_error)?;
        Ok(Json(IdentifyAnswer { decision: id.decision, threshold: id.threshold, candidates: id.candidates }))
    })
    .await
}

/// `POST /v1/find`: localise logos anywhere in the image, identify each region (same answer as `proxima find`).
async fn find(State(s): Shared, q: Result<Query<FindParams>, axum::extract::rejection::QueryRejection>, req: Request) -> Result<Json<FindAnswer>, ApiError> {
    let q = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    s.check_localiser()?;
    s.timed(async {
        let bytes = image_body(req, s.config.max_body_bytes).await?;
        Ok(Json(s.find_in(bytes, q.whole_image).await?.0))
    })
    .await
}

impl AppState {
    /// 501 when this server has no localiser (`/v1/find`, `/v1/check`).
    pub(crate) fn check_localiser(&self) -> Result<(), ApiError> {
        match self.localiser {
            Some(_) => Ok(()),
            None => Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "this server has no localiser: start it with `proxima serve --localiser DIR`")),
        }
    }

    /// Find's answer for an uploaded image, and the gallery snapshot it was answered from.
    pub(crate) async fn find_in(self: &Arc<Self>, bytes: Bytes, whole_image: bool) -> Result<(FindAnswer, Arc<Gallery>), ApiError> {
        let s = self;
        let loc = s.localiser.clone().ok_or_else(|| s.check_localiser().unwrap_err())?;
        let opts = FindOptions { whole_image, ..Default::default() };
        let (img, scale) = {
            let _slot = s.decode_slots.acquire().await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
            let (max_pixels, o) = (s.config.max_pixels, opts.clone());
            tokio::task::spawn_blocking(move || {
                let dec = DecodeOptions { max_pixels, ..Default::default() };
                let img = proxima_data::decode_bytes(&bytes, Path::new("upload"), &dec).map_err(decode_error)?;
                let (img, scale) = downscale(&img, &o).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
                Ok::<_, ApiError>((img.into_owned(), scale))
            })
            .await
            .map_err(|_| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the image could not be processed (decoder failure)"))??
        };
        let rx = loc.submit(img.clone()).map_err(|e| match e {
            SubmitError::Full => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "the localiser queue is full; retry later");
                e.retry_after = Some(1);
                e
            }
            SubmitError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the localiser has stopped"),
        })?;
        let dets = rx
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the localiser has stopped"))?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("localisation failed: {e}")))?;
        let regions = find_regions(&dets, &img, &opts);
        let g = s.gallery();
        let t = s.threshold(&g)?;
        if regions.is_empty() {
            return Ok((find_answer("upload", &[], &[], scale, &g, t, opts.score_weight).map_err(detect_error)?, g));
        }
        let size = s.info.image_size;
        let per = 3 * (size as usize) * (size as usize);
        let mut pixels = vec![0f32; per * regions.len()];
        for (i, (b, _)) in regions.iter().enumerate() {
            let c = crop(&img, *b, opts.padding);
            s.pipeline.run_into(&c, 0, 0, [size, size], &mut pixels[i * per..(i + 1) * per]);
        }
        let emb = s.embed(pixels, regions.len()).await?;
        let w = opts.score_weight;
        let g2 = g.clone();
        let ans = tokio::task::spawn_blocking(move || find_answer("upload", &regions, &emb, scale, &g2, t, w))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search failed: {e}")))?
            .map_err(detect_error)?;
        Ok((ans, g))
    }
}

fn detect_error(e: proxima_detect::DetectError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn compare(State(s): Shared, req: Request) -> Result<Json<CompareAnswer>, ApiError> {
    s.timed(async {
        if !is_multipart(&req) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data with fields a and b"));
        }
        let mut parts = read_parts(req, 8, s.config.max_body_bytes).await?;
        let a = take_part(&mut parts, "a")?;
        let b = take_part(&mut parts, "b")?;
        let pixels = s.prepare(vec![("a".into(), a.bytes), ("b".into(), b.bytes)]).await?;
        let emb = s.embed(pixels, 2).await?;
        let d = emb.len() / 2;
        let similarity = cosine(&emb[..d], &emb[d..]);
        let threshold = s.threshold(&s.gallery())?;
        let decision = if similarity >= threshold { "same" } else { "different" }.to_string();
        Ok(Json(CompareAnswer { similarity, threshold, decision }))
    })
    .await
}

async fn list(State(s): Shared) -> Json<GalleryInfo> {
    let g = s.gallery();
    Json(GalleryInfo {
        model_fingerprint: g.model_fingerprint().to_string(),
        dim: g.dim(),
        rows: g.len(),
        threshold: s.threshold(&g).ok(),
        calibration: g.calibration().cloned(),
        brands: g.list(),
    })
}

async fn enrol(
    State(s): Shared,
    caller: Option<axum::Extension<Caller>>,
    brand: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let brand = brand.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?.0;
    // The one brand-name rule, before the body is read; the NFC form is what is stored.
    let brand = proxima_index::brand_name::normalize(&brand).map_err(index_error)?;
    let who = caller.map_or_else(|| crate::auth::ANONYMOUS.to_string(), |c| c.0.id);
    s.timed(async {
        if !is_multipart(&req) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data with one file part per image"));
        }
        let parts = read_parts(req, s.config.max_images_per_request, s.config.max_body_bytes).await?;
        if parts.is_empty() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "no images in the request"));
        }
        let names: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| format!("upload/{brand}/{}", p.file_name.clone().filter(|f| !f.is_empty()).unwrap_or_else(|| format!("{}-{i}", p.field))))
            .collect();
        let uploads: Vec<(String, Bytes)> = names.iter().cloned().zip(parts.into_iter().map(|p| p.bytes)).collect();
        let n = uploads.len();
        let pixels = s.prepare(uploads).await?;
        let emb = s.embed(pixels, n).await?;
        let _w = s.writer.lock().await;
        // The brand's rows and the number of brands, read before the gallery is published.
        let counts = |g: &Gallery| (g.list().into_iter().find(|b| b.brand == brand).map_or(0, |b| b.rows), g.num_brands());
        let (added, (rows, brands)) = match &s.store {
            GalleryStore::Db { db, version } => {
                let paths: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
                let applied = db.lock().await.add_as(&who, &s.gallery(), version.load(Ordering::SeqCst), &brand, &emb, &paths).await.map_err(db_error)?;
                let counts = counts(&applied.gallery);
                s.publish_version(applied.gallery, applied.version);
                (applied.rows, counts)
            }
            GalleryStore::File(path) => {
                let mut g = (*s.gallery()).clone();
                let before = counts(&g).0;
                let added = g.add(&brand, &emb, &names).map_err(index_error)?;
                let counts = counts(&g);
                // Logged and synced before the gallery is replaced (see crate::audit).
                crate::audit::record(&s, &who, "enrol", &brand, added, counts.0).await?;
                let g = crate::audit::unless_saved(&s, &brand, before, save(path, g).await).await?;
                s.publish(g);
                (added, counts)
            }
        };
        Ok((StatusCode::CREATED, Json(serde_json::json!({ "brand": brand, "added": added, "rows": rows, "brands": brands }))).into_response())
    })
    .await
}

async fn remove(
    State(s): Shared,
    caller: Option<axum::Extension<Caller>>,
    brand: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let brand = brand.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?.0;
    let who = caller.map_or_else(|| crate::auth::ANONYMOUS.to_string(), |c| c.0.id);
    s.timed(async {
        let _w = s.writer.lock().await;
        let (removed, brands) = match &s.store {
            GalleryStore::Db { db, version } => {
                let applied = db.lock().await.remove_as(&who, &s.gallery(), version.load(Ordering::SeqCst), &brand).await.map_err(db_error)?;
                let brands = applied.gallery.num_brands();
                s.publish_version(applied.gallery, applied.version);
                (applied.rows, brands)
            }
            GalleryStore::File(path) => {
                let mut g = (*s.gallery()).clone();
                let stored = g.resolve_brand(&brand).map(|id| g.brands()[id as usize].clone()).unwrap_or_else(|| brand.clone());
                let removed = g.remove(&brand).map_err(index_error)?;
                crate::audit::record(&s, &who, "remove", &stored, removed, 0).await?;
                let g = crate::audit::unless_saved(&s, &stored, removed, save(path, g).await).await?;
                let brands = g.num_brands();
                s.publish(g);
                (removed, brands)
            }
        };
        Ok(Json(serde_json::json!({ "brand": brand, "removed": removed, "brands": brands })))
    })
    .await
}

/// A database gallery's error: 503 while the database is away (nothing was changed; retry),
/// else as the gallery's own errors.
pub(crate) fn db_error(e: DbError) -> ApiError {
    match e {
        DbError::Index(e) => index_error(e),
        e if e.is_unavailable() => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; nothing was changed, retry later")),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Writes `g` to the gallery file atomically and hands it back.
pub(crate) async fn save(path: &Path, g: Gallery) -> Result<Gallery, ApiError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || g.save(&path).map(|()| g))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the gallery: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the gallery (unchanged): {e}")))
}

async fn healthz(State(s): Shared) -> Json<serde_json::Value> {
    let g = s.gallery();
    Json(serde_json::json!({ "status": "ok", "model_fingerprint": s.info.fingerprint, "brands": g.num_brands(), "rows": g.len(), "queue_depth": s.worker.depth() }))
}

async fn metrics(State(s): Shared) -> Response {
    let g = s.gallery();
    let text = s.metrics.render(&Gauges { queue_depth: s.worker.depth(), queue_capacity: s.config.batch.queue_capacity, brands: g.num_brands(), rows: g.len() });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see /v1/identify, /v1/find, /v1/check, /v1/compare, /v1/gallery, /healthz, /metrics")
}

async fn track(State(s): Shared, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let t = Instant::now();
    let resp = next.run(req).await;
    s.metrics.record_request(&route, resp.status().as_u16(), t.elapsed());
    resp
}

/// The service's routes with their limits and request accounting.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/identify", post(identify))
        .route("/v1/compare", post(compare))
        .route("/v1/find", post(find))
        .route("/v1/gallery", get(list))
        .route("/v1/gallery/{brand}", post(enrol).delete(remove))
        .route("/v1/check", post(crate::check::check))
        .route("/v1/gallery/{brand}/domains", axum::routing::put(crate::check::set_domains))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/audit", get(crate::audit::list))
        .merge(crate::console::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(crate::auth::AuthState::of(&state), crate::auth::check))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_map_to_client_statuses() {
        let opts = DecodeOptions { max_pixels: 100, ..Default::default() };
        let garbage = proxima_data::decode_bytes(b"<html>not an image</html>", Path::new("x"), &opts).unwrap_err();
        assert_eq!(decode_error(garbage).status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut png = Vec::new();
        image::RgbImage::new(20, 20).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let big = proxima_data::decode_bytes(&png, Path::new("x"), &opts).unwrap_err();
        assert_eq!(decode_error(big).status, StatusCode::PAYLOAD_TOO_LARGE);
        let truncated = proxima_data::decode_bytes(&png[..png.len() / 2], Path::new("x"), &DecodeOptions::default()).unwrap_err();
        assert_eq!(decode_error(truncated).status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn identify_answer_flattens_the_decision() {
        let a = IdentifyAnswer { decision: Decision::Unknown { best_similarity: 0.25, background_similarity: None }, threshold: 0.5, candidates: vec![] };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["decision"], "unknown");
        assert_eq!(v["best_similarity"], 0.25);
        assert_eq!(v["threshold"], 0.5);
        assert!(v.get("background_similarity").is_none(), "absent unless the background was nearer: {v}");
        let a = IdentifyAnswer { decision: Decision::Unknown { best_similarity: 0.25, background_similarity: Some(0.75) }, threshold: 0.5, candidates: vec![] };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!((v["decision"].as_str(), v["background_similarity"].as_f64()), (Some("unknown"), Some(0.75)));
        let back: IdentifyAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(back.decision, a.decision);
    }
}
