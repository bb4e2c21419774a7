//! HTTP plumbing shared by every function: the error type, the Twilio
//! webhook extractor, health checks and serving on `$PORT`.

pub mod auth;
pub mod error;
pub mod pagination;
pub mod server;
pub mod webhook;

pub use error::ApiError;
pub use webhook::WebhookAuth;

/// 415 unless the body says it is JSON (`application/json` or `…+json`).
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a JSON body with Content-Type: application/json",
        ))
    }
}
