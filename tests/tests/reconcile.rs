//! Send at most once, and account for every message: unknown outcomes,
//! claim leases, reconciliation against a Twilio that answers faults, account
//! holds, attempts, and the frequency cap under concurrency.

use std::time::Duration;

use chrono::Utc;
use e2e::engine::{
    CampaignSpec, campaign, fast_settings, push_request, queued_message, sender, twilio_config,
    user,
};
use e2e::twilio_mock::{Fault, FaultyTwilio};
use serde_json::{Value, json};
use shared::engine::reconcile::{ReconcileReport, ReconcileSettings, reconcile};
use shared::engine::send::SenderSettings;
use shared::ratelimit::Limiter;
use shared::store::messages::outbox;
use shared::store::messages::{self, Message};
use shared::twilio::TwilioClient;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{MIGRATOR, send};

const PHONE: &str = "+14155552671";

fn router(db: &PgPool, twilio: &FaultyTwilio, settings: SenderSettings) -> axum::Router {
    ::sender::router(sender(db, &twilio.uri(), Limiter::Off, settings))
}

/// Reconciliation that looks at once: nothing can still be in flight.
fn at_once() -> ReconcileSettings {
    ReconcileSettings {
        in_flight_for: Duration::ZERO,
        final_after: Duration::ZERO,
        ..ReconcileSettings::default()
    }
}

/// Makes every unsettled message due now (time passing, without waiting).
async fn make_due(db: &PgPool) {
    sqlx::query("update messages set reconcile_at = now() - interval '1 second' where reconcile_at is not null")
        .execute(db)
        .await
        .unwrap();
}

async fn reconcile_now(
    db: &PgPool,
    twilio: &FaultyTwilio,
    settings: &ReconcileSettings,
) -> ReconcileReport {
    make_due(db).await;
    let client =
        TwilioClient::new(twilio_config(&twilio.uri(), Duration::from_millis(500))).unwrap();
    reconcile(db, &client, settings).await.unwrap()
}

async fn message(db: &PgPool, id: Uuid) -> Message {
    messages::get(db, id).await.unwrap().unwrap()
}

async fn flags(db: &PgPool, id: Uuid) -> (bool, bool, i16) {
    sqlx::query_as(
        "select outcome_unknown, reconcile_at is not null, resends from messages where id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn decisions(db: &PgPool, id: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("select decision, reason from decisions where message_id = $1 order by id")
        .bind(id)
        .fetch_all(db)
        .await
        .unwrap()
}

async fn requeue(db: &PgPool, id: Uuid) {
    sqlx::query("update messages set status = 'queued', status_rank = 1 where id = $1 and status = 'pending'")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
}

async fn one_message(db: &PgPool, spec: &CampaignSpec) -> (Uuid, Uuid) {
    user(
        db,
        PHONE,
        "opted_in",
        json!({"first_name": "Ada"}),
        Some(Utc::now()),
    )
    .await;
    let c = campaign(db, spec).await;
    (c, queued_message(db, c, PHONE).await)
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_unknown_outcome_is_held_and_never_sent_again_before_reconciliation(db: PgPool) {
    for fault in [
        Fault::ServerErrorBefore,
        Fault::ServerErrorAfter,
        Fault::AcceptThenTimeout,
    ] {
        sqlx::raw_sql("delete from decisions; delete from messages; delete from users")
            .execute(&db)
            .await
            .unwrap();
        let twilio = FaultyTwilio::start().await;
        twilio.script([fault]);
        let (_, id) = one_message(&db, &CampaignSpec::default()).await;
        let r = router(&db, &twilio, fast_settings());
        send(&r, push_request(id)).await;
        let m = message(&db, id).await;
        assert_eq!((m.status.as_str(), m.attempts), ("sending", 1), "{fault:?}");
        assert_eq!(flags(&db, id).await, (true, true, 0), "{fault:?}");
        assert_eq!(
            decisions(&db, id).await.last().unwrap().0,
            "outcome_unknown"
        );
        // A redelivered push, or the same task published again, sends nothing.
        send(&r, push_request(id)).await;
        assert_eq!(twilio.send_requests().await, 1, "{fault:?}");
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn reconciliation_adopts_what_twilio_holds(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    twilio.script([Fault::AcceptThenTimeout]);
    let (_, id) = one_message(&db, &CampaignSpec::default()).await;
    send(&router(&db, &twilio, fast_settings()), push_request(id)).await;
    let held = twilio.held_to(PHONE);
    assert_eq!(held.len(), 1);
    twilio.set_status(&held[0].sid, "delivered");

    let report = reconcile_now(&db, &twilio, &at_once()).await;
    assert_eq!((report.looked_up, report.found), (1, 1), "{report:?}");
    let m = message(&db, id).await;
    assert_eq!(m.twilio_sid.as_deref(), Some(held[0].sid.as_str()));
    assert_eq!(m.status, "delivered");
    assert_eq!(flags(&db, id).await, (false, false, 0));
    let (decision, reason) = decisions(&db, id).await.pop().unwrap();
    assert_eq!(decision, "reconciled_found");
    assert_eq!(reason["matched"], json!([held[0].sid]));
    // What Twilio answered is kept raw, like a webhook.
    let raw: String =
        sqlx::query_scalar("select raw_body from webhook_events where kind = 'reconcile'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(raw.contains(&held[0].sid), "{raw}");
    assert_eq!(twilio.send_requests().await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn nothing_at_twilio_is_sent_again_once_then_failed(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    twilio.script([Fault::ServerErrorBefore, Fault::ServerErrorBefore]);
    let (_, id) = one_message(&db, &CampaignSpec::default()).await;
    let r = router(&db, &twilio, fast_settings());
    send(&r, push_request(id)).await;

    // While the send may still be in flight, not finding it proves nothing.
    let patient = ReconcileSettings {
        in_flight_for: Duration::from_secs(3600),
        ..at_once()
    };
    let report = reconcile_now(&db, &twilio, &patient).await;
    assert_eq!(report.waiting, 1, "{report:?}");
    assert_eq!(message(&db, id).await.status, "sending");

    let report = reconcile_now(&db, &twilio, &at_once()).await;
    assert_eq!(report.resent, 1, "{report:?}");
    let m = message(&db, id).await;
    assert_eq!(m.status, "pending");
    assert_eq!(flags(&db, id).await, (false, false, 1));
    assert_eq!(
        decisions(&db, id).await.pop().unwrap().0,
        "reconciled_resend"
    );

    // The re-send's outcome is unknown too, and Twilio has nothing: it fails, never a third send.
    requeue(&db, id).await;
    send(&r, push_request(id)).await;
    let report = reconcile_now(&db, &twilio, &at_once()).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let m = message(&db, id).await;
    assert_eq!(m.status, "failed");
    assert_eq!(
        decisions(&db, id).await.pop().unwrap().0,
        "reconciled_not_found"
    );
    assert_eq!(twilio.send_requests().await, 2);
    assert!(twilio.held().is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_past_its_lease_is_reconciled_not_left_sending(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    let (_, id) = one_message(&db, &CampaignSpec::default()).await;
    // A sender claims it, then dies before Twilio.
    let claimed = outbox::claim(&db, id, 0.0).await.unwrap().expect("claimed");
    assert_eq!(claimed.claim, 1);
    let report = reconcile_now(&db, &twilio, &at_once()).await;
    assert_eq!(report.resent, 1, "{report:?}");
    requeue(&db, id).await;
    send(&router(&db, &twilio, fast_settings()), push_request(id)).await;
    let m = message(&db, id).await;
    assert_eq!((m.status.as_str(), m.attempts), ("sent", 1));
    // The dead sender's claim can no longer end the message.
    let f = outbox::Finish::without_send(outbox::Ending::Skipped, "skipped_render", json!({}));
    assert!(!outbox::finish(&db, id, claimed.claim, &f).await.unwrap());
    assert_eq!(twilio.held_to(PHONE).len(), 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_2xx_with_an_unreadable_body_is_sent_and_its_sid_found(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    twilio.script([Fault::AcceptGarbage]);
    let (_, id) = one_message(&db, &CampaignSpec::default()).await;
    send(&router(&db, &twilio, fast_settings()), push_request(id)).await;
    let m = message(&db, id).await;
    assert_eq!((m.status.as_str(), m.twilio_sid.as_deref()), ("sent", None));
    let report = reconcile_now(&db, &twilio, &at_once()).await;
    assert_eq!(report.found, 1, "{report:?}");
    let sid = twilio.held_to(PHONE)[0].sid.clone();
    assert_eq!(message(&db, id).await.twilio_sid, Some(sid));
    assert_eq!(twilio.send_requests().await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_sent_message_whose_final_callback_never_came_is_fetched(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    let (_, id) = one_message(&db, &CampaignSpec::default()).await;
    send(&router(&db, &twilio, fast_settings()), push_request(id)).await;
    let sid = message(&db, id).await.twilio_sid.unwrap();
    twilio.set_status(&sid, "read");
    let report = reconcile_now(&db, &twilio, &at_once()).await;
    assert_eq!((report.fetched, report.advanced), (1, 1), "{report:?}");
    assert_eq!(message(&db, id).await.status, "read");
    assert_eq!(
        decisions(&db, id).await.pop().unwrap().0,
        "reconciled_status"
    );
    // Fetched once: a second pass leaves it.
    assert_eq!(reconcile_now(&db, &twilio, &at_once()).await.fetched, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn account_errors_never_fail_recipients_and_pause_the_campaign(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    twilio.script([Fault::Unauthorized, Fault::DailyLimit, Fault::Unauthorized]);
    user(
        &db,
        PHONE,
        "opted_in",
        json!({"first_name": "Ada"}),
        Some(Utc::now()),
    )
    .await;
    let spec = CampaignSpec {
        max_attempts: 1,
        ..CampaignSpec::default()
    };
    let c = campaign(&db, &spec).await;
    let id = queued_message(&db, c, PHONE).await;
    let r = router(&db, &twilio, fast_settings());
    for _ in 0..3 {
        send(&r, push_request(id)).await;
        let m = message(&db, id).await;
        // Deferred, not failed, and no attempt used (max_attempts is 1).
        assert_eq!((m.status.as_str(), m.attempts), ("pending", 0));
        requeue(&db, id).await;
    }
    let (decision, reason) = decisions(&db, id).await.pop().unwrap();
    assert_eq!(decision, "deferred_account_hold");
    assert_eq!(reason["code"], 20003);
    let state: String = sqlx::query_scalar("select state from campaigns where id = $1")
        .bind(c)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(state, "paused");
    let paused: Value = sqlx::query_scalar(
        "select reason from decisions where campaign_id = $1 and decision = 'paused_account_hold'",
    )
    .bind(c)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(paused["code"], 20003);

    // Resumed once the account is fixed (as the API does: back to scheduled),
    // the count starts afresh and the message goes on where it stopped.
    shared::store::campaigns::set_state(
        &db,
        c,
        shared::domain::CampaignState::Paused,
        shared::domain::CampaignState::Scheduled,
    )
    .await
    .unwrap()
    .expect("resumed");
    let holds = || async {
        sqlx::query_scalar::<_, i32>("select account_holds from campaigns where id = $1")
            .bind(c)
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert_eq!(holds().await, 0);
    send(&r, push_request(id)).await;
    let m = message(&db, id).await;
    assert_eq!((m.status.as_str(), m.attempts), ("sent", 1));
    assert_eq!(holds().await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn deferrals_do_not_use_up_attempts(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    twilio.script([Fault::TooManyRequests]);
    let spec = CampaignSpec {
        max_attempts: 2,
        state: "paused",
        ..CampaignSpec::default()
    };
    let (c, id) = one_message(&db, &spec).await;
    let r = router(&db, &twilio, fast_settings());
    // Paused twice: deferred twice, no attempt.
    for _ in 0..2 {
        send(&r, push_request(id)).await;
        assert_eq!(message(&db, id).await.attempts, 0);
        requeue(&db, id).await;
    }
    sqlx::query("update campaigns set state = 'running' where id = $1")
        .bind(c)
        .execute(&db)
        .await
        .unwrap();
    // One 429 (an attempt), then the send: two attempts, within max_attempts.
    send(&r, push_request(id)).await;
    assert_eq!(message(&db, id).await.attempts, 1);
    requeue(&db, id).await;
    send(&r, push_request(id)).await;
    let m = message(&db, id).await;
    assert_eq!((m.status.as_str(), m.attempts), ("sent", 2));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_frequency_cap_holds_across_concurrent_campaigns(db: PgPool) {
    let twilio = FaultyTwilio::start().await;
    user(
        &db,
        PHONE,
        "opted_in",
        json!({"first_name": "Ada"}),
        Some(Utc::now()),
    )
    .await;
    let spec = CampaignSpec {
        frequency_cap: Some(1),
        ..CampaignSpec::default()
    };
    let mut ids = vec![];
    for _ in 0..2 {
        let c = campaign(&db, &spec).await;
        ids.push(queued_message(&db, c, PHONE).await);
    }
    let r = router(&db, &twilio, fast_settings());
    // 50 pushes at once, duplicates included, across the two campaigns.
    let mut tasks = vec![];
    for i in 0..50 {
        let (r, id) = (r.clone(), ids[i % 2]);
        tasks.push(tokio::spawn(
            async move { send(&r, push_request(id)).await.0 },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(twilio.send_requests().await, 1);
    let outcomes: Vec<String> = sqlx::query_scalar("select status from messages order by status")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(outcomes, ["sent", "skipped"]);
}
