//! The HTTP API: the state every handler shares, the router, and one module per route family.
//!
//! Why this shape: a scanner sends whatever it scraped, so bad input is normal traffic. Each
//! kind of bad input has its own status — empty or malformed request 400, body over the limit
//! or image over the pixel limit 413, bytes that are no image format 415, an image that is
//! recognised but broken 422, a full queue 429 with `Retry-After`, a request past its deadline
//! 503 — and a JSON body `{"error": "..."}`, so clients can tell "retry" from "give up" and an
//! operator can read the reason. None of them is a 500. The mapping from the library crates'
//! typed errors to statuses lives in one place, [`error`], as exhaustive `From` impls.
//!
//! The gallery is an `Arc` swapped under a lock: readers take a snapshot and never wait for a
//! writer; writers (enrol, delete) are serialised, change a copy, write it to the gallery file
//! atomically (`Gallery::save`: temp file, fsync, rename) and only then publish it, so the
//! file and what the server answers never disagree after a successful response.
//!
//! Modules: [`error`] (`ApiError` and the status of every library error), [`multipart`] (request
//! bodies), [`identify`] (`/v1/identify`, `/v1/compare`), [`find`] (`/v1/find`), [`check`]
//! (`/v1/check`, `/v1/gallery/{brand}/domains`), [`gallery`] (`/v1/gallery`,
//! `/v1/gallery/{brand}`), [`ops`] (`/healthz`, `/metrics`, the 404 fallback, request accounting).

pub mod check;
pub mod error;
pub mod find;
pub mod gallery;
pub mod identify;
pub(crate) mod multipart;
mod ops;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};
use proxima_data::{DecodeOptions, Pipeline};
use proxima_gallery_db::GalleryDb;
use proxima_index::Gallery;
use tokio::sync::Semaphore;

use crate::ServerConfig;
use crate::locate::LocaliserHandle;
use crate::metrics::Metrics;
use crate::worker::{ModelInfo, SubmitError, WorkerHandle};

pub use error::ApiError;
pub use find::FindParams;
pub use gallery::GalleryInfo;
pub use identify::{CompareAnswer, IdentifyAnswer, IdentifyParams};

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
                let img = proxima_data::decode_bytes(bytes, Path::new(name), &opts)?;
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

pub(crate) type Shared = State<Arc<AppState>>;

/// The service's routes with their limits and request accounting.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/identify", post(identify::identify))
        .route("/v1/compare", post(identify::compare))
        .route("/v1/find", post(find::find))
        .route("/v1/gallery", get(gallery::list))
        .route("/v1/gallery/{brand}", post(gallery::enrol).delete(gallery::remove))
        .route("/v1/check", post(check::check))
        .route("/v1/gallery/{brand}/domains", put(check::set_domains))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/audit", get(crate::audit::list))
        .merge(crate::console::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), ops::track))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(crate::auth::AuthState::of(&state), crate::auth::check))
        .with_state(state)
}
