//! Request bodies: multipart parts, a raw image or its `image` part, and the 413 that names the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};

use super::ApiError;

/// One multipart part: field name, file name (if any), bytes.
pub(crate) struct Part {
    pub(crate) field: String,
    pub(crate) file_name: Option<String>,
    pub(crate) bytes: Bytes,
}

pub(crate) fn is_multipart(req: &Request) -> bool {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// An error reading the body; a 413 names the configured limit.
fn body_error(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, format!("request body over the limit of {limit} bytes ({text})"))
    } else {
        ApiError::new(status, text)
    }
}

/// Reads every part of a multipart body (at most `max_parts`, at most `limit` bytes in all).
pub(crate) async fn read_parts(req: Request, max_parts: usize, limit: usize) -> Result<Vec<Part>, ApiError> {
    let mut mp = Multipart::from_request(req, &()).await.map_err(|r| body_error(r.status(), r.body_text(), limit))?;
    let mut parts = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(body_error(e.status(), format!("reading the multipart body: {}", e.body_text()), limit)),
        };
        if parts.len() == max_parts {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("too many parts: at most {max_parts} images per request")));
        }
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(|e| body_error(e.status(), format!("reading part {name:?}: {}", e.body_text()), limit))?;
        parts.push(Part { field: name, file_name, bytes });
    }
    Ok(parts)
}

pub(crate) fn take_part(parts: &mut Vec<Part>, name: &str) -> Result<Part, ApiError> {
    let i = parts.iter().position(|p| p.field == name).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("multipart field {name:?} is missing")))?;
    Ok(parts.swap_remove(i))
}

/// The body of `/v1/identify`: a raw image, or the multipart field `image`.
pub(crate) async fn image_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let bytes = if is_multipart(&req) {
        take_part(&mut read_parts(req, 8, limit).await?, "image")?.bytes
    } else {
        Bytes::from_request(req, &()).await.map_err(|r| body_error(r.status(), format!("reading the body: {}", r.body_text()), limit))?
    };
    if bytes.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty body: send the image bytes, or multipart/form-data with a field named image"));
    }
    Ok(bytes)
}
