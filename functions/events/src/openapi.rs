//! `POST /v1/events` in the OpenAPI document. The handler reads its body by
//! hand (a bad event in a batch is rejected alone), so these types describe
//! it rather than parse it; the `api` function serves them in `/v1/openapi.json`
//! beside its own operations.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// One event.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Whom it is about, in any format the importer reads (E.164 best).
    #[schema(example = "+14155552671", min_length = 1)]
    pub phone_number: String,
    #[schema(
        example = "order.shipped",
        pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
    )]
    pub name: String,
    /// A JSON object, at most 8 KiB as JSON text.
    #[schema(value_type = Option<Object>)]
    pub properties: Option<BTreeMap<String, Value>>,
    /// When it happened (default: now); at most 5 minutes ahead of our clock.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The same key twice stores the event once.
    #[schema(min_length = 1, max_length = 200)]
    pub idempotency_key: String,
}

/// Up to 1,000 events. Each item should be an [`Event`]; one that is not
/// (any JSON value can be sent) is rejected alone, in its place among the
/// results, and the rest are stored: so the items are not constrained here.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<Value>)]
    pub events: Vec<Value>,
}

/// One event, or a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsRequest {
    One(Event),
    Batch(EventBatch),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Created,
    Duplicate,
    Rejected,
}

#[derive(Serialize, ToSchema)]
pub struct OutcomeError {
    pub code: String,
    /// The field at fault, under `events[i].` in a batch.
    pub field: Option<String>,
    pub message: String,
}

/// An error: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorReply {
    pub error: OutcomeError,
}

/// What became of one event.
#[derive(Serialize, ToSchema)]
pub struct EventOutcome {
    pub status: OutcomeStatus,
    /// The stored event's id (`created`).
    pub id: Option<i64>,
    /// Why it was refused (`rejected`, in a batch).
    pub error: Option<OutcomeError>,
}

/// A batch's outcomes, in the order sent.
#[derive(Serialize, ToSchema)]
pub struct BatchOutcome {
    pub created: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub results: Vec<EventOutcome>,
}

/// A duplicate event, or a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsReply {
    One(EventOutcome),
    Batch(BatchOutcome),
}

/// Report events: one (`201` stored, `200` a duplicate of a stored key, `422`
/// naming the field) or a batch of up to 1,000 (`200` with an outcome per
/// event; a bad one is rejected alone and loses nothing else). New events
/// start and cancel triggered campaigns' messages (docs/events.md). Served
/// by the `events` function.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body = EventsRequest,
    responses(
        (status = 201, description = "Stored", body = EventOutcome),
        (status = 200, description = "A duplicate, or a batch's outcomes", body = EventsReply),
        (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 422, body = ErrorReply),
    ),
)]
fn ingest() {}

#[derive(OpenApi)]
#[openapi(paths(ingest), tags((name = "events")))]
pub struct EventsDoc;
