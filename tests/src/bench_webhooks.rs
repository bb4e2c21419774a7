//! Status callbacks over real HTTP on loopback, against the same writes
//! issued directly through sqlx (the floor).

use std::sync::Arc;

use shared::store::messages::{self, CallbackUpdate};
use shared::store::webhook_events::NewWebhookEvent;
use shared::webhooks::VerifiedWebhook;
use shared::webhooks::status::StatusCallback;

use crate::bench::{Run, fresh_database, run_for, seconds};
use crate::{AUTH_TOKEN, fixtures, sign_form, status_params, webhook_config};

const CONCURRENCY: usize = 16;
const MESSAGES: usize = 100_000;
const STATUSES: [&str; 3] = ["sent", "delivered", "read"];

/// The `i`th callback of a run: every message gets sent, then delivered, then read.
fn callback(prefix: &str, i: usize) -> (String, &'static str) {
    let i = i % (MESSAGES * STATUSES.len());
    (format!("{prefix}{}", i % MESSAGES), STATUSES[i / MESSAGES])
}

pub async fn run() -> anyhow::Result<()> {
    let duration = seconds(10);
    let db = fresh_database("ese_bench_webhooks", CONCURRENCY as u32).await?;
    for prefix in ["SMhttp", "SMfloor"] {
        let campaign = fixtures::campaign(&db).await;
        fixtures::sending_messages(&db, campaign, prefix, MESSAGES as i64).await?;
    }
    sqlx::query("vacuum analyze").execute(&db).await?;

    // The status function, served over HTTP on loopback.
    let router = status::router(status::AppState::new(
        db.clone(),
        &webhook_config(AUTH_TOKEN),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let http = run_for("HTTP status router", CONCURRENCY, duration, move |i| {
        let client = client.clone();
        async move {
            let (sid, status) = callback("SMhttp", i);
            let form = sign_form(
                AUTH_TOKEN,
                "/webhooks/status",
                &status_params(&sid, status, "whatsapp:+14155552671"),
            );
            let response = client
                .post(format!("http://{addr}/webhooks/status"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", form.signature)
                .body(form.body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "status {}",
                response.status()
            );
            Ok(())
        }
    })
    .await;

    // The floor: the same statement with the same rows, no HTTP, no signature.
    let floor_db = Arc::new(db.clone());
    let floor = run_for("floor (sqlx direct)", CONCURRENCY, duration, move |i| {
        let db = floor_db.clone();
        async move {
            let (sid, status) = callback("SMfloor", i);
            let form = sign_form(
                AUTH_TOKEN,
                "/webhooks/status",
                &status_params(&sid, status, "whatsapp:+14155552671"),
            );
            let webhook = VerifiedWebhook {
                request_uri: "/webhooks/status".into(),
                content_type: "application/x-www-form-urlencoded".into(),
                params: form_urlencoded::parse(form.body.as_bytes())
                    .into_owned()
                    .collect(),
                raw_body: form.body,
                idempotency_token: None,
            };
            let cb = StatusCallback::from_webhook(&webhook)?;
            let params = webhook.params_json();
            let dedupe_key = cb.dedupe_key();
            let event = NewWebhookEvent {
                kind: "status",
                dedupe_key: &dedupe_key,
                idempotency_token: None,
                message_sid: Some(&cb.message_sid),
                request_uri: &webhook.request_uri,
                content_type: &webhook.content_type,
                raw_body: &webhook.raw_body,
                params: &params,
            };
            let update = CallbackUpdate {
                message_id: cb.message_id,
                message_sid: &cb.message_sid,
                status: cb.status,
                error_code: cb.error_code,
                error_message: cb.error_message.as_deref(),
            };
            messages::apply_status_callback(&*db, &event, &update).await?;
            Ok(())
        }
    })
    .await;

    let advanced: i64 =
        sqlx::query_scalar("select count(*) from messages where status <> 'sending'")
            .fetch_one(&db)
            .await?;
    println!(
        "webhooks: status callbacks, {CONCURRENCY} concurrent, {} s each, PostgreSQL on loopback",
        duration.as_secs()
    );
    println!("{}", Run::header());
    println!("{}", http.row());
    println!("{}", floor.row());
    println!(
        "ratio HTTP/floor (ops/s): {:.2}",
        http.per_second() / floor.per_second()
    );
    println!("messages advanced: {advanced}");
    Ok(())
}
