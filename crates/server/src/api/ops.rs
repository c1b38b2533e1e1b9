//! `GET /healthz`, `GET /metrics`, the 404 of unknown routes, and the per-route request accounting.

use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Shared};
use crate::metrics::Gauges;

pub(super) async fn healthz(State(s): Shared) -> Json<serde_json::Value> {
    let g = s.gallery();
    Json(serde_json::json!({ "status": "ok", "model_fingerprint": s.info.fingerprint, "brands": g.num_brands(), "rows": g.len(), "queue_depth": s.worker.depth() }))
}

pub(super) async fn metrics(State(s): Shared) -> Response {
    let g = s.gallery();
    let text = s.metrics.render(&Gauges { queue_depth: s.worker.depth(), queue_capacity: s.config.batch.queue_capacity, brands: g.num_brands(), rows: g.len() });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see /v1/identify, /v1/find, /v1/check, /v1/compare, /v1/gallery, /healthz, /metrics")
}

pub(super) async fn track(State(s): Shared, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let t = Instant::now();
    let resp = next.run(req).await;
    s.metrics.record_request(&route, resp.status().as_u16(), t.elapsed());
    resp
}
