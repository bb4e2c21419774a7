//! One fan-out tick: start due campaigns, materialize their recipients,
//! republish lost tasks, then dispatch due messages at each campaign's rate
//! for the length of the tick, and complete campaigns with nothing left.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::gcp::{SendTask, TaskPublisher};
use crate::segment::Segment;
use crate::store::campaigns;
use crate::store::messages::dispatch;

#[derive(Debug, Clone)]
pub struct FanoutSettings {
    /// Users inserted per materialization statement.
    pub batch_size: i64,
    /// How long one tick keeps dispatching (a little under the scheduler's
    /// interval); zero dispatches one round.
    pub run_for: Duration,
    /// The pacing window: each round dispatches at most a window's worth of
    /// each campaign's rate.
    pub round: Duration,
    /// A `queued` message older than this lost its task and is republished.
    pub stale_after: Duration,
    /// Tasks per publish call.
    pub publish_chunk: usize,
    /// Publish calls awaiting the server's acks at once.
    pub publish_in_flight: usize,
    /// Messages queued per statement: a large budget is taken in parts, each
    /// published while the next is taken.
    pub dispatch_chunk: i64,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        Self {
            batch_size: 50_000,
            run_for: Duration::from_secs(55),
            round: Duration::from_secs(1),
            stale_after: Duration::from_secs(15 * 60),
            publish_chunk: 1_000,
            publish_in_flight: 8,
            dispatch_chunk: 20_000,
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TickReport {
    pub started: usize,
    pub materialized: i64,
    pub republished: usize,
    pub cancelled: u64,
    pub dispatched: usize,
    pub publish_failures: usize,
    pub completed: usize,
    /// Messages a sender claimed long ago without an outcome (see `dispatch::stuck_sending`).
    pub stuck_sending: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[tracing::instrument(skip_all)]
pub async fn tick<P: TaskPublisher>(
    db: &PgPool,
    publisher: &P,
    settings: &FanoutSettings,
) -> Result<TickReport, FanoutError> {
    let began = Instant::now();
    let mut report = TickReport {
        started: campaigns::start_due_campaigns(db).await?.len(),
        ..TickReport::default()
    };
    for (campaign, definition) in campaigns::to_materialize(db).await? {
        match Segment::parse(&definition) {
            Ok(segment) => {
                report.materialized +=
                    materialize(db, campaign, &segment, settings.batch_size).await?
            }
            // The API validates segments; one that no longer parses is left for an operator.
            Err(e) => {
                tracing::error!(%campaign, error = %e, "segment does not parse; campaign not materialized")
            }
        }
    }
    let stale = dispatch::stale_queued(db, settings.stale_after.as_secs() as i64, 10_000).await?;
    report.republished = stale.len();
    report.publish_failures += publish(db, publisher, &stale, settings, false).await?;
    report.cancelled = dispatch::sweep_cancelled(db).await?;
    report.stuck_sending =
        dispatch::stuck_sending(db, settings.stale_after.as_secs() as i64).await?;
    if report.stuck_sending > 0 {
        tracing::error!(
            messages = report.stuck_sending,
            "messages claimed long ago are still unsettled; reconciliation cannot reach Twilio's Messages API"
        );
    }

    let deadline = began + settings.run_for;
    let window_ms = settings.round.as_millis() as i64;
    loop {
        let round_start = Instant::now();
        let mut more_due = false;
        for campaign in campaigns::running_campaigns(db).await? {
            // The window's budget in parts of `dispatch_chunk`: each part is
            // published while the next one is taken.
            let mut taken_before: Vec<Uuid> = vec![];
            loop {
                let take = async {
                    let mut tx = db.begin().await?;
                    let taken =
                        dispatch::take_due(&mut tx, campaign, window_ms, settings.dispatch_chunk)
                            .await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(taken)
                };
                let (taken, failed) =
                    tokio::join!(take, publish(db, publisher, &taken_before, settings, true));
                report.publish_failures += failed?;
                let taken = taken?;
                more_due |= taken.budget_exhausted;
                report.dispatched += taken.ids.len();
                let part_was_full =
                    !taken.budget_exhausted && taken.ids.len() as i64 >= settings.dispatch_chunk;
                taken_before = taken.ids;
                if !part_was_full {
                    break;
                }
            }
            report.publish_failures +=
                publish(db, publisher, &taken_before, settings, true).await?;
        }
        // Stop when every campaign's due messages fit its budget, or at the end of the tick.
        if !more_due || round_start + settings.round > deadline {
            break;
        }
        tokio::time::sleep_until(round_start + settings.round).await;
    }
    report.completed = campaigns::complete_finished(db).await?.len();
    tracing::info!(
        started = report.started,
        materialized = report.materialized,
        dispatched = report.dispatched,
        republished = report.republished,
        completed = report.completed,
        elapsed_ms = began.elapsed().as_millis() as u64,
        "fan-out tick done"
    );
    Ok(report)
}

/// Inserts the campaign's recipients batch by batch; returns how many users the segment held.
async fn materialize(
    db: &PgPool,
    campaign: Uuid,
    segment: &Segment,
    batch: i64,
) -> Result<i64, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut after: Option<String> = None;
    let mut total = 0;
    loop {
        let (last, n) =
            dispatch::materialize_batch(&mut conn, campaign, segment, after.as_deref(), batch)
                .await?;
        total += n;
        if n < batch {
            break;
        }
        after = last;
    }
    campaigns::mark_materialized(&mut *conn, campaign).await?;
    tracing::info!(%campaign, recipients = total, "recipients materialized");
    Ok(total)
}

/// Publishes tasks in chunks, `publish_in_flight` chunks awaiting their acks
/// at once (one chunk's round trip to Pub/Sub no longer waits for the one
/// before); a chunk that fails is released back to `pending` (when
/// `release`) for the next tick. Returns the tasks not published.
async fn publish<P: TaskPublisher>(
    db: &PgPool,
    publisher: &P,
    ids: &[Uuid],
    settings: &FanoutSettings,
    release: bool,
) -> Result<usize, sqlx::Error> {
    let calls: Vec<_> = ids
        .chunks(settings.publish_chunk.max(1))
        .map(|part| publish_chunk(publisher, part))
        .collect();
    let results: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(settings.publish_in_flight.max(1))
        .collect()
        .await;
    let mut failed = 0;
    for (part, result) in results {
        if let Err(e) = result {
            tracing::error!(error = %e, tasks = part.len(), "publishing send tasks failed");
            failed += part.len();
            if release {
                dispatch::release(db, part).await?;
            }
        }
    }
    Ok(failed)
}

async fn publish_chunk<'a, P: TaskPublisher>(
    publisher: &P,
    part: &'a [Uuid],
) -> (&'a [Uuid], Result<(), crate::gcp::PublishError>) {
    let tasks: Vec<SendTask> = part
        .iter()
        .map(|&message_id| SendTask { message_id })
        .collect();
    (part, publisher.publish(&tasks).await)
}
