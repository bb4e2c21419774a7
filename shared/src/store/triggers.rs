//! Triggered campaigns' rows: the running campaigns an event name concerns,
//! the messages matching events create (under the per-person rule), the
//! waiting messages a cancel event calls off, and the decisions that explain
//! every event that started nothing. `engine::triggers` drives these.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::MessageStatus;
use crate::trigger::Trigger;

/// A running triggered campaign, with its audience segment's definition.
#[derive(Debug, Clone)]
pub struct Listening {
    pub id: Uuid,
    pub trigger: Json<Trigger>,
    pub segment: Option<serde_json::Value>,
}

/// The running triggered campaigns that `names` start or cancel.
#[tracing::instrument(skip_all)]
pub async fn listening(
    db: &mut PgConnection,
    names: &[String],
) -> Result<Vec<Listening>, sqlx::Error> {
    sqlx::query_as!(
        Listening,
        r#"select c.id, c.trigger as "trigger!: Json<Trigger>", s.definition as "segment?"
         from campaigns c left join segments s on s.id = c.segment_id
         where c.state = 'running' and c.trigger is not null
           and (c.trigger ->> 'event' = any($1) or c.trigger ->> 'cancel_event' = any($1))
         order by c.created_at"#,
        names
    )
    .fetch_all(db)
    .await
}

/// Which of `phones` are in the audience: the segment's predicate over those rows only.
pub async fn in_audience(
    db: &mut PgConnection,
    segment: &crate::segment::Segment,
    phones: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut qb =
        sqlx::QueryBuilder::new("select phone_number from users where phone_number = any(");
    qb.push_bind(phones.to_vec());
    qb.push(") and ");
    segment.push_predicate(&mut qb);
    qb.build_query_scalar().fetch_all(db).await
}

/// One matching event for one campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub campaign_id: Uuid,
    pub event_id: i64,
    pub phone_number: String,
    pub occurred_at: DateTime<Utc>,
    pub send_at: DateTime<Utc>,
}

/// A message a match created.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub event_id: i64,
    pub send_at: DateTime<Utc>,
}

/// The matches whose campaign's cancel event the person already did at or
/// after the triggering event (it arrived first): as (campaign, event) pairs.
pub async fn already_cancelled(
    db: &mut PgConnection,
    matches: &[Match],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let (campaigns, events, phones, occurred) = columns(matches);
    let rows = sqlx::query!(
        r#"select t.campaign_id as "campaign_id!", t.event_id as "event_id!"
         from unnest($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[])
              as t(campaign_id, event_id, phone_number, occurred_at)
         join campaigns k on k.id = t.campaign_id
         where k.trigger ->> 'cancel_event' is not null
           and exists (select 1 from events x
                       where x.phone_number = t.phone_number and x.name = k.trigger ->> 'cancel_event'
                         and x.occurred_at >= t.occurred_at)"#,
        &campaigns,
        &events,
        &phones,
        &occurred
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.campaign_id, r.event_id))
        .collect())
}

type Columns = (Vec<Uuid>, Vec<i64>, Vec<String>, Vec<DateTime<Utc>>);

fn columns(matches: &[Match]) -> Columns {
    (
        matches.iter().map(|m| m.campaign_id).collect(),
        matches.iter().map(|m| m.event_id).collect(),
        matches.iter().map(|m| m.phone_number.clone()).collect(),
        matches.iter().map(|m| m.occurred_at).collect(),
    )
}

/// Creates the matches' messages, `pending` until `send_at`, each with a
/// `triggered` decision, where the campaign's per-person rule allows:
/// `once` (no message of the campaign to the person before), `once_per_period`
/// (none created within the period) or `every_event`. Within one call the
/// earliest match of a person wins. Each (campaign, person) pair is locked
/// first, so two calls at once cannot both pass the rule; a replayed event
/// finds its message there already. Returns what was created.
#[tracing::instrument(skip_all, fields(matches = matches.len()))]
pub async fn create_messages(
    db: &mut PgConnection,
    matches: &[Match],
) -> Result<Vec<Created>, sqlx::Error> {
    if matches.is_empty() {
        return Ok(vec![]);
    }
    let (campaigns, events, phones, occurred) = columns(matches);
    let send_at: Vec<DateTime<Utc>> = matches.iter().map(|m| m.send_at).collect();
    // Its own statement, so the check below reads what the lock holders committed.
    sqlx::query!(
        r#"select count(pg_advisory_xact_lock(hashtextextended(c::text || ':' || p, 11))) as "locked!"
         from (select distinct c, p from unnest($1::uuid[], $2::text[]) as t(c, p) order by c, p) pairs"#,
        &campaigns,
        &phones
    )
    .fetch_one(&mut *db)
    .await?;
    let rows = sqlx::query!(
        r#"with input as (
             select * from unnest($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[], $5::timestamptz[])
                 with ordinality as t(campaign_id, event_id, phone_number, occurred_at, send_at, ord)
         ), ranked as (
             select i.*, k.trigger ->> 'per_person' as rule,
                    coalesce((k.trigger ->> 'period_seconds')::float8, 0) as period,
                    row_number() over (partition by i.campaign_id, i.phone_number
                                       order by i.occurred_at, i.ord) as nth
             from input i join campaigns k on k.id = i.campaign_id
         ), allowed as (
             select * from ranked r
             where r.rule = 'every_event'
                or (r.nth = 1 and not exists (
                      select 1 from messages m
                      where m.campaign_id = r.campaign_id and m.phone_number = r.phone_number
                        and m.trigger_event_id is not null
                        and (r.rule = 'once' or m.created_at > now() - make_interval(secs => r.period))))
         ), created as (
             insert into messages (campaign_id, phone_number, trigger_event_id, next_attempt_at, last_decision)
             select campaign_id, phone_number, event_id, send_at, 'triggered' from allowed order by ord
             on conflict (campaign_id, trigger_event_id) where trigger_event_id is not null do nothing
             returning id, campaign_id, phone_number, trigger_event_id, next_attempt_at
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision, reason)
             select id, campaign_id, phone_number, 'triggered',
                    jsonb_build_object('event_id', trigger_event_id, 'send_at', next_attempt_at)
             from created
         )
         select id as "id!", campaign_id as "campaign_id!", trigger_event_id as "event_id!",
                next_attempt_at as "send_at!"
         from created"#,
        &campaigns,
        &events,
        &phones,
        &occurred,
        &send_at
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Created {
            id: r.id,
            campaign_id: r.campaign_id,
            event_id: r.event_id,
            send_at: r.send_at,
        })
        .collect())
}

/// A cancel event: calls off the person's messages of `campaign_id` still
/// waiting (`pending`, or `queued` and not yet claimed by a sender) whose
/// triggering event happened at or before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancel {
    pub campaign_id: Uuid,
    pub event_id: i64,
    pub phone_number: String,
    pub occurred_at: DateTime<Utc>,
}

/// Applies the cancels: the messages become `skipped` with a
/// `cancelled_by_event` decision naming the event. Returns how many.
#[tracing::instrument(skip_all, fields(cancels = cancels.len()))]
pub async fn cancel_waiting(db: &mut PgConnection, cancels: &[Cancel]) -> Result<u64, sqlx::Error> {
    if cancels.is_empty() {
        return Ok(0);
    }
    let campaigns: Vec<Uuid> = cancels.iter().map(|c| c.campaign_id).collect();
    let events: Vec<i64> = cancels.iter().map(|c| c.event_id).collect();
    let phones: Vec<String> = cancels.iter().map(|c| c.phone_number.clone()).collect();
    let occurred: Vec<DateTime<Utc>> = cancels.iter().map(|c| c.occurred_at).collect();
    let n = sqlx::query_scalar!(
        r#"with input as (
             select * from unnest($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[])
                 as t(campaign_id, event_id, phone_number, occurred_at)
         ), hit as (
             select distinct on (m.id) m.id, i.event_id
             from input i
             join messages m on m.campaign_id = i.campaign_id and m.phone_number = i.phone_number
             join events e on e.id = m.trigger_event_id
             where m.status in ('pending', 'queued') and e.occurred_at <= i.occurred_at
             order by m.id, i.event_id
         ), upd as (
             update messages m set status = 'skipped', status_rank = $5,
                                 last_decision = 'cancelled_by_event', updated_at = now()
             from hit where m.id = hit.id and m.status in ('pending', 'queued')
             returning m.id, m.campaign_id, m.phone_number, hit.event_id
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision, reason)
             select id, campaign_id, phone_number, 'cancelled_by_event',
                    jsonb_build_object('cancel_event_id', event_id)
             from upd
         )
         select count(*) as "n!" from upd"#,
        &campaigns,
        &events,
        &phones,
        &occurred,
        MessageStatus::Skipped.rank()
    )
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// An event that started nothing for a campaign, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NotStarted {
    pub campaign_id: Uuid,
    pub phone_number: String,
    /// `trigger_filtered`, `trigger_not_in_audience`, `trigger_too_late`,
    /// `trigger_limited` or `trigger_cancelled_already`.
    pub decision: &'static str,
    pub reason: serde_json::Value,
}

/// Records why events started nothing (decisions without a message).
pub async fn log_not_started(
    db: &mut PgConnection,
    rows: &[NotStarted],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let campaigns: Vec<Uuid> = rows.iter().map(|r| r.campaign_id).collect();
    let phones: Vec<String> = rows.iter().map(|r| r.phone_number.clone()).collect();
    let decisions: Vec<String> = rows.iter().map(|r| r.decision.to_owned()).collect();
    let reasons: Vec<serde_json::Value> = rows.iter().map(|r| r.reason.clone()).collect();
    sqlx::query!(
        "insert into decisions (campaign_id, phone_number, decision, reason)
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[])",
        &campaigns,
        &phones,
        &decisions,
        &reasons
    )
    .execute(db)
    .await?;
    Ok(())
}
