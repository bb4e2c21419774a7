//! The campaign engine's two hot paths: the fan-out of a 1,000,000-user
//! segment (materialize, then dispatch through the Pub/Sub client to the
//! emulator, or where it is missing to a publisher that only counts), each
//! beside its floor (one bare `INSERT … SELECT` of the same rows, one bare
//! `UPDATE … RETURNING` of them), and the sender against a local Twilio mock
//! with rate limits off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::json;
use shared::engine::fanout::{FanoutSettings, TickReport, tick};
use shared::gcp::{PushEnvelope, SendTask, TaskPublisher};
use shared::ratelimit::Limiter;
use uuid::Uuid;

use crate::bench::{Figure, Run, fresh_database, run_for, seconds};
use crate::engine::{
    ACCOUNT_SID, CampaignSpec, CountingPublisher, campaign, fast_settings, sender,
};
use crate::pubsub_emulator;

fn users_wanted() -> i64 {
    std::env::var("BENCH_USERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// `users` opted-in users with five attributes, inserted set-based.
async fn seed_users(db: &sqlx::PgPool, users: i64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into users (phone_number, consent, last_inbound_at, attributes)
         select '+1415' || lpad(i::text, 7, '0'), 'opted_in', now(),
                jsonb_build_object('first_name', 'User' || i, 'plan', (array['gold','silver','bronze'])[1 + i % 3],
                                   'age', 18 + i % 60, 'city', 'City' || (i % 100), 'vip', i % 10 = 0)
         from generate_series(0, $1 - 1) as i",
    )
    .bind(users)
    .execute(db)
    .await?;
    sqlx::query("vacuum analyze users").execute(db).await?;
    Ok(())
}

pub async fn fanout() -> anyhow::Result<Vec<Figure>> {
    let users = users_wanted();
    let db = fresh_database("ese_bench_fanout", 8).await?;
    let seeded = Instant::now();
    seed_users(&db, users).await?;
    println!(
        "seeded {users} users in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );

    // A segment every user is in, with an attribute test so the predicate does real work.
    let spec = CampaignSpec {
        segment: json!({"all": [{"field": "consent", "eq": "opted_in"}, {"attribute": "plan", "in": ["gold", "silver", "bronze"]}]}),
        rate_per_second: 1,
        state: "scheduled",
        ..CampaignSpec::default()
    };
    let c = campaign(&db, &spec).await;
    let settings = FanoutSettings {
        run_for: Duration::ZERO,
        ..FanoutSettings::default()
    };
    // The real client publishing to the emulator where the machine has it.
    let emulator = if pubsub_emulator::emulator_bin().exists() {
        Some(pubsub_emulator::PubSubEmulator::start().await?)
    } else {
        None
    };
    let (publishing, (first, materialize, second, dispatch)) = match &emulator {
        Some(emulator) => {
            let topic = pubsub_emulator::unique_name("bench-send");
            emulator
                .create_topic(pubsub_emulator::PROJECT, &topic)
                .await?;
            let publisher = emulator.publisher(pubsub_emulator::PROJECT, &topic).await;
            let run = fanout_ticks(&db, c, &publisher, &settings).await?;
            ("Pub/Sub client to the emulator", run)
        }
        None => {
            let publisher = CountingPublisher::default();
            let run = fanout_ticks(&db, c, &publisher, &settings).await?;
            anyhow::ensure!(
                publisher.0.load(Ordering::Relaxed) == run.2.dispatched as u64 + 1,
                "every dispatched task is published"
            );
            ("no emulator here: a publisher that only counts", run)
        }
    };
    drop(emulator);

    println!("fanout: a segment of {users} users, {publishing}");
    println!(
        "{:<34} {:>10} {:>9} {:>12}",
        "stage", "rows", "seconds", "rows/s"
    );
    println!(
        "{:<34} {:>10} {:>9.2} {:>12.0}",
        "materialize (tick 1)",
        first.materialized,
        materialize.as_secs_f64(),
        first.materialized as f64 / materialize.as_secs_f64()
    );
    println!(
        "{:<34} {:>10} {:>9.2} {:>12.0}",
        "dispatch: queue + decide + publish",
        second.dispatched,
        dispatch.as_secs_f64(),
        second.dispatched as f64 / dispatch.as_secs_f64()
    );

    // The floors: the same rows into the same table and indexes by one bare
    // INSERT … SELECT, and queued by one bare UPDATE … RETURNING.
    let floor_campaign = campaign(&db, &spec).await;
    let t = Instant::now();
    let inserted = sqlx::query(
        "insert into messages (campaign_id, phone_number)
         select $1, phone_number from users
         where consent = 'opted_in' and attributes->>'plan' in ('gold', 'silver', 'bronze')",
    )
    .bind(floor_campaign)
    .execute(&db)
    .await?
    .rows_affected();
    let insert_floor = t.elapsed();
    let t = Instant::now();
    let queued: Vec<Uuid> = sqlx::query_scalar(
        "update messages set status = 'queued', status_rank = 1, queued_at = now(), updated_at = now()
         where campaign_id = $1 and status = 'pending' returning id",
    )
    .bind(floor_campaign)
    .fetch_all(&db)
    .await?;
    let update_floor = t.elapsed();
    println!(
        "{:<34} {:>10} {:>9.2} {:>12.0}",
        "floor: bare INSERT … SELECT",
        inserted,
        insert_floor.as_secs_f64(),
        inserted as f64 / insert_floor.as_secs_f64()
    );
    println!(
        "{:<34} {:>10} {:>9.2} {:>12.0}",
        "floor: bare UPDATE … RETURNING",
        queued.len(),
        update_floor.as_secs_f64(),
        queued.len() as f64 / update_floor.as_secs_f64()
    );
    println!(
        "ratios: materialize {:.2} x its floor, dispatch {:.2} x its floor",
        materialize.as_secs_f64() / insert_floor.as_secs_f64(),
        dispatch.as_secs_f64() / update_floor.as_secs_f64()
    );
    Ok(vec![
        Figure::time(
            "fanout",
            format!("materialize {} recipients", first.materialized),
            materialize.as_secs_f64(),
            insert_floor.as_secs_f64(),
        )
        .floor_is("one bare INSERT … SELECT of the same rows")
        .goal(1.3),
        Figure::time(
            "fanout",
            format!("dispatch {} messages ({publishing})", second.dispatched),
            dispatch.as_secs_f64(),
            update_floor.as_secs_f64(),
        )
        .floor_is("one bare UPDATE … RETURNING of the same batch")
        .goal(1.5),
    ])
}

/// Tick one materializes everything and dispatches one second at 1/s (one
/// message); tick two dispatches the rest at an unbounded rate. Each tick's
/// report and time.
async fn fanout_ticks<P: TaskPublisher>(
    db: &sqlx::PgPool,
    campaign: Uuid,
    publisher: &P,
    settings: &FanoutSettings,
) -> anyhow::Result<(TickReport, Duration, TickReport, Duration)> {
    let t = Instant::now();
    let first = tick(db, publisher, settings).await?;
    let materialize = t.elapsed();
    sqlx::query("update campaigns set rate_per_second = 2000000000 where id = $1")
        .bind(campaign)
        .execute(db)
        .await?;
    let t = Instant::now();
    let second = tick(db, publisher, settings).await?;
    Ok((first, materialize, second, t.elapsed()))
}

/// A Twilio Messages API that accepts everything at once, as the sender sees it.
async fn mock_twilio() -> anyhow::Result<String> {
    let next = Arc::new(AtomicU64::new(1));
    let app = Router::new().route(
        &format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"),
        post(move || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            async move {
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(json!({"sid": format!("SM{n:032x}"), "status": "queued", "account_sid": ACCOUNT_SID})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

pub async fn sender_path() -> anyhow::Result<Vec<Figure>> {
    const CONCURRENCY: usize = 32;
    const MESSAGES: i64 = 60_000;
    let duration = seconds(10);
    let db = fresh_database("ese_bench_sender", CONCURRENCY as u32).await?;
    seed_users(&db, MESSAGES).await?;
    let c = campaign(
        &db,
        &CampaignSpec {
            segment: json!({"all": []}),
            ..CampaignSpec::default()
        },
    )
    .await;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "insert into messages (campaign_id, phone_number, status, status_rank, queued_at)
         select $1, phone_number, 'queued', 1, now() from users order by phone_number returning id",
    )
    .bind(c)
    .fetch_all(&db)
    .await?;
    let ids = Arc::new(ids);

    let twilio = mock_twilio().await?;
    let router = ::sender::router(sender(&db, &twilio, Limiter::Off, fast_settings()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;

    let run = run_for(
        "sender: push → Twilio → record",
        CONCURRENCY,
        duration,
        move |i| {
            let (client, ids) = (client.clone(), ids.clone());
            async move {
                let id = *ids
                    .get(i)
                    .ok_or_else(|| anyhow::anyhow!("out of messages"))?;
                let payload = serde_json::to_vec(&SendTask { message_id: id })?;
                let envelope = PushEnvelope::wrap(i.to_string(), &payload, Default::default());
                let response = client
                    .post(format!("http://{addr}/pubsub/push"))
                    .json(&envelope)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "status {}",
                    response.status()
                );
                Ok(())
            }
        },
    )
    .await;
    let sent: i64 = sqlx::query_scalar("select count(*) from messages where status = 'sent'")
        .fetch_one(&db)
        .await?;
    println!(
        "sender: {CONCURRENCY} concurrent pushes, {} s, Twilio mock on loopback, rate limits off",
        duration.as_secs()
    );
    // The floor: the Twilio mock alone, posted to as the sender posts.
    let mock = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let url = format!("{twilio}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
    let floor = run_for(
        "floor: the Twilio mock alone",
        CONCURRENCY,
        duration,
        move |i| {
            let (mock, url) = (mock.clone(), url.clone());
            async move {
                let response = mock
                    .post(&url)
                    .form(&[
                        ("To", format!("whatsapp:+1415{i:07}")),
                        ("Body", "Hello".into()),
                    ])
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "status {}",
                    response.status()
                );
                Ok(())
            }
        },
    )
    .await;
    println!("{}", Run::header());
    println!("{}", run.row());
    println!("{}", floor.row());
    println!("messages sent (rows): {sent}");
    Ok(vec![
        Figure::rate(
            "sender",
            format!("sends through the sender, {CONCURRENCY} pushes at once"),
            run.per_second(),
            floor.per_second(),
        )
        .unit("sends/s")
        .floor_is("the Twilio mock alone, same concurrency"),
    ])
}
