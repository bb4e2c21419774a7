//! `webhook_events`: the raw audit of every authenticated webhook.

use sqlx::PgExecutor;

/// What is stored of one authenticated request, exactly as received.
#[derive(Debug, Clone)]
pub struct NewWebhookEvent<'a> {
    pub kind: &'static str,
    pub dedupe_key: &'a str,
    pub idempotency_token: Option<&'a str>,
    pub message_sid: Option<&'a str>,
    pub request_uri: &'a str,
    pub content_type: &'a str,
    pub raw_body: &'a str,
    pub params: &'a serde_json::Value,
}

/// The one insert of an event, as two common table expressions with `$1`–`$8`
/// bound by [`bind_event!`]: `event_key` claims the event's dedupe key and
/// idempotency token in `webhook_keys`, `ev` stores the event only when the
/// claim was new and returns its id. [`insert`] runs them alone,
/// `messages::apply_status_callback` as the first steps of its statement. A
/// redelivery (same dedupe key or idempotency token) inserts nothing and `ev`
/// returns no row.
///
/// The keys live in their own narrow table because `webhook_events` is
/// partitioned by month, and a partitioned table's unique keys must contain
/// its partition key: a redelivery a second after midnight on the 1st would
/// pass a per-month key.
macro_rules! insert_event_sql {
    () => {
        "event_key as (
             insert into webhook_keys (kind, dedupe_key, idempotency_token)
             values ($1, $2, $3)
             on conflict do nothing
             returning kind
         ), ev as (
             insert into webhook_events
                 (kind, dedupe_key, idempotency_token, message_sid, request_uri, content_type, raw_body, params)
             select $1, $2, $3, $4, $5, $6, $7, $8 from event_key
             returning id
         )"
    };
}
pub(crate) use insert_event_sql;

/// Binds an event's fields as `$1`–`$8` of [`insert_event_sql!`].
macro_rules! bind_event {
    ($query:expr, $event:expr) => {
        $query
            .bind($event.kind)
            .bind($event.dedupe_key)
            .bind($event.idempotency_token)
            .bind($event.message_sid)
            .bind($event.request_uri)
            .bind($event.content_type)
            .bind($event.raw_body)
            .bind($event.params)
    };
}
pub(crate) use bind_event;

/// Stores the event; `None` when it was delivered before (same dedupe key or
/// same idempotency token), in which case nothing was written.
#[tracing::instrument(skip_all, fields(kind = event.kind))]
pub async fn insert(
    db: impl PgExecutor<'_>,
    event: &NewWebhookEvent<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    bind_event!(
        sqlx::query_scalar(concat!("with ", insert_event_sql!(), " select id from ev")),
        event
    )
    .fetch_optional(db)
    .await
}

/// How many events of a kind are stored (for tests and stats).
pub async fn count(db: impl PgExecutor<'_>, kind: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from webhook_events where kind = $1"#,
        kind
    )
    .fetch_one(db)
    .await
}

/// Flags a stored event with what in it did not parse: the event stays, as
/// received, for a person to read.
pub async fn flag(db: impl PgExecutor<'_>, id: i64, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update webhook_events set parse_error = $2 where id = $1",
        id,
        reason
    )
    .execute(db)
    .await?;
    Ok(())
}
