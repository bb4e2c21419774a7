//! `events`: what people did, reported by other systems — `POST /v1/events`
//! (an API key; one event, or a batch of up to 1,000) and `POST /pubsub/events`
//! (the `events` topic's push subscription, one event per message). Events
//! are stored idempotently (docs/events.md); people not seen before are
//! created with consent `unknown`. New events start (and cancel) triggered
//! campaigns' messages in the same transaction; the ones due at once are
//! published to the sender as soon as it commits.

pub mod openapi;

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router, middleware};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use shared::domain::{EventName, EventSource, PhoneNumber, Region};
use shared::engine::triggers::{self, StoredEvent};
use shared::gcp::{PushEnvelope, TaskPublisher};
use shared::http::ApiError;
use shared::http::auth::require_api_key;
use shared::store::events::{self as store, NewEvent};
use sqlx::PgPool;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "API_KEYS", "GCP_PROJECT", "SEND_TOPIC"];

/// Events in one `POST /v1/events`.
pub const MAX_BATCH: usize = 1000;
/// An event's `properties`, as JSON text.
pub const MAX_PROPERTIES_BYTES: usize = 8 * 1024;
/// An `idempotency_key`.
pub const MAX_KEY_CHARS: usize = 200;
/// How far ahead of our clock an `occurred_at` may be (the reporter's clock
/// may run ahead a little; an event from next week is a mistake).
pub const MAX_FUTURE: Duration = Duration::minutes(5);
/// A request body: a full batch with room to spare.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The same settings as the `api` function's: a database, API keys, the
/// region national numbers are read in.
pub type Config = shared::http::auth::KeyedServiceConfig;

pub struct AppState<P> {
    pub db: PgPool,
    pub default_region: Option<Region>,
    /// Where triggered messages due at once go (the sends topic).
    pub publisher: P,
}

/// The function as its binary serves it (without the health routes, which
/// the server adds): what the local stack composes. `publisher` takes the
/// send tasks of triggered messages due at once.
pub fn app<P: TaskPublisher>(config: &Config, db: PgPool, publisher: P) -> Router {
    let state = Arc::new(AppState {
        db,
        default_region: config.default_region,
        publisher,
    });
    let keyed = Router::new()
        .route("/v1/events", post(ingest::<P>))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(config.api_keys.clone()),
            require_api_key,
        ));
    Router::new()
        .merge(keyed)
        .route("/pubsub/events", post(push::<P>))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// What became of one reported event.
#[derive(Debug)]
pub enum Outcome {
    Created(i64),
    /// Its key was stored before (or came earlier in the same batch).
    Duplicate,
    Rejected(ApiError),
}

impl Outcome {
    fn to_json(&self) -> Value {
        match self {
            Outcome::Created(id) => json!({"status": "created", "id": id}),
            Outcome::Duplicate => json!({"status": "duplicate"}),
            Outcome::Rejected(e) => {
                json!({"status": "rejected", "error": {"code": e.code, "field": e.field, "message": e.message}})
            }
        }
    }
}

/// Reads one event; `at` prefixes the fields an error names (`events[3].`).
/// `fallback_key` stands in for a missing `idempotency_key` (the Pub/Sub
/// message id); without one the key is required.
pub fn parse_event(
    value: &Value,
    at: &str,
    default_region: Option<Region>,
    now: DateTime<Utc>,
    fallback_key: Option<&str>,
    source: EventSource,
) -> Result<NewEvent, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    let bad = |name: &str, message: String| ApiError::unprocessable(&field(name), message);
    let Some(object) = value.as_object() else {
        let name = if at.is_empty() {
            "body"
        } else {
            at.trim_end_matches('.')
        };
        return Err(ApiError::unprocessable(name, "an event is a JSON object"));
    };
    const FIELDS: [&str; 5] = [
        "phone_number",
        "name",
        "properties",
        "occurred_at",
        "idempotency_key",
    ];
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            unknown,
            format!(
                "unknown field {unknown:?}: an event has {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(name, format!("{name} must be a string"))),
        }
    };
    let phone = text("phone_number")?
        .ok_or_else(|| bad("phone_number", "phone_number is required".into()))?;
    let phone_number = PhoneNumber::parse(phone, default_region)
        .map_err(|e| bad("phone_number", e.to_string()))?;
    let name = text("name")?.ok_or_else(|| bad("name", "name is required".into()))?;
    let name = EventName::parse(name).map_err(|e| bad("name", e))?;
    let properties = match object.get("properties") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => {
            let size = p.to_string().len();
            if size > MAX_PROPERTIES_BYTES {
                return Err(bad(
                    "properties",
                    format!("properties are {size} bytes of JSON; at most {MAX_PROPERTIES_BYTES}"),
                ));
            }
            if shared::store::has_nul(p) {
                return Err(bad(
                    "properties",
                    "properties may not contain the NUL character (\\u0000)".into(),
                ));
            }
            p.clone()
        }
        Some(_) => return Err(bad("properties", "properties must be a JSON object".into())),
    };
    let occurred_at = match text("occurred_at")? {
        None => now,
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| bad("occurred_at", format!("{s:?} is not an RFC 3339 timestamp")))?
                .with_timezone(&Utc);
            if t > now + MAX_FUTURE {
                return Err(bad(
                    "occurred_at",
                    format!(
                        "{s} is in the future (more than {} minutes ahead)",
                        MAX_FUTURE.num_minutes()
                    ),
                ));
            }
            t
        }
    };
    let idempotency_key = match (text("idempotency_key")?, fallback_key) {
        (Some(k), _) if k.is_empty() || k.chars().count() > MAX_KEY_CHARS => {
            return Err(bad(
                "idempotency_key",
                format!("idempotency_key must be 1 to {MAX_KEY_CHARS} characters"),
            ));
        }
        (Some(k), _) if k.contains('\0') => {
            return Err(bad(
                "idempotency_key",
                "idempotency_key may not contain the NUL character (\\u0000)".into(),
            ));
        }
        (Some(k), _) => k.to_owned(),
        (None, Some(fallback)) => fallback.to_owned(),
        (None, None) => {
            return Err(bad(
                "idempotency_key",
                "idempotency_key is required: the same key twice stores the event once".into(),
            ));
        }
    };
    Ok(NewEvent {
        idempotency_key,
        phone_number,
        name,
        properties,
        occurred_at,
        source,
    })
}

/// Stores what parsed, once per key (later copies of a key in the same
/// batch are duplicates of the first), fires the triggered campaigns on the
/// new events in the same transaction, and after the commit publishes the
/// messages due at once.
pub async fn store_all<P: TaskPublisher>(
    state: &AppState<P>,
    parsed: Vec<Result<NewEvent, ApiError>>,
) -> Result<Vec<Outcome>, ApiError> {
    let mut seen = HashSet::new();
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(parsed.len());
    let mut batch = vec![];
    let mut slots = vec![];
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Err(e) => outcomes.push(Some(Outcome::Rejected(e))),
            Ok(event) if !seen.insert(event.idempotency_key.clone()) => {
                outcomes.push(Some(Outcome::Duplicate));
            }
            Ok(event) => {
                outcomes.push(None);
                slots.push(i);
                batch.push(event);
            }
        }
    }
    if !batch.is_empty() {
        let now = Utc::now();
        let mut tx = state.db.begin().await?;
        let ids = store::insert_batch(&mut *tx, &batch).await?;
        let new: Vec<StoredEvent> = batch
            .iter()
            .zip(&ids)
            .filter_map(|(e, id)| id.map(|id| StoredEvent::new(e, id)))
            .collect();
        let fired = triggers::fire(&mut tx, &new, now).await?;
        tx.commit().await?;
        for (slot, id) in slots.into_iter().zip(ids) {
            outcomes[slot] = Some(id.map_or(Outcome::Duplicate, Outcome::Created));
        }
        if !fired.created.is_empty() || fired.cancelled > 0 {
            tracing::info!(
                messages = fired.created.len(),
                cancelled = fired.cancelled,
                "events triggered campaign messages"
            );
        }
        // Stored is stored: a failure from here on leaves the messages to the fan-out.
        if let Err(e) =
            triggers::dispatch_due(&state.db, &state.publisher, &fired.created, now).await
        {
            tracing::error!(error = %e, "dispatching triggered messages failed; the fan-out will");
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every slot decided"))
        .collect())
}

/// `POST /v1/events`: one event (`{"phone_number", "name", …}`: 201 created,
/// 200 duplicate, 422 naming the field) or a batch (`{"events": [...]}`, 1 to
/// 1,000: 200 with an outcome per event, in order; a bad event is rejected
/// alone and loses nothing else).
async fn ingest<P: TaskPublisher>(
    State(state): State<Arc<AppState<P>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    shared::http::require_json(&headers)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("body is not valid JSON: {e}")))?;
    let now = Utc::now();
    let region = state.default_region;
    let Some(items) = value
        .get("events")
        .filter(|_| value.as_object().is_some_and(|o| o.len() == 1))
    else {
        // One event.
        let event = parse_event(&value, "", region, now, None, EventSource::Api)?;
        let outcome = store_all(&state, vec![Ok(event)]).await?.remove(0);
        let status = match outcome {
            Outcome::Created(_) => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        return Ok((status, Json(outcome.to_json())).into_response());
    };
    let Some(items) = items.as_array() else {
        return Err(ApiError::unprocessable(
            "events",
            "events must be an array of events",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::unprocessable(
            "events",
            format!(
                "a batch has 1 to {MAX_BATCH} events; this one has {}",
                items.len()
            ),
        ));
    }
    let parsed = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            parse_event(
                v,
                &format!("events[{i}]."),
                region,
                now,
                None,
                EventSource::Api,
            )
        })
        .collect();
    let outcomes = store_all(&state, parsed).await?;
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let summary = json!({
        "created": count(|o| matches!(o, Outcome::Created(_))),
        "duplicates": count(|o| matches!(o, Outcome::Duplicate)),
        "rejected": count(|o| matches!(o, Outcome::Rejected(_))),
        "results": outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
    });
    Ok((StatusCode::OK, Json(summary)).into_response())
}

/// `POST /pubsub/events`: one event per message, keyed by its
/// `idempotency_key` or else the message id (a redelivery is a duplicate).
/// 204 once stored (or stored before); 400 for a message that is not an
/// event, which Pub/Sub redelivers until the dead-letter topic takes it.
async fn push<P: TaskPublisher>(
    State(state): State<Arc<AppState<P>>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let envelope = PushEnvelope::parse(&body).map_err(|e| {
        tracing::warn!(error = %e, "malformed push envelope");
        ApiError::bad_request("body", e.to_string())
    })?;
    let message_id = envelope.message.message_id.clone();
    let data = envelope
        .message
        .data()
        .map_err(|e| ApiError::bad_request("message.data", e.to_string()))?;
    let value: Value = serde_json::from_slice(&data).map_err(|e| {
        tracing::warn!(%message_id, error = %e, "event is not JSON");
        ApiError::bad_request("message.data", format!("the event is not JSON: {e}"))
    })?;
    let fallback = format!("pubsub:{message_id}");
    let event = parse_event(&value, "", state.default_region, Utc::now(), Some(&fallback), EventSource::PubSub)
        .map_err(|e| {
            tracing::warn!(%message_id, field = e.field.as_deref(), error = %e.message, "event refused");
            ApiError::bad_request(e.field.as_deref().unwrap_or("message.data"), e.message)
        })?;
    match store_all(&state, vec![Ok(event)]).await?.remove(0) {
        Outcome::Rejected(e) => Err(e),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn parse(v: Value) -> Result<NewEvent, ApiError> {
        parse_event(&v, "events[2].", None, now(), None, EventSource::Api)
    }

    fn field(v: Value) -> String {
        parse(v).unwrap_err().field.unwrap()
    }

    #[test]
    fn a_good_event_reads_whole() {
        let e = parse(json!({
            "phone_number": "whatsapp:+14155552671", "name": "order.shipped",
            "properties": {"order_id": "A-1"}, "occurred_at": "2026-11-30T11:00:00+01:00",
            "idempotency_key": "k1",
        }))
        .unwrap();
        assert_eq!(e.phone_number.as_str(), "+14155552671");
        assert_eq!(
            e.occurred_at,
            "2026-11-30T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(e.properties["order_id"], "A-1");
        let defaulted =
            parse(json!({"phone_number": "+14155552671", "name": "x", "idempotency_key": "k"}))
                .unwrap();
        assert_eq!(
            (defaulted.occurred_at, defaulted.properties),
            (now(), json!({}))
        );
    }

    #[test]
    fn each_bad_field_is_named_with_its_place_in_the_batch() {
        let ok = json!({"phone_number": "+14155552671", "name": "x", "idempotency_key": "k"});
        let with = |k: &str, v: Value| {
            let mut o = ok.clone();
            o[k] = v;
            o
        };
        assert_eq!(
            field(with("phone_number", json!("call me"))),
            "events[2].phone_number"
        );
        assert_eq!(
            field(with("phone_number", json!(14155552671u64))),
            "events[2].phone_number"
        );
        assert_eq!(
            field(with("name", json!("order shipped"))),
            "events[2].name"
        );
        assert_eq!(
            field(with("properties", json!([1]))),
            "events[2].properties"
        );
        assert_eq!(
            field(with(
                "properties",
                json!({"big": "x".repeat(MAX_PROPERTIES_BYTES)})
            )),
            "events[2].properties"
        );
        assert_eq!(
            field(with("occurred_at", json!("yesterday"))),
            "events[2].occurred_at"
        );
        assert_eq!(
            field(with("occurred_at", json!("2026-12-01T12:00:00Z"))),
            "events[2].occurred_at"
        );
        assert_eq!(
            field(with("idempotency_key", json!(""))),
            "events[2].idempotency_key"
        );
        assert_eq!(field(with("colour", json!("red"))), "events[2].colour");
        // PostgreSQL stores no NUL in text or jsonb: refused up front, by field.
        assert_eq!(
            field(with("idempotency_key", json!("k\u{0}"))),
            "events[2].idempotency_key"
        );
        assert_eq!(
            field(with("properties", json!({"a": ["x\u{0}"]}))),
            "events[2].properties"
        );
        let mut no_key = ok.clone();
        no_key.as_object_mut().unwrap().remove("idempotency_key");
        assert_eq!(field(no_key.clone()), "events[2].idempotency_key");
        let keyed = parse_event(
            &no_key,
            "",
            None,
            now(),
            Some("pubsub:7"),
            EventSource::PubSub,
        )
        .unwrap();
        assert_eq!(keyed.idempotency_key, "pubsub:7");
        assert_eq!(field(json!("not an object")), "events[2]");
    }
}
