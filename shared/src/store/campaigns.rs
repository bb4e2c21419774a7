//! `campaigns`: definitions, the operator's state transitions and delivery stats.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::{CampaignState, QuietHours};
use crate::store::PageKey;
use crate::trigger::Trigger;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    /// `batch` (once to a segment) or `triggered` (on events, until paused or cancelled).
    #[schema(pattern = "^(batch|triggered)$")]
    pub kind: String,
    /// Who: a batch campaign's recipients, a triggered campaign's audience
    /// (`null`: whoever the event is about).
    pub segment_id: Option<Uuid>,
    pub template_id: Uuid,
    /// A triggered campaign's trigger; `null` for a batch campaign.
    #[schema(value_type = Option<Trigger>)]
    pub trigger: Option<Json<Trigger>>,
    /// `draft`, `scheduled`, `running`, `paused`, `completed` or `cancelled`.
    #[schema(value_type = String)]
    pub state: CampaignState,
    /// When sending may start; set to the launch time when left empty.
    pub starts_at: Option<DateTime<Utc>>,
    pub rate_per_second: i32,
    /// `HH:MM`, local to the recipient: no sending from start to end.
    pub quiet_hours_start: Option<String>,
    pub quiet_hours_end: Option<String>,
    /// IANA zone for recipients without a `timezone` attribute.
    pub default_timezone: String,
    pub frequency_cap: Option<i32>,
    pub max_attempts: i32,
    /// The topic the campaign is about: people who left it are skipped.
    pub topic: Option<String>,
    pub materialized_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Campaign {
    pub fn state(&self) -> CampaignState {
        self.state
    }
}

// Every query that returns a `Campaign` lists its columns (sqlx checks each
// against the schema at compile time; a macro cannot build the literal):
// `state` typed, quiet hours as `HH:MM`.

/// Everything an operator sets on a draft; validated before it gets here.
#[derive(Debug, Clone)]
pub struct CampaignFields {
    pub name: String,
    pub segment_id: Option<Uuid>,
    pub template_id: Uuid,
    pub trigger: Option<Trigger>,
    pub starts_at: Option<DateTime<Utc>>,
    pub rate_per_second: i32,
    pub quiet_hours: Option<QuietHours>,
    pub default_timezone: String,
    pub frequency_cap: Option<i32>,
    pub max_attempts: i32,
    pub topic: Option<crate::domain::Topic>,
}

#[tracing::instrument(skip_all)]
pub async fn insert(db: impl PgExecutor<'_>, c: &CampaignFields) -> Result<Campaign, sqlx::Error> {
    sqlx::query_as!(
        Campaign,
        r#"insert into campaigns (name, segment_id, template_id, starts_at, rate_per_second,
             quiet_hours_start, quiet_hours_end, default_timezone, frequency_cap, max_attempts, topic, trigger)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         returning id, name, kind as "kind!", segment_id, template_id, trigger as "trigger: Json<Trigger>", state as "state: CampaignState", starts_at,
             rate_per_second, to_char(quiet_hours_start, 'HH24:MI') as quiet_hours_start,
             to_char(quiet_hours_end, 'HH24:MI') as quiet_hours_end, default_timezone,
             frequency_cap, max_attempts, topic, materialized_at, started_at, completed_at,
             created_at, updated_at"#,
        &c.name,
        c.segment_id,
        c.template_id,
        c.starts_at,
        c.rate_per_second,
        c.quiet_hours.map(|q| q.start()),
        c.quiet_hours.map(|q| q.end()),
        &c.default_timezone,
        c.frequency_cap,
        c.max_attempts,
        c.topic.as_ref().map(|t| t.as_str()),
        c.trigger.clone().map(Json) as Option<Json<Trigger>>
    )
    .fetch_one(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Campaign>, sqlx::Error> {
    sqlx::query_as!(
        Campaign,
        r#"select id, name, kind as "kind!", segment_id, template_id, trigger as "trigger: Json<Trigger>", state as "state: CampaignState", starts_at,
             rate_per_second, to_char(quiet_hours_start, 'HH24:MI') as quiet_hours_start,
             to_char(quiet_hours_end, 'HH24:MI') as quiet_hours_end, default_timezone,
             frequency_cap, max_attempts, topic, materialized_at, started_at, completed_at,
             created_at, updated_at
         from campaigns where id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Up to `limit` campaigns after `after`, newest first, in `state` when given.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    state: Option<CampaignState>,
    after: Option<PageKey>,
    limit: i64,
) -> Result<Vec<Campaign>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        Campaign,
        r#"select id, name, kind as "kind!", segment_id, template_id, trigger as "trigger: Json<Trigger>", state as "state: CampaignState", starts_at,
             rate_per_second, to_char(quiet_hours_start, 'HH24:MI') as quiet_hours_start,
             to_char(quiet_hours_end, 'HH24:MI') as quiet_hours_end, default_timezone,
             frequency_cap, max_attempts, topic, materialized_at, started_at, completed_at,
             created_at, updated_at
         from campaigns
         where ($1::text is null or state = $1)
           and ($2::timestamptz is null or (created_at, id) < ($2, $3))
         order by created_at desc, id desc
         limit $4"#,
        state.map(CampaignState::as_str),
        at,
        id,
        limit
    )
    .fetch_all(db)
    .await
}

/// Replaces the fields of a campaign that is still a draft; `None` when there
/// is no such draft (another state, or no campaign).
#[tracing::instrument(skip_all)]
pub async fn update_draft(
    db: impl PgExecutor<'_>,
    id: Uuid,
    c: &CampaignFields,
) -> Result<Option<Campaign>, sqlx::Error> {
    sqlx::query_as!(
        Campaign,
        r#"update campaigns set name = $2, segment_id = $3, template_id = $4, starts_at = $5,
             rate_per_second = $6, quiet_hours_start = $7, quiet_hours_end = $8,
             default_timezone = $9, frequency_cap = $10, max_attempts = $11, topic = $12, trigger = $13
         where id = $1 and state = 'draft'
         returning id, name, kind as "kind!", segment_id, template_id, trigger as "trigger: Json<Trigger>", state as "state: CampaignState", starts_at,
             rate_per_second, to_char(quiet_hours_start, 'HH24:MI') as quiet_hours_start,
             to_char(quiet_hours_end, 'HH24:MI') as quiet_hours_end, default_timezone,
             frequency_cap, max_attempts, topic, materialized_at, started_at, completed_at,
             created_at, updated_at"#,
        id,
        &c.name,
        c.segment_id,
        c.template_id,
        c.starts_at,
        c.rate_per_second,
        c.quiet_hours.map(|q| q.start()),
        c.quiet_hours.map(|q| q.end()),
        &c.default_timezone,
        c.frequency_cap,
        c.max_attempts,
        c.topic.as_ref().map(|t| t.as_str()),
        c.trigger.clone().map(Json) as Option<Json<Trigger>>
    )
    .fetch_optional(db)
    .await
}

/// Moves a campaign from `from` to `to` only if it is still in `from`, so two
/// concurrent moves (or the fan-out's own) cannot both win. Scheduling sets
/// `starts_at` to now when the operator left it empty. `None` when the
/// campaign was not in `from`.
#[tracing::instrument(skip_all, fields(from = %from, to = %to))]
pub async fn set_state(
    db: impl PgExecutor<'_>,
    id: Uuid,
    from: CampaignState,
    to: CampaignState,
) -> Result<Option<Campaign>, sqlx::Error> {
    sqlx::query_as!(
        Campaign,
        r#"update campaigns set
             state = $3,
             starts_at = case when $3 = 'scheduled' then coalesce(starts_at, now()) else starts_at end,
             -- Resuming starts the count of account-level refusals afresh.
             account_holds = case when $2 = 'paused' then 0 else account_holds end
         where id = $1 and state = $2
         returning id, name, kind as "kind!", segment_id, template_id, trigger as "trigger: Json<Trigger>", state as "state: CampaignState", starts_at,
             rate_per_second, to_char(quiet_hours_start, 'HH24:MI') as quiet_hours_start,
             to_char(quiet_hours_end, 'HH24:MI') as quiet_hours_end, default_timezone,
             frequency_cap, max_attempts, topic, materialized_at, started_at, completed_at,
             created_at, updated_at"#,
        id,
        from.as_str(),
        to.as_str()
    )
    .fetch_optional(db)
    .await
}

/// Counts one account-level refusal (credentials, suspension, daily limit)
/// for the campaign; at `pause_at` consecutive ones a running campaign pauses,
/// with a decision saying why. Returns true when this call paused it.
#[tracing::instrument(skip_all, fields(%id))]
pub async fn note_account_hold(
    db: impl PgExecutor<'_>,
    id: Uuid,
    pause_at: i32,
    reason: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with upd as (
             update campaigns c set
                 account_holds = c.account_holds + 1,
                 state = case when c.state = 'running' and c.account_holds + 1 >= $2 then 'paused' else c.state end
             from (select state from campaigns where id = $1) before
             where c.id = $1
             returning c.state, before.state as was
         ), paused as (
             select 1 from upd where state = 'paused' and was = 'running'
         ), logged as (
             insert into decisions (campaign_id, decision, reason)
             select $1, 'paused_account_hold', $3 from paused
         )
         select exists (select 1 from paused) as "paused!""#,
        id,
        pause_at,
        reason
    )
    .fetch_one(db)
    .await
}

/// A send went through: the account answers again.
pub async fn clear_account_holds(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update campaigns set account_holds = 0 where id = $1 and account_holds > 0",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// How a campaign's messages are doing.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CampaignStats {
    /// Recipients materialized so far.
    pub messages: i64,
    /// Messages by current status.
    pub by_status: BTreeMap<String, i64>,
    /// Decisions by kind (one message may have several, e.g. deferrals).
    pub by_decision: BTreeMap<String, i64>,
    /// Messages by Twilio error code.
    pub by_error_code: BTreeMap<String, i64>,
    /// Messages Twilio accepted (they have a MessageSid).
    pub accepted_by_twilio: i64,
    /// Messages delivered (or read).
    pub delivered: i64,
    pub read: i64,
    /// `delivered / accepted_by_twilio`; `null` before anything was accepted.
    pub delivery_rate: Option<f64>,
    /// `read / delivered`; `null` before anything was delivered.
    pub read_rate: Option<f64>,
    /// Recipients who opted out while the campaign ran (from its start to its end).
    pub opt_outs: i64,
}

struct StatsRow {
    messages: i64,
    accepted: i64,
    delivered: i64,
    read: i64,
    opt_outs: i64,
    by_status: Json<BTreeMap<String, i64>>,
    by_decision: Json<BTreeMap<String, i64>>,
    by_error_code: Json<BTreeMap<String, i64>>,
}

/// A campaign's stats, read in one statement so the numbers agree.
#[tracing::instrument(skip_all)]
pub async fn stats(db: impl PgExecutor<'_>, id: Uuid) -> Result<CampaignStats, sqlx::Error> {
    let row = sqlx::query_as!(
        StatsRow,
        r#"select
             count(*) as "messages!",
             count(*) filter (where twilio_sid is not null) as "accepted!",
             count(*) filter (where delivered_at is not null or status in ('delivered', 'read')) as "delivered!",
             count(*) filter (where read_at is not null or status = 'read') as "read!",
             coalesce((select jsonb_object_agg(status, n) from
                 (select status, count(*) as n from messages where campaign_id = $1 group by status) s),
                 '{}') as "by_status!: Json<BTreeMap<String, i64>>",
             coalesce((select jsonb_object_agg(decision, n) from
                 (select decision, count(*) as n from decisions
                  -- Nothing is decided about a campaign before it exists: only
                  -- the months since are read (decisions is partitioned by
                  -- month), with a day's margin for a transaction that began
                  -- before the campaign's committed.
                  where campaign_id = $1
                    and created_at >= (select created_at from campaigns where id = $1) - interval '1 day'
                  group by decision) d),
                 '{}') as "by_decision!: Json<BTreeMap<String, i64>>",
             coalesce((select jsonb_object_agg(error_code::text, n) from
                 (select error_code, count(*) as n from messages
                  where campaign_id = $1 and error_code is not null group by error_code) e),
                 '{}') as "by_error_code!: Json<BTreeMap<String, i64>>",
             (select count(distinct ce.phone_number) from consent_events ce, campaigns k
              where k.id = $1 and ce.to_consent = 'opted_out' and not ce.refused and ce.topic is null
                and ce.created_at >= coalesce(k.started_at, k.created_at)
                and ce.created_at <= coalesce(k.completed_at, now())
                and exists (select 1 from messages m
                            where m.campaign_id = $1 and m.phone_number = ce.phone_number)) as "opt_outs!"
         from messages where campaign_id = $1"#,
        id
    )
    .fetch_one(db)
    .await?;
    let rate = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
    Ok(CampaignStats {
        messages: row.messages,
        by_status: row.by_status.0,
        by_decision: row.by_decision.0,
        by_error_code: row.by_error_code.0,
        accepted_by_twilio: row.accepted,
        delivered: row.delivered,
        read: row.read,
        delivery_rate: rate(row.delivered, row.accepted),
        read_rate: rate(row.read, row.delivered),
        opt_outs: row.opt_outs,
    })
}

// The fan-out's campaign transitions. Each is safe to run from two ticks at once.

/// `scheduled → running` for every campaign whose start time has passed.
#[tracing::instrument(skip_all)]
pub async fn start_due_campaigns(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update campaigns set state = 'running', started_at = coalesce(started_at, now()),
             -- A triggered campaign has no recipients to materialize: it listens.
             materialized_at = case when trigger is not null then coalesce(materialized_at, now())
                               else materialized_at end
         where state = 'scheduled' and coalesce(starts_at, now()) <= now()
         returning id"
    )
    .fetch_all(db)
    .await
}

/// Running campaigns whose recipients are not materialized yet, with their segment.
pub async fn to_materialize(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(Uuid, serde_json::Value)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select c.id, s.definition from campaigns c join segments s on s.id = c.segment_id
         where c.state = 'running' and c.materialized_at is null and c.trigger is null
         order by c.created_at"
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.definition)).collect())
}

pub async fn mark_materialized(db: impl PgExecutor<'_>, campaign: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update campaigns set materialized_at = now() where id = $1 and materialized_at is null",
        campaign
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Running campaigns that may have due messages.
pub async fn running_campaigns(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from campaigns where state = 'running' and materialized_at is not null order by created_at"
    )
        .fetch_all(db)
        .await
}

/// `running → completed` when every message of a batch campaign has reached
/// an end. (A triggered campaign runs until paused or cancelled.)
pub async fn complete_finished(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update campaigns c set state = 'completed', completed_at = now()
         where c.state = 'running' and c.materialized_at is not null and c.trigger is null
           and not exists (select 1 from messages m
                           where m.campaign_id = c.id and m.status in ('pending', 'queued', 'sending'))
         returning c.id"
    )
    .fetch_all(db)
    .await
}
