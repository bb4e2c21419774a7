//! The messages reconciliation settles with Twilio's Messages API
//! (`engine::reconcile`): sends whose outcome is unknown, claims past their
//! lease, accepted sends whose SID or final status never came.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::MessageStatus;
use crate::store::webhook_events::{self, NewWebhookEvent};

/// A message whose outcome reconciliation must find out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unsettled {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub phone_number: String,
    /// The claim that sent (or may have sent) it.
    pub claims: i32,
    pub status: MessageStatus,
    pub sending_at: Option<DateTime<Utc>>,
    /// The body sent, when it was sent as a body and the sender got as far as
    /// recording it (a content template's text is Twilio's to render).
    pub body: Option<String>,
    pub resends: i16,
    pub outcome_unknown: bool,
}

impl Unsettled {
    /// Still `sending`: Twilio may or may not hold it.
    pub fn is_sending(&self) -> bool {
        self.status == MessageStatus::Sending
    }
}

/// Takes up to `limit` messages due for reconciliation and pushes their next
/// look `recheck_secs` ahead, so concurrent reconcilers take different ones
/// and a message Twilio could not be asked about is looked at again later.
#[tracing::instrument(skip_all)]
pub async fn take_due(
    db: impl PgExecutor<'_>,
    limit: i64,
    recheck_secs: f64,
) -> Result<Vec<Unsettled>, sqlx::Error> {
    sqlx::query_as!(
        Unsettled,
        r#"with due as (
             select id from messages
             where reconcile_at <= now()
               -- $3..$4: sent..read, what a callback naming our id can have
               -- moved the row to before Twilio's API answer came.
               and (status = 'sending' or (twilio_sid is null and status_rank between $3 and $4))
             order by reconcile_at
             limit $1
             for update skip locked
         )
         update messages m set reconcile_at = now() + make_interval(secs => $2)
         from due where m.id = due.id
         returning m.id, m.campaign_id, m.phone_number, m.claims, m.status as "status: MessageStatus",
                   m.sending_at, m.body, m.resends, m.outcome_unknown"#,
        limit,
        recheck_secs,
        MessageStatus::Sent.rank(),
        MessageStatus::Read.rank()
    )
    .fetch_all(db)
    .await
}

/// Which of `sids` other messages of ours already hold.
pub async fn sids_in_use(
    db: impl PgExecutor<'_>,
    sids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select twilio_sid as "twilio_sid!" from messages where twilio_sid = any($1)"#,
        sids
    )
    .fetch_all(db)
    .await
}

/// What reconciliation concluded about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Twilio holds it: adopt its SID, and its status when further than `sent`.
    Found {
        sid: String,
        status: MessageStatus,
        error_code: Option<i32>,
        error_message: Option<String>,
        created_at: Option<DateTime<Utc>>,
    },
    /// Twilio holds no such message: send it again (back to `pending`).
    Resend,
    /// Twilio holds no such message, and it was already sent again once.
    NotFound,
    /// Accepted by Twilio, but its SID was never found: stop looking.
    SidNotFound,
}

impl Settlement {
    pub fn decision(&self) -> &'static str {
        match self {
            Settlement::Found { .. } => "reconciled_found",
            Settlement::Resend => "reconciled_resend",
            Settlement::NotFound => "reconciled_not_found",
            Settlement::SidNotFound => "reconciled_sid_not_found",
        }
    }
}

/// Stores what Twilio answered (raw, like a webhook) and settles the message,
/// with its decision, in one transaction. False when the message had moved on
/// meanwhile (a callback, a newer claim): nothing but the raw answer is kept.
#[tracing::instrument(skip_all, fields(message_id = %m.id, decision = settlement.decision()))]
pub async fn settle(
    db: &PgPool,
    m: &Unsettled,
    settlement: &Settlement,
    event: &NewWebhookEvent<'_>,
    reason: &Value,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    webhook_events::insert(&mut *tx, event).await?;
    let (sid, status, code, message, created_at) = match settlement {
        Settlement::Found {
            sid,
            status,
            error_code,
            error_message,
            created_at,
        } => (
            Some(sid.as_str()),
            *status,
            *error_code,
            error_message.clone(),
            *created_at,
        ),
        Settlement::Resend => (None, MessageStatus::Pending, None, None, None),
        Settlement::NotFound => (
            None,
            MessageStatus::Failed,
            None,
            Some("Twilio holds no such message, after one re-send".to_owned()),
            None,
        ),
        Settlement::SidNotFound => (None, MessageStatus::Sent, None, None, None),
    };
    let resend = matches!(settlement, Settlement::Resend);
    let done: Option<bool> = sqlx::query_scalar!(
        r#"with upd as (
             update messages m set
                 twilio_sid = coalesce($3, m.twilio_sid),
                 status = case when $9 or $5 > m.status_rank then $4 else m.status end,
                 status_rank = case when $9 then $5 else greatest(m.status_rank, $5) end,
                 error_code = coalesce($6, m.error_code),
                 error_message = coalesce($7, m.error_message),
                 sent_at = case when $3 is not null then coalesce(m.sent_at, $8, now()) else m.sent_at end,
                 failed_at = case when $5 = $12 then coalesce(m.failed_at, now()) else m.failed_at end,
                 next_attempt_at = case when $9 then now() else m.next_attempt_at end,
                 queued_at = case when $9 then null else m.queued_at end,
                 resends = m.resends + $9::int,
                 cap_reserved = m.cap_reserved and not $9,
                 reconcile_at = null,
                 outcome_unknown = false,
                 last_decision = $10,
                 updated_at = now()
             where m.id = $1 and m.claims = $2 and m.twilio_sid is null
               and (m.status = 'sending' or m.status_rank between $13 and $14)
             returning m.id, m.campaign_id, m.phone_number
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision, reason)
             select id, campaign_id, phone_number, $10, $11 from upd
         )
         select true as "done!" from upd"#,
        m.id,
        m.claims,
        sid,
        status.as_str(),
        status.rank(),
        code,
        message,
        created_at,
        resend,
        settlement.decision(),
        reason,
        crate::domain::status::TERMINAL_RANK,
        MessageStatus::Sent.rank(),
        MessageStatus::Read.rank()
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.unwrap_or(false))
}

/// Accepted messages with a SID whose final status has not come after
/// `older_than_secs`: taken (marked fetched) for one look-up by SID each.
#[tracing::instrument(skip_all)]
pub async fn take_unsettled_sent(
    db: impl PgExecutor<'_>,
    older_than_secs: f64,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with due as (
             select id from messages
             where status = 'sent' and reconciled_at is null and twilio_sid is not null
               and sent_at <= now() - make_interval(secs => $1)
             order by sent_at
             limit $2
             for update skip locked
         )
         update messages m set reconciled_at = now()
         from due where m.id = due.id
         returning m.id, m.twilio_sid as "twilio_sid!""#,
        older_than_secs,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.twilio_sid)).collect())
}

/// A fetch by SID that Twilio did not answer is tried again on a later pass.
pub async fn fetch_again(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("update messages set reconciled_at = null where id = $1", id)
        .execute(db)
        .await?;
    Ok(())
}
