//! The fan-out tick: starting, materializing, pacing, overlapping ticks,
//! lost tasks and completion.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, StatusCode};
use e2e::engine::{CampaignSpec, RecordingPublisher, campaign, user};
use serde_json::json;
use shared::engine::fanout::{FanoutSettings, tick};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{MIGRATOR, count, send};

/// One dispatch round per tick (the tests' tick returns at once).
pub fn one_round() -> FanoutSettings {
    FanoutSettings {
        run_for: Duration::ZERO,
        ..FanoutSettings::default()
    }
}

async fn users(db: &PgPool, n: usize) {
    for i in 0..n {
        let consent = if i % 4 == 3 { "opted_out" } else { "opted_in" };
        user(
            db,
            &format!("+1415555{i:04}"),
            consent,
            json!({"first_name": "Ada", "n": i}),
            None,
        )
        .await;
    }
}

async fn campaign_state(db: &PgPool, campaign: Uuid) -> String {
    sqlx::query_scalar("select state from campaigns where id = $1")
        .bind(campaign)
        .fetch_one(db)
        .await
        .unwrap()
}

fn published(p: &RecordingPublisher) -> Vec<Uuid> {
    p.tasks
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.message_id)
        .collect()
}

/// `n` tasks published, each message once, and `n` messages queued, each with its decision.
async fn assert_queued_and_published_once(db: &PgPool, publisher: &RecordingPublisher, n: i64) {
    let ids = published(publisher);
    assert_eq!(ids.len() as i64, n, "tasks published");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len() as i64,
        n,
        "each message published once"
    );
    assert_eq!(
        count(db, "select count(*) from messages where status = 'queued'").await,
        n
    );
    assert_eq!(
        count(
            db,
            "select count(*) from decisions where decision = 'queued'"
        )
        .await,
        n
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_tick_starts_materializes_and_dispatches(db: PgPool) {
    users(&db, 40).await;
    let c = campaign(
        &db,
        &CampaignSpec {
            state: "scheduled",
            ..CampaignSpec::default()
        },
    )
    .await;
    let later = campaign(
        &db,
        &CampaignSpec {
            state: "scheduled",
            ..CampaignSpec::default()
        },
    )
    .await;
    sqlx::query("update campaigns set starts_at = now() + interval '1 hour' where id = $1")
        .bind(later)
        .execute(&db)
        .await
        .unwrap();
    let publisher = RecordingPublisher::default();

    let report = tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(
        (report.started, report.materialized, report.dispatched),
        (1, 30, 30)
    );
    let state = campaign_state(&db, c).await;
    assert_eq!(state, "running");
    let later_state = campaign_state(&db, later).await;
    assert_eq!(later_state, "scheduled");

    // Only the segment's users (opted in), each once, each queued with a decision.
    assert_queued_and_published_once(&db, &publisher, 30).await;
    assert_eq!(count(&db, "select count(*) from messages m join users u using (phone_number) where u.consent <> 'opted_in'").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_ticks_at_once_do_what_one_does(db: PgPool) {
    users(&db, 200).await;
    campaign(
        &db,
        &CampaignSpec {
            state: "scheduled",
            rate_per_second: 100,
            ..CampaignSpec::default()
        },
    )
    .await;
    let publisher = RecordingPublisher::default();
    let settings = FanoutSettings {
        batch_size: 7,
        ..one_round()
    };
    let (a, b) = tokio::join!(
        tick(&db, &publisher, &settings),
        tick(&db, &publisher, &settings)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.started + b.started, 1);
    assert_eq!(count(&db, "select count(*) from messages").await, 150);
    // One second's budget between them, and no task published twice.
    let ids = published(&publisher);
    assert_eq!(ids.len(), 100, "{a:?} {b:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 100);
    assert_eq!(
        count(&db, "select count(*) from messages where status = 'queued'").await,
        100
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn dispatch_is_paced_by_the_campaign_rate(db: PgPool) {
    users(&db, 80).await;
    campaign(
        &db,
        &CampaignSpec {
            rate_per_second: 10,
            ..CampaignSpec::default()
        },
    )
    .await;
    let publisher = RecordingPublisher::default();
    let settings = FanoutSettings {
        run_for: Duration::from_millis(2500),
        round: Duration::from_secs(1),
        ..FanoutSettings::default()
    };
    let started = std::time::Instant::now();
    let report = tick(&db, &publisher, &settings).await.unwrap();
    let elapsed = started.elapsed();
    // 60 opted-in recipients, in rounds a second apart, ten each: never more than
    // the rate allows. How many rounds fit in the tick depends on the machine's
    // speed, not on the rule.
    let rounds = report.dispatched / 10;
    assert_eq!(report.dispatched % 10, 0, "{report:?}");
    assert!((1..=3).contains(&rounds), "{report:?}");
    assert!(
        elapsed >= Duration::from_secs(rounds as u64 - 1),
        "{rounds} rounds in {elapsed:?}"
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where status = 'pending'"
        )
        .await,
        60 - report.dispatched as i64
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn deferred_messages_wait_for_their_time(db: PgPool) {
    users(&db, 4).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let publisher = RecordingPublisher::default();
    tick(&db, &publisher, &one_round()).await.unwrap();
    // The sender deferred two of them (quiet hours) and retried one now.
    sqlx::query("update messages set status = 'pending', status_rank = 0, next_attempt_at = now() + interval '1 hour' where phone_number in ('+14155550000', '+14155550001')")
        .execute(&db).await.unwrap();
    sqlx::query("update messages set status = 'pending', status_rank = 0, next_attempt_at = now() where phone_number = '+14155550002'")
        .execute(&db).await.unwrap();
    let report = tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(report.dispatched, 1);
    let state = campaign_state(&db, c).await;
    assert_eq!(state, "running");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_lost_task_is_republished_and_a_failed_publish_released(db: PgPool) {
    users(&db, 4).await;
    campaign(&db, &CampaignSpec::default()).await;
    let failing = RecordingPublisher {
        fail: true,
        ..RecordingPublisher::default()
    };
    let report = tick(&db, &failing, &one_round()).await.unwrap();
    assert_eq!(report.publish_failures, 3);
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where status = 'pending'"
        )
        .await,
        3
    );

    let publisher = RecordingPublisher::default();
    tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(published(&publisher).len(), 3);
    // A task lost after the commit: the message sits in queued; once stale it goes out again.
    sqlx::query("update messages set queued_at = now() - interval '1 hour' where phone_number = '+14155550000'")
        .execute(&db).await.unwrap();
    let report = tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(report.republished, 1);
    assert_eq!(published(&publisher).len(), 4);

    // A sender that died after its claim: counted for an operator, never republished.
    sqlx::query("update messages set status = 'sending', status_rank = 2, sending_at = now() - interval '1 hour' where phone_number = '+14155550001'")
        .execute(&db).await.unwrap();
    let report = tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!((report.stuck_sending, report.republished), (1, 0));
    assert_eq!(published(&publisher).len(), 4);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn campaigns_complete_when_every_message_ended_and_cancelled_ones_stop(db: PgPool) {
    users(&db, 8).await;
    let done = campaign(&db, &CampaignSpec::default()).await;
    let cancelled = campaign(
        &db,
        &CampaignSpec {
            rate_per_second: 1,
            ..CampaignSpec::default()
        },
    )
    .await;
    let publisher = RecordingPublisher::default();
    tick(&db, &publisher, &one_round()).await.unwrap();
    sqlx::query("update messages set status = 'delivered', status_rank = 5 where campaign_id = $1")
        .bind(done)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("update campaigns set state = 'cancelled' where id = $1")
        .bind(cancelled)
        .execute(&db)
        .await
        .unwrap();
    let report = tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(report.completed, 1);
    assert_eq!(report.cancelled, 6);
    let state = campaign_state(&db, done).await;
    assert_eq!(state, "completed");
    assert_eq!(
        count(
            &db,
            "select count(*) from decisions where decision = 'cancelled'"
        )
        .await,
        6
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_tick_route_reports_what_it_did(db: PgPool) {
    users(&db, 4).await;
    campaign(
        &db,
        &CampaignSpec {
            state: "scheduled",
            ..CampaignSpec::default()
        },
    )
    .await;
    let state = Arc::new(fanout::AppState {
        db: db.clone(),
        publisher: RecordingPublisher::default(),
        settings: one_round(),
        twilio: None,
        reconcile: Default::default(),
    });
    let router = fanout::router(state);
    let (code, body) = send(
        &router,
        Request::post("/tick")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["started"], 1);
    assert_eq!(report["dispatched"], 3);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_large_budget_is_taken_and_published_in_parts(db: PgPool) {
    // 30 opted-in recipients of 40, a budget for all of them, parts of 7.
    users(&db, 40).await;
    let spec = CampaignSpec {
        rate_per_second: 1000,
        ..CampaignSpec::default()
    };
    campaign(&db, &spec).await;
    let settings = FanoutSettings {
        dispatch_chunk: 7,
        publish_chunk: 3,
        ..one_round()
    };
    let publisher = RecordingPublisher::default();
    let report = tick(&db, &publisher, &settings).await.unwrap();
    assert_eq!(report.dispatched, 30, "{report:?}");
    // Every part published, once.
    assert_queued_and_published_once(&db, &publisher, 30).await;
}
