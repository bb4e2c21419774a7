//! CloudEvents as Eventarc delivers them to Cloud Run: binary mode (the
//! attributes in `ce-*` headers, the data as the body), and structured mode
//! (`application/cloudevents+json`) for senders that use it.

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    #[error("not a CloudEvent: header {0} is missing")]
    MissingHeader(&'static str),
    #[error("not a CloudEvent: structured event is not valid JSON: {0}")]
    Structured(String),
}

#[derive(Deserialize)]
struct Structured {
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    subject: Option<String>,
    time: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
}

impl CloudEvent {
    pub fn from_request(headers: &HeaderMap, body: Bytes) -> Result<Self, CloudEventError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let structured = header(CONTENT_TYPE.as_str())
            .is_some_and(|c| c.starts_with("application/cloudevents+json"));
        if structured {
            let event: Structured = serde_json::from_slice(&body)
                .map_err(|e| CloudEventError::Structured(e.to_string()))?;
            return Ok(Self {
                id: event.id,
                source: event.source,
                event_type: event.event_type,
                subject: event.subject,
                time: event.time,
                data: Bytes::from(event.data.to_string()),
            });
        }
        let required =
            |name: &'static str| header(name).ok_or(CloudEventError::MissingHeader(name));
        Ok(Self {
            id: required("ce-id")?,
            source: required("ce-source")?,
            event_type: required("ce-type")?,
            subject: header("ce-subject"),
            time: header("ce-time"),
            data: body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_structured_modes() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-id", "42".parse().unwrap());
        headers.insert(
            "ce-source",
            "//storage.googleapis.com/projects/_/buckets/b"
                .parse()
                .unwrap(),
        );
        headers.insert(
            "ce-type",
            "google.cloud.storage.object.v1.finalized".parse().unwrap(),
        );
        headers.insert("ce-subject", "objects/a.csv".parse().unwrap());
        let event = CloudEvent::from_request(&headers, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(event.id, "42");
        assert_eq!(event.subject.as_deref(), Some("objects/a.csv"));

        headers.remove("ce-type");
        assert_eq!(
            CloudEvent::from_request(&headers, Bytes::new())
                .unwrap_err()
                .to_string(),
            "not a CloudEvent: header ce-type is missing"
        );

        let mut structured = HeaderMap::new();
        structured.insert(
            CONTENT_TYPE,
            "application/cloudevents+json; charset=utf-8"
                .parse()
                .unwrap(),
        );
        let body =
            br#"{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"a": 1}}"#;
        let event = CloudEvent::from_request(&structured, Bytes::from_static(body)).unwrap();
        assert_eq!(event.event_type, "t");
        assert_eq!(&event.data[..], br#"{"a":1}"#);
    }
}
