//! Cloud Storage "object finalized" events, from either wiring: an Eventarc
//! CloudEvent (`google.cloud.storage.object.v1.finalized`, the object
//! resource as data) or a Pub/Sub notification pushed to us
//! (`eventType=OBJECT_FINALIZE`, `bucketId`, `objectId`, `objectGeneration`).

use serde::{Deserialize, Deserializer};

use super::cloudevent::CloudEvent;
use super::push::PushEnvelope;

/// The CloudEvent type of a new object (or a new generation of one).
pub const OBJECT_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";
/// The Pub/Sub notification event type for the same.
pub const NOTIFICATION_OBJECT_FINALIZE: &str = "OBJECT_FINALIZE";

/// One generation of one object: what an import is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub name: String,
    pub generation: i64,
    pub size: Option<u64>,
    pub content_type: Option<String>,
}

/// What an event asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEvent {
    Finalized(ObjectRef),
    /// Any other event type (deleted, archived, metadata updated): acknowledged, ignored.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event data is not a Cloud Storage object: {0}")]
    Object(String),
    #[error("notification attribute {0} is missing")]
    MissingAttribute(&'static str),
    #[error("notification attribute objectGeneration is not a number: {0:?}")]
    Generation(String),
}

/// The object resource (JSON API v1) carried as event data; only what we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectResource {
    bucket: String,
    name: String,
    #[serde(deserialize_with = "int_or_string")]
    generation: i64,
    #[serde(default, deserialize_with = "opt_int_or_string")]
    size: Option<i64>,
    content_type: Option<String>,
}

impl From<ObjectResource> for ObjectRef {
    fn from(o: ObjectResource) -> Self {
        Self {
            bucket: o.bucket,
            name: o.name,
            generation: o.generation,
            size: o.size.and_then(|s| u64::try_from(s).ok()),
            content_type: o.content_type.filter(|c| !c.is_empty()),
        }
    }
}

impl ObjectEvent {
    pub fn from_cloud_event(event: &CloudEvent) -> Result<Self, EventError> {
        if event.event_type != OBJECT_FINALIZED {
            return Ok(Self::Other(event.event_type.clone()));
        }
        let object: ObjectResource =
            serde_json::from_slice(&event.data).map_err(|e| EventError::Object(e.to_string()))?;
        Ok(Self::Finalized(object.into()))
    }

    pub fn from_push(envelope: &PushEnvelope) -> Result<Self, EventError> {
        let message = &envelope.message;
        let event_type = message
            .attribute("eventType")
            .ok_or(EventError::MissingAttribute("eventType"))?;
        if event_type != NOTIFICATION_OBJECT_FINALIZE {
            return Ok(Self::Other(event_type.to_owned()));
        }
        let attribute = |name: &'static str| {
            message
                .attribute(name)
                .filter(|v| !v.is_empty())
                .ok_or(EventError::MissingAttribute(name))
        };
        let generation_text = attribute("objectGeneration")?;
        let generation = generation_text
            .parse()
            .map_err(|_| EventError::Generation(generation_text.to_owned()))?;
        // With payloadFormat JSON_API_V1 the data is the object resource, with
        // its size and content type; with NONE there is no data.
        let resource = message
            .data()
            .ok()
            .and_then(|d| serde_json::from_slice::<ObjectResource>(&d).ok());
        Ok(Self::Finalized(ObjectRef {
            bucket: attribute("bucketId")?.to_owned(),
            name: attribute("objectId")?.to_owned(),
            generation,
            size: resource
                .as_ref()
                .and_then(|r| r.size)
                .and_then(|s| u64::try_from(s).ok()),
            content_type: resource
                .and_then(|r| r.content_type)
                .filter(|c| !c.is_empty()),
        }))
    }
}

/// The JSON API writes int64 fields as strings; accept numbers too.
fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(i64),
        Text(String),
    }
    match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => Ok(i),
        IntOrString::Text(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, found {s:?}"))),
    }
}

fn opt_int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int_or_string(d).map(Some)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;

    fn cloud_event(event_type: &str, data: &str) -> CloudEvent {
        CloudEvent {
            id: "1".into(),
            source: "//storage.googleapis.com/projects/_/buckets/imports".into(),
            event_type: event_type.into(),
            subject: Some("objects/users.csv".into()),
            time: None,
            data: Bytes::from(data.to_owned()),
        }
    }

    #[test]
    fn finalized_cloud_events_name_the_object_generation() {
        let data = r#"{"kind": "storage#object", "bucket": "imports", "name": "in/users.csv",
            "generation": "1700000000000001", "size": "2048", "contentType": "text/csv"}"#;
        let event = ObjectEvent::from_cloud_event(&cloud_event(OBJECT_FINALIZED, data)).unwrap();
        assert_eq!(
            event,
            ObjectEvent::Finalized(ObjectRef {
                bucket: "imports".into(),
                name: "in/users.csv".into(),
                generation: 1_700_000_000_000_001,
                size: Some(2048),
                content_type: Some("text/csv".into()),
            })
        );
        let deleted = cloud_event("google.cloud.storage.object.v1.deleted", "{}");
        assert_eq!(
            ObjectEvent::from_cloud_event(&deleted).unwrap(),
            ObjectEvent::Other("google.cloud.storage.object.v1.deleted".into())
        );
        let broken = cloud_event(OBJECT_FINALIZED, r#"{"bucket": "imports"}"#);
        assert!(ObjectEvent::from_cloud_event(&broken).is_err());
    }

    #[test]
    fn pubsub_notifications_are_read_from_attributes() {
        let attributes: BTreeMap<String, String> = [
            ("eventType", "OBJECT_FINALIZE"),
            ("bucketId", "imports"),
            ("objectId", "users.json"),
            ("objectGeneration", "7"),
            ("payloadFormat", "JSON_API_V1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let data = br#"{"bucket": "imports", "name": "users.json", "generation": "7", "size": "10", "contentType": "application/json"}"#;
        let envelope = PushEnvelope::wrap("m1", data, attributes.clone());
        let ObjectEvent::Finalized(object) = ObjectEvent::from_push(&envelope).unwrap() else {
            panic!("finalized expected");
        };
        assert_eq!((object.generation, object.size), (7, Some(10)));
        assert_eq!(object.content_type.as_deref(), Some("application/json"));

        let mut deleted = attributes.clone();
        deleted.insert("eventType".into(), "OBJECT_DELETE".into());
        assert_eq!(
            ObjectEvent::from_push(&PushEnvelope::wrap("m2", b"", deleted)).unwrap(),
            ObjectEvent::Other("OBJECT_DELETE".into())
        );
        let mut missing = attributes;
        missing.remove("objectId");
        assert_eq!(
            ObjectEvent::from_push(&PushEnvelope::wrap("m3", b"", missing)).unwrap_err(),
            EventError::MissingAttribute("objectId")
        );
    }
}
