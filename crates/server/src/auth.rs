//! Access control: bearer tokens with roles, checked by one middleware in front of every route.
//!
//! Why: whoever can reach the port of an open service can delete the brand that their phishing
//! page imitates, or enrol their page's logo under a harmless name. So the service knows two
//! roles — `read` (identify, find, compare, check, list) and `admin` (gallery writes, calibration,
//! the audit log) — and each request must carry `Authorization: Bearer <token>`.
//!
//! * The tokens file holds one line per token: `<id> <role> sha256:<hex>` (`#` comments and blank
//!   lines are ignored). Only the SHA-256 of a token is stored, so a leaked file does not leak the
//!   tokens; `proxima token new` makes a token (32 random bytes) and appends its line.
//! * A presented token is hashed and compared with every stored hash in constant time
//!   (`subtle`), without stopping at the first match, so the time taken says nothing about which
//!   token or how much of it matched.
//! * The decision is made from the method and path alone ([`required`]), before any handler runs:
//!   a 401 (no or unknown token) or 403 (a `read` token on an `admin` route) is the same whether
//!   the brand in the path exists or not.
//! * The rule covers routes by their shape, not a list: every `GET` and `POST
//!   /v1/identify|find|compare|check` is `read`; every other method under `/v1/` (gallery writes,
//!   `PUT …/domains`, calibration) and `GET /v1/audit` is `admin`. `/healthz` and the console's
//!   static files (`/`, `/console/…`) are open (they hold no data: the console calls the API with
//!   the token its user types in). `/metrics` is `read`: brand counts and traffic are not for
//!   everyone, and a Prometheus scrape job can carry a read token.
//! * Without a tokens file the service is open; [`crate::start_with_source`] refuses that on any
//!   address but loopback unless it was asked for explicitly (`--no-auth`).
//!
//! The same middleware applies the per-client rate limit ([`crate::limit`]) once it knows who
//! the client is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::api::ApiError;
use crate::limit::RateLimiter;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Identify, find, compare, check, list.
    Read,
    /// Everything `read` may, plus gallery writes, calibration and the audit log.
    Admin,
}

impl Role {
    /// The role's name in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// Parses `read` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health check, the console's static files).
    Open,
    /// A token of any role.
    Need(Role),
}

/// The access a request needs, from its method and path alone (see the module docs).
pub fn required(method: &Method, path: &str) -> Access {
    let path = path.trim_end_matches('/');
    if path.is_empty() || path == "/healthz" || path == "/console" || path.starts_with("/console/") || path == "/favicon.ico" {
        return Access::Open;
    }
    if path == "/v1/audit" || path.starts_with("/v1/audit/") || path.contains("calibrat") {
        return Access::Need(Role::Admin);
    }
    let read_post = ["/v1/identify", "/v1/find", "/v1/compare", "/v1/check"];
    match *method {
        Method::GET | Method::HEAD => Access::Need(Role::Read),
        Method::POST if read_post.contains(&path) => Access::Need(Role::Read),
        // Every other write, under /v1/gallery or anywhere else: admin.
        _ => Access::Need(Role::Admin),
    }
}

/// Errors reading a tokens file.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The file could not be read or written.
    #[error("tokens file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("tokens file {}, line {line}: {reason}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// One stored token.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    role: Role,
    hash: [u8; 32],
}

/// Who made a request (put into the request's extensions by the middleware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id; `anonymous` when the service runs without tokens.
    pub id: String,
    /// The token's role (`admin` without tokens).
    pub role: Role,
}

/// The route label under which `/metrics` counts requests refused here (401, 403, 429).
pub const REFUSED_ROUTE: &str = "(refused)";

/// The id recorded for requests to a service without tokens.
pub const ANONYMOUS: &str = "anonymous";

/// The tokens a service accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// A token id: 1–64 characters of `A–Z a–z 0–9 _ . -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// SHA-256 of a token, hex.
pub fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random token: `pxm_` and 64 hex digits (256 bits from the operating system).
pub fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(std::io::Error::other)?;
    Ok(format!("pxm_{}", b.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The tokens-file line of a token.
pub fn line(id: &str, role: Role, token: &str) -> String {
    format!("{id} {} sha256:{}", role.as_str(), hash_hex(token))
}

impl Tokens {
    /// Reads a tokens file (see the module docs for the format).
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_path_buf(), source })?;
        Tokens::parse(&text, path)
    }

    /// Parses the text of a tokens file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, AuthError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let bad = |reason: String| AuthError::Bad { path: path.to_path_buf(), line: i + 1, reason };
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = l.split_whitespace().collect();
            let [id, role, hash] = fields[..] else { return Err(bad("expected `<id> <role> sha256:<64 hex digits>`".into())) };
            if !valid_id(id) {
                return Err(bad(format!("token id {id:?}: use 1-64 characters of A-Z a-z 0-9 _ . -")));
            }
            let role = Role::parse(role).ok_or_else(|| bad(format!("role {role:?}: use read or admin")))?;
            let hash = hash.strip_prefix("sha256:").and_then(unhex).ok_or_else(|| bad("the hash must be sha256: and 64 hex digits".into()))?;
            if entries.iter().any(|e| e.id == id) {
                return Err(bad(format!("token id {id:?} appears twice")));
            }
            entries.push(Entry { id: id.to_string(), role, hash });
        }
        Ok(Tokens { entries })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a token id is in use.
    pub fn contains_id(&self, id: &str) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// The caller a presented token belongs to; every stored hash is compared in constant time.
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&h)) {
                found = Some(e);
            }
        }
        found.map(|e| Caller { id: e.id.clone(), role: e.role })
    }
}

/// What the middleware needs.
pub struct AuthState {
    /// Accepted tokens; `None`: the service is open (every caller is an anonymous admin).
    pub tokens: Option<Arc<Tokens>>,
    /// Requests per second per client.
    pub limiter: Option<RateLimiter>,
    /// Where refusals are counted (route label `(refused)`), so that an operator sees probing.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AuthState {
    /// The middleware's state for a server (its configuration and metrics).
    pub fn of(s: &crate::api::AppState) -> Arc<AuthState> {
        let c = &s.config;
        let limiter = c.rate_limit.filter(|r| *r > 0.0).map(|r| RateLimiter::new(r, (2.0 * r).max(1.0)));
        Arc::new(AuthState { tokens: c.tokens.clone(), limiter, metrics: Some(s.metrics.clone()) })
    }

    fn refused(&self, r: Response, since: std::time::Instant) -> Response {
        if let Some(m) = &self.metrics {
            m.record_request(REFUSED_ROUTE, r.status().as_u16(), since.elapsed());
        }
        r
    }
}

fn deny(status: StatusCode, message: &str) -> Response {
    let mut r = ApiError::new(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"proxima\""));
    }
    r
}

/// The bearer token of a request, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The middleware: identifies the caller, refuses with 401/403, applies the rate limit, and
/// hands the [`Caller`] to the handlers.
pub async fn check(State(s): State<Arc<AuthState>>, mut req: Request, next: Next) -> Response {
    let since = std::time::Instant::now();
    let need = required(req.method(), req.uri().path());
    let caller = match &s.tokens {
        None => Some(Caller { id: ANONYMOUS.to_string(), role: Role::Admin }),
        Some(tokens) => bearer(&req).and_then(|t| tokens.verify(t)),
    };
    if let Access::Need(role) = need {
        let Some(c) = &caller else {
            return s.refused(deny(StatusCode::UNAUTHORIZED, "a valid token is required: send Authorization: Bearer <token>"), since);
        };
        if c.role < role {
            return s.refused(deny(StatusCode::FORBIDDEN, &format!("this token's role ({}) may not do this; it needs {}", c.role.as_str(), role.as_str())), since);
        }
    }
    if let Some(limiter) = &s.limiter {
        // Per token when there are tokens, else per client address.
        let key = match (&s.tokens, &caller) {
            (Some(_), Some(c)) => format!("token:{}", c.id),
            _ => req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_string(), |ci| format!("ip:{}", ci.0.ip())),
        };
        if need != Access::Open
            && let Err(wait) = limiter.try_acquire(&key)
        {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut e =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("rate limit of {} requests per second per client reached; retry in {secs} s", limiter.rate()));
            e.retry_after = Some(secs);
            return s.refused(e.into_response(), since);
        }
    }
    if let Some(c) = caller {
        req.extensions_mut().insert(c);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_method_and_path() {
        let (g, p, put, d) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
        let read = Access::Need(Role::Read);
        let admin = Access::Need(Role::Admin);
        for (m, path, want) in [
            (&g, "/healthz", Access::Open),
            (&g, "/", Access::Open),
            (&g, "/console/app.js", Access::Open),
            (&g, "/metrics", read),
            (&g, "/v1/gallery", read),
            (&g, "/v1/gallery/acme", read),
            (&p, "/v1/identify", read),
            (&p, "/v1/find", read),
            (&p, "/v1/compare", read),
            (&p, "/v1/check", read),
            (&p, "/v1/gallery/acme", admin),
            (&d, "/v1/gallery/acme", admin),
            (&put, "/v1/gallery/acme/domains", admin),
            (&p, "/v1/gallery/acme/domains", admin),
            (&p, "/v1/calibrate", admin),
            (&g, "/v1/calibration", admin),
            (&g, "/v1/audit", admin),
            (&p, "/v1/identify/extra", admin),
            (&d, "/v1/identify", admin),
            (&Method::PATCH, "/v1/gallery", admin),
            (&g, "/v2/unknown", read),
        ] {
            assert_eq!(required(m, path), want, "{m} {path}");
        }
    }

    #[test]
    fn tokens_verify_by_hash_and_the_file_is_checked() {
        let (a, r) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, r);
        assert!(a.starts_with("pxm_") && a.len() == 68);
        let text = format!("# tokens\n{}\n\n{}\n", line("ops", Role::Admin, &a), line("scanner-1", Role::Read, &r));
        let t = Tokens::parse(&text, Path::new("t")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.verify(&a), Some(Caller { id: "ops".into(), role: Role::Admin }));
        assert_eq!(t.verify(&r), Some(Caller { id: "scanner-1".into(), role: Role::Read }));
        assert_eq!(t.verify(&a[..a.len() - 1]), None);
        assert_eq!(t.verify(""), None);
        assert!(!text.contains(&a), "only hashes are stored");
        for (bad, needle) in [
            ("x admin", "expected"),
            ("x owner sha256:00", "role"),
            ("x admin sha256:abc", "hash"),
            ("bad/id read sha256:0000000000000000000000000000000000000000000000000000000000000000", "token id"),
        ] {
            let e = Tokens::parse(bad, Path::new("t")).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("line 1"), "{bad}: {e}");
        }
        let dup = format!("{}\n{}", line("a", Role::Read, &a), line("a", Role::Admin, &r));
        assert!(Tokens::parse(&dup, Path::new("t")).unwrap_err().to_string().contains("twice"));
    }
}
