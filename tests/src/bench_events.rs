//! Event intake over HTTP in batches of 100, beside a floor that inserts the
//! same rows with one multi-row insert per batch (no HTTP, no parsing, no
//! idempotency, the people already there); then a replay of 10,000 events
//! three times, which must store nothing more; then, on the local stack
//! (simulated Twilio, in-process queue), how long a triggered campaign takes
//! from an event to the Twilio request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::config::Env;
use shared::http::auth::ApiKeys;

use crate::bench::{Figure, Run, fresh_database, run_for, seconds};

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

pub async fn run() -> anyhow::Result<Vec<Figure>> {
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
    db.close().await;
    latency().await?;
    Ok(vec![
        Figure::rate(
            "events",
            format!("event intake over HTTP, batches of {BATCH}, {CONCURRENCY} connections"),
            events_per_s(&http),
            events_per_s(&floor),
        )
        .unit("events/s")
        .floor_is("the same insert statement, no HTTP"),
    ])
}

/// Events to a triggered campaign without delay, one every 50 ms, each for
/// another person whose 24-hour window is open, through the local stack as
/// `local serve` runs it. Per message, from the event's commit time
/// (`events.received_at`) to the sender's claim (`sending_at`: the decision
/// is next, then the request) and to Twilio's answer (`sent_at`: the request
/// plus the simulator's round trip). The request lies between the two.
async fn latency() -> anyhow::Result<()> {
    const EVENTS: usize = 300;
    let db = fresh_database("ese_bench_trigger", 4).await?;
    let mut url = url::Url::parse(&crate::bench::admin_url())?;
    url.set_path("ese_bench_trigger");
    let data = std::env::temp_dir().join(format!("ese-bench-trigger-{}", std::process::id()));
    let stack = local::stack::start(&Env::from_pairs([
        ("DATABASE_URL", url.to_string()),
        ("LOCAL_PORT", "0".to_owned()),
        ("LOCAL_DATA_DIR", data.display().to_string()),
        ("SIM_FAILURE_RATE", "0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]))
    .await?;
    sqlx::query(
        "insert into users (phone_number, consent, attributes, last_inbound_at)
         select '+1628' || lpad((5550000 + i)::text, 7, '0'), 'opted_in', '{\"first_name\": \"Ada\"}', now()
         from generate_series(0, $1 - 1) i",
    )
    .bind(EVENTS as i64)
    .execute(&db)
    .await?;
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{}{path}", stack.base_url))
            .bearer_auth(&stack.api_key)
            .json(&body)
            .send()
    };
    let template: Value = call(
        "/v1/templates",
        json!({"name": "shipped", "body": "Hi {first_name}, order {{ event.order_id }} has shipped"}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let campaign: Value = call(
        "/v1/campaigns",
        json!({"name": "shipped", "template_id": template["id"], "rate_per_second": 1000,
               "trigger": {"event": "order.shipped", "per_person": "every_event"}}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let id = campaign["id"].as_str().unwrap_or_default().to_owned();
    call(&format!("/v1/campaigns/{id}/launch"), json!({}))
        .await?
        .error_for_status()?;
    let running = "select state = 'running' from campaigns where id = $1::text::uuid";
    while !sqlx::query_scalar::<_, bool>(running)
        .bind(&id)
        .fetch_one(&db)
        .await?
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut every = tokio::time::interval(Duration::from_millis(50));
    for i in 0..EVENTS {
        every.tick().await;
        call(
            "/v1/events",
            json!({"phone_number": format!("+1628{:07}", 5_550_000 + i), "name": "order.shipped",
                   "idempotency_key": format!("latency-{i}"), "properties": {"order_id": format!("A-{i}")}}),
        )
        .await?
        .error_for_status()?;
    }
    let done =
        "select count(*) from messages where campaign_id = $1::text::uuid and sent_at is not null";
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>(done)
        .bind(&id)
        .fetch_one(&db)
        .await?
        < EVENTS as i64
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "triggered messages did not all reach Twilio within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (claim_p50, claim_p99, sent_p50, sent_p99, n): (f64, f64, f64, f64, i64) = sqlx::query_as(
        "select percentile_cont(0.5) within group (order by claim_ms),
                percentile_cont(0.99) within group (order by claim_ms),
                percentile_cont(0.5) within group (order by sent_ms),
                percentile_cont(0.99) within group (order by sent_ms), count(*)
         from (select extract(epoch from (m.sending_at - e.received_at)) * 1000 as claim_ms,
                      extract(epoch from (m.sent_at - e.received_at)) * 1000 as sent_ms
               from messages m join events e on e.id = m.trigger_event_id
               where m.campaign_id = $1::text::uuid) t",
    )
    .bind(&id)
    .fetch_one(&db)
    .await?;
    stack.stop().await;
    db.close().await;
    let _ = std::fs::remove_dir_all(&data);
    println!();
    println!(
        "event -> Twilio on the local stack, a triggered campaign without delay, {n} events 50 ms apart:"
    );
    println!("{:<48} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "{:<48} {claim_p50:>9.1} {claim_p99:>9.1}",
        "event committed -> sender's claim"
    );
    println!(
        "{:<48} {sent_p50:>9.1} {sent_p99:>9.1}",
        "event committed -> Twilio's answer (simulated)"
    );
    Ok(())
}
