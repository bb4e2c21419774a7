//! `ingest`: turns each user file dropped into the import bucket into users.
//!
//! Eventarc CloudEvent (`POST /`) or Pub/Sub notification (`POST /pubsub/push`)
//! → claim the import of that object generation → stream the object through
//! the reader into a staging table → merge into `users` in one transaction →
//! rejects with their line numbers in `import_rejects`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use shared::config::{self, ConfigError, DatabaseConfig, Env};
use shared::domain::Region;
use shared::gcp::{CloudEvent, ObjectEvent, ObjectSource, ObjectsConfig, PushEnvelope};
use shared::http::ApiError;
use shared::import::run::{DEFAULT_MAX_BYTES, ImportSettings, Importer, Outcome};
use shared::store::imports::Import;
use sqlx::PgPool;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "IMPORT_BUCKET"];

/// Events are small JSON documents.
const EVENT_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub database: DatabaseConfig,
    /// `IMPORT_BUCKET`: events for other buckets are acknowledged and ignored.
    pub import_bucket: String,
    pub objects: ObjectsConfig,
    pub default_region: Option<Region>,
    /// `MAX_IMPORT_BYTES`: larger files fail their import (default 2 GiB).
    pub max_import_bytes: u64,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_import_bytes = env.or("MAX_IMPORT_BYTES", DEFAULT_MAX_BYTES)?;
        if max_import_bytes == 0 {
            return Err(ConfigError::new("MAX_IMPORT_BYTES", "must be above 0"));
        }
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            import_bucket: env.required("IMPORT_BUCKET")?,
            objects: ObjectsConfig::from_env(env)?,
            default_region: config::default_region(env)?,
            max_import_bytes,
            gcp_project: config::gcp_project(env),
        })
    }

    pub fn import_settings(&self) -> ImportSettings {
        ImportSettings {
            default_region: self.default_region,
            max_bytes: self.max_import_bytes,
            ..ImportSettings::default()
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub importer: Importer,
    pub bucket: Arc<str>,
}

impl AppState {
    /// Builds the object source the config names (the Cloud Storage client, or a folder).
    pub async fn new(db: PgPool, config: &Config) -> anyhow::Result<Self> {
        let objects = config.objects.build().await?;
        Ok(Self::with_objects(db, config, objects))
    }

    pub fn with_objects(db: PgPool, config: &Config, objects: Arc<dyn ObjectSource>) -> Self {
        Self {
            importer: Importer::new(db, objects, config.import_settings()),
            bucket: config.import_bucket.as_str().into(),
        }
    }
}

/// The function as its binary serves it (without the health routes, which
/// the server adds): what the local stack composes.
pub async fn app(config: &Config, db: PgPool) -> anyhow::Result<Router> {
    Ok(router(AppState::new(db, config).await?))
}

/// `POST /` (Eventarc CloudEvent) and `POST /pubsub/push` (Cloud Storage
/// notification through a Pub/Sub push subscription).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(cloud_event))
        .route("/pubsub/push", post(pubsub_push))
        .layer(DefaultBodyLimit::max(EVENT_BODY_LIMIT))
        .with_state(state)
}

async fn cloud_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let event = CloudEvent::from_request(&headers, body)
        .map_err(|e| ApiError::bad_request("ce-type", e.to_string()))?;
    tracing::info!(ce_id = %event.id, ce_type = %event.event_type, "storage event");
    let event = ObjectEvent::from_cloud_event(&event)
        .map_err(|e| ApiError::bad_request("data", e.to_string()))?;
    handle(&state, event).await
}

async fn pubsub_push(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let envelope =
        PushEnvelope::parse(&body).map_err(|e| ApiError::bad_request("message", e.to_string()))?;
    tracing::info!(message_id = %envelope.message.message_id, "storage notification");
    let event = ObjectEvent::from_push(&envelope)
        .map_err(|e| ApiError::bad_request("message.attributes", e.to_string()))?;
    handle(&state, event).await
}

/// Acknowledges (2xx) everything that needs no retry; 409 and 503 ask for a redelivery.
async fn handle(state: &AppState, event: ObjectEvent) -> Result<Response, ApiError> {
    let object = match event {
        ObjectEvent::Other(event_type) => {
            return Ok(ignored(format!(
                "event type {event_type} is not a new object"
            )));
        }
        ObjectEvent::Finalized(object) => object,
    };
    if object.bucket != *state.bucket {
        tracing::warn!(bucket = %object.bucket, "event for another bucket ignored");
        return Ok(ignored(format!(
            "bucket {} is not the import bucket",
            object.bucket
        )));
    }
    if object.name.ends_with('/') {
        return Ok(ignored("a folder placeholder is not a file".into()));
    }
    match state.importer.import(&object).await {
        Ok(Outcome::Finished(import)) => Ok(summary("finished", &import)),
        Ok(Outcome::AlreadyFinished(import)) => Ok(summary("already_finished", &import)),
        Ok(Outcome::InProgress(id)) => Err(ApiError::conflict(format!(
            "import {id} is running on another worker; retry later"
        ))),
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

fn ignored(reason: String) -> Response {
    tracing::info!(%reason, "event ignored");
    (
        StatusCode::OK,
        Json(json!({ "status": "ignored", "reason": reason })),
    )
        .into_response()
}

fn summary(status: &str, import: &Import) -> Response {
    let body = json!({
        "status": status,
        "import_id": import.id,
        "state": import.state,
        "failure_reason": import.failure_reason,
        "format": import.format,
        "rows_read": import.rows_read,
        "inserted": import.inserted,
        "updated": import.updated,
        "unchanged": import.unchanged,
        "consent_kept": import.consent_kept,
        "duplicates": import.duplicates,
        "rejected": import.rejected,
        "attempts": import.attempts,
    });
    (StatusCode::OK, Json(body)).into_response()
}
