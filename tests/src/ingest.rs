//! Helpers for the ingest function: its config, a local inbox of files, and
//! the storage events Eventarc and Pub/Sub deliver.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use shared::config::Env;
use shared::gcp::objects::LocalObjects;
use shared::gcp::{ObjectRef, ObjectSource, PushEnvelope};
use sqlx::PgPool;

/// The bucket the test ingest function imports from.
pub const IMPORT_BUCKET: &str = "imports-test";

/// The ingest config tests use, with `extra` variables on top.
pub fn ingest_config(extra: &[(&str, &str)]) -> ingest::Config {
    let mut vars = vec![
        ("DATABASE_URL", "postgres://unused@127.0.0.1/unused"),
        ("IMPORT_BUCKET", IMPORT_BUCKET),
        ("DEFAULT_REGION", "US"),
    ];
    vars.extend_from_slice(extra);
    ingest::Config::from_env(&Env::from_pairs(vars)).expect("test ingest config is valid")
}

/// The ingest router reading objects from `objects`.
pub fn ingest_router(
    db: PgPool,
    config: &ingest::Config,
    objects: Arc<dyn ObjectSource>,
) -> Router {
    ingest::router(ingest::AppState::with_objects(db, config, objects))
}

/// A folder standing in for the bucket: files put there become objects.
pub struct Inbox {
    pub dir: PathBuf,
    generation: AtomicI64,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ingest-inbox-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create inbox");
        Self {
            dir,
            generation: AtomicI64::new(1_700_000_000_000_000),
        }
    }

    pub fn objects(&self) -> Arc<dyn ObjectSource> {
        Arc::new(LocalObjects::new(self.dir.clone()))
    }

    /// Writes a file (a new generation of the object each time).
    pub fn put(&self, name: &str, data: impl AsRef<[u8]>) -> ObjectRef {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, data.as_ref()).expect("write object");
        ObjectRef {
            bucket: IMPORT_BUCKET.to_owned(),
            name: name.to_owned(),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
            size: Some(data.as_ref().len() as u64),
            content_type: None,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The object resource Cloud Storage puts in its events.
pub fn object_resource(object: &ObjectRef) -> serde_json::Value {
    let mut resource = serde_json::json!({
        "kind": "storage#object",
        "id": format!("{}/{}/{}", object.bucket, object.name, object.generation),
        "bucket": object.bucket,
        "name": object.name,
        "generation": object.generation.to_string(),
        "metageneration": "1",
    });
    if let Some(size) = object.size {
        resource["size"] = size.to_string().into();
    }
    if let Some(content_type) = &object.content_type {
        resource["contentType"] = content_type.as_str().into();
    }
    resource
}

/// A binary-mode CloudEvent as Eventarc POSTs it to `/`.
pub fn cloud_event(event_type: &str, object: &ObjectRef) -> Request<Body> {
    Request::post("/")
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", uuid::Uuid::new_v4().to_string())
        .header(
            "ce-source",
            format!(
                "//storage.googleapis.com/projects/_/buckets/{}",
                object.bucket
            ),
        )
        .header("ce-type", event_type)
        .header("ce-subject", format!("objects/{}", object.name))
        .header("ce-time", chrono::Utc::now().to_rfc3339())
        .body(Body::from(object_resource(object).to_string()))
        .unwrap()
}

/// A finalized-object CloudEvent.
pub fn finalized(object: &ObjectRef) -> Request<Body> {
    cloud_event(shared::gcp::storage_event::OBJECT_FINALIZED, object)
}

/// A Cloud Storage Pub/Sub notification, pushed to `/pubsub/push`.
pub fn notification(event_type: &str, object: &ObjectRef) -> Request<Body> {
    let attributes: BTreeMap<String, String> = [
        ("eventType", event_type.to_owned()),
        ("bucketId", object.bucket.clone()),
        ("objectId", object.name.clone()),
        ("objectGeneration", object.generation.to_string()),
        ("payloadFormat", "JSON_API_V1".to_owned()),
        (
            "notificationConfig",
            "projects/_/buckets/b/notificationConfigs/1".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let envelope = PushEnvelope::wrap(
        uuid::Uuid::new_v4().to_string(),
        object_resource(object).to_string().as_bytes(),
        attributes,
    );
    Request::post("/pubsub/push")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&envelope).unwrap()))
        .unwrap()
}
