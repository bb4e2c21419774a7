//! The extractor that authenticates a Twilio webhook before anything reads it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;

use crate::config::{PublicBaseUrl, TwilioWebhookConfig};
use crate::http::ApiError;
use crate::twilio::SignatureValidator;
use crate::webhooks::{VerifiedWebhook, WebhookError};

/// Twilio webhook bodies are small; anything larger is refused with 413.
pub const WEBHOOK_BODY_LIMIT: usize = 64 * 1024;

/// What a webhook function needs to authenticate Twilio.
#[derive(Debug)]
pub struct WebhookAuth {
    pub public_base_url: PublicBaseUrl,
    pub validator: SignatureValidator,
}

impl WebhookAuth {
    pub fn from_config(config: &TwilioWebhookConfig) -> Self {
        Self {
            public_base_url: config.public_base_url.clone(),
            validator: SignatureValidator::new(config.auth_tokens.clone()),
        }
    }
}

impl<S> FromRequest<S> for VerifiedWebhook
where
    Arc<WebhookAuth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<WebhookAuth>::from_ref(state);
        let headers = req.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let signature = header("x-twilio-signature")
            .ok_or_else(|| ApiError::forbidden("missing X-Twilio-Signature"))?;
        let content_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let idempotency_token = header("i-twilio-idempotency-token");
        let request_uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let url = auth.public_base_url.join(&request_uri);

        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "payload_too_large",
                    format!("body over {WEBHOOK_BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::new(status, "bad_request", rejection.body_text())
            }
        })?;
        let raw_body = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("body", "body is not UTF-8"))?;

        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let params = match mime.as_str() {
            "application/x-www-form-urlencoded" | "" => {
                let params: Vec<(String, String)> = form_urlencoded::parse(raw_body.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if !auth.validator.validate_form(&url, &params, &signature) {
                    return Err(ApiError::forbidden("invalid X-Twilio-Signature"));
                }
                params
            }
            "application/json" => {
                if !auth
                    .validator
                    .validate_json(&url, raw_body.as_bytes(), &signature)
                {
                    return Err(ApiError::forbidden("invalid X-Twilio-Signature"));
                }
                json_params(&raw_body)?
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("content type {other:?} is not a Twilio webhook"),
                ));
            }
        };
        Ok(VerifiedWebhook {
            request_uri,
            content_type,
            raw_body,
            params,
            idempotency_token,
        })
    }
}

/// A JSON webhook's top-level fields as name/value pairs.
fn json_params(body: &str) -> Result<Vec<(String, String)>, ApiError> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request("body", format!("body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request("body", "body must be a JSON object"));
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::MissingField(field) => ApiError::bad_request(field, e.to_string()),
            WebhookError::InvalidField { field, .. } => ApiError::bad_request(field, e.to_string()),
            WebhookError::Database(db) => db.into(),
            WebhookError::Unavailable(_) => ApiError::unavailable(e),
        }
    }
}
