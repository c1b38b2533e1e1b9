//! A brand gallery shared through PostgreSQL with the pgvector extension.
//!
//! Why: a gallery file serves one process. Several `proxima serve` replicas behind a load
//! balancer need one gallery that any of them can change and all of them see: the database is
//! the source of truth and serialises the writers (a row lock on the gallery's metadata), each
//! replica keeps an in-process copy — the same [`Gallery`] the file backend loads, so a search
//! gives exactly the file backend's answer — and follows changes through a version number that
//! every write increments in the same transaction. Followers poll that number
//! ([`follow`]); a replica that is down or cut off keeps serving its last copy and catches up
//! when the database answers again.
//!
//! Tables (created by [`GalleryDb::create`]; `vector` is pgvector's type):
//!
//! | table | columns |
//! |---|---|
//! | `proxima_gallery` (one row) | `model_fingerprint`, `dim`, `metric`, `backend`, `calibration` (JSON text), `version` |
//! | `proxima_gallery_rows` | `id bigserial` (row order), `brand`, `source`, `embedding vector` |
//! | `proxima_gallery_audit` | `id bigserial`, `time`, `token`, `action` (`build`/`enrol`/`remove`/`domains`), `brand`, `rows`, `brand_rows`, `version` |
//!
//! The audit table is written in the same transaction as the change it records ([`AuditEntry`]),
//! so the log and the gallery cannot disagree: a change is in both or in neither. It is created
//! on the first audited write, so databases made before it keep working.
//!
//! Every change is one transaction: a brand is enrolled with all its rows or not at all, and a
//! database that disappears mid-enrolment leaves no half-written brand ([`DbError::is_unavailable`]
//! tells the caller to answer "try again later").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pgvector::Vector;
use proxima_index::{Calibration, Domain, Gallery, Header, IndexError};
use thiserror::Error;
use tokio_postgres::{Client, GenericClient, IsolationLevel, NoTls};

/// The schema; every statement is idempotent.
pub const SCHEMA: &str = "
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS proxima_gallery (
    id integer PRIMARY KEY CHECK (id = 1),
    model_fingerprint text NOT NULL,
    dim integer NOT NULL CHECK (dim > 0),
    metric text NOT NULL,
    backend text NOT NULL,
    calibration text,
    version bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS proxima_gallery_rows (
    id bigserial PRIMARY KEY,
    brand text NOT NULL,
    source text NOT NULL,
    embedding vector NOT NULL
);
CREATE INDEX IF NOT EXISTS proxima_gallery_rows_brand ON proxima_gallery_rows (brand);
CREATE TABLE IF NOT EXISTS proxima_gallery_domains (
    brand text NOT NULL,
    domain text NOT NULL,
    PRIMARY KEY (brand, domain)
);
";

/// The audit table (also created inside each audited write, under the gallery's row lock).
pub const AUDIT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS proxima_gallery_audit (
    id bigserial PRIMARY KEY,
    time timestamptz NOT NULL DEFAULT now(),
    token text NOT NULL,
    action text NOT NULL,
    brand text NOT NULL,
    rows bigint NOT NULL,
    brand_rows bigint NOT NULL,
    version bigint NOT NULL
);
";

/// The actor recorded for changes made without a token (the CLI, tests).
pub const LOCAL_ACTOR: &str = "local";

/// One gallery change as the audit log records it (file galleries: a JSON line; database
/// galleries: a row of `proxima_gallery_audit`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// The id of the token that made the change (`local` without one).
    pub token: String,
    /// `enrol`, `remove` or `build` (a gallery built or replaced as a whole: one entry per brand,
    /// 0 rows for a brand it dropped) (`void`: a file gallery's change that was logged but never saved,
    /// written when the server restarts after a crash between the two).
    pub action: String,
    /// The brand, as stored (NFC).
    pub brand: String,
    /// Rows added or removed.
    pub rows: u64,
    /// The brand's rows after the change (0 after a removal).
    pub brand_rows: u64,
    /// The gallery's version after the change (database: its version number; file: the change's
    /// sequence number in the log).
    pub version: i64,
}

/// Rows per `INSERT … SELECT FROM unnest(…)` statement.
const INSERT_CHUNK: usize = 1000;

/// Errors of the database gallery. Messages name the database without its password.
#[derive(Debug, Error)]
pub enum DbError {
    /// The database cannot be reached, or the connection broke (nothing was changed).
    #[error("the gallery database {url} is unavailable: {source}")]
    Unavailable {
        /// The database, password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database refused a statement.
    #[error("gallery database {url}: {what}: {source}")]
    Query {
        /// The database, password removed.
        url: String,
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No gallery has been created in this database.
    #[error("the database {url} holds no gallery (create one with `proxima gallery build --db …`)")]
    Empty {
        /// The database, password removed.
        url: String,
    },
    /// A gallery exists and replacing it was not asked for.
    #[error("the database {url} already holds a gallery ({rows} rows); pass --force to replace it")]
    Exists {
        /// The database, password removed.
        url: String,
        /// Rows it holds.
        rows: i64,
    },
    /// Stored metadata that does not parse.
    #[error("gallery database {url}: stored {what} is invalid: {reason}")]
    Corrupt {
        /// The database, password removed.
        url: String,
        /// Which field.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A gallery-level error (unknown brand, wrong dimension, another model…).
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl DbError {
    /// Whether the error is the database being unreachable (a service answers 503 and retries),
    /// as opposed to a refused request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// `url` without its password (`postgres://user:secret@host/db` → `postgres://user:***@host/db`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((creds, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A connection to a database gallery; reconnects on the next call after the connection broke.
pub struct GalleryDb {
    url: String,
    client: Option<Client>,
}

/// A change applied to the database and to the caller's copy of the gallery.
#[derive(Debug)]
pub struct Applied {
    /// The gallery after the change, as the database holds it.
    pub gallery: Gallery,
    /// The database's version after the change.
    pub version: i64,
    /// Rows added or removed.
    pub rows: usize,
}

/// What a write transaction found.
enum Write {
    /// Committed: the version before the write and the rows written or deleted.
    Done { before: i64, rows: u64 },
    /// No gallery in the database.
    NoGallery,
    /// A gallery of another model (its fingerprint) or embedding size.
    OtherModel(String),
    /// `create` without `replace` met a gallery of this many rows.
    Exists(i64),
}

/// A driver error with what was being done.
type Step<T> = Result<T, (&'static str, tokio_postgres::Error)>;

/// A stored JSON field, or [`DbError::Corrupt`] naming it.
fn parse_stored<T: serde::de::DeserializeOwned>(url: &str, what: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| DbError::Corrupt { url: url.to_string(), what, reason: format!("{e}: {text:?}") })
}

/// Whether `e` says the gallery's tables do not exist (no gallery yet).
fn no_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
}

impl GalleryDb {
    /// Connects to `url` (a libpq URL or key=value string; TLS is not used).
    pub async fn connect(url: &str) -> Result<Self> {
        let mut db = GalleryDb { url: url.to_string(), client: None };
        db.client().await?;
        Ok(db)
    }

    /// The database, password removed (for messages).
    pub fn name(&self) -> String {
        redact(&self.url)
    }

    async fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.map_err(|source| DbError::Unavailable { url: redact(&self.url), source })?;
            // The connection task ends when the client is dropped or the server goes away.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    /// Maps a driver error: a broken or refused connection is [`DbError::Unavailable`].
    fn err(&self, what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError + '_ {
        move |source| {
            if source.is_closed() || source.as_db_error().is_none() {
                DbError::Unavailable { url: redact(&self.url), source }
            } else {
                DbError::Query { url: redact(&self.url), what, source }
            }
        }
    }

    /// Stores `gallery` as the database's gallery (creating the tables if needed), replacing an
    /// existing one only with `replace`; returns the new version.
    pub async fn create(&mut self, gallery: &Gallery, replace: bool) -> Result<i64> {
        self.create_as(LOCAL_ACTOR, gallery, replace).await
    }

    /// As [`GalleryDb::create`], recording `actor` in the audit table in the same transaction:
    /// a `build` entry per brand of the new gallery, and one with 0 rows per brand it replaces.
    pub async fn create_as(&mut self, actor: &str, gallery: &Gallery, replace: bool) -> Result<i64> {
        let client = self.client().await?;
        let res: Step<Write> = async {
            client.batch_execute(SCHEMA).await.map_err(|e| ("creating the tables", e))?;
            client.batch_execute(AUDIT_SCHEMA).await.map_err(|e| ("creating the audit table", e))?;
            let tx = client.transaction().await.map_err(|e| ("starting a transaction", e))?;
            let old: Option<i64> =
                tx.query_opt("SELECT version FROM proxima_gallery WHERE id = 1 FOR UPDATE", &[]).await.map_err(|e| ("reading the version", e))?.map(|r| r.get(0));
            let rows: i64 = tx.query_one("SELECT count(*) FROM proxima_gallery_rows", &[]).await.map_err(|e| ("counting rows", e))?.get(0);
            if old.is_some() && !replace {
                return Ok(Write::Exists(rows));
            }
            let replaced: Vec<String> = tx
                .query("SELECT DISTINCT brand FROM proxima_gallery_rows", &[])
                .await
                .map_err(|e| ("listing the replaced brands", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute("DELETE FROM proxima_gallery_rows", &[]).await.map_err(|e| ("clearing rows", e))?;
            tx.execute("DELETE FROM proxima_gallery_domains", &[]).await.map_err(|e| ("clearing domains", e))?;
            let h = gallery.to_header();
            let version = old.unwrap_or(0) + 1;
            let json = |v: serde_json::Result<String>| v.expect("metric, backend and calibration serialise");
            tx.execute(
                "INSERT INTO proxima_gallery (id, model_fingerprint, dim, metric, backend, calibration, version) VALUES (1, $1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET model_fingerprint = $1, dim = $2, metric = $3, backend = $4, calibration = $5, version = $6",
                &[
                    &h.model_fingerprint,
                    &(h.dim as i32),
                    &json(serde_json::to_string(&h.metric)),
                    &json(serde_json::to_string(&h.backend)),
                    &h.calibration.as_ref().map(|c| json(serde_json::to_string(c))),
                    &version,
                ],
            )
            .await
            .map_err(|e| ("writing the gallery's metadata", e))?;
            let brands: Vec<&str> = gallery.labels().iter().map(|&l| gallery.brands()[l as usize].as_str()).collect();
            insert_rows(&tx, &brands, gallery.paths(), gallery.data(), gallery.dim()).await?;
            for (brand, domains) in gallery.all_domains() {
                insert_domains(&tx, brand, domains).await?;
            }
            for b in replaced.iter().filter(|b| gallery.brand_id(b).is_none()) {
                audit(&tx, actor, "build", b, 0, version).await?;
            }
            for b in gallery.list() {
                audit(&tx, actor, "build", &b.brand, b.rows as i64, version).await?;
            }
            tx.commit().await.map_err(|e| ("committing", e))?;
            Ok(Write::Done { before: version - 1, rows: gallery.len() as u64 })
        }
        .await;
        Ok(self.outcome(res, gallery.model_fingerprint())?.0 + 1)
    }

    /// The database's version, or `None` when it holds no gallery.
    pub async fn version(&mut self) -> Result<Option<i64>> {
        let client = self.client().await?;
        let res = client.query_opt("SELECT version FROM proxima_gallery WHERE id = 1", &[]).await;
        match res {
            Ok(r) => Ok(r.map(|r| r.get(0))),
            // The table does not exist yet: no gallery.
            Err(e) if no_table(&e) => Ok(None),
            Err(e) => Err(self.err("reading the version")(e)),
        }
    }

    /// The gallery and its version, read in one consistent snapshot. Stored metadata that does
    /// not parse is [`DbError::Corrupt`].
    pub async fn load(&mut self) -> Result<(Gallery, i64)> {
        let url = redact(&self.url);
        let client = self.client().await?;
        let res: Step<Option<(tokio_postgres::Row, Vec<tokio_postgres::Row>, Vec<tokio_postgres::Row>)>> = async {
            let tx =
                client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await.map_err(|e| ("starting a transaction", e))?;
            let meta = match tx.query_opt("SELECT model_fingerprint, dim, metric, backend, calibration, version FROM proxima_gallery WHERE id = 1", &[]).await {
                Ok(m) => m,
                Err(e) if no_table(&e) => None,
                Err(e) => return Err(("reading the gallery's metadata", e)),
            };
            let Some(meta) = meta else { return Ok(None) };
            let rows = tx.query("SELECT brand, source, embedding FROM proxima_gallery_rows ORDER BY id", &[]).await.map_err(|e| ("reading rows", e))?;
            // A database made before brands had domains has no such table: no domains.
            let domains = match tx.query("SELECT brand, domain FROM proxima_gallery_domains ORDER BY brand, domain", &[]).await {
                Ok(d) => d,
                Err(e) if no_table(&e) => Vec::new(),
                Err(e) => return Err(("reading domains", e)),
            };
            tx.commit().await.map_err(|e| ("ending the snapshot", e))?;
            Ok(Some((meta, rows, domains)))
        }
        .await;
        let (meta, rows, domain_rows) = match res {
            Ok(Some(v)) => v,
            Ok(None) => return Err(DbError::Empty { url }),
            Err((what, e)) => return Err(self.err(what)(e)),
        };
        let dim: i32 = meta.get(1);
        let dim = usize::try_from(dim).map_err(|_| DbError::Corrupt { url: url.clone(), what: "dim", reason: dim.to_string() })?;
        let (mut brands, mut labels, mut paths, mut data) = (Vec::<String>::new(), Vec::new(), Vec::new(), Vec::with_capacity(rows.len() * dim));
        let mut ids = std::collections::HashMap::<String, u32>::new();
        for r in &rows {
            let brand: String = r.get(0);
            let id = *ids.entry(brand.clone()).or_insert_with(|| {
                brands.push(brand);
                (brands.len() - 1) as u32
            });
            labels.push(id);
            paths.push(PathBuf::from(r.get::<_, String>(1)));
            data.extend_from_slice(r.get::<_, Vector>(2).as_slice());
        }
        let header = Header {
            writer: concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")).to_string(),
            metric: parse_stored(&url, "metric", meta.get(2))?,
            dim,
            rows: rows.len(),
            model_fingerprint: meta.get(0),
            brands,
            labels,
            paths,
            calibration: meta.get::<_, Option<&str>>(4).map(|c| parse_stored(&url, "calibration", c)).transpose()?,
            backend: parse_stored(&url, "backend", meta.get(3))?,
            domains: collect_domains(&url, &domain_rows)?,
        };
        let gallery = Gallery::from_header(&PathBuf::from(&url), header, data)?;
        Ok((gallery, meta.get(5)))
    }

    /// As [`GalleryDb::load`], refusing a gallery built with another model.
    pub async fn load_for_model(&mut self, model_fingerprint: &str) -> Result<(Gallery, i64)> {
        let (g, v) = self.load().await?;
        if g.model_fingerprint() != model_fingerprint {
            return Err(IndexError::FingerprintMismatch {
                path: PathBuf::from(self.name()),
                gallery: g.model_fingerprint().to_string(),
                expected: model_fingerprint.to_string(),
            }
            .into());
        }
        Ok((g, v))
    }

    /// Enrols `embeddings` (one row per path) under `brand`, in one transaction; `local` is the
    /// caller's copy at `local_version`. The rows are checked and normalised as
    /// [`Gallery::add`] does, and the answer is the database's gallery after the change (the
    /// caller's copy plus the rows when nobody else wrote in between, else a fresh load).
    pub async fn add(&mut self, local: &Gallery, local_version: i64, brand: &str, embeddings: &[f32], paths: &[PathBuf]) -> Result<Applied> {
        self.add_as(LOCAL_ACTOR, local, local_version, brand, embeddings, paths).await
    }

    /// As [`GalleryDb::add`], recording `actor` (a token id) in the audit table in the same
    /// transaction. The brand is stored in its NFC form ([`proxima_index::brand_name`]).
    pub async fn add_as(&mut self, actor: &str, local: &Gallery, local_version: i64, brand: &str, embeddings: &[f32], paths: &[PathBuf]) -> Result<Applied> {
        let brand = &proxima_index::brand_name::normalize(brand)?;
        let mut next = local.clone();
        let rows = next.add(brand, embeddings, paths)?;
        let first = next.len() - rows;
        let dim = next.dim();
        let new_rows = &next.data()[first * dim..];
        let new_paths = &next.paths()[first..];
        let brands = vec![brand.as_str(); rows];
        let fingerprint = local.model_fingerprint().to_string();
        let client = self.client().await?;
        let res: Step<Write> = async {
            let tx = client.transaction().await.map_err(|e| ("starting a transaction", e))?;
            let Some((version, fp, d)) = lock_meta(&tx).await? else { return Ok(Write::NoGallery) };
            if fp != fingerprint || d as usize != dim {
                return Ok(Write::OtherModel(fp));
            }
            insert_rows(&tx, &brands, new_paths, new_rows, dim).await?;
            tx.execute("UPDATE proxima_gallery SET version = version + 1 WHERE id = 1", &[]).await.map_err(|e| ("updating the version", e))?;
            audit(&tx, actor, "enrol", brand, rows as i64, version + 1).await?;
            tx.commit().await.map_err(|e| ("committing", e))?;
            Ok(Write::Done { before: version, rows: rows as u64 })
        }
        .await;
        let (before, _) = self.outcome(res, &fingerprint)?;
        self.after_write(next, local_version, before, rows).await
    }

    /// Removes `brand` and all its rows, in one transaction (see [`GalleryDb::add`] for `local`).
    pub async fn remove(&mut self, local: &Gallery, local_version: i64, brand: &str) -> Result<Applied> {
        self.remove_as(LOCAL_ACTOR, local, local_version, brand).await
    }

    /// As [`GalleryDb::remove`], recording `actor` in the audit table in the same transaction.
    /// `brand` is matched as the caller's copy stores it, else by its NFC form.
    pub async fn remove_as(&mut self, actor: &str, local: &Gallery, local_version: i64, brand: &str) -> Result<Applied> {
        let stored = match local.resolve_brand(brand) {
            Some(id) => local.brands()[id as usize].clone(),
            None => proxima_index::brand_name::normalize(brand).unwrap_or_else(|_| brand.to_string()),
        };
        let brand = stored.as_str();
        let mut next = local.clone();
        let fingerprint = local.model_fingerprint().to_string();
        let client = self.client().await?;
        let res: Step<Write> = async {
            let tx = client.transaction().await.map_err(|e| ("starting a transaction", e))?;
            let Some((version, fp, _)) = lock_meta(&tx).await? else { return Ok(Write::NoGallery) };
            if fp != fingerprint {
                return Ok(Write::OtherModel(fp));
            }
            let n = tx.execute("DELETE FROM proxima_gallery_rows WHERE brand = $1", &[&brand]).await.map_err(|e| ("deleting rows", e))?;
            if n > 0 {
                delete_domains(&tx, brand).await?;
                tx.execute("UPDATE proxima_gallery SET version = version + 1 WHERE id = 1", &[]).await.map_err(|e| ("updating the version", e))?;
                audit(&tx, actor, "remove", brand, n as i64, version + 1).await?;
                tx.commit().await.map_err(|e| ("committing", e))?;
            }
            Ok(Write::Done { before: version, rows: n })
        }
        .await;
        let (before, deleted) = self.outcome(res, &fingerprint)?;
        if deleted == 0 {
            return Err(IndexError::UnknownBrand(brand.to_string()).into());
        }
        // In sync: apply locally (same rows as the database); else the reload below decides.
        let rows = next.remove(brand).unwrap_or(deleted as usize);
        self.after_write(next, local_version, before, rows).await
    }

    /// Replaces the legitimate domains of an enrolled `brand` (empty removes them), in one
    /// transaction (see [`GalleryDb::add`] for `local`); `rows` of the answer is the number of
    /// domains stored.
    pub async fn set_domains(&mut self, local: &Gallery, local_version: i64, brand: &str, domains: &[Domain]) -> Result<Applied> {
        self.set_domains_as(LOCAL_ACTOR, local, local_version, brand, domains).await
    }

    /// As [`GalleryDb::set_domains`], recording `actor` in the audit log (action `domains`, rows:
    /// the number of domains stored) in the same transaction.
    pub async fn set_domains_as(&mut self, actor: &str, local: &Gallery, local_version: i64, brand: &str, domains: &[Domain]) -> Result<Applied> {
        let mut next = local.clone();
        let stored = next.set_domains(brand, domains)?.to_vec();
        // The brand as stored (`set_domains` matched it, NFC form included).
        let name = local.resolve_brand(brand).map(|id| local.brands()[id as usize].clone()).unwrap_or_else(|| brand.to_string());
        let brand = name.as_str();
        let fingerprint = local.model_fingerprint().to_string();
        let client = self.client().await?;
        let res: Step<Write> = async {
            client.batch_execute(SCHEMA_DOMAINS).await.map_err(|e| ("creating the domains table", e))?;
            let tx = client.transaction().await.map_err(|e| ("starting a transaction", e))?;
            let Some((version, fp, _)) = lock_meta(&tx).await? else { return Ok(Write::NoGallery) };
            if fp != fingerprint {
                return Ok(Write::OtherModel(fp));
            }
            let enrolled = tx.query_opt("SELECT 1 FROM proxima_gallery_rows WHERE brand = $1 LIMIT 1", &[&brand]).await.map_err(|e| ("looking up the brand", e))?;
            if enrolled.is_none() {
                return Ok(Write::Done { before: version, rows: 0 });
            }
            delete_domains(&tx, brand).await?;
            insert_domains(&tx, brand, &stored).await?;
            tx.execute("UPDATE proxima_gallery SET version = version + 1 WHERE id = 1", &[]).await.map_err(|e| ("updating the version", e))?;
            audit(&tx, actor, "domains", brand, stored.len() as i64, version + 1).await?;
            tx.commit().await.map_err(|e| ("committing", e))?;
            Ok(Write::Done { before: version, rows: 1 })
        }
        .await;
        let (before, written) = self.outcome(res, &fingerprint)?;
        if written == 0 {
            return Err(IndexError::UnknownBrand(brand.to_string()).into());
        }
        self.after_write(next, local_version, before, stored.len()).await
    }

    /// The audit log, oldest first: the entries after id `after` (0: from the start), at most `limit`.
    /// Each entry comes with its id (pass the last one as `after` for the next page).
    pub async fn audit_log(&mut self, after: i64, limit: i64) -> Result<Vec<(i64, AuditEntry)>> {
        let client = self.client().await?;
        let res = client
            .query(
                "SELECT id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), token, action, brand, rows, brand_rows, version
                 FROM proxima_gallery_audit WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
            )
            .await;
        match res {
            Ok(rows) => Ok(rows
                .iter()
                .map(|r| {
                    let entry = AuditEntry {
                        time: r.get(1),
                        token: r.get(2),
                        action: r.get(3),
                        brand: r.get(4),
                        rows: r.get::<_, i64>(5).max(0) as u64,
                        brand_rows: r.get::<_, i64>(6).max(0) as u64,
                        version: r.get(7),
                    };
                    (r.get(0), entry)
                })
                .collect()),
            Err(e) if no_table(&e) => Ok(Vec::new()),
            Err(e) => Err(self.err("reading the audit log")(e)),
        }
    }

    /// Stores a (new) calibration; answers the database's gallery after the change.
    pub async fn set_calibration(&mut self, calibration: Option<&Calibration>) -> Result<(Gallery, i64)> {
        let text = calibration.map(|c| serde_json::to_string(c).expect("a calibration serialises"));
        let client = self.client().await?;
        let res = client.execute("UPDATE proxima_gallery SET calibration = $1, version = version + 1 WHERE id = 1", &[&text]).await;
        match res {
            Ok(0) => Err(DbError::Empty { url: self.name() }),
            Ok(_) => self.load().await,
            Err(e) => Err(self.err("storing the calibration")(e)),
        }
    }

    /// A write's outcome: `(version before, rows)` when it committed, else the error.
    fn outcome(&self, res: Step<Write>, fingerprint: &str) -> Result<(i64, u64)> {
        match res {
            Ok(Write::Done { before, rows }) => Ok((before, rows)),
            Ok(Write::NoGallery) => Err(DbError::Empty { url: self.name() }),
            Ok(Write::OtherModel(stored)) => {
                Err(IndexError::FingerprintMismatch { path: PathBuf::from(self.name()), gallery: stored, expected: fingerprint.to_string() }.into())
            }
            Ok(Write::Exists(rows)) => Err(DbError::Exists { url: self.name(), rows }),
            Err((what, e)) => Err(self.err(what)(e)),
        }
    }

    /// The gallery after a committed write: `next` (the caller's copy with the change) when the
    /// database was at the caller's version before it, else the database's own.
    async fn after_write(&mut self, next: Gallery, local_version: i64, before: i64, rows: usize) -> Result<Applied> {
        if before == local_version {
            return Ok(Applied { gallery: next, version: before + 1, rows });
        }
        let (gallery, version) = self.load().await?;
        Ok(Applied { gallery, version, rows })
    }
}

/// Locks the metadata row for the transaction: `(version, model fingerprint, dim)`, or `None`
/// without a gallery.
async fn lock_meta(tx: &tokio_postgres::Transaction<'_>) -> Step<Option<(i64, String, i32)>> {
    match tx.query_opt("SELECT version, model_fingerprint, dim FROM proxima_gallery WHERE id = 1 FOR UPDATE", &[]).await {
        Ok(r) => Ok(r.map(|r| (r.get(0), r.get(1), r.get(2)))),
        Err(e) if no_table(&e) => Ok(None),
        Err(e) => Err(("locking the gallery", e)),
    }
}

/// The domains table alone, for databases made before brands had domains.
const SCHEMA_DOMAINS: &str = "CREATE TABLE IF NOT EXISTS proxima_gallery_domains (brand text NOT NULL, domain text NOT NULL, PRIMARY KEY (brand, domain));";

/// Stores `domains` for `brand`.
async fn insert_domains(tx: &impl GenericClient, brand: &str, domains: &[Domain]) -> Step<()> {
    let list: Vec<&str> = domains.iter().map(Domain::as_str).collect();
    tx.execute("INSERT INTO proxima_gallery_domains (brand, domain) SELECT $1, d FROM unnest($2::text[]) AS t(d)", &[&brand, &list])
        .await
        .map_err(|e| ("storing domains", e))?;
    Ok(())
}

/// Deletes the domains of `brand` (a database without the table has none).
async fn delete_domains(tx: &tokio_postgres::Transaction<'_>, brand: &str) -> Step<()> {
    tx.batch_execute(SCHEMA_DOMAINS).await.map_err(|e| ("creating the domains table", e))?;
    tx.execute("DELETE FROM proxima_gallery_domains WHERE brand = $1", &[&brand]).await.map_err(|e| ("deleting domains", e))?;
    Ok(())
}

/// Stored `(brand, domain)` rows as the gallery header's map; a domain that does not parse is
/// [`DbError::Corrupt`].
fn collect_domains(url: &str, rows: &[tokio_postgres::Row]) -> Result<BTreeMap<String, Vec<Domain>>> {
    let mut out: BTreeMap<String, Vec<Domain>> = BTreeMap::new();
    for r in rows {
        let (brand, domain): (String, String) = (r.get(0), r.get(1));
        let d = Domain::parse(&domain).map_err(|e| DbError::Corrupt { url: url.to_string(), what: "domain", reason: e.to_string() })?;
        out.entry(brand).or_default().push(d);
    }
    for list in out.values_mut() {
        list.sort();
        list.dedup();
    }
    Ok(out)
}

/// Records a change in the audit table, inside the change's transaction (which holds the
/// gallery's row lock, so creating the table here cannot race another writer).
async fn audit(tx: &tokio_postgres::Transaction<'_>, actor: &str, action: &str, brand: &str, rows: i64, version: i64) -> Step<()> {
    tx.batch_execute(AUDIT_SCHEMA).await.map_err(|e| ("creating the audit table", e))?;
    tx.execute(
        "INSERT INTO proxima_gallery_audit (token, action, brand, rows, brand_rows, version)
         SELECT $1, $2, $3, $4, (SELECT count(*) FROM proxima_gallery_rows WHERE brand = $3), $5",
        &[&actor, &action, &brand, &rows, &version],
    )
    .await
    .map_err(|e| ("writing the audit log", e))?;
    Ok(())
}

/// Appends rows (brand, source path, embedding) in order, in chunks of [`INSERT_CHUNK`].
async fn insert_rows(tx: &impl GenericClient, brands: &[&str], paths: &[PathBuf], data: &[f32], dim: usize) -> Step<()> {
    let stmt = tx
        .prepare("INSERT INTO proxima_gallery_rows (brand, source, embedding) SELECT b, s, e FROM unnest($1::text[], $2::text[], $3::vector[]) WITH ORDINALITY AS t(b, s, e, o) ORDER BY o")
        .await
        .map_err(|e| ("preparing the row insert", e))?;
    for start in (0..brands.len()).step_by(INSERT_CHUNK) {
        let end = (start + INSERT_CHUNK).min(brands.len());
        let b: Vec<&str> = brands[start..end].to_vec();
        let s: Vec<String> = paths[start..end].iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let e: Vec<Vector> = (start..end).map(|i| Vector::from(data[i * dim..(i + 1) * dim].to_vec())).collect();
        tx.execute(&stmt, &[&b, &s, &e]).await.map_err(|e| ("inserting rows", e))?;
    }
    Ok(())
}

/// Follows the database gallery: every `poll`, reads the version and, when it differs from the
/// last one seen (initially `version`), loads the gallery and hands it to `on_change` (only
/// galleries of `model_fingerprint`; another model's is skipped with a message on stderr).
/// Errors (the database away) are retried at the next tick; the task runs until aborted.
pub fn follow(
    url: String,
    model_fingerprint: String,
    mut version: i64,
    poll: Duration,
    mut on_change: impl FnMut(Gallery, i64) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut db = GalleryDb { url, client: None };
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = false;
        loop {
            tick.tick().await;
            let seen = match db.version().await {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    if !reported {
                        eprintln!("gallery follower: {e} (serving the last copy, retrying every {poll:?})");
                        reported = true;
                    }
                    continue;
                }
            };
            reported = false;
            if seen == version {
                continue;
            }
            match db.load_for_model(&model_fingerprint).await {
                Ok((g, v)) => {
                    version = v;
                    on_change(g, v);
                }
                Err(e) => eprintln!("gallery follower: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@127.0.0.1:5432/db"), "postgres://u:***@127.0.0.1:5432/db");
        assert_eq!(redact("postgres://u@127.0.0.1/db"), "postgres://u@127.0.0.1/db");
        assert_eq!(redact("host=/tmp user=postgres"), "host=/tmp user=postgres");
    }
}
