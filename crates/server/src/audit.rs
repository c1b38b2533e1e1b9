//! The audit log of gallery changes: who enrolled or removed which brand, when, how many rows.
//!
//! Why: a gallery decides what the service calls a brand; an operator must be able to say who
//! changed it. Every change is recorded before it is answered:
//!
//! * A database gallery writes its entry in the change's own transaction
//!   (`proxima_gallery_audit`, see `proxima_gallery_db`), so the two cannot disagree.
//! * A file gallery appends a JSON line to its log (default `<gallery>.audit.jsonl`) and syncs it
//!   *before* the gallery file is replaced, then answers. A crash between the two leaves an entry
//!   for a change that was never saved (and never answered); when the server starts again it
//!   compares the log with the gallery — each entry carries the brand's rows after the change —
//!   and appends a `void` entry with the brand's real rows for every brand where they differ. A
//!   torn last line (a crash in the middle of the append) is cut off. So after a restart, the
//!   last entry naming a brand always gives that brand's rows in the gallery.
//!
//! `GET /v1/audit?after=ID&limit=N` (admin) pages through the log, oldest first.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use proxima_gallery_db::AuditEntry;
use proxima_index::Gallery;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, AppState, GalleryStore};

/// An audit entry with its position in the log (file: 1-based line; database: row id).
#[derive(Debug, Clone, Serialize)]
pub struct Numbered {
    /// Position; pass the last one as `after` for the next page.
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// `time` as RFC 3339 in UTC with microseconds (`2026-12-06T17:04:05.123456Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_micros())
}

/// Each brand's rows according to the log: the `brand_rows` of the last entry naming it.
pub fn replay<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> BTreeMap<String, u64> {
    let mut rows = BTreeMap::new();
    for e in entries {
        rows.insert(e.brand.clone(), e.brand_rows);
    }
    rows
}

/// The brands on which a log and a gallery disagree: `(brand, rows in the gallery)`.
pub fn disagreements(entries: &[AuditEntry], g: &Gallery) -> Vec<(String, u64)> {
    let counts: BTreeMap<String, u64> = g.list().into_iter().map(|b| (b.brand, b.rows as u64)).collect();
    replay(entries).into_iter().filter_map(|(b, n)| (counts.get(&b).copied().unwrap_or(0) != n).then(|| (b.clone(), counts.get(&b).copied().unwrap_or(0)))).collect()
}

/// A file gallery's append-only audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Entries so far (the next entry's id is `count + 1`).
    count: i64,
    /// The version of the last entry.
    version: i64,
}

/// The default log of a gallery file: `<gallery>.audit.jsonl` beside it.
pub fn default_path(gallery: &Path) -> PathBuf {
    let mut name = gallery.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".audit.jsonl");
    gallery.with_file_name(name)
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> String {
    format!("audit log {}: {what}: {e}", path.display())
}

/// Reads every complete entry; a torn or unparsable *last* line is reported as `Some(offset)`
/// where the good part ends (an unparsable line elsewhere is an error).
fn read_entries(path: &Path, file: &mut File) -> Result<(Vec<AuditEntry>, Option<u64>), String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, "seeking", e))?;
    file.read_to_string(&mut text).map_err(|e| io_err(path, "reading", e))?;
    let mut entries = Vec::new();
    let mut offset = 0usize;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(l) = lines.next() {
        let last = lines.peek().is_none();
        match serde_json::from_str::<AuditEntry>(l.trim_end()) {
            Ok(e) if l.ends_with('\n') => entries.push(e),
            _ if last => return Ok((entries, Some(offset as u64))),
            Err(e) => return Err(format!("audit log {}: line {} is not an audit entry: {e}", path.display(), entries.len() + 1)),
            Ok(_) => unreachable!("only the last line can lack its newline"),
        }
        offset += l.len();
    }
    Ok((entries, None))
}

impl AuditLog {
    /// Opens (or creates) the log of `gallery`, cuts a torn last line and appends a `void`
    /// entry for every brand where the log and the gallery disagree (see the module docs).
    /// Returns the log and the number of `void` entries written.
    pub fn open(path: &Path, gallery: &Gallery) -> Result<(AuditLog, usize), String> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| io_err(path, "opening", e))?;
        let (entries, torn) = read_entries(path, &mut file)?;
        if let Some(end) = torn {
            eprintln!("audit log {}: cutting a torn last entry (the server stopped while writing it; that change was never answered)", path.display());
            file.set_len(end).map_err(|e| io_err(path, "truncating a torn entry", e))?;
            file.sync_all().map_err(|e| io_err(path, "syncing", e))?;
        }
        let version = entries.last().map_or(0, |e| e.version);
        let mut log = AuditLog { path: path.to_path_buf(), file, count: entries.len() as i64, version };
        let fixes = disagreements(&entries, gallery);
        for (brand, rows) in &fixes {
            eprintln!(
                "audit log {}: brand {brand:?} has {rows} rows in the gallery, not what the log's last entry says (a change logged but not saved before a crash); appending a void entry",
                path.display()
            );
            log.append("server", "void", brand, 0, *rows)?;
        }
        Ok((log, fixes.len()))
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and syncs it to disk; returns it.
    pub fn append(&mut self, token: &str, action: &str, brand: &str, rows: u64, brand_rows: u64) -> Result<AuditEntry, String> {
        let entry = AuditEntry {
            time: rfc3339(SystemTime::now()),
            token: token.to_string(),
            action: action.to_string(),
            brand: brand.to_string(),
            rows,
            brand_rows,
            version: self.version + 1,
        };
        let mut line = serde_json::to_string(&entry).expect("an audit entry serialises");
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| io_err(&self.path, "appending", e))?;
        self.file.sync_data().map_err(|e| io_err(&self.path, "syncing", e))?;
        self.version += 1;
        self.count += 1;
        Ok(entry)
    }

    /// Entries after id `after`, at most `limit`, oldest first.
    pub fn read(&mut self, after: i64, limit: usize) -> Result<Vec<Numbered>, String> {
        let (entries, _) = read_entries(&self.path.clone(), &mut self.file)?;
        Ok(entries.into_iter().enumerate().map(|(i, entry)| Numbered { id: i as i64 + 1, entry }).filter(|n| n.id > after).take(limit).collect())
    }
}

/// Appends a file gallery's entry (synced) before the change is saved; a database gallery
/// (no log here) records its own. An entry that cannot be written refuses the change (500).
pub(crate) async fn record(s: &Arc<AppState>, token: &str, action: &str, brand: &str, rows: usize, brand_rows: usize) -> Result<(), ApiError> {
    if s.audit.is_none() {
        return Ok(());
    }
    let (s, token, action, brand) = (s.clone(), token.to_string(), action.to_string(), brand.to_string());
    tokio::task::spawn_blocking(move || {
        let mut log = s.audit.as_ref().expect("checked above").lock().unwrap_or_else(|p| p.into_inner());
        log.append(&token, &action, &brand, rows as u64, brand_rows as u64).map(|_| ())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("audit log: {e}")))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}; nothing was changed")))
}

/// The saved gallery, or — when saving failed after the entry was logged — a `void` entry that
/// puts the brand back at `rows_before` in the log, and the save's error.
pub(crate) async fn unless_saved(s: &Arc<AppState>, brand: &str, rows_before: usize, saved: Result<Gallery, ApiError>) -> Result<Gallery, ApiError> {
    match saved {
        Ok(g) => Ok(g),
        Err(e) => {
            if let Err(v) = record(s, "server", "void", brand, 0, rows_before).await {
                eprintln!("audit log: could not void an unsaved change of {brand:?}: {}", v.message);
            }
            Err(e)
        }
    }
}

/// Query parameters of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditParams {
    /// Entries after this id (default 0: from the start).
    #[serde(default)]
    pub after: i64,
    /// At most this many (default and cap 1000).
    pub limit: Option<usize>,
}

/// `GET /v1/audit` (admin): `{"entries": [{id, time, token, action, brand, rows, brand_rows, version}, …]}`.
pub async fn list(State(s): State<Arc<AppState>>, q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let q = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    let entries: Vec<Numbered> = match s.store() {
        GalleryStore::Db { db, .. } => db
            .lock()
            .await
            .audit_log(q.after, limit as i64)
            .await
            .map_err(|e| ApiError::new(if e.is_unavailable() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR }, e.to_string()))?
            .into_iter()
            .map(|(id, entry)| Numbered { id, entry })
            .collect(),
        GalleryStore::File(_) => {
            let Some(log) = &s.audit else { return Ok(Json(serde_json::json!({ "entries": [] }))) };
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.read(q.after, limit).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        }
    };
    Ok(Json(serde_json::json!({ "entries": entries })))
}

/// Reads a log file without opening it for writing (tests, tools).
pub fn read_file(path: &Path) -> Result<Vec<AuditEntry>, String> {
    let mut f = File::open(path).map_err(|e| io_err(path, "opening", e))?;
    Ok(read_entries(path, &mut f)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + std::time::Duration::from_micros(951_782_400_000_001)), "2000-02-29T00:00:00.000001Z");
        assert_eq!(rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(1_796_577_845)), "2026-12-06T17:24:05.000000Z");
    }

    #[test]
    fn a_torn_line_is_cut_and_a_logged_but_unsaved_change_is_voided() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.audit.jsonl");
        let mut g = Gallery::new(2, "m").unwrap();
        g.add("acme", &[1.0, 0.0], &["a.png"]).unwrap();
        let (mut log, fixed) = AuditLog::open(&path, &g).unwrap();
        assert_eq!(fixed, 0);
        log.append("ops", "enrol", "acme", 1, 1).unwrap();
        // Logged, then the process died before the gallery was saved.
        log.append("ops", "enrol", "globex", 2, 2).unwrap();
        drop(log);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"time\":\"2026").unwrap();
        let (mut log, fixed) = AuditLog::open(&path, &g).unwrap();
        assert_eq!(fixed, 1);
        let all = log.read(0, 100).unwrap();
        let got: Vec<_> = all.iter().map(|n| (n.id, n.entry.action.as_str(), n.entry.brand.as_str(), n.entry.brand_rows, n.entry.version)).collect();
        assert_eq!(got, vec![(1, "enrol", "acme", 1, 1), (2, "enrol", "globex", 2, 2), (3, "void", "globex", 0, 3)]);
        assert!(disagreements(&read_file(&path).unwrap(), &g).is_empty());
        assert_eq!(log.read(2, 100).unwrap().len(), 1);
    }
}
