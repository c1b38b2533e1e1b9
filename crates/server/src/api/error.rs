//! `ApiError` (a status and `{"error": message}`) and the status of every error the library
//! crates return.
//!
//! Why exhaustive `From` impls: the status is the client's only way to tell "fix your input"
//! (4xx) from "our side failed" (5xx), so each variant of `DataError`, `IndexError`, `EvalError`,
//! `DbError` and `DetectError` is mapped here by name, without a `_ =>` arm: a variant added to one
//! of those crates fails to compile until someone decides its status. Handlers use `?`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proxima_data::DataError;
use proxima_detect::DetectError;
use proxima_eval::EvalError;
use proxima_gallery_db::DbError;
use proxima_index::IndexError;

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable reason.
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None }
    }

    /// The same error, its message prefixed with `what: `.
    pub fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// An image (or other file) that failed: 413 over the pixel limit, 415 bytes that are no image
/// format at all, 422 a recognised but broken or unsupported image; everything else is a file on
/// the server's side (500).
impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        ApiError::new(data_status(&e), e.to_string())
    }
}

fn data_status(e: &DataError) -> StatusCode {
    match e {
        DataError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DataError::UnknownFormat { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        DataError::Decode { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        DataError::Io { .. }
        | DataError::Encode { .. }
        | DataError::Parse { .. }
        | DataError::Json { .. }
        | DataError::Config(_)
        | DataError::UnknownClass(_)
        | DataError::ClassTooSmall { .. }
        | DataError::Invalid(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A gallery error: a bad brand name 400, an unknown brand 404, a gallery with nothing to search
/// 409, an embedding with no direction (non-finite or zero) 422; a broken gallery file, another
/// model's gallery or an inconsistent call is the server's (500).
impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        ApiError::new(index_status(&e), e.to_string())
    }
}

fn index_status(e: &IndexError) -> StatusCode {
    match e {
        IndexError::InvalidBrand { .. } => StatusCode::BAD_REQUEST,
        IndexError::UnknownBrand(_) => StatusCode::NOT_FOUND,
        IndexError::EmptyGallery | IndexError::OnlyBackground => StatusCode::CONFLICT,
        IndexError::ZeroVector { .. } | IndexError::NonFinite { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        IndexError::Eval(e) => eval_status(e),
        IndexError::Io { .. }
        | IndexError::BadMagic { .. }
        | IndexError::UnsupportedVersion { .. }
        | IndexError::LengthMismatch { .. }
        | IndexError::ChecksumMismatch { .. }
        | IndexError::BadHeader { .. }
        | IndexError::FingerprintMismatch { .. }
        | IndexError::DimensionMismatch { .. }
        | IndexError::EmptyInput { .. }
        | IndexError::CountMismatch { .. }
        | IndexError::NonUtf8Path(_)
        | IndexError::NotCalibrated
        | IndexError::InvalidParameter { .. }
        | IndexError::UnsupportedMetric(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An evaluation error inside a search: an embedding with no direction 422, else the server's
/// (shapes and parameters are the server's own).
impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        ApiError::new(eval_status(&e), e.to_string())
    }
}

fn eval_status(e: &EvalError) -> StatusCode {
    match e {
        EvalError::NonFinite { .. } | EvalError::NormOverflow { .. } | EvalError::ZeroVector { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        EvalError::Empty { .. }
        | EvalError::RaggedRows { .. }
        | EvalError::ZeroDimension { .. }
        | EvalError::DimensionMismatch { .. }
        | EvalError::LabelCountMismatch { .. }
        | EvalError::InvalidK { .. }
        | EvalError::SingleClass { .. }
        | EvalError::NoRetrievableQueries { .. }
        | EvalError::InvalidParameter { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A database gallery's error: 503 while the database is away (nothing was changed; retry), the
/// gallery's own errors as [`IndexError`], else 500.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Index(e) => ApiError::from(e),
            DbError::Unavailable { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; nothing was changed, retry later")),
            DbError::Query { .. } | DbError::Empty { .. } | DbError::Exists { .. } | DbError::Corrupt { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

/// A detection error: an image the detector cannot use is the client's (422), the data, gallery
/// and evaluation errors inside it map as their own; a localiser, model or libtorch failure is
/// the server's (500).
impl From<DetectError> for ApiError {
    fn from(e: DetectError) -> Self {
        let status = match &e {
            DetectError::Input(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DetectError::Data(e) => data_status(e),
            DetectError::Index(e) => index_status(e),
            DetectError::Eval(e) => eval_status(e),
            DetectError::Io { .. }
            | DetectError::Config(_)
            | DetectError::Artifact { .. }
            | DetectError::ModelMismatch { .. }
            | DetectError::Training(_)
            | DetectError::Model(_)
            | DetectError::Report(_)
            | DetectError::Torch(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proxima_data::DecodeOptions;

    use super::*;

    #[test]
    fn decode_failures_map_to_client_statuses() {
        let opts = DecodeOptions { max_pixels: 100, ..Default::default() };
        let garbage = proxima_data::decode_bytes(b"<html>not an image</html>", Path::new("x"), &opts).unwrap_err();
        assert!(matches!(garbage, DataError::UnknownFormat { .. }), "{garbage:?}");
        assert_eq!(ApiError::from(garbage).status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut png = Vec::new();
        image::RgbImage::new(20, 20).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let big = proxima_data::decode_bytes(&png, Path::new("x"), &opts).unwrap_err();
        assert_eq!(ApiError::from(big).status, StatusCode::PAYLOAD_TOO_LARGE);
        let truncated = proxima_data::decode_bytes(&png[..png.len() / 2], Path::new("x"), &DecodeOptions::default()).unwrap_err();
        assert_eq!(ApiError::from(truncated).status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn bad_input_inside_a_detection_is_the_clients() {
        let e = ApiError::from(DetectError::Input("the image is empty (0 pixels)".into()));
        assert_eq!((e.status, e.message.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "the image is empty (0 pixels)"));
        let e = ApiError::from(DetectError::Data(DataError::UnknownFormat { path: "upload".into() }));
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = ApiError::from(DetectError::Index(IndexError::UnknownBrand("acme".into())));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = ApiError::from(DetectError::Config("bad".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::from(DbError::Index(IndexError::InvalidBrand { name: String::new(), reason: "empty" }));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
