//! The envelope a Pub/Sub push subscription POSTs:
//! `{"message": {"data": base64, "attributes": {…}, "messageId": "…", "publishTime": "…"}, "subscription": "…"}`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEnvelope {
    pub message: PushMessage,
    #[serde(default)]
    pub subscription: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "WireMessage")]
pub struct PushMessage {
    /// The payload, base64; absent for a message with attributes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_time: Option<String>,
}

/// Push subscriptions send `messageId` and `publishTime` twice, in camel
/// and snake case; either is enough.
#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(rename = "publishTime")]
    publish_time_camel: Option<String>,
    #[serde(rename = "publish_time")]
    publish_time_snake: Option<String>,
}

impl TryFrom<WireMessage> for PushMessage {
    type Error = &'static str;

    fn try_from(w: WireMessage) -> Result<Self, Self::Error> {
        Ok(Self {
            data: w.data,
            attributes: w.attributes,
            message_id: w
                .message_id_camel
                .or(w.message_id_snake)
                .ok_or("missing field `messageId`")?,
            publish_time: w.publish_time_camel.or(w.publish_time_snake),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("body is not a Pub/Sub push envelope: {0}")]
    Envelope(#[from] serde_json::Error),
    #[error("message data is not base64: {0}")]
    Data(#[from] base64::DecodeError),
    #[error("message data is not the expected JSON: {0}")]
    Payload(String),
}

impl PushEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self, PushError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The message's data as JSON of type `T` (a send task, say).
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, PushError> {
        serde_json::from_slice(&self.message.data()?).map_err(|e| PushError::Payload(e.to_string()))
    }

    /// An envelope as a push subscription would deliver `data` (for the
    /// local stack and tests).
    pub fn wrap(
        message_id: impl Into<String>,
        data: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> Self {
        Self {
            message: PushMessage {
                data: (!data.is_empty()).then(|| STANDARD.encode(data)),
                attributes,
                message_id: message_id.into(),
                publish_time: Some(chrono::Utc::now().to_rfc3339()),
            },
            subscription: String::new(),
        }
    }
}

impl PushMessage {
    /// The decoded payload (empty when there is none).
    pub fn data(&self) -> Result<Vec<u8>, PushError> {
        match self.data.as_deref() {
            None | Some("") => Ok(Vec::new()),
            Some(encoded) => Ok(STANDARD.decode(encoded)?),
        }
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_pubsub_pushes() {
        let body = br#"{"message": {"data": "aGVsbG8=", "attributes": {"k": "v"},
            "messageId": "136969346945", "message_id": "136969346945",
            "publishTime": "2024-01-01T00:00:00Z"}, "subscription": "projects/p/subscriptions/s"}"#;
        let envelope = PushEnvelope::parse(body).unwrap();
        assert_eq!(envelope.message.data().unwrap(), b"hello");
        assert_eq!(envelope.message.attribute("k"), Some("v"));
        assert_eq!(envelope.message.message_id, "136969346945");

        let round = PushEnvelope::wrap("1", b"x", BTreeMap::new());
        let parsed = PushEnvelope::parse(&serde_json::to_vec(&round).unwrap()).unwrap();
        assert_eq!(parsed.message.data().unwrap(), b"x");
    }

    #[test]
    fn bad_envelopes_say_why() {
        let e = PushEnvelope::parse(br#"{"msg": {}}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("body is not a Pub/Sub push envelope: missing field `message`"),
            "{e}"
        );
        let bad = PushEnvelope::parse(br#"{"message": {"data": "%%", "messageId": "1"}}"#).unwrap();
        assert!(bad.message.data().is_err());
    }
}
