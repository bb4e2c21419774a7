//! `events`: what people did, idempotent on the reporter's key.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{EventName, EventSource, PhoneNumber};

/// An event, validated at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The reporter's key (HTTP), `pubsub:<message id>` or `inbound:<MessageSid>`.
    pub idempotency_key: String,
    pub phone_number: PhoneNumber,
    pub name: EventName,
    /// A JSON object.
    pub properties: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub source: EventSource,
}

/// Stores a batch in one statement: people not seen before are created
/// (consent `unknown`), and each event is inserted unless its key is stored
/// already. Returns, per event in order, its id when this call stored it and
/// `None` when it was a replay. Keys must be distinct within the batch.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn insert_batch(
    db: impl PgExecutor<'_>,
    events: &[NewEvent],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let keys: Vec<String> = events.iter().map(|e| e.idempotency_key.clone()).collect();
    let phones: Vec<String> = events
        .iter()
        .map(|e| e.phone_number.as_str().to_owned())
        .collect();
    let names: Vec<String> = events.iter().map(|e| e.name.as_str().to_owned()).collect();
    let properties: Vec<serde_json::Value> = events.iter().map(|e| e.properties.clone()).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let sources: Vec<String> = events
        .iter()
        .map(|e| e.source.as_str().to_owned())
        .collect();
    let rows = sqlx::query!(
        r#"with input as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::text[])
                 with ordinality as t(idempotency_key, phone_number, name, properties, occurred_at, source, ord)
         ), people as (
             insert into users (phone_number)
             select distinct phone_number from input
             on conflict (phone_number) do nothing
         ), claimed as (
             -- events is partitioned by month: its keys live in event_keys
             -- (see webhook_events::insert_event_sql).
             insert into event_keys (idempotency_key)
             select idempotency_key from input order by ord
             on conflict (idempotency_key) do nothing
             returning idempotency_key
         ), stored as (
             insert into events (idempotency_key, phone_number, name, properties, occurred_at, source)
             select idempotency_key, phone_number, name, properties, occurred_at, source
             from input join claimed using (idempotency_key) order by ord
             returning id, idempotency_key
         )
         select input.ord as "ord!", stored.id as "id?"
         from input left join stored using (idempotency_key)
         order by input.ord"#,
        &keys,
        &phones,
        &names,
        &properties,
        &occurred,
        &sources
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// How many events a person has of a name (for tests and the console).
pub async fn count(db: impl PgExecutor<'_>, phone: &str, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from events where phone_number = $1 and name = $2"#,
        phone,
        name
    )
    .fetch_one(db)
    .await
}
