//! Event intake over HTTP in batches of 100, beside a floor that inserts the
//! same rows with one multi-row insert per batch (no HTTP, no parsing, no
//! idempotency, the people already there); then a replay of 10,000 events
//! three times, which must store nothing more.

use std::sync::Arc;

use serde_json::{Value, json};
use shared::config::Env;
use shared::http::auth::ApiKeys;

use crate::bench::{Run, fresh_database, run_for, seconds};

const CONCURRENCY: usize = 8;
const BATCH: usize = 100;
const PEOPLE: usize = 10_000;
const KEY: &str = "bench-events-key";

fn phone(i: usize) -> String {
    format!("+1415{:07}", 5_550_000 + i % PEOPLE)
}

fn batch(prefix: &str, op: usize) -> Value {
    json!({"events": (0..BATCH).map(|j| {
        let i = op * BATCH + j;
        json!({
            "phone_number": phone(i),
            "name": "order.shipped",
            "properties": {"order_id": format!("A-{i}"), "carrier": "DHL", "items": 3},
            "idempotency_key": format!("{prefix}-{i}"),
        })
    }).collect::<Vec<_>>()})
}

pub async fn run() -> anyhow::Result<()> {
    let duration = seconds(10);
    let db = fresh_database("ese_bench_events", CONCURRENCY as u32 + 2).await?;
    // The floor's rows need their people; the HTTP path creates its own (the same ones).
    sqlx::query(
        "insert into users (phone_number)
         select '+1415' || lpad((5550000 + i)::text, 7, '0') from generate_series(0, $1 - 1) i",
    )
    .bind(PEOPLE as i64)
    .execute(&db)
    .await?;

    let config = events::Config::from_env(&Env::from_pairs([
        (
            "DATABASE_URL",
            "postgres://unused@127.0.0.1/unused".to_owned(),
        ),
        ("API_KEYS", ApiKeys::hash(KEY)),
    ]))?;
    let app = events::app(
        &config,
        db.clone(),
        crate::engine::CountingPublisher::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let post = {
        let client = client.clone();
        move |body: Value| {
            let client = client.clone();
            async move {
                let response = client
                    .post(format!("http://{addr}/v1/events"))
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "status {}",
                    response.status()
                );
                let reply: Value = response.json().await?;
                Ok::<Value, anyhow::Error>(reply)
            }
        }
    };
    let post = Arc::new(post);

    let http = {
        let post = post.clone();
        run_for("HTTP, batches of 100", CONCURRENCY, duration, move |op| {
            let post = post.clone();
            async move {
                let reply = post(batch("http", op)).await?;
                anyhow::ensure!(reply["created"] == json!(BATCH), "{}", reply["results"][0]);
                Ok(())
            }
        })
        .await
    };

    let floor_db = db.clone();
    let floor = run_for("floor: one insert per 100", CONCURRENCY, duration, move |op| {
        let db = floor_db.clone();
        async move {
            let (mut keys, mut phones, mut props) = (vec![], vec![], vec![]);
            for j in 0..BATCH {
                let i = op * BATCH + j;
                keys.push(format!("floor-{i}"));
                phones.push(phone(i));
                props.push(json!({"order_id": format!("A-{i}"), "carrier": "DHL", "items": 3}));
            }
            sqlx::query(
                "insert into events (idempotency_key, phone_number, name, properties, occurred_at, source)
                 select k, p, 'order.shipped', pr, now(), 'api'
                 from unnest($1::text[], $2::text[], $3::jsonb[]) as t(k, p, pr)",
            )
            .bind(&keys)
            .bind(&phones)
            .bind(&props)
            .execute(&db)
            .await?;
            Ok(())
        }
    })
    .await;

    // Replays: the same 10,000 events, three times.
    let before: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db)
        .await?;
    let mut created = vec![];
    for _ in 0..3 {
        let mut n = 0;
        for op in 0..(10_000 / BATCH) {
            n += post(batch("replay", op)).await?["created"]
                .as_u64()
                .unwrap_or(0);
        }
        created.push(n);
    }
    let after: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db)
        .await?;

    let events_per_s = |r: &Run| r.per_second() * BATCH as f64;
    println!(
        "events: intake, {CONCURRENCY} concurrent, batches of {BATCH}, {} s each, PostgreSQL on loopback",
        duration.as_secs()
    );
    println!("{}   {:>10}", Run::header(), "events/s");
    println!("{}   {:>10.0}", http.row(), events_per_s(&http));
    println!("{}   {:>10.0}", floor.row(), events_per_s(&floor));
    println!(
        "ratio HTTP/floor (events/s): {:.2}",
        events_per_s(&http) / events_per_s(&floor)
    );
    println!(
        "replay of 10,000 events, 3 times: created {created:?}, rows {before} -> {after} (+{})",
        after - before
    );
    Ok(())
}
