//! The web console at `/`: one page to drop a screenshot or photo and see the regions found,
//! drawn with brand, similarity and verdict, and (with an admin token) to list, enrol and remove
//! brands and read the audit log.
//!
//! Why in the binary: the people who run the service want to see it without installing
//! anything. The page is three static files (`assets/`: HTML, CSS, plain JavaScript; no build
//! step, no CDN) compiled in with `include_str!`, so the console is the version of the server
//! that serves it and works on a machine without internet access. It holds no data and no
//! secret: it calls the same API as every client, with the token its user types in, so the
//! files are served to anyone ([`crate::auth`] lists them as open) under a strict
//! Content-Security-Policy (scripts and styles from this origin only).

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's routes: `/`, `/console/app.js`, `/console/app.css`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/console/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
}
