//! Status callbacks over real HTTP on loopback, with group commit and with one
//! commit per callback, against the floor: the same flow called directly (same
//! parse, same one statement and commit per callback), no HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderValue, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use shared::webhooks::VerifiedWebhook;
use shared::webhooks::group_commit::GroupCommitSettings;
use sqlx::PgPool;

use crate::bench::{Figure, Run, fresh_database, next_xid, run_for, seconds};
use crate::{AUTH_TOKEN, fixtures, form_body, sign_form, status_params, webhook_config};

const CONCURRENCY: usize = 16;
const MESSAGES: usize = 100_000;
const STATUSES: [&str; 3] = ["sent", "delivered", "read"];
/// The p99 the group commit must keep at 16 connections.
const P99_BUDGET_MS: f64 = 25.0;

/// The `i`th callback of a run: every message gets sent, then delivered, then read.
fn callback(prefix: &str, i: usize) -> (String, &'static str) {
    let i = i % (MESSAGES * STATUSES.len());
    (format!("{prefix}{}", i % MESSAGES), STATUSES[i / MESSAGES])
}

/// The status function on loopback, its batches formed by `settings`.
pub async fn serve(db: &PgPool, settings: GroupCommitSettings) -> anyhow::Result<SocketAddr> {
    let router = status::router(status::AppState::with_group_commit(
        db.clone(),
        &webhook_config(AUTH_TOKEN),
        settings,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// Signed callbacks posted to `addr` from `concurrency` connections, each
/// message of `prefix` reported sent, then delivered, then read.
///
/// Twilio signs its requests on its own machines, so they are built and
/// signed before the clock starts, and sent over plain HTTP/1.1 connections
/// (one request at a time each, as Twilio's are): on a machine of two cores
/// the load generator's work is taken from the server it measures.
pub async fn over_http(
    label: &str,
    addr: SocketAddr,
    prefix: &'static str,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let requests: Vec<(Bytes, HeaderValue)> = (0..MESSAGES * STATUSES.len())
        .map(|i| {
            let (sid, status) = callback(prefix, i);
            let form = sign_form(
                AUTH_TOKEN,
                "/webhooks/status",
                &status_params(&sid, status, "whatsapp:+14155552671"),
            );
            Ok((
                Bytes::from(form.body),
                HeaderValue::from_str(&form.signature)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let requests = Arc::new(requests);
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        connections.push(sender);
    }
    let idle = Arc::new(Mutex::new(connections));
    Ok(run_for(label, concurrency, seconds(10), move |i| {
        let (requests, idle) = (requests.clone(), idle.clone());
        async move {
            let (body, signature) = &requests[i % requests.len()];
            let request = Request::post("/webhooks/status")
                .header(HOST, "127.0.0.1")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature.clone())
                .body(Full::new(body.clone()))?;
            let mut sender = idle
                .lock()
                .expect("connections")
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no idle connection"))?;
            let sent = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                anyhow::ensure!(status.is_success(), "status {status}");
                Ok(())
            }
            .await;
            idle.lock().expect("connections").push(sender);
            sent
        }
    })
    .await)
}

/// The floor: the status flow itself (parse, one statement, one commit per
/// callback) on the rows of `prefix`, no HTTP, no signature.
async fn direct(db: &PgPool, prefix: &'static str, concurrency: usize) -> Run {
    let db = Arc::new(db.clone());
    run_for("floor: flow, no HTTP", concurrency, seconds(10), move |i| {
        let db = db.clone();
        async move {
            let (sid, status) = callback(prefix, i);
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
            shared::webhooks::status::record(&db, None, &webhook).await?;
            Ok(())
        }
    })
    .await
}

/// A run and the write transactions it took per callback.
async fn measured<F: Future<Output = anyhow::Result<Run>>>(
    db: &PgPool,
    run: F,
) -> anyhow::Result<(Run, f64)> {
    let before = next_xid(db).await?;
    let run = run.await?;
    let transactions = (next_xid(db).await? - before - 1) as f64;
    let per_callback = transactions / run.ops.max(1) as f64;
    Ok((run, per_callback))
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    const PREFIXES: [&str; 5] = ["SMfloor-", "SMone16-", "SMgroup16-", "SMone1-", "SMgroup1-"];
    let db = fresh_database("ese_bench_webhooks", 2 * CONCURRENCY as u32).await?;
    for prefix in PREFIXES {
        let campaign = fixtures::campaign(&db).await;
        fixtures::sending_messages(&db, campaign, prefix, MESSAGES as i64).await?;
    }
    sqlx::query("vacuum analyze").execute(&db).await?;

    // A commit per callback, as many at once as there are connections: the
    // status function before group commit.
    let one_at_a_time = serve(
        &db,
        GroupCommitSettings {
            max_batch: 1,
            max_in_flight: CONCURRENCY,
        },
    )
    .await?;
    let settings = GroupCommitSettings::from_env(&shared::config::Env::from_process())?;
    let grouped = serve(&db, settings).await?;

    let mut runs = vec![];
    runs.push(
        measured(&db, async {
            Ok(direct(&db, "SMfloor-", CONCURRENCY).await)
        })
        .await?,
    );
    runs.push(
        measured(
            &db,
            over_http(
                "HTTP, a commit each",
                one_at_a_time,
                "SMone16-",
                CONCURRENCY,
            ),
        )
        .await?,
    );
    runs.push(
        measured(
            &db,
            over_http("HTTP, group commit", grouped, "SMgroup16-", CONCURRENCY),
        )
        .await?,
    );
    runs.push(
        measured(
            &db,
            over_http("HTTP, a commit each, 1 conn", one_at_a_time, "SMone1-", 1),
        )
        .await?,
    );
    runs.push(
        measured(
            &db,
            over_http("HTTP, group commit, 1 conn", grouped, "SMgroup1-", 1),
        )
        .await?,
    );

    let advanced: i64 =
        sqlx::query_scalar("select count(*) from messages where status <> 'sending'")
            .fetch_one(&db)
            .await?;
    println!(
        "webhooks: status callbacks, {} s each, PostgreSQL on loopback; group commit: up to {} callbacks a batch, {} batches in flight",
        seconds(10).as_secs(),
        settings.max_batch,
        settings.max_in_flight
    );
    println!("{}   {:>12}", Run::header(), "commits/cb");
    for (run, per_callback) in &runs {
        println!("{}   {:>12.3}", run.row(), per_callback);
    }
    let (floor, group16, one1, group1) = (&runs[0].0, &runs[2].0, &runs[3].0, &runs[4].0);
    println!(
        "group commit at {CONCURRENCY} connections: {:.2} x the floor, p99 {:.2} ms (budget {P99_BUDGET_MS} ms); at 1 connection {:.2} x a commit each",
        group16.per_second() / floor.per_second(),
        group16.percentile_ms(0.99),
        group1.per_second() / one1.per_second()
    );
    println!("messages advanced: {advanced}");
    let floor_is = "same flow, a commit per callback, no HTTP";
    Ok(vec![
        Figure::rate(
            "webhooks",
            format!("status callbacks over HTTP, group commit, {CONCURRENCY} connections"),
            group16.per_second(),
            floor.per_second(),
        )
        .unit("callbacks/s")
        .floor_is(floor_is)
        .goal(1.5),
        Figure::time(
            "webhooks",
            format!("status callback p99, group commit, {CONCURRENCY} connections"),
            group16.percentile_ms(0.99),
            P99_BUDGET_MS,
        )
        .unit("ms")
        .floor_is("the budget")
        .goal(1.0),
        Figure::rate(
            "webhooks",
            "status callbacks over HTTP, group commit, 1 connection",
            group1.per_second(),
            one1.per_second(),
        )
        .unit("callbacks/s")
        .floor_is("over HTTP, a commit per callback, 1 connection")
        .goal(0.95),
    ])
}
