//! The sender's queries: claim a message with everything needed to decide
//! about it, then end the claim in one statement that also writes the decision.

use chrono::{DateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A claimed message and what the sender decides with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub message_id: Uuid,
    pub campaign_id: Uuid,
    pub phone_number: String,
    pub attempts: i32,
    pub campaign_state: String,
    pub rate_per_second: i32,
    pub quiet_hours_start: Option<NaiveTime>,
    pub quiet_hours_end: Option<NaiveTime>,
    pub default_timezone: String,
    pub frequency_cap: Option<i32>,
    pub max_attempts: i32,
    pub template_id: Uuid,
    pub template_version: DateTime<Utc>,
    pub body: Option<String>,
    pub content_sid: Option<String>,
    pub content_variables: Option<Value>,
    /// `None` when the user no longer exists.
    pub consent: Option<String>,
    pub attributes: Option<Value>,
    pub profile_name: Option<String>,
    pub last_inbound_at: Option<DateTime<Utc>>,
}

/// `queued → sending`, only for a message no sender has claimed and Twilio
/// has never accepted. `None` means someone else has it (or had it).
#[tracing::instrument(skip_all, fields(%message_id))]
pub async fn claim(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "with claimed as (
             update messages set status = 'sending', status_rank = 2, sending_at = now(),
                                 attempts = attempts + 1, updated_at = now()
             where id = $1 and status = 'queued' and twilio_sid is null
             returning id, campaign_id, phone_number, attempts
         )
         select c.id as message_id, c.campaign_id, c.phone_number, c.attempts,
                k.state as campaign_state, k.rate_per_second, k.quiet_hours_start, k.quiet_hours_end,
                k.default_timezone, k.frequency_cap, k.max_attempts,
                t.id as template_id, t.updated_at as template_version, t.body, t.content_sid, t.content_variables,
                u.consent, u.attributes, u.profile_name, u.last_inbound_at
         from claimed c
         join campaigns k on k.id = c.campaign_id
         join templates t on t.id = k.template_id
         left join users u on u.phone_number = c.phone_number",
    )
    .bind(message_id)
    .fetch_optional(db)
    .await
}

/// How many campaign messages the user was sent in the last 24 hours.
pub async fn sent_in_last_day(db: impl PgExecutor<'_>, phone: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from messages where phone_number = $1 and sent_at > now() - interval '24 hours'")
        .bind(phone)
        .fetch_one(db)
        .await
}

/// How a claim ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Twilio accepted: store the SID; `sent` unless a callback got further already.
    Sent { sid: String, twilio_status: String },
    /// Never to be sent (status `skipped`).
    Skipped,
    /// Not now: back to `pending` until `until` (quiet hours, rate limit, a retry, a pause).
    Deferred { until: DateTime<Utc> },
    /// Ends with an error (status `failed`).
    Failed { code: Option<i32>, message: String },
    /// Give the claim back untouched (`queued`), for a redelivery to take.
    Released,
}

/// Ends the claim and writes its decision in one statement. Returns false when
/// the message was no longer `sending` (nothing was written), except that a
/// send Twilio accepted is recorded even after its callbacks moved the message on.
#[tracing::instrument(skip_all, fields(%message_id, decision))]
pub async fn finish(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
    ending: &Ending,
    decision: &str,
    reason: &Value,
    rendered: Option<(&Option<String>, &Option<String>)>,
) -> Result<bool, sqlx::Error> {
    let (status, sid, until, code, message) = match ending {
        Ending::Sent { sid, .. } => ("sent", Some(sid), None, None, None),
        Ending::Skipped => ("skipped", None, None, None, None),
        Ending::Deferred { until } => ("pending", None, Some(*until), None, None),
        Ending::Failed { code, message } => ("failed", None, None, *code, Some(message)),
        Ending::Released => ("queued", None, None, None, None),
    };
    let (body, content_variables) = rendered.map_or((None, None), |(b, c)| (b.clone(), c.clone()));
    let content_variables: Option<Value> =
        content_variables.and_then(|c| serde_json::from_str(&c).ok());
    let done: Option<bool> = sqlx::query_scalar(
        "with upd as (
             update messages m set
                 status = case when $2 = 'sent' and m.status_rank >= 3 then m.status else $2 end,
                 status_rank = case $2 when 'sent' then greatest(m.status_rank, 3)
                                       when 'pending' then 0 when 'queued' then 1 else 100 end,
                 twilio_sid = coalesce($3, m.twilio_sid),
                 next_attempt_at = coalesce($4, m.next_attempt_at),
                 error_code = coalesce($5, m.error_code),
                 error_message = coalesce($6, m.error_message),
                 attempts = case when $2 = 'queued' then m.attempts - 1 else m.attempts end,
                 sent_at = case when $2 = 'sent' then coalesce(m.sent_at, now()) else m.sent_at end,
                 failed_at = case when $2 = 'failed' then now() else m.failed_at end,
                 queued_at = case when $2 = 'pending' then null else m.queued_at end,
                 body = coalesce($9, m.body),
                 content_variables = coalesce($10, m.content_variables),
                 last_decision = $7,
                 updated_at = now()
             where m.id = $1
               and (m.status = 'sending'
                    -- Twilio's callback (naming our id) can beat its API answer:
                    -- the send is still recorded, the further status kept.
                    or ($2 = 'sent' and m.status_rank > 2 and m.twilio_sid = $3))
             returning m.id, m.campaign_id, m.phone_number
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision, reason)
             select id, campaign_id, phone_number, $7, $8 from upd
         )
         select true from upd",
    )
    .bind(message_id)
    .bind(status)
    .bind(sid)
    .bind(until)
    .bind(code)
    .bind(message)
    .bind(decision)
    .bind(reason)
    .bind(body)
    .bind(content_variables)
    .fetch_optional(db)
    .await?;
    Ok(done.unwrap_or(false))
}

/// A decision about a message that is not (or no longer) claimed, such as a
/// duplicate push: written for the record, the row untouched.
pub async fn note(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
    decision: &str,
    reason: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into decisions (message_id, campaign_id, phone_number, decision, reason)
         select id, campaign_id, phone_number, $2, $3 from messages where id = $1",
    )
    .bind(message_id)
    .bind(decision)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}
