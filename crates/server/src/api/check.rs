//! `POST /v1/check` (is this page impersonating a brand?) and `PUT /v1/gallery/{brand}/domains`.
//!
//! Why beside find: a check is find on the screenshot plus the page's URL against the domains of
//! the brands found, answered from the same gallery snapshot as find's regions (so a brand enrolled
//! or given domains mid-request can't mix two galleries in one answer), with the same answer as
//! `proxima check` (`proxima_detect::check_answer`). A brand's domains are a gallery write like
//! enrolment: serialised, stored (file rewritten atomically, or one database transaction) and only
//! then published.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use proxima_detect::{CheckAnswer, check_answer};
use proxima_domain::{Domain, PageHost};
use serde::{Deserialize, Serialize};

use super::gallery::save;
use super::multipart::{is_multipart, read_parts, take_part};
use super::{ApiError, AppState, FindParams, GalleryStore};

/// `POST /v1/check`: multipart `image` (the page's screenshot) and `url` (the page's URL).
pub(crate) async fn check(
    State(s): State<Arc<AppState>>,
    q: Result<Query<FindParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Json<CheckAnswer>, ApiError> {
    let q = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    s.check_localiser()?;
    s.timed(async {
        if !is_multipart(&req) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data with the fields image (the screenshot) and url (the page's URL)"));
        }
        let mut parts = read_parts(req, 8, s.config.max_body_bytes).await?;
        let url = take_part(&mut parts, "url")?;
        let url = std::str::from_utf8(&url.bytes).map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the url field is not UTF-8 text"))?;
        // The URL is read before the image is decoded: a bad one costs nothing.
        let page = PageHost::from_url(url).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let image = take_part(&mut parts, "image")?;
        if image.bytes.is_empty() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "image: empty (0 bytes)"));
        }
        let (found, gallery) = s.find_in(image.bytes, q.whole_image).await?;
        Ok(Json(check_answer(found, &page, &gallery)))
    })
    .await
}

/// The body of `PUT /v1/gallery/{brand}/domains`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainsBody {
    /// The brand's legitimate domains (replacing the ones it has; empty removes them).
    pub domains: Vec<String>,
}

/// The answer of `PUT /v1/gallery/{brand}/domains`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DomainsAnswer {
    /// The brand.
    pub brand: String,
    /// Its domains as stored (registrable, sorted).
    pub domains: Vec<Domain>,
}

/// `PUT /v1/gallery/{brand}/domains`: replaces an enrolled brand's legitimate domains.
pub(crate) async fn set_domains(
    State(s): State<Arc<AppState>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    brand: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<Json<DomainsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DomainsAnswer>, ApiError> {
    let brand = brand.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?.0;
    let Json(body) = body.map_err(|r| ApiError::new(r.status(), format!("{}; send {{\"domains\": [\"brand.com\", …]}}", r.body_text())))?;
    let domains = body.domains.iter().map(|d| Domain::parse(d)).collect::<Result<Vec<_>, _>>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let who = caller.map_or_else(|| crate::auth::ANONYMOUS.to_string(), |c| c.0.id);
    s.timed(async {
        let _w = s.writer.lock().await;
        let stored = match s.store() {
            GalleryStore::Db { db, version } => {
                let applied = db.lock().await.set_domains_as(&who, &s.gallery(), version.load(Ordering::SeqCst), &brand, &domains).await?;
                let stored = applied.gallery.domains(&brand).to_vec();
                s.publish_version(applied.gallery, applied.version);
                stored
            }
            GalleryStore::File(path) => {
                let mut g = (*s.gallery()).clone();
                let n = g.set_domains(&brand, &domains)?.len();
                let rows = g.list().into_iter().find(|b| b.brand == brand).map_or(0, |b| b.rows);
                // Logged and synced before the gallery is replaced (see crate::audit).
                crate::audit::record(&s, &who, "domains", &brand, n, rows).await?;
                let g = crate::audit::unless_saved(&s, &brand, rows, save(path, g).await).await?;
                let stored = g.domains(&brand).to_vec();
                s.publish(g);
                stored
            }
        };
        Ok(Json(DomainsAnswer { brand: brand.clone(), domains: stored }))
    })
    .await
}
