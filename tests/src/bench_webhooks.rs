//! Status callbacks over real HTTP on loopback, against the same flow called
//! directly (the floor): the same parse and the same one statement per callback.

use std::sync::Arc;

use shared::webhooks::VerifiedWebhook;

use crate::bench::{Run, fresh_database, run_for, seconds};
use crate::{AUTH_TOKEN, fixtures, form_body, sign_form, status_params, webhook_config};

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

    // The floor: the status flow itself (parse, one statement) on the same rows, no HTTP, no signature.
    let floor_db = Arc::new(db.clone());
    let floor = run_for("floor (flow, no HTTP)", CONCURRENCY, duration, move |i| {
        let db = floor_db.clone();
        async move {
            let (sid, status) = callback("SMfloor", i);
            let body = form_body(&status_params(&sid, status, "whatsapp:+14155552671"));
            let webhook = VerifiedWebhook {
                request_uri: "/webhooks/status".into(),
                content_type: "application/x-www-form-urlencoded".into(),
                params: form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect(),
                raw_body: body,
                idempotency_token: None,
            };
            shared::webhooks::status::record(&db, &webhook).await?;
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
