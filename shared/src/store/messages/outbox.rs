//! The sender's queries: claim a message with everything needed to decide
//! about it, then end the claim in one statement that also writes the decision.

use chrono::{DateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{CampaignState, Consent, MessageStatus};

/// A claimed message and what the sender decides with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedMessage {
    pub message_id: Uuid,
    /// This claim's number: only this claim may end it ([`finish`]).
    pub claim: i32,
    /// Consecutive account-level refusals of the campaign so far.
    pub account_holds: i32,
    pub campaign_id: Uuid,
    pub phone_number: String,
    /// Twilio send requests made before this claim.
    pub attempts: i32,
    pub campaign_state: CampaignState,
    pub rate_per_second: i32,
    pub quiet_hours_start: Option<NaiveTime>,
    pub quiet_hours_end: Option<NaiveTime>,
    pub default_timezone: String,
    pub frequency_cap: Option<i32>,
    pub max_attempts: i32,
    /// The campaign's topic, and whether the person is subscribed to it.
    pub topic: Option<String>,
    pub topic_subscribed: bool,
    pub template_id: Uuid,
    pub template_version: DateTime<Utc>,
    pub body: Option<String>,
    pub content_sid: Option<String>,
    pub content_variables: Option<Value>,
    /// `None` when the user no longer exists.
    pub consent: Option<Consent>,
    pub attributes: Option<Value>,
    pub profile_name: Option<String>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// A triggered message's event properties (`{{ event.order_id }}`).
    pub event_properties: Option<Value>,
}

/// `queued → sending`, only for a message no sender has claimed and Twilio
/// has never accepted. `None` means someone else has it (or had it). The claim
/// holds for `lease_secs`; after that reconciliation looks at the message.
#[tracing::instrument(skip_all, fields(%message_id))]
pub async fn claim(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
    lease_secs: f64,
) -> Result<Option<ClaimedMessage>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedMessage,
        r#"with claimed as (
             update messages set status = 'sending', status_rank = $3, sending_at = now(),
                                 claims = claims + 1, outcome_unknown = false, cap_reserved = false,
                                 reconcile_at = now() + make_interval(secs => $2), updated_at = now()
             where id = $1 and status = 'queued' and twilio_sid is null
             returning id, claims, campaign_id, phone_number, attempts, trigger_event_id
         )
         select c.id as message_id, c.claims as claim, c.campaign_id, c.phone_number, c.attempts,
                k.account_holds, k.state as "campaign_state: CampaignState", k.rate_per_second, k.quiet_hours_start,
                k.quiet_hours_end, k.default_timezone, k.frequency_cap, k.max_attempts,
                k.topic, coalesce((select s.subscribed from topic_subscriptions s
                                   where s.phone_number = c.phone_number and s.topic = k.topic), true)
                         as "topic_subscribed!",
                t.id as template_id, t.updated_at as template_version, t.body, t.content_sid, t.content_variables,
                u.consent as "consent?: Consent", u.attributes as "attributes?", u.profile_name,
                u.last_inbound_at, ev.properties as "event_properties?"
         from claimed c
         join campaigns k on k.id = c.campaign_id
         join templates t on t.id = k.template_id
         left join users u on u.phone_number = c.phone_number
         left join events ev on ev.id = c.trigger_event_id"#,
        message_id,
        lease_secs,
        MessageStatus::Sending.rank()
    )
    .fetch_optional(db)
    .await
}

/// Counts the claim against the person's frequency cap, or says it would go
/// over. Under a per-person lock, so two campaigns (or two sender instances)
/// cannot both pass the cap's last slot: claims that passed and have not ended
/// count like sends of the last 24 hours. `Err(n)`: `n` already count.
#[tracing::instrument(skip_all, fields(%message_id))]
pub async fn reserve_frequency_cap(
    db: &sqlx::PgPool,
    message_id: Uuid,
    claim: i32,
    phone: &str,
    cap: i32,
) -> Result<Result<(), i64>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        r#"select pg_advisory_xact_lock(hashtextextended($1, 7)) as "locked!: ()""#,
        phone
    )
    .execute(&mut *tx)
    .await?;
    let counted: i64 = sqlx::query_scalar!(
        r#"select count(*) as "count!" from messages
         where phone_number = $1 and id <> $2
           and (sent_at > now() - interval '24 hours' or (status = 'sending' and cap_reserved))"#,
        phone,
        message_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if counted >= i64::from(cap) {
        return Ok(Err(counted));
    }
    sqlx::query!(
        "update messages set cap_reserved = true where id = $1 and claims = $2 and status = 'sending'",
        message_id,
        claim
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// How a claim ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Twilio accepted: store the SID (when its answer said it); `sent` unless
    /// a callback got further already.
    Sent {
        sid: Option<String>,
        twilio_status: String,
        /// When Twilio's answer did not name the SID: when reconciliation finds it.
        reconcile_at: Option<DateTime<Utc>>,
    },
    /// Never to be sent (status `skipped`).
    Skipped,
    /// Not now: back to `pending` until `until` (quiet hours, rate limit, a retry, a pause).
    Deferred { until: DateTime<Utc> },
    /// Ends with an error (status `failed`).
    Failed { code: Option<i32>, message: String },
    /// Twilio may hold it: stays `sending`, flagged, until reconciliation
    /// (from `reconcile_at`) has asked Twilio.
    Unknown { reconcile_at: DateTime<Utc> },
    /// Give the claim back untouched (`queued`), for a redelivery to take.
    Released,
}

/// One claim's end, with the decision written beside it.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub ending: Ending,
    pub decision: &'a str,
    pub reason: Value,
    /// The rendered body and content variables, kept once they went (or may
    /// have gone) to Twilio.
    pub rendered: Option<(Option<String>, Option<String>)>,
    /// A request went to Twilio: it counts as an attempt.
    pub attempted: bool,
}

impl<'a> Finish<'a> {
    /// An end that involved no request to Twilio.
    pub fn without_send(ending: Ending, decision: &'a str, reason: Value) -> Self {
        Self {
            ending,
            decision,
            reason,
            rendered: None,
            attempted: false,
        }
    }
}

/// Ends claim number `claim` and writes its decision in one statement. Returns
/// false when that claim no longer holds the message (nothing was written),
/// except that a send Twilio accepted is recorded even after its callbacks
/// moved the message on.
#[tracing::instrument(skip_all, fields(%message_id, decision = f.decision))]
pub async fn finish(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
    claim: i32,
    f: &Finish<'_>,
) -> Result<bool, sqlx::Error> {
    let (status, sid, until, code, message, reconcile_at) = match &f.ending {
        Ending::Sent {
            sid, reconcile_at, ..
        } => (
            MessageStatus::Sent,
            sid.as_ref(),
            None,
            None,
            None,
            *reconcile_at,
        ),
        Ending::Skipped => (MessageStatus::Skipped, None, None, None, None, None),
        Ending::Deferred { until } => {
            (MessageStatus::Pending, None, Some(*until), None, None, None)
        }
        Ending::Failed { code, message } => (
            MessageStatus::Failed,
            None,
            None,
            *code,
            Some(message),
            None,
        ),
        Ending::Unknown { reconcile_at } => (
            MessageStatus::Sending,
            None,
            None,
            None,
            None,
            Some(*reconcile_at),
        ),
        Ending::Released => (MessageStatus::Queued, None, None, None, None, None),
    };
    let (body, content_variables) = f.rendered.clone().unwrap_or((None, None));
    let content_variables: Option<Value> =
        content_variables.and_then(|c| serde_json::from_str(&c).ok());
    let done: Option<bool> = sqlx::query_scalar!(
        r#"with upd as (
             update messages m set
                 -- $14: the status's rank (MessageStatus::rank). A send
                 -- never moves a message Twilio's callbacks took further back.
                 status = case when $2::text = 'sent' and m.status_rank >= $14::smallint then m.status else $2 end,
                 status_rank = case when $2 = 'sent' then greatest(m.status_rank, $14) else $14 end,
                 twilio_sid = coalesce($3::text, m.twilio_sid),
                 next_attempt_at = coalesce($4::timestamptz, m.next_attempt_at),
                 error_code = coalesce($5::int, m.error_code),
                 error_message = coalesce($6::text, m.error_message),
                 attempts = m.attempts + $11::int,
                 sent_at = case when $2 = 'sent' then coalesce(m.sent_at, now()) else m.sent_at end,
                 failed_at = case when $2 = 'failed' then now() else m.failed_at end,
                 queued_at = case when $2 = 'pending' then null else m.queued_at end,
                 reconcile_at = $12::timestamptz,
                 outcome_unknown = ($2 = 'sending'),
                 cap_reserved = m.cap_reserved and $2 in ('sending', 'sent'),
                 body = coalesce($9::text, m.body),
                 content_variables = coalesce($10::jsonb, m.content_variables),
                 last_decision = $7::text,
                 updated_at = now()
             where m.id = $1 and m.claims = $13::int
               and (m.status = 'sending'
                    -- Twilio's callback (naming our id) can beat its API answer:
                    -- the send is still recorded, the further status kept.
                    or ($2 = 'sent' and m.status_rank > $15::smallint and ($3::text is null or m.twilio_sid = $3::text)))
             returning m.id, m.campaign_id, m.phone_number
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision, reason)
             select id, campaign_id, phone_number, $7, $8::jsonb from upd
         )
         select true as "done!" from upd"#,
        message_id,
        status.as_str(),
        sid,
        until,
        code,
        message,
        f.decision,
        &f.reason,
        body,
        content_variables,
        i32::from(f.attempted),
        reconcile_at,
        claim,
        status.rank(),
        MessageStatus::Sending.rank()
    )
    .fetch_optional(db)
    .await?;
    Ok(done.unwrap_or(false))
}

/// A decision about a message outside any claim (what reconciliation learned
/// by SID): written for the record, and kept as the row's latest decision.
pub async fn note(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
    decision: &str,
    reason: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "with upd as (
             update messages set last_decision = $2 where id = $1
             returning id, campaign_id, phone_number
         )
         insert into decisions (message_id, campaign_id, phone_number, decision, reason)
         select id, campaign_id, phone_number, $2, $3 from upd",
        message_id,
        decision,
        reason
    )
    .execute(db)
    .await?;
    Ok(())
}
