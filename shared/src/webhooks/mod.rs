//! The flows behind Twilio's two webhooks: from an authenticated request to
//! committed rows. Raw first: the request is stored exactly as received in the
//! same transaction (or statement) as what it changes.

pub mod group_commit;
pub mod inbound;
pub mod status;

use crate::store::webhook_events::NewWebhookEvent;

/// A Twilio request whose signature has been checked.
#[derive(Debug, Clone)]
pub struct VerifiedWebhook {
    /// Path and query as requested (`/webhooks/status?mid=…`).
    pub request_uri: String,
    pub content_type: String,
    pub raw_body: String,
    pub params: Vec<(String, String)>,
    /// `I-Twilio-Idempotency-Token`: the same for every retry of one webhook.
    pub idempotency_token: Option<String>,
}

impl VerifiedWebhook {
    /// The first value of a parameter, with an empty value treated as absent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `raw:<sha256 of the body>`: the dedupe key of a request without a SID.
    pub fn body_digest(&self) -> String {
        use sha2::Digest;
        format!(
            "raw:{}",
            hex::encode(sha2::Sha256::digest(self.raw_body.as_bytes()))
        )
    }

    /// The first of several names Twilio uses for one field (`MessageSid`, `SmsSid`).
    pub fn required(&self, names: &[&'static str]) -> Result<&str, WebhookError> {
        names
            .iter()
            .find_map(|n| self.param(n))
            .ok_or(WebhookError::MissingField(names[0]))
    }

    /// A parameter of the request's query string (our own, such as `mid`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.request_uri.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The parameters as a JSON object; a repeated name keeps all its values in an array.
    pub fn params_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.params {
            match map.get_mut(k) {
                None => {
                    map.insert(k.clone(), v.clone().into());
                }
                Some(serde_json::Value::Array(values)) => values.push(v.clone().into()),
                Some(existing) => {
                    let first = existing.take();
                    *existing = serde_json::Value::Array(vec![first, v.clone().into()]);
                }
            }
        }
        serde_json::Value::Object(map)
    }

    pub(crate) fn event<'a>(
        &'a self,
        kind: &'static str,
        dedupe_key: &'a str,
        message_sid: Option<&'a str>,
        params: &'a serde_json::Value,
    ) -> NewWebhookEvent<'a> {
        NewWebhookEvent {
            kind,
            dedupe_key,
            idempotency_token: self.idempotency_token.as_deref(),
            message_sid,
            request_uri: &self.request_uri,
            content_type: &self.content_type,
            raw_body: &self.raw_body,
            params,
        }
    }
}

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("missing required field {0}")]
    MissingField(&'static str),
    #[error("field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The request was not written and can be retried (the group commit's
    /// writer is gone).
    #[error("{0}")]
    Unavailable(&'static str),
}
