//! `GET /v1/gallery` (what is enrolled), `POST /v1/gallery/{brand}` (enrol images) and
//! `DELETE /v1/gallery/{brand}`; every write is serialised, stored, then published.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use proxima_index::{BrandCount, Calibration, Gallery};
use serde::{Deserialize, Serialize};

use super::multipart::{is_multipart, read_parts};
use super::{ApiError, GalleryStore, Shared};
use crate::auth::Caller;

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

pub(super) async fn list(State(s): Shared) -> Json<GalleryInfo> {
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

pub(super) async fn enrol(
    State(s): Shared,
    caller: Option<axum::Extension<Caller>>,
    brand: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let brand = brand.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?.0;
    // The one brand-name rule, before the body is read; the NFC form is what is stored.
    let brand = proxima_index::brand_name::normalize(&brand)?;
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
                let applied = db.lock().await.add_as(&who, &s.gallery(), version.load(Ordering::SeqCst), &brand, &emb, &paths).await?;
                let counts = counts(&applied.gallery);
                s.publish_version(applied.gallery, applied.version);
                (applied.rows, counts)
            }
            GalleryStore::File(path) => {
                let mut g = (*s.gallery()).clone();
                let before = counts(&g).0;
                let added = g.add(&brand, &emb, &names)?;
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

pub(super) async fn remove(
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
                let applied = db.lock().await.remove_as(&who, &s.gallery(), version.load(Ordering::SeqCst), &brand).await?;
                let brands = applied.gallery.num_brands();
                s.publish_version(applied.gallery, applied.version);
                (applied.rows, brands)
            }
            GalleryStore::File(path) => {
                let mut g = (*s.gallery()).clone();
                let stored = g.resolve_brand(&brand).map(|id| g.brands()[id as usize].clone()).unwrap_or_else(|| brand.clone());
                let removed = g.remove(&brand)?;
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

/// Writes `g` to the gallery file atomically and hands it back.
pub(crate) async fn save(path: &Path, g: Gallery) -> Result<Gallery, ApiError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || g.save(&path).map(|()| g))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the gallery: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the gallery (unchanged): {e}")))
}
