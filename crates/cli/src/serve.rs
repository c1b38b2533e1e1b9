//! `proxima serve`: the HTTP recognition service (`proxima-server`) on a model directory and a
//! gallery file or database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use proxima_models::model_dir::load_model_dir;
use proxima_server::{BatchConfig, GallerySource, ServerConfig};
use proxima_train::experiment;

/// Arguments of `proxima serve`.
#[derive(Args)]
#[command(
    after_help = "Routes: POST /v1/identify (raw image or multipart `image`, ?top_k=N), POST /v1/compare (multipart `a`, `b`), GET /v1/gallery, POST|DELETE /v1/gallery/{brand} (multipart files), GET /healthz, GET /metrics. Stops on Ctrl-C or SIGTERM."
)]
pub struct ServeArgs {
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Localiser directory for `POST /v1/find`; default: `localiser/` in the model directory if there is one.
    #[arg(long)]
    localiser: Option<PathBuf>,
    /// Gallery file (enrolment and deletion rewrite it atomically).
    #[arg(long, required_unless_present = "gallery_db", conflicts_with = "gallery_db")]
    gallery: Option<PathBuf>,
    /// Gallery database (PostgreSQL + pgvector) shared by several replicas: enrolment and
    /// deletion write it in one transaction (503 while it is unreachable), and every replica
    /// follows the others' changes.
    #[arg(long)]
    gallery_db: Option<String>,
    /// With --gallery-db: how often, in milliseconds, the database is checked for changes.
    #[arg(long, default_value_t = 1000)]
    follow_ms: u64,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Largest request body in bytes (larger → 413).
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Largest image in pixels (width × height, read from the header; larger → 413).
    #[arg(long, default_value_t = 4096 * 4096)]
    max_pixels: u64,
    /// Per-request deadline in milliseconds (later → 503).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Requests waiting for the model before new ones get 429.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Most images per forward pass.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Longest wait in milliseconds for more requests to fill a batch.
    #[arg(long, default_value_t = 2)]
    batch_wait_ms: u64,
    /// Decision threshold; default: the gallery's calibrated one.
    #[arg(long)]
    threshold: Option<f32>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Tokens file (`proxima token new`): every request but /healthz and the console's files
    /// needs `Authorization: Bearer <token>`; `read` tokens identify, `admin` tokens also change
    /// the gallery and read the audit log.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Serve without tokens on an address other than loopback (anyone who reaches it can change
    /// the gallery). Without tokens, only loopback addresses are served unless this is given.
    #[arg(long, conflicts_with = "tokens")]
    no_auth: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Requests per second per client (per token, else per address), with bursts of twice as
    /// many; more → 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 100.0)]
    rate_limit: f64,
    /// Audit log of a file gallery (JSON lines); default: `<gallery>.audit.jsonl` beside it.
    /// (A database gallery keeps its log in the database.)
    #[arg(long, conflicts_with = "gallery_db")]
    audit_log: Option<PathBuf>,
}

/// Runs `proxima serve` until Ctrl-C or SIGTERM.
pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let device = experiment::available_device(&a.device)?;
    let cfg = ServerConfig {
        addr: a.addr,
        max_body_bytes: a.max_body_bytes,
        max_pixels: a.max_pixels,
        request_timeout: Duration::from_millis(a.timeout_ms),
        batch: BatchConfig { queue_capacity: a.queue, max_batch: a.max_batch, batch_wait: Duration::from_millis(a.batch_wait_ms) },
        threshold: a.threshold,
        tokens: match &a.tokens {
            Some(p) => Some(std::sync::Arc::new(proxima_server::auth::Tokens::load(p)?)),
            None => None,
        },
        allow_open: a.no_auth,
        rate_limit: Some(a.rate_limit),
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(proxima_server::tls::TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        },
        audit_log: a.audit_log.clone(),
        ..Default::default()
    };
    let access = match (&cfg.tokens, a.tokens.as_ref()) {
        (Some(t), Some(p)) => format!("{} token(s) from {}", t.len(), p.display()),
        _ if a.no_auth => "NO ACCESS CONTROL (--no-auth)".to_string(),
        _ => "no tokens (loopback only)".to_string(),
    };
    if a.no_auth {
        eprintln!(
            "WARNING: --no-auth: serving {} without access control; anyone who can reach it can enrol and remove brands. Give --tokens FILE (proxima token new) to require tokens.",
            a.addr
        );
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let model = a.model.clone();
    // An explicit --localiser must load; the default one is used only when present.
    let localiser = match &a.localiser {
        Some(p) => Some(proxima_detect::resolve_localiser_dir(p).with_context(|| format!("--localiser {}", p.display()))?),
        None => proxima_detect::resolve_localiser_dir(&a.model).ok(),
    };
    let find_note = localiser.as_ref().map_or("no localiser: /v1/find answers 501".to_string(), |l| format!("localiser {}", l.display()));
    let load_localiser: Option<proxima_server::LocaliserLoader> =
        localiser.map(|l| Box::new(move || proxima_detect::load_localiser(&l, device).map(|(loc, _)| loc)) as proxima_server::LocaliserLoader);
    let source = match (&a.gallery, &a.gallery_db) {
        (Some(path), _) => GallerySource::File(path.clone()),
        (None, Some(url)) => GallerySource::Db { url: url.clone(), poll: Duration::from_millis(a.follow_ms.max(1)) },
        (None, None) => bail!("give --gallery or --gallery-db"),
    };
    let name = source.name();
    proxima_server::run_blocking(cfg, Box::new(move || load_model_dir(&model, device)), load_localiser, source, |addr| {
        eprintln!("serving {name} with model {} ({find_note}; {access}) on {scheme}://{addr} (Ctrl-C to stop)", a.model.display());
    })
    .with_context(|| format!("serving {name} on {}", a.addr))?;
    Ok(ExitCode::SUCCESS)
}
