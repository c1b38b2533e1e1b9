//! `POST /v1/find`: localise logos anywhere in an image and identify each region, the pipeline
//! `POST /v1/check` shares (`AppState::find_in`).

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use proxima_data::DecodeOptions;
use proxima_detect::FindAnswer;
use proxima_detect::find::{FindOptions, answer as find_answer, crop, downscale, regions as find_regions};
use proxima_index::Gallery;
use serde::Deserialize;

use super::multipart::image_body;
use super::{ApiError, AppState, Shared};
use crate::worker::SubmitError;

/// Query parameters of `/v1/find`.
#[derive(Debug, Deserialize)]
pub struct FindParams {
    /// Also identify the whole image as one region.
    #[serde(default)]
    pub whole_image: bool,
}

/// `POST /v1/find`: localise logos anywhere in the image, identify each region (same answer as `proxima find`).
pub(super) async fn find(State(s): Shared, q: Result<Query<FindParams>, axum::extract::rejection::QueryRejection>, req: Request) -> Result<Json<FindAnswer>, ApiError> {
    let q = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    s.check_localiser()?;
    s.timed(async {
        let bytes = image_body(req, s.config.max_body_bytes).await?;
        Ok(Json(s.find_in(bytes, q.whole_image).await?.0))
    })
    .await
}

impl AppState {
    /// 501 when this server has no localiser (`/v1/find`, `/v1/check`).
    pub(crate) fn check_localiser(&self) -> Result<(), ApiError> {
        match self.localiser {
            Some(_) => Ok(()),
            None => Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "this server has no localiser: start it with `proxima serve --localiser DIR`")),
        }
    }

    /// Find's answer for an uploaded image, and the gallery snapshot it was answered from.
    pub(crate) async fn find_in(self: &Arc<Self>, bytes: Bytes, whole_image: bool) -> Result<(FindAnswer, Arc<Gallery>), ApiError> {
        let s = self;
        let loc = s.localiser.clone().ok_or_else(|| s.check_localiser().unwrap_err())?;
        let opts = FindOptions { whole_image, ..Default::default() };
        let (img, scale) = {
            let _slot = s.decode_slots.acquire().await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
            let (max_pixels, o) = (s.config.max_pixels, opts.clone());
            tokio::task::spawn_blocking(move || {
                let dec = DecodeOptions { max_pixels, ..Default::default() };
                let img = proxima_data::decode_bytes(&bytes, Path::new("upload"), &dec)?;
                let (img, scale) = downscale(&img, &o)?;
                Ok::<_, ApiError>((img.into_owned(), scale))
            })
            .await
            .map_err(|_| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the image could not be processed (decoder failure)"))??
        };
        let rx = loc.submit(img.clone()).map_err(|e| match e {
            SubmitError::Full => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "the localiser queue is full; retry later");
                e.retry_after = Some(1);
                e
            }
            SubmitError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the localiser has stopped"),
        })?;
        let dets = rx
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the localiser has stopped"))?
            .map_err(|e| ApiError::from(e).context("localisation failed"))?;
        let regions = find_regions(&dets, &img, &opts);
        let g = s.gallery();
        let t = s.threshold(&g)?;
        if regions.is_empty() {
            return Ok((find_answer("upload", &[], &[], scale, &g, t, opts.score_weight)?, g));
        }
        let size = s.info.image_size;
        let per = 3 * (size as usize) * (size as usize);
        let mut pixels = vec![0f32; per * regions.len()];
        for (i, (b, _)) in regions.iter().enumerate() {
            let c = crop(&img, *b, opts.padding);
            s.pipeline.run_into(&c, 0, 0, [size, size], &mut pixels[i * per..(i + 1) * per]);
        }
        let emb = s.embed(pixels, regions.len()).await?;
        let w = opts.score_weight;
        let g2 = g.clone();
        let ans = tokio::task::spawn_blocking(move || find_answer("upload", &regions, &emb, scale, &g2, t, w))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search failed: {e}")))??;
        Ok((ans, g))
    }
}
