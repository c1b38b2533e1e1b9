//! `POST /v1/identify` (which brand is this logo?) and `POST /v1/compare` (are these two logos the same?).

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use proxima_index::{BrandMatch, Decision, cosine};
use serde::{Deserialize, Serialize};

use super::multipart::{image_body, is_multipart, read_parts, take_part};
use super::{ApiError, Shared};

/// Query parameters of `/v1/identify`.
#[derive(Debug, Deserialize)]
pub struct IdentifyParams {
    /// Brands to return (default from the configuration).
    pub top_k: Option<usize>,
}

/// The answer of `/v1/identify` (and of `proxima query --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentifyAnswer {
    /// `known` (with `brand` and `similarity`) or `unknown` (with `best_similarity`, and
    /// `background_similarity` when the image is nearer to the gallery's background examples
    /// than to any brand: not a logo). Never names the background as the brand.
    #[serde(flatten)]
    pub decision: Decision,
    /// Threshold of the decision.
    pub threshold: f32,
    /// Best brands, most similar first (never the background).
    pub candidates: Vec<BrandMatch>,
}

/// The answer of `/v1/compare` (and of `proxima match --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareAnswer {
    /// Cosine similarity of the two embeddings.
    pub similarity: f32,
    /// Threshold of the decision.
    pub threshold: f32,
    /// `same` when `similarity >= threshold`, else `different`.
    pub decision: String,
}

pub(super) async fn identify(
    State(s): Shared,
    q: Result<Query<IdentifyParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Json<IdentifyAnswer>, ApiError> {
    let q = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    let k = q.top_k.unwrap_or(s.config.default_top_k);
    if k == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "top_k must be >= 1"));
    }
    s.timed(async {
        let bytes = image_body(req, s.config.max_body_bytes).await?;
        let pixels = s.prepare(vec![("upload".into(), bytes)]).await?;
        let emb = s.embed(pixels, 1).await?;
        let g = s.gallery();
        let t = s.threshold(&g)?;
        let id = tokio::task::spawn_blocking(move || g.identify_with_threshold(&emb, k, t))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search failed: {e}")))??;
        Ok(Json(IdentifyAnswer { decision: id.decision, threshold: id.threshold, candidates: id.candidates }))
    })
    .await
}

pub(super) async fn compare(State(s): Shared, req: Request) -> Result<Json<CompareAnswer>, ApiError> {
    s.timed(async {
        if !is_multipart(&req) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data with fields a and b"));
        }
        let mut parts = read_parts(req, 8, s.config.max_body_bytes).await?;
        let a = take_part(&mut parts, "a")?;
        let b = take_part(&mut parts, "b")?;
        let pixels = s.prepare(vec![("a".into(), a.bytes), ("b".into(), b.bytes)]).await?;
        let emb = s.embed(pixels, 2).await?;
        let d = emb.len() / 2;
        let similarity = cosine(&emb[..d], &emb[d..]);
        let threshold = s.threshold(&s.gallery())?;
        let decision = if similarity >= threshold { "same" } else { "different" }.to_string();
        Ok(Json(CompareAnswer { similarity, threshold, decision }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_answer_flattens_the_decision() {
        let a = IdentifyAnswer { decision: Decision::Unknown { best_similarity: 0.25, background_similarity: None }, threshold: 0.5, candidates: vec![] };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["decision"], "unknown");
        assert_eq!(v["best_similarity"], 0.25);
        assert_eq!(v["threshold"], 0.5);
        assert!(v.get("background_similarity").is_none(), "absent unless the background was nearer: {v}");
        let a = IdentifyAnswer { decision: Decision::Unknown { best_similarity: 0.25, background_similarity: Some(0.75) }, threshold: 0.5, candidates: vec![] };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!((v["decision"].as_str(), v["background_similarity"].as_f64()), (Some("unknown"), Some(0.75)));
        let back: IdentifyAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(back.decision, a.decision);
    }
}
