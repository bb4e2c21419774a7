//! The JSON body of a Pub/Sub push request.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// `{"message": {...}, "subscription": "projects/p/subscriptions/s"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelope {
    pub message: PushMessage,
    #[serde(default)]
    pub subscription: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
/// Pub/Sub also sends snake_case copies of `messageId` and `publishTime`; they are ignored.
pub struct PushMessage {
    /// Base64 of the payload; absent for attribute-only messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub attributes: HashMap<String, String>,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_time: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("not a Pub/Sub push envelope: {0}")]
    Envelope(String),
    #[error("message data is not base64")]
    Base64,
    #[error("message data is not the expected JSON: {0}")]
    Payload(String),
}

impl PushEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self, PushError> {
        serde_json::from_slice(body).map_err(|e| PushError::Envelope(e.to_string()))
    }

    /// The decoded `data` bytes (empty when absent).
    pub fn data(&self) -> Result<Vec<u8>, PushError> {
        match &self.message.data {
            None => Ok(vec![]),
            Some(d) => STANDARD.decode(d).map_err(|_| PushError::Base64),
        }
    }

    /// The payload as JSON of type `T`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, PushError> {
        serde_json::from_slice(&self.data()?).map_err(|e| PushError::Payload(e.to_string()))
    }

    /// An envelope as Pub/Sub would push it, for the in-process queue and tests.
    pub fn wrap(payload: &[u8], message_id: String, subscription: &str) -> Self {
        Self {
            message: PushMessage {
                data: Some(STANDARD.encode(payload)),
                attributes: HashMap::new(),
                message_id,
                publish_time: Some(chrono::Utc::now().to_rfc3339()),
            },
            subscription: subscription.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_pub_sub_pushes() {
        let body = br#"{"message":{"attributes":{"k":"v"},"data":"eyJtZXNzYWdlX2lkIjoiYWJjIn0=","messageId":"136969346945","message_id":"136969346945","publishTime":"2014-10-02T15:01:23.045123456Z","publish_time":"2014-10-02T15:01:23.045123456Z"},"subscription":"projects/myproject/subscriptions/mysubscription"}"#;
        let e = PushEnvelope::parse(body).unwrap();
        assert_eq!(e.message.message_id, "136969346945");
        assert_eq!(e.message.attributes["k"], "v");
        let v: serde_json::Value = e.payload().unwrap();
        assert_eq!(v["message_id"], "abc");
    }

    #[test]
    fn malformed_envelopes_say_why() {
        assert!(matches!(
            PushEnvelope::parse(b"{}"),
            Err(PushError::Envelope(_))
        ));
        let bad = PushEnvelope::parse(br#"{"message":{"data":"!!","messageId":"1"}}"#).unwrap();
        assert!(matches!(bad.data(), Err(PushError::Base64)));
        let round = PushEnvelope::wrap(b"{\"a\":1}", "7".into(), "s");
        let again = PushEnvelope::parse(&serde_json::to_vec(&round).unwrap()).unwrap();
        assert_eq!(again.data().unwrap(), b"{\"a\":1}");
    }
}
