//! `proxima serve`: brand identification over HTTP.
//!
//! Why a service: a scanner that crawls web pages finds logo crops by the thousand, and loading
//! a model per query (as the CLI does) costs far more than the query. The service loads the
//! model and the gallery once, embeds concurrent requests in micro-batches, and stays up and
//! bounded whatever it is sent: every limit (body size, decoded pixels, queue length, request
//! time) answers with a specific status and a JSON `{"error": …}` instead of growing memory,
//! latency or a crash.
//!
//! Modules: [`worker`] (the model thread and its bounded, micro-batching queue), [`api`] (routes,
//! limits and error mapping, one module per route family: [`api::check`] is the phishing check and
//! brands' domains), [`metrics`]
//! (Prometheus text), [`auth`] (bearer tokens with roles, one middleware in front of every route),
//! [`limit`] (requests per second per client), [`audit`] (the log of gallery changes), [`console`]
//! (the web page at `/`), [`tls`] (HTTPS with rustls).
//!
//! Routes: `POST /v1/identify`, `POST /v1/find` and `POST /v1/check` (with a localiser),
//! `POST /v1/compare`, `GET /v1/gallery`, `POST|DELETE /v1/gallery/{brand}`,
//! `PUT /v1/gallery/{brand}/domains`, `GET /v1/audit`, `GET /healthz`, `GET /metrics`, the console
//! at `/`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod console;
pub mod limit;
pub mod locate;
pub mod metrics;
pub mod tls;
pub mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proxima_index::{Gallery, IndexError};
use proxima_models::model_dir::TrainedModel;
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use locate::LocaliserLoader;
pub use worker::{BatchConfig, BeforeBatch, ModelInfo};

/// Limits and batching of one server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Largest accepted request body in bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Largest decoded image in pixels, checked on the header before decoding (larger → 413).
    pub max_pixels: u64,
    /// Most images in one enrolment request (more → 413).
    pub max_images_per_request: usize,
    /// Time from the start of a request to its answer (longer → 503).
    pub request_timeout: Duration,
    /// Queue length, micro-batch size and wait of the model worker.
    pub batch: BatchConfig,
    /// Brands returned by `/v1/identify` when `top_k` is not given.
    pub default_top_k: usize,
    /// Decision threshold; `None` takes the gallery's calibrated one.
    pub threshold: Option<f32>,
    /// Called by the model worker before every forward pass (tests use it to hold the worker).
    pub before_batch: Option<BeforeBatch>,
    /// Accepted bearer tokens; `None` serves without access control (loopback only, unless
    /// `allow_open`).
    pub tokens: Option<Arc<auth::Tokens>>,
    /// Serve a non-loopback address without tokens (`--no-auth`).
    pub allow_open: bool,
    /// Requests per second per client (token, else address); `None` or 0: no limit.
    pub rate_limit: Option<f64>,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<tls::TlsFiles>,
    /// A file gallery's audit log; `None`: `<gallery>.audit.jsonl` beside it.
    pub audit_log: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 8 << 20,
            max_pixels: 4096 * 4096,
            max_images_per_request: 64,
            request_timeout: Duration::from_secs(10),
            batch: BatchConfig { queue_capacity: 256, max_batch: 32, batch_wait: Duration::from_millis(2) },
            default_top_k: 5,
            threshold: None,
            before_batch: None,
            tokens: None,
            allow_open: false,
            rate_limit: None,
            tls: None,
            audit_log: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_pixels", &self.max_pixels)
            .field("max_images_per_request", &self.max_images_per_request)
            .field("request_timeout", &self.request_timeout)
            .field("batch", &self.batch)
            .field("default_top_k", &self.default_top_k)
            .field("threshold", &self.threshold)
            .field("before_batch", &self.before_batch.is_some())
            .field("tokens", &self.tokens.as_ref().map(|t| t.len()))
            .field("allow_open", &self.allow_open)
            .field("rate_limit", &self.rate_limit)
            .field("tls", &self.tls)
            .field("audit_log", &self.audit_log)
            .finish()
    }
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The model could not be loaded.
    #[error("{0}")]
    Model(String),
    /// The gallery could not be loaded or does not fit the model.
    #[error("gallery: {0}")]
    Gallery(#[from] IndexError),
    /// Neither the gallery nor the configuration gives a decision threshold.
    #[error("gallery {} has no calibrated threshold; calibrate it (proxima gallery build --calibrate …) or pass a threshold", .0.display())]
    NotCalibrated(PathBuf),
    /// A configuration value is unusable.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The gallery database could not be read.
    #[error("gallery database: {0}")]
    Db(#[from] proxima_gallery_db::DbError),
    /// Binding, serving or building the runtime failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (names the address).
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Loads the model inside the worker thread.
pub type ModelLoader = Box<dyn FnOnce() -> proxima_models::Result<TrainedModel> + Send>;

/// A server running on the current tokio runtime.
pub struct RunningServer {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Shared state, for tests and embedding applications.
    pub state: Arc<api::AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    follower: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting connections, finishes in-flight requests and waits for the server task.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let io = |source| ServeError::Io { what: format!("serving {}", self.addr), source };
        match (&mut self.task).await {
            Ok(r) => r.map_err(io),
            Err(e) => Err(io(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Where a server finds its gallery.
#[derive(Debug, Clone)]
pub enum GallerySource {
    /// A gallery file.
    File(PathBuf),
    /// A PostgreSQL + pgvector database (`proxima gallery build --db`), shared with other
    /// replicas; its changes are followed every `poll`.
    Db {
        /// libpq URL.
        url: String,
        /// How often the database's version is checked.
        poll: Duration,
    },
}

impl GallerySource {
    /// The gallery's name for messages (a database without its password).
    pub fn name(&self) -> String {
        match self {
            GallerySource::File(p) => p.display().to_string(),
            GallerySource::Db { url, .. } => proxima_gallery_db::redact(url),
        }
    }
}

/// Loads the model (in its worker thread) and the gallery, binds `config.addr` and serves.
pub async fn start(config: ServerConfig, load_model: ModelLoader, gallery_path: &Path) -> Result<RunningServer, ServeError> {
    start_with_localiser(config, load_model, None, gallery_path).await
}

/// As [`start`], with a localiser for `POST /v1/find` (loaded in its own thread).
pub async fn start_with_localiser(
    config: ServerConfig,
    load_model: ModelLoader,
    load_localiser: Option<LocaliserLoader>,
    gallery_path: &Path,
) -> Result<RunningServer, ServeError> {
    start_with_source(config, load_model, load_localiser, GallerySource::File(gallery_path.to_path_buf())).await
}

/// As [`start_with_localiser`], with the gallery in a file or a database.
pub async fn start_with_source(
    config: ServerConfig,
    load_model: ModelLoader,
    load_localiser: Option<LocaliserLoader>,
    source: GallerySource,
) -> Result<RunningServer, ServeError> {
    check_config(&config)?;
    let localiser = match load_localiser {
        Some(load) => {
            let cap = config.batch.queue_capacity;
            Some(
                tokio::task::spawn_blocking(move || locate::spawn(load, cap))
                    .await
                    .map_err(|e| ServeError::Model(format!("localiser thread: {e}")))?
                    .map_err(ServeError::Model)?,
            )
        }
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let (m, batch, hook) = (metrics.clone(), config.batch, config.before_batch.clone());
    let (worker, info) = tokio::task::spawn_blocking(move || worker::spawn(load_model, batch, m, hook))
        .await
        .map_err(|e| ServeError::Model(format!("model thread: {e}")))?
        .map_err(ServeError::Model)?;
    let fp = info.fingerprint.clone();
    let (gallery, store) = match &source {
        GallerySource::File(path) => {
            let p = path.clone();
            let g: Gallery =
                tokio::task::spawn_blocking(move || Gallery::load_for_model(&p, &fp)).await.map_err(|e| ServeError::Model(format!("gallery loader: {e}")))??;
            (g, api::GalleryStore::File(path.clone()))
        }
        GallerySource::Db { url, .. } => {
            let mut db = proxima_gallery_db::GalleryDb::connect(url).await?;
            let (g, version) = db.load_for_model(&fp).await?;
            (g, api::GalleryStore::db(db, version))
        }
    };
    if gallery.decision_threshold(config.threshold).is_err() {
        return Err(ServeError::NotCalibrated(PathBuf::from(source.name())));
    }
    let audit = match &source {
        GallerySource::File(path) => {
            let log_path = config.audit_log.clone().unwrap_or_else(|| audit::default_path(path));
            let g = gallery.clone();
            let (log, _) = tokio::task::spawn_blocking(move || audit::AuditLog::open(&log_path, &g))
                .await
                .map_err(|e| ServeError::Config(format!("audit log: {e}")))?
                .map_err(ServeError::Config)?;
            Some(log)
        }
        GallerySource::Db { .. } => None,
    };
    let mut state = api::AppState::with_store(config.clone(), worker, info, gallery, store, metrics).map_err(ServeError::Config)?;
    if let Some(log) = audit {
        state = state.with_audit(log);
    }
    if let Some(l) = localiser {
        state = state.with_localiser(l);
    }
    let state = Arc::new(state);
    // A database gallery: follow the other replicas' changes (the task ends with the server).
    let follower = match (&source, state.store()) {
        (GallerySource::Db { url, poll }, api::GalleryStore::Db { version, .. }) => {
            let weak = Arc::downgrade(&state);
            let from = version.load(std::sync::atomic::Ordering::SeqCst);
            Some(proxima_gallery_db::follow(url.clone(), state.info.fingerprint.clone(), from, *poll, move |g, v| {
                if let Some(s) = weak.upgrade() {
                    s.publish_version(g, v);
                }
            }))
        }
        _ => None,
    };
    let acceptor = match &config.tls {
        Some(files) => Some(tls::acceptor(files).map_err(ServeError::Config)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.addr).await.map_err(|source| ServeError::Io { what: format!("binding {}", config.addr), source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io { what: format!("reading the address bound for {}", config.addr), source })?;
    let app = api::router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = match acceptor {
        Some(acceptor) => tokio::spawn(tls::serve(listener, acceptor, app, rx)),
        None => {
            // Small JSON answers on kept-alive connections: without TCP_NODELAY, Nagle's algorithm and
            // the client's delayed ACK add up to ~200 ms to some responses.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
            })
        }
    };
    Ok(RunningServer { addr, state, shutdown: Some(tx), task, follower })
}

fn check_config(c: &ServerConfig) -> Result<(), ServeError> {
    let bad = |m: &str| Err(ServeError::Config(m.to_string()));
    if c.max_body_bytes == 0 {
        return bad("max_body_bytes must be >= 1");
    }
    if c.max_pixels == 0 {
        return bad("max_pixels must be >= 1");
    }
    if c.batch.max_batch == 0 || c.batch.queue_capacity == 0 {
        return bad("max_batch and queue_capacity must be >= 1");
    }
    if c.default_top_k == 0 || c.max_images_per_request == 0 {
        return bad("default_top_k and max_images_per_request must be >= 1");
    }
    if c.request_timeout.is_zero() {
        return bad("request_timeout must be > 0");
    }
    if c.threshold.is_some_and(|t| !t.is_finite()) {
        return bad("threshold must be a finite number");
    }
    if c.rate_limit.is_some_and(|r| !r.is_finite() || r < 0.0) {
        return bad("rate_limit must be a finite number >= 0");
    }
    if c.tokens.as_ref().is_some_and(|t| t.is_empty()) {
        return bad("the tokens file holds no token; add one with `proxima token new --role admin --tokens FILE`");
    }
    if c.tokens.is_none() && !c.allow_open && !c.addr.ip().is_loopback() {
        return Err(ServeError::Config(format!(
            "refusing to serve {} without access control: anyone who reaches it could change the gallery; give --tokens FILE (proxima token new), or --no-auth to serve it open on purpose",
            c.addr
        )));
    }
    Ok(())
}

/// Runs a server on a new multi-threaded runtime until Ctrl-C (or SIGTERM); for `proxima serve`.
///
/// `on_ready` is called with the bound address once the server accepts connections.
pub fn run_blocking(
    config: ServerConfig,
    load_model: ModelLoader,
    load_localiser: Option<LocaliserLoader>,
    source: GallerySource,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|source| ServeError::Io { what: "starting the async runtime".into(), source })?;
    rt.block_on(async move {
        let server = start_with_source(config, load_model, load_localiser, source).await?;
        on_ready(server.addr);
        shutdown_signal().await?;
        server.shutdown().await
    })
}

async fn shutdown_signal() -> Result<(), ServeError> {
    let io = |source| ServeError::Io { what: "installing the signal handler".into(), source };
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(io),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(io)
    }
}
