//! The fan-out's message queries: materialize recipients set-based, take
//! due messages for dispatch at each campaign's pace, release what could not
//! be published, and sweep cancelled campaigns. (The campaign transitions
//! around them are in `store::campaigns`.) Every statement is safe to run
//! from two ticks at once.

use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::MessageStatus;
use crate::segment::Segment;

/// Inserts the next batch of recipients after `after` (by phone number) and
/// returns the last phone number of the batch and how many users it held;
/// users who already have the message are left alone.
#[tracing::instrument(skip_all, fields(%campaign, batch))]
pub async fn materialize_batch(
    db: &mut PgConnection,
    campaign: Uuid,
    segment: &Segment,
    after: Option<&str>,
    batch: i64,
) -> Result<(Option<String>, i64), sqlx::Error> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("with batch as (select phone_number from users where phone_number > ");
    qb.push_bind(after.unwrap_or("").to_owned());
    qb.push(" and ");
    segment.push_predicate(&mut qb);
    qb.push(" order by phone_number limit ");
    qb.push_bind(batch);
    qb.push("), ins as (insert into messages (campaign_id, phone_number) select ");
    qb.push_bind(campaign);
    qb.push(
        ", phone_number from batch on conflict (campaign_id, phone_number) where trigger_event_id is null do nothing)
         select max(phone_number), count(*) from batch",
    );
    qb.build_query_as().fetch_one(db).await
}

/// What one round took for a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    pub ids: Vec<Uuid>,
    /// The window's budget ran out: more may be due in the next window.
    pub budget_exhausted: bool,
}

/// Takes up to one window's worth (and at most `limit`) of the campaign's due
/// `pending` messages, marks them `queued` with a `queued` decision, and
/// returns their ids. The campaign row is locked while its budget is counted,
/// so ticks running at once share one budget. A window counts as over after nine tenths of its
/// length, so rounds paced one window apart always find a fresh budget.
#[tracing::instrument(skip_all, fields(%campaign))]
pub async fn take_due(
    db: &mut PgConnection,
    campaign: Uuid,
    window_ms: i64,
    limit: i64,
) -> Result<Taken, sqlx::Error> {
    let budget: Option<i64> = sqlx::query_scalar!(
        r#"update campaigns set
             dispatched_in_window = case when dispatch_window_start is null
                 or dispatch_window_start <= clock_timestamp() - make_interval(secs => $2::float8 * 0.9 / 1000)
                 then 0 else dispatched_in_window end,
             dispatch_window_start = case when dispatch_window_start is null
                 or dispatch_window_start <= clock_timestamp() - make_interval(secs => $2::float8 * 0.9 / 1000)
                 then clock_timestamp() else dispatch_window_start end
         where id = $1 and state = 'running'
         returning greatest((rate_per_second::bigint * $2) / 1000 - dispatched_in_window, 0) as "budget!""#,
        campaign,
        window_ms
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(budget) = budget else {
        return Ok(Taken::default());
    };
    if budget == 0 {
        return Ok(Taken {
            ids: vec![],
            budget_exhausted: true,
        });
    }
    let ids: Vec<Uuid> = sqlx::query_scalar!(
        r#"with due as (
             select id from messages
             where campaign_id = $1 and status = 'pending' and next_attempt_at <= now()
             order by next_attempt_at
             limit $2
             for update skip locked
         ), upd as (
             update messages m set status = 'queued', status_rank = $3, queued_at = now(),
                                 last_decision = 'queued', updated_at = now()
             from due where m.id = due.id
             returning m.id, m.phone_number
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision)
             select id, $1, phone_number, 'queued' from upd
         )
         select id as "id!" from upd"#,
        campaign,
        budget.min(limit.max(1)),
        MessageStatus::Queued.rank()
    )
    .fetch_all(&mut *db)
    .await?;
    sqlx::query!(
        "update campaigns set dispatched_in_window = dispatched_in_window + $2 where id = $1",
        campaign,
        ids.len() as i32
    )
    .execute(&mut *db)
    .await?;
    Ok(Taken {
        budget_exhausted: ids.len() as i64 == budget,
        ids,
    })
}

/// Takes the given `pending` messages (due now: the caller checked) whose
/// campaign runs (a triggered campaign's messages, as the event that started
/// them commits), marks them `queued` with a `queued` decision, and returns
/// their ids. The campaign's pace still holds: the sender's rate limiter counts
/// every send, however it was dispatched.
#[tracing::instrument(skip_all, fields(messages = ids.len()))]
pub async fn queue_now(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with due as (
             select m.id from messages m join campaigns k on k.id = m.campaign_id
             where m.id = any($1) and m.status = 'pending' and k.state = 'running'
             for update of m skip locked
         ), upd as (
             update messages m set status = 'queued', status_rank = $2, queued_at = now(),
                                 last_decision = 'queued', updated_at = now()
             from due where m.id = due.id
             returning m.id, m.campaign_id, m.phone_number
         ), logged as (
             insert into decisions (message_id, campaign_id, phone_number, decision)
             select id, campaign_id, phone_number, 'queued' from upd
         )
         select id as "id!" from upd"#,
        ids,
        MessageStatus::Queued.rank()
    )
    .fetch_all(db)
    .await
}

/// Puts messages whose tasks could not be published back to `pending`.
pub async fn release(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update messages set status = 'pending', status_rank = $2, queued_at = null, updated_at = now()
         where id = any($1) and status = 'queued'",
        ids,
        MessageStatus::Pending.rank()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Messages queued long ago whose task was lost (published never, or pushed
/// before the row said `queued`): republishing is safe because the sender's
/// claim is conditional.
pub async fn stale_queued(
    db: impl PgExecutor<'_>,
    older_than_secs: i64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "with stale as (
             select id from messages
             where status = 'queued' and twilio_sid is null
               and queued_at < now() - make_interval(secs => $1)
             order by queued_at limit $2
             for update skip locked
         )
         update messages m set queued_at = now() from stale where m.id = stale.id
         returning m.id",
        older_than_secs as f64,
        limit
    )
    .fetch_all(db)
    .await
}

/// Messages of cancelled campaigns that were never sent end as `canceled`.
pub async fn sweep_cancelled(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "with gone as (
             update messages m set status = 'canceled', status_rank = $1, last_decision = 'cancelled',
                                 updated_at = now()
             from campaigns c
             where c.id = m.campaign_id and c.state = 'cancelled' and m.status in ('pending', 'queued')
             returning m.id, m.campaign_id, m.phone_number
         )
         insert into decisions (message_id, campaign_id, phone_number, decision, reason)
         select id, campaign_id, phone_number, 'cancelled', '{\"reason\": \"campaign cancelled\"}' from gone",
        MessageStatus::Canceled.rank()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Messages claimed longer ago than `older_than_secs` and still `sending`:
/// reconciliation settles a claim soon after its lease; what is counted here
/// is what it could not (Twilio unreachable for its lookups), for an operator
/// to see.
pub async fn stuck_sending(
    db: impl PgExecutor<'_>,
    older_than_secs: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from messages
         where status = 'sending' and sending_at < now() - make_interval(secs => $1)"#,
        older_than_secs as f64
    )
    .fetch_one(db)
    .await
}
