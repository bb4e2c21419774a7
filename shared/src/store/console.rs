//! Reads for the operator console's pages (the `api` function's `/console`):
//! the overview's last 24 hours, people search, a person's messages with
//! their decisions, and a campaign's recipients by outcome.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{Consent, ConsentSource, MessageStatus};
use crate::store::users::User;

/// How many messages reached each step in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HourCounts {
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
}

/// Messages sent, delivered, read and failed per hour since `since`
/// (truncated to the hour), oldest first, one entry per hour up to now.
#[tracing::instrument(skip_all)]
pub async fn activity_by_hour(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, HourCounts)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with steps as (
             select 'sent' as step, date_trunc('hour', sent_at) as hour, count(*) as n
               from messages where sent_at >= $1 group by 2
             union all
             select 'delivered', date_trunc('hour', delivered_at), count(*)
               from messages where delivered_at >= $1 group by 2
             union all
             select 'read', date_trunc('hour', read_at), count(*)
               from messages where read_at >= $1 group by 2
             union all
             select 'failed', date_trunc('hour', failed_at), count(*)
               from messages where failed_at >= $1 group by 2
           )
           select h.hour as "hour!", s.step as "step?", s.n as "n?"
           from generate_series(date_trunc('hour', $1::timestamptz), date_trunc('hour', now()),
                                interval '1 hour') as h(hour)
           left join steps s on s.hour = h.hour
           order by h.hour"#,
        since
    )
    .fetch_all(db)
    .await?;
    let mut hours: Vec<(DateTime<Utc>, HourCounts)> = Vec::new();
    for row in rows {
        if hours.last().is_none_or(|(h, _)| *h != row.hour) {
            hours.push((row.hour, HourCounts::default()));
        }
        let Some((_, counts)) = hours.last_mut() else {
            continue;
        };
        let n = row.n.unwrap_or(0);
        match row.step.as_deref() {
            Some("sent") => counts.sent = n,
            Some("delivered") => counts.delivered = n,
            Some("read") => counts.read = n,
            Some("failed") => counts.failed = n,
            _ => {}
        }
    }
    Ok(hours)
}

/// The Twilio error codes of messages that failed since `since`, most frequent first.
#[tracing::instrument(skip_all)]
pub async fn top_error_codes(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(i32, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select error_code as "code!", count(*) as "n!" from messages
           where failed_at >= $1 and error_code is not null
           group by error_code order by count(*) desc, error_code limit $2"#,
        since,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.code, r.n)).collect())
}

/// People who opted out (of everything, not refused) since `since`.
#[tracing::instrument(skip_all)]
pub async fn opt_outs_since(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(distinct phone_number) as "n!" from consent_events
           where to_consent = 'opted_out' and created_at >= $1 and not refused and topic is null"#,
        since
    )
    .fetch_one(db)
    .await
}

/// A campaign's progress for a list: recipients, and those whose message
/// has ended (sent on, skipped or failed: neither waiting nor in flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub recipients: i64,
    pub done: i64,
}

#[tracing::instrument(skip_all)]
pub async fn campaign_progress(
    db: impl PgExecutor<'_>,
    campaigns: &[Uuid],
) -> Result<Vec<(Uuid, Progress)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select campaign_id as "campaign_id!", sum(n)::bigint as "recipients!",
                  (sum(n) filter (where status not in ('pending', 'queued', 'sending')))::bigint as "done"
           from (select campaign_id, status, count(*) as n from messages
                 where campaign_id = any($1) group by campaign_id, status) s
           group by campaign_id"#,
        campaigns
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let progress = Progress {
                recipients: r.recipients,
                done: r.done.unwrap_or(0),
            };
            (r.campaign_id, progress)
        })
        .collect())
}

/// People whose number starts with `prefix` (E.164 digits, `+` optional), by number.
#[tracing::instrument(skip_all)]
pub async fn people_by_number_prefix(
    db: impl PgExecutor<'_>,
    prefix: &str,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"select phone_number, attributes, consent as "consent: Consent", consent_changed_at,
                  consent_source as "consent_source: ConsentSource", wa_id, profile_name,
                  last_inbound_at, created_at, updated_at
           from users where phone_number >= $1 and starts_with(phone_number, $1)
           order by phone_number limit $2"#,
        prefix,
        limit
    )
    .fetch_all(db)
    .await
}

/// People whose attributes contain `pattern` (a one-key object: `{"plan": "gold"}`), by number.
#[tracing::instrument(skip_all)]
pub async fn people_by_attribute(
    db: impl PgExecutor<'_>,
    pattern: &Value,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"select phone_number, attributes, consent as "consent: Consent", consent_changed_at,
                  consent_source as "consent_source: ConsentSource", wa_id, profile_name,
                  last_inbound_at, created_at, updated_at
           from users where attributes @> $1
           order by phone_number limit $2"#,
        pattern,
        limit
    )
    .fetch_all(db)
    .await
}

/// One message to a person, with its campaign and every decision about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PersonMessage {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub campaign_name: String,
    pub status: MessageStatus,
    pub error_code: Option<i32>,
    pub body: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// `[{decision, reason, at}]`, oldest first.
    pub decisions: Value,
}

/// A person's latest messages, newest first.
#[tracing::instrument(skip_all)]
pub async fn person_messages(
    db: impl PgExecutor<'_>,
    phone: &str,
    limit: i64,
) -> Result<Vec<PersonMessage>, sqlx::Error> {
    sqlx::query_as!(
        PersonMessage,
        r#"select m.id, m.campaign_id, k.name as campaign_name, m.status as "status: MessageStatus",
                  m.error_code, m.body, m.created_at, m.sent_at, m.delivered_at, m.read_at, m.failed_at,
                  coalesce((select jsonb_agg(jsonb_build_object('decision', d.decision, 'reason', d.reason,
                                                                'at', d.created_at) order by d.created_at, d.id)
                            from decisions d
                            -- The months since the message (a day's margin), not all of them.
                            where d.message_id = m.id and d.created_at >= m.created_at - interval '1 day'),
                           '[]') as "decisions!"
           from messages m join campaigns k on k.id = m.campaign_id
           where m.phone_number = $1
           order by m.created_at desc, m.id desc limit $2"#,
        phone,
        limit
    )
    .fetch_all(db)
    .await
}

/// A decision about a person that made no message (a trigger that did not
/// fire for them), newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PersonDecision {
    pub campaign_id: Option<Uuid>,
    pub campaign_name: Option<String>,
    pub decision: String,
    pub reason: Value,
    pub created_at: DateTime<Utc>,
}

#[tracing::instrument(skip_all)]
pub async fn person_decisions_without_message(
    db: impl PgExecutor<'_>,
    phone: &str,
    limit: i64,
) -> Result<Vec<PersonDecision>, sqlx::Error> {
    sqlx::query_as!(
        PersonDecision,
        r#"select d.campaign_id, k.name as "campaign_name?", d.decision, d.reason, d.created_at
           from decisions d left join campaigns k on k.id = d.campaign_id
           where d.phone_number = $1 and d.message_id is null
           order by d.created_at desc, d.id desc limit $2"#,
        phone,
        limit
    )
    .fetch_all(db)
    .await
}

/// Which of a campaign's recipients an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    All,
    /// Twilio accepted it.
    Sent,
    /// Delivered or read.
    Delivered,
    Read,
    /// Failed or undelivered, any code.
    Failed,
    /// Failed with this Twilio error code.
    ErrorCode(i32),
    /// Never sent (consent, topic, window, render, cap, cancelled).
    Skipped,
}

impl Outcome {
    /// `all`, `sent`, `delivered`, `read`, `failed`, `skipped`, or an error code (`63016`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            code => Self::ErrorCode(code.parse().ok().filter(|c| *c > 0)?),
        })
    }

    pub fn label(self) -> String {
        match self {
            Self::All => "all".into(),
            Self::Sent => "sent".into(),
            Self::Delivered => "delivered".into(),
            Self::Read => "read".into(),
            Self::Failed => "failed".into(),
            Self::Skipped => "skipped".into(),
            Self::ErrorCode(c) => c.to_string(),
        }
    }

    fn code(self) -> Option<i32> {
        match self {
            Self::ErrorCode(c) => Some(c),
            _ => None,
        }
    }
}

/// One row of a recipients export.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: Uuid,
    pub phone_number: String,
    pub status: String,
    pub error_code: Option<i32>,
    pub last_decision: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Up to `limit` of a campaign's recipients with `outcome`, after message `after`, by message id.
#[tracing::instrument(skip_all)]
pub async fn recipients_page(
    db: impl PgExecutor<'_>,
    campaign: Uuid,
    outcome: Outcome,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Recipient>, sqlx::Error> {
    sqlx::query_as!(
        Recipient,
        r#"select id, phone_number, status, error_code, last_decision, sent_at, delivered_at, read_at, failed_at
           from messages
           where campaign_id = $1
             and ($2::uuid is null or id > $2)
             and case $3
                   when 'sent' then twilio_sid is not null
                   when 'delivered' then delivered_at is not null or status in ('delivered', 'read')
                   when 'read' then read_at is not null or status = 'read'
                   when 'failed' then status in ('failed', 'undelivered')
                   when 'skipped' then status = 'skipped'
                   when 'code' then error_code = $4
                   else true end
           order by id limit $5"#,
        campaign,
        after,
        match outcome {
            Outcome::ErrorCode(_) => "code".to_owned(),
            o => o.label(),
        },
        outcome.code(),
        limit
    )
    .fetch_all(db)
    .await
}

/// What the sender would read about one person of a campaign's audience.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AudienceMember {
    pub phone_number: String,
    pub consent: Consent,
    pub attributes: Value,
    pub profile_name: Option<String>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Subscribed to the campaign's topic (true without one).
    pub topic_subscribed: bool,
    /// Messages sent to them in the last 24 hours, across campaigns.
    pub sent_last_24h: i64,
}

/// Up to `limit` people of `segment` after the number `after`, by number,
/// with what the sender's rules read (a dry run's input). Built per request
/// (the segment compiles to SQL), so checked at run time.
#[tracing::instrument(skip_all)]
pub async fn audience_page(
    db: impl PgExecutor<'_>,
    segment: &crate::segment::Segment,
    topic: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AudienceMember>, sqlx::Error> {
    let mut qb = sqlx::QueryBuilder::new(
        "select phone_number, consent, attributes, profile_name, last_inbound_at, \
         coalesce((select s.subscribed from topic_subscriptions s \
                   where s.phone_number = users.phone_number and s.topic = ",
    );
    qb.push_bind(topic.map(str::to_owned));
    qb.push(
        "), true) as topic_subscribed, \
         (select count(*) from messages m where m.phone_number = users.phone_number \
            and m.sent_at > now() - interval '24 hours') as sent_last_24h \
         from users where ",
    );
    segment.push_predicate(&mut qb);
    if let Some(a) = after {
        qb.push(" and phone_number > ").push_bind(a.to_owned());
    }
    qb.push(" order by phone_number limit ").push_bind(limit);
    qb.build_query_as().fetch_all(db).await
}

/// The newest import of an object (by name, any bucket and generation): how
/// the console finds the import its upload started.
#[tracing::instrument(skip_all)]
pub async fn import_for_object(
    db: impl PgExecutor<'_>,
    object: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from imports where object = $1 order by started_at desc limit 1",
        object
    )
    .fetch_optional(db)
    .await
}

/// One person as the sender's rules read them (a test send's input).
#[tracing::instrument(skip_all)]
pub async fn audience_member(
    db: impl PgExecutor<'_>,
    phone: &str,
    topic: Option<&str>,
) -> Result<Option<AudienceMember>, sqlx::Error> {
    sqlx::query_as!(
        AudienceMember,
        r#"select u.phone_number, u.consent as "consent: Consent", u.attributes, u.profile_name, u.last_inbound_at,
                  coalesce((select s.subscribed from topic_subscriptions s
                            where s.phone_number = u.phone_number and s.topic = $2), true) as "topic_subscribed!",
                  (select count(*) from messages m where m.phone_number = u.phone_number
                     and m.sent_at > now() - interval '24 hours') as "sent_last_24h!"
           from users u where u.phone_number = $1"#,
        phone,
        topic
    )
    .fetch_optional(db)
    .await
}

/// Records a decision about a person that made no message (a test send).
#[tracing::instrument(skip_all, fields(decision))]
pub async fn record_decision(
    db: impl PgExecutor<'_>,
    campaign: Uuid,
    phone: &str,
    decision: &str,
    reason: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into decisions (campaign_id, phone_number, decision, reason) values ($1, $2, $3, $4)",
        campaign,
        phone,
        decision,
        reason
    )
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_from_their_labels() {
        for o in [
            Outcome::All,
            Outcome::Sent,
            Outcome::Delivered,
            Outcome::Read,
            Outcome::Failed,
            Outcome::Skipped,
            Outcome::ErrorCode(63016),
        ] {
            assert_eq!(Outcome::parse(&o.label()), Some(o));
        }
        assert_eq!(Outcome::parse("0"), None);
        assert_eq!(Outcome::parse("bounced"), None);
    }
}
