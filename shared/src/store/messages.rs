//! `messages`: the outbox and the delivery record in one row. Here: reads
//! for the API and status callbacks; by use, the fan-out's queries
//! ([`dispatch`]), the sender's ([`outbox`]) and reconciliation's ([`reconcile`]).

pub mod dispatch;
pub mod outbox;
pub mod reconcile;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::MessageStatus;
use crate::store::PageKey;
use crate::store::webhook_events::{NewWebhookEvent, bind_event, insert_event_sql};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub phone_number: String,
    pub status: MessageStatus,
    pub status_rank: i16,
    pub body: Option<String>,
    pub twilio_sid: Option<String>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

impl Message {
    pub fn status(&self) -> MessageStatus {
        self.status
    }
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as!(
        Message,
        r#"select id, campaign_id, phone_number, status as "status: MessageStatus", status_rank,
                  body, twilio_sid, error_code, error_message, attempts, next_attempt_at,
                  sent_at, delivered_at, read_at, failed_at
           from messages where id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// A status callback as it applies to a message row.
#[derive(Debug, Clone)]
pub struct CallbackUpdate<'a> {
    /// Our message id from the StatusCallback URL (`mid`), when present.
    pub message_id: Option<Uuid>,
    pub message_sid: &'a str,
    /// `None` for a status name we do not know: the event is kept, the row is not touched.
    pub status: Option<MessageStatus>,
    pub error_code: Option<i32>,
    pub error_message: Option<&'a str>,
}

/// What one status callback did.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallbackOutcome {
    /// `None` when the callback was a duplicate and nothing was written.
    pub event_id: Option<i64>,
    /// The message it is about, when we know it.
    pub message_id: Option<Uuid>,
    pub phone_number: Option<String>,
    /// Whether the message moved forward.
    pub advanced: bool,
}

/// The `set` list that moves a message to a reported status, given the SQL
/// expressions for the status, its rank, the `MessageSid`, the error code and
/// message: what one callback ([`apply_status_callback`]) and a batch of them
/// ([`apply_status_callbacks`]) both write.
macro_rules! advance_message_set {
    ($status:literal, $rank:literal, $sid:literal, $code:literal, $message:literal) => {
        concat!(
            "status = ",
            $status,
            ",
             status_rank = ",
            $rank,
            ",
             twilio_sid = coalesce(m.twilio_sid, ",
            $sid,
            "),
             error_code = coalesce(",
            $code,
            ", m.error_code),
             error_message = coalesce(",
            $message,
            ", m.error_message),
             sent_at = case when ",
            $status,
            " in ('sent', 'partially_delivered', 'delivered', 'read')
                       then coalesce(m.sent_at, now()) else m.sent_at end,
             delivered_at = case when ",
            $status,
            " in ('delivered', 'read')
                       then coalesce(m.delivered_at, now()) else m.delivered_at end,
             read_at = case when ",
            $status,
            " = 'read' then coalesce(m.read_at, now()) else m.read_at end,
             failed_at = case when ",
            $status,
            " in ('failed', 'undelivered', 'canceled')
                       then coalesce(m.failed_at, now()) else m.failed_at end,
             -- Twilio has it: a send whose outcome was unknown is settled.
             reconcile_at = null,
             outcome_unknown = false,
             updated_at = now()"
        )
    };
}

/// Stores the raw event and advances the message in one statement (one
/// round trip, one commit): the message is found by `mid`, else by
/// `MessageSid`, and moves only if its rank is below the callback's threshold
/// ([`MessageStatus::advances_below`]). A duplicate touches nothing.
#[tracing::instrument(skip_all)]
pub async fn apply_status_callback(
    db: impl PgExecutor<'_>,
    event: &NewWebhookEvent<'_>,
    update: &CallbackUpdate<'_>,
) -> Result<CallbackOutcome, sqlx::Error> {
    let status = update.status.map(MessageStatus::as_str);
    let rank = update.status.map(MessageStatus::rank);
    let below = update
        .status
        .map_or(i16::MIN, MessageStatus::advances_below);
    let query = sqlx::query_as(concat!(
        "with ",
        insert_event_sql!(),
        ", target as (
             select m.id, m.phone_number from messages m
             where exists (select 1 from ev) and (m.id = $9 or m.twilio_sid = $4)
             order by (m.id = $9) desc nulls last
             limit 1
             for update
         ), upd as (
             update messages m set ",
        advance_message_set!("$10", "$11", "$4", "$12", "$13"),
        "
             from target
             where m.id = target.id and $10::text is not null and m.status_rank < $14
             returning m.id
         )
         select (select id from ev) as event_id,
                (select id from target) as message_id,
                (select phone_number from target) as phone_number,
                exists (select 1 from upd) as advanced"
    ));
    bind_event!(query, event)
        .bind(update.message_id)
        .bind(status)
        .bind(rank)
        .bind(update.error_code)
        .bind(update.error_message)
        .bind(below)
        .fetch_one(db)
        .await
}

/// One status callback of a batch, owned: its raw event (kind `status`) and
/// what it applies.
#[derive(Debug, Clone)]
pub struct BatchedCallback {
    pub dedupe_key: String,
    pub idempotency_token: Option<String>,
    pub request_uri: String,
    pub content_type: String,
    pub raw_body: String,
    pub params: serde_json::Value,
    /// What in the request did not parse but was read past.
    pub parse_error: Option<String>,
    pub message_id: Option<Uuid>,
    pub message_sid: String,
    pub status: Option<MessageStatus>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
}

/// Stores a batch of status callbacks and advances their messages in one
/// statement: one multi-row insert of the raw events, one set-based
/// forward-only update. The outcomes come back in the batch's order, each as
/// [`apply_status_callback`] would have given it alone.
///
/// Callers put at most one callback per message in a batch (the group commit
/// holds a second one back for the next batch), so that the result is the same
/// as applying them one by one in arrival order. Should two still meet on one
/// message, the first applies and the other is kept raw, not applied.
/// Duplicates, within the batch or of stored events, write nothing, as alone.
/// Rows are locked in id order, so concurrent batches cannot deadlock.
#[tracing::instrument(skip_all, fields(callbacks = batch.len()))]
pub async fn apply_status_callbacks(
    db: impl PgExecutor<'_>,
    batch: &[BatchedCallback],
) -> Result<Vec<CallbackOutcome>, sqlx::Error> {
    fn column<'a, T>(batch: &'a [BatchedCallback], f: impl Fn(&'a BatchedCallback) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    sqlx::query_as(concat!(
        "with input as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::jsonb[], $8::text[], $9::uuid[], $10::text[],
                                  $11::int2[], $12::int2[], $13::int4[], $14::text[])
                 with ordinality as i(dedupe_key, idempotency_token, message_sid, request_uri,
                                      content_type, raw_body, params, parse_error, message_id,
                                      status, rank, below, error_code, error_message, ord)
         ), event_key as (
             -- A key is claimed once: a duplicate within the batch or of a
             -- stored event claims nothing (webhook_events::insert_event_sql).
             insert into webhook_keys (kind, dedupe_key, idempotency_token)
             select 'status', dedupe_key, idempotency_token from input order by ord
             on conflict do nothing
             returning dedupe_key
         ), ev as (
             insert into webhook_events (kind, dedupe_key, idempotency_token, message_sid,
                                         request_uri, content_type, raw_body, params, parse_error)
             select 'status', dedupe_key, idempotency_token, message_sid, request_uri,
                    content_type, raw_body, params, parse_error
             from (select distinct on (i.dedupe_key) i.*
                   from input i join event_key k using (dedupe_key)
                   order by i.dedupe_key, i.ord) first
             order by ord
             returning id, dedupe_key
         ), fresh as (
             -- The one input row each stored event came from (a duplicate key
             -- within the batch is stored once, for its first request).
             select distinct on (ev.id) ev.id as event_id, i.*
             from ev join input i on i.dedupe_key = ev.dedupe_key
             order by ev.id, i.ord
         ), target as (
             select f.ord, t.id, t.phone_number
             from fresh f cross join lateral (
                 select m.id, m.phone_number from messages m
                 where m.id = f.message_id or m.twilio_sid = f.message_sid
                 order by (m.id = f.message_id) desc nulls last
                 limit 1
             ) t
         ), chosen as (
             select distinct on (t.id) t.id, f.*
             from target t join fresh f using (ord)
             where f.status is not null
             order by t.id, f.ord
         ), locked as (
             select m.id from messages m where m.id in (select id from chosen)
             order by m.id
             for update
         ), upd as (
             update messages m set ",
        advance_message_set!(
            "c.status",
            "c.rank",
            "c.message_sid",
            "c.error_code",
            "c.error_message"
        ),
        "
             from chosen c join locked l on l.id = c.id
             where m.id = c.id and m.status_rank < c.below
             returning m.id
         )
         select f.event_id, t.id as message_id, t.phone_number,
                (c.ord is not null and exists (select 1 from upd u where u.id = c.id)) as advanced
         from input i
         left join fresh f on f.ord = i.ord
         left join target t on t.ord = i.ord
         left join chosen c on c.ord = i.ord
         order by i.ord"
    ))
    .bind(column(batch, |c| c.dedupe_key.as_str()))
    .bind(column(batch, |c| c.idempotency_token.as_deref()))
    .bind(column(batch, |c| c.message_sid.as_str()))
    .bind(column(batch, |c| c.request_uri.as_str()))
    .bind(column(batch, |c| c.content_type.as_str()))
    .bind(column(batch, |c| c.raw_body.as_str()))
    .bind(column(batch, |c| &c.params))
    .bind(column(batch, |c| c.parse_error.as_deref()))
    .bind(column(batch, |c| c.message_id))
    .bind(column(batch, |c| c.status.map(MessageStatus::as_str)))
    .bind(column(batch, |c| c.status.map(MessageStatus::rank)))
    .bind(column(batch, |c| {
        c.status.map_or(i16::MIN, MessageStatus::advances_below)
    }))
    .bind(column(batch, |c| c.error_code))
    .bind(column(batch, |c| c.error_message.as_deref()))
    .fetch_all(db)
    .await
}

// --- API queries ---

/// A message row as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct MessageRecord {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub phone_number: String,
    /// Ours (`pending`, `queued`, `sending`, `skipped`) or Twilio's.
    #[schema(value_type = String)]
    pub status: MessageStatus,
    pub body: Option<String>,
    pub content_sid: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub content_variables: Option<serde_json::Value>,
    pub twilio_sid: Option<String>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub sending_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which messages to list; every filter is optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageFilter<'a> {
    pub campaign_id: Option<Uuid>,
    pub phone_number: Option<&'a str>,
    pub status: Option<MessageStatus>,
}

#[tracing::instrument(skip_all)]
pub async fn list_records(
    db: impl PgExecutor<'_>,
    filter: MessageFilter<'_>,
    after: Option<PageKey>,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        MessageRecord,
        r#"select id, campaign_id, phone_number, status as "status: MessageStatus", body, content_sid,
                  content_variables, twilio_sid, error_code, error_message, attempts, next_attempt_at,
                  queued_at, sending_at, sent_at, delivered_at, read_at, failed_at, created_at, updated_at
         from messages
         where ($1::uuid is null or campaign_id = $1)
           and ($2::text is null or phone_number = $2)
           and ($3::text is null or status = $3)
           and ($4::timestamptz is null or (created_at, id) < ($4, $5))
         order by created_at desc, id desc
         limit $6"#,
        filter.campaign_id,
        filter.phone_number,
        filter.status.map(MessageStatus::as_str),
        at,
        id,
        limit
    )
    .fetch_all(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn get_record(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select id, campaign_id, phone_number, status as "status: MessageStatus", body, content_sid,
                  content_variables, twilio_sid, error_code, error_message, attempts, next_attempt_at,
                  queued_at, sending_at, sent_at, delivered_at, read_at, failed_at, created_at, updated_at
           from messages where id = $1"#,
        id
    )
        .fetch_optional(db)
        .await
}

/// One status callback about a message, as received.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct StatusEvent {
    pub webhook_event_id: i64,
    /// `MessageStatus` as Twilio sent it.
    pub status: Option<String>,
    pub error_code: Option<String>,
    /// Every parameter of the callback.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// Every status callback for a MessageSid, in the order received.
#[tracing::instrument(skip_all)]
pub async fn status_timeline(
    db: impl PgExecutor<'_>,
    message_sid: &str,
) -> Result<Vec<StatusEvent>, sqlx::Error> {
    sqlx::query_as!(
        StatusEvent,
        "select id as webhook_event_id, params->>'MessageStatus' as status,
                params->>'ErrorCode' as error_code, params, received_at
         from webhook_events
         where kind = 'status' and message_sid = $1
         order by received_at, id",
        message_sid
    )
    .fetch_all(db)
    .await
}

/// One orchestration decision about a message.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct DecisionRecord {
    pub id: i64,
    pub decision: String,
    #[schema(value_type = Object)]
    pub reason: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Every decision about a message, oldest first.
#[tracing::instrument(skip_all)]
pub async fn decisions(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
) -> Result<Vec<DecisionRecord>, sqlx::Error> {
    sqlx::query_as!(
        DecisionRecord,
        "select id, decision, reason, created_at from decisions
         where message_id = $1
           -- Only the months since the message was made (decisions is
           -- partitioned by month), with a day's margin for a transaction
           -- that began before the message's committed.
           and created_at >= (select created_at from messages where id = $1) - interval '1 day'
         order by created_at, id",
        message_id
    )
    .fetch_all(db)
    .await
}
