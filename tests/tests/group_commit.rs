//! Group commit of status callbacks: callbacks that arrive together share one
//! transaction, a bad one fails alone, two reports for one message apply in
//! arrival order, duplicates are stored once, and a 2xx means committed even
//! when the process is killed mid-stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use e2e::process::{FunctionProcess, function_binary};
use e2e::{AUTH_TOKEN, PUBLIC_BASE_URL, fixtures, sign_form, status_params, webhooks_router};
use futures::future::join_all;
use shared::domain::MessageStatus;
use shared::store::messages::{self, BatchedCallback};
use shared::webhooks::WebhookError;
use shared::webhooks::group_commit::{GroupCommit, GroupCommitSettings};
use sqlx::PgPool;

use crate::support::{MIGRATOR, count, post_signed};

const TO: &str = "whatsapp:+14155552671";

/// A callback as the status function hands it to the group commit.
fn callback(sid: &str, status: &str) -> BatchedCallback {
    BatchedCallback {
        dedupe_key: format!("{sid}:{status}"),
        idempotency_token: None,
        request_uri: "/webhooks/status".into(),
        content_type: "application/x-www-form-urlencoded".into(),
        raw_body: format!("MessageSid={sid}&MessageStatus={status}"),
        params: serde_json::json!({"MessageSid": sid, "MessageStatus": status}),
        parse_error: None,
        message_id: None,
        message_sid: sid.into(),
        status: Some(status.parse().unwrap()),
        error_code: None,
        error_message: None,
    }
}

/// How many transactions wrote the stored status events.
async fn transactions(db: &PgPool) -> i64 {
    count(
        db,
        "select count(distinct xmin::text) from webhook_events where kind = 'status'",
    )
    .await
}

async fn status(db: &PgPool, sid: &str) -> MessageStatus {
    sqlx::query_scalar::<_, String>("select status from messages where twilio_sid = $1")
        .bind(sid)
        .fetch_one(db)
        .await
        .unwrap()
        .parse()
        .unwrap()
}

/// Submits every callback before the writer runs (one poll of `join_all` on
/// this test's single thread), so that they meet in one batch.
async fn submit_together(
    group: &GroupCommit,
    callbacks: Vec<BatchedCallback>,
) -> Vec<Result<messages::CallbackOutcome, WebhookError>> {
    join_all(callbacks.into_iter().map(|c| group.submit(c))).await
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn callbacks_that_arrive_together_commit_in_one_transaction(db: PgPool) {
    let campaign = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, campaign, "SMtogether", 20)
        .await
        .unwrap();
    let group = GroupCommit::spawn(db.clone(), GroupCommitSettings::default());
    let outcomes = submit_together(
        &group,
        (0..20)
            .map(|i| callback(&format!("SMtogether{i}"), "delivered"))
            .collect(),
    )
    .await;
    for outcome in &outcomes {
        let outcome = outcome.as_ref().expect("committed");
        assert!(outcome.event_id.is_some() && outcome.message_id.is_some());
        assert!(outcome.advanced, "{outcome:?}");
    }
    assert_eq!(transactions(&db).await, 1, "one transaction for all 20");
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where status = 'delivered' and delivered_at is not null"
        )
        .await,
        20
    );

    // Over HTTP, as Twilio posts them: every request answered 200, fewer
    // transactions than requests.
    let second = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, second, "SMhttp", 20)
        .await
        .unwrap();
    let router = webhooks_router(db.clone());
    let sids: Vec<String> = (0..20).map(|i| format!("SMhttp{i}")).collect();
    let answers =
        join_all(sids.iter().map(|sid| {
            let router = router.clone();
            async move {
                post_signed(&router, "/webhooks/status", &status_params(sid, "read", TO)).await
            }
        }))
        .await;
    assert!(
        answers.iter().all(|(code, _)| *code == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(
        count(&db, "select count(*) from messages where status = 'read'").await,
        20
    );
    let http_transactions = transactions(&db).await - 1;
    assert!(
        http_transactions < 20,
        "20 callbacks at once took {http_transactions} transactions"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_bad_callback_fails_alone_and_the_rest_of_its_batch_commits(db: PgPool) {
    let campaign = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, campaign, "SMbad", 5)
        .await
        .unwrap();
    let group = GroupCommit::spawn(db.clone(), GroupCommitSettings::default());
    let mut callbacks: Vec<_> = (0..5)
        .map(|i| callback(&format!("SMbad{i}"), "sent"))
        .collect();
    // PostgreSQL refuses a NUL in text and in JSON: the statement with it fails.
    callbacks[2].error_message = Some("bad\0byte".into());
    callbacks[2].params = serde_json::json!({"ErrorMessage": "bad\0byte"});

    let outcomes = submit_together(&group, callbacks).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (2, Err(WebhookError::Database(_))) => {}
            (2, other) => panic!("the bad callback: {other:?}"),
            (_, Ok(o)) => assert!(o.advanced, "callback {i}: {o:?}"),
            (_, Err(e)) => panic!("callback {i} failed with the bad one: {e}"),
        }
    }
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 4);
    assert_eq!(
        count(&db, "select count(*) from messages where status = 'sent'").await,
        4
    );
    assert_eq!(status(&db, "SMbad2").await, MessageStatus::Sending);
    // The batch failed as a whole, then each good callback committed on its own.
    assert_eq!(transactions(&db).await, 4);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_reports_for_one_message_apply_in_the_order_they_arrived(db: PgPool) {
    let campaign = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, campaign, "SMorder", 4)
        .await
        .unwrap();
    // Delivered then failed, and failed then delivered: one by one, the first
    // keeps the delivery and the second ends in failure.
    let arrivals = [
        ("SMorder0", "delivered"),
        ("SMorder0", "failed"),
        ("SMorder1", "failed"),
        ("SMorder1", "delivered"),
        ("SMorder2", "sent"),
        ("SMorder2", "read"),
    ];
    let group = GroupCommit::spawn(db.clone(), GroupCommitSettings::default());
    let outcomes = submit_together(
        &group,
        arrivals.iter().map(|(sid, s)| callback(sid, s)).collect(),
    )
    .await;
    let advanced: Vec<bool> = outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().advanced)
        .collect();
    assert_eq!(advanced, [true, false, true, false, true, true]);

    for sid in ["SMorder0", "SMorder1", "SMorder2"] {
        let one_by_one = arrivals
            .iter()
            .filter(|(s, _)| *s == sid)
            .fold(MessageStatus::Sending, |cur, (_, report)| {
                cur.advance(report.parse().unwrap()).unwrap_or(cur)
            });
        assert_eq!(status(&db, sid).await, one_by_one, "{sid}");
    }
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 6);
    // The second report for each message waited for the next batch.
    assert_eq!(transactions(&db).await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn duplicates_within_and_across_batches_are_stored_once(db: PgPool) {
    let campaign = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, campaign, "SMdup", 3)
        .await
        .unwrap();
    let group = GroupCommit::spawn(db.clone(), GroupCommitSettings::default());
    // The same callback twice, and one webhook retried under its idempotency
    // token with another body (SMdup2's report is the same webhook as SMdup1's).
    let mut retried = callback("SMdup2", "sent");
    retried.idempotency_token = Some("token-1".into());
    let mut first = callback("SMdup1", "sent");
    first.idempotency_token = Some("token-1".into());
    let outcomes = submit_together(
        &group,
        vec![
            callback("SMdup0", "sent"),
            callback("SMdup0", "sent"),
            first,
            retried,
        ],
    )
    .await;
    let events: Vec<Option<i64>> = outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().event_id)
        .collect();
    assert!(events[0].is_some() && events[2].is_some(), "{events:?}");
    assert_eq!(events[1], None, "the repeated callback is a duplicate");
    assert_eq!(events[3], None, "the retried webhook is a duplicate");
    assert!(!outcomes[3].as_ref().unwrap().advanced);
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 2);
    assert_eq!(status(&db, "SMdup2").await, MessageStatus::Sending);

    // The same again, later: nothing more is stored.
    let again = submit_together(&group, vec![callback("SMdup0", "sent")]).await;
    assert_eq!(again[0].as_ref().unwrap().event_id, None);
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 2);
}

/// The status function's own process, 16 connections posting callbacks,
/// `kill -9` mid-stream: every callback answered 2xx is committed, and
/// Twilio's retries of the rest, to the restarted process, store each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_2xx_means_committed_when_the_process_is_killed_mid_stream() {
    const MESSAGES: usize = 3_000;
    const CONNECTIONS: usize = 16;
    let binary = function_binary("status");
    let name = format!("group_commit_kill_{}", std::process::id());
    let db = e2e::bench::fresh_database(&name, 4).await.unwrap();
    let campaign = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, campaign, "SMkill", MESSAGES as i64)
        .await
        .unwrap();
    let mut url = url::Url::parse(&e2e::bench::admin_url()).unwrap();
    url.set_path(&name);
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", url.to_string()),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
        ("PUBLIC_BASE_URL", PUBLIC_BASE_URL.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut status_fn = FunctionProcess::start(&binary, &env);
    let endpoint = status_fn.url("/webhooks/status");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ready = async {
        while http.get(status_fn.url("/healthz")).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("the status function starts");

    // Each connection posts its share of the messages' "delivered" callbacks
    // until the process dies under it.
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let post = {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        move |sid: String| {
            let (http, endpoint) = (http.clone(), endpoint.clone());
            async move {
                let form = sign_form(
                    AUTH_TOKEN,
                    "/webhooks/status",
                    &status_params(&sid, "delivered", TO),
                );
                http.post(&endpoint)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", form.signature)
                    .body(form.body)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        }
    };
    let mut connections = vec![];
    for c in 0..CONNECTIONS {
        let (answered, post) = (answered.clone(), post.clone());
        connections.push(tokio::spawn(async move {
            for i in (c..MESSAGES).step_by(CONNECTIONS) {
                let sid = format!("SMkill{i}");
                match post(sid.clone()).await {
                    Ok(code) if code.is_success() => {
                        answered.lock().unwrap().insert(sid);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    while answered.lock().unwrap().len() < MESSAGES / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    status_fn.kill_9();
    for c in connections {
        c.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() < MESSAGES, "the kill came before the end");

    let committed: HashSet<String> =
        sqlx::query_scalar("select twilio_sid from messages where status = 'delivered'")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let lost: Vec<&String> = answered.difference(&committed).collect();
    assert!(lost.is_empty(), "answered 2xx but not committed: {lost:?}");
    let events: HashSet<String> = sqlx::query_scalar("select message_sid from webhook_events")
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        events, committed,
        "an event for each advanced message, no more"
    );

    // Twilio retries what was not answered 2xx; some of it was committed
    // before the kill, and is stored once.
    status_fn.spawn();
    let mut retried = 0;
    for i in 0..MESSAGES {
        let sid = format!("SMkill{i}");
        if answered.contains(&sid) {
            continue;
        }
        let code = loop {
            match post(sid.clone()).await {
                Ok(code) => break code,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert!(code.is_success(), "retry of {sid}: {code}");
        retried += 1;
    }
    assert!(retried > 0);
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where status = 'delivered'"
        )
        .await,
        MESSAGES as i64
    );
    assert_eq!(
        count(&db, "select count(*) from webhook_events").await,
        MESSAGES as i64,
        "each callback stored once"
    );
    drop(status_fn);
    db.close().await;
    let admin = sqlx::PgPool::connect(&e2e::bench::admin_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database {name} with (force)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
