//! Send at most once under faults, on real processes: 2,000 messages through
//! two sender processes behind one Pub/Sub emulator push subscription, a
//! Twilio that answers a tenth of its requests with each fault it has, one
//! sender SIGKILLed mid-run and restarted, and duplicate pushes. It prints
//! what it saw; it fails if any person got a message twice, if any message
//! has no end, or if the campaign does not complete.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use e2e::engine::{ACCOUNT_SID, CampaignSpec, WHATSAPP_FROM, campaign, twilio_config};
use e2e::process::{FunctionProcess, function_binary};
use e2e::pubsub_emulator::{self, PROJECT, unique_name};
use e2e::twilio_mock::{Fault, FaultyTwilio};
use shared::engine::fanout::{FanoutSettings, tick};
use shared::engine::reconcile::{ReconcileSettings, reconcile};
use shared::twilio::TwilioClient;
use sqlx::PgPool;
use uuid::Uuid;

const MESSAGES: i64 = 2_000;
/// The longest the whole run may take before it counts as not settling.
const SETTLE_LIMIT: Duration = Duration::from_secs(240);

/// What Cloud Run's load balancer is to the sender instances: each push goes
/// to one of them in turn; one in twenty is also delivered to the other (a
/// duplicate push). A sender that is down answers nothing: 503, and Pub/Sub
/// redelivers.
#[derive(Clone)]
struct Balancer {
    targets: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    duplicates: Arc<AtomicUsize>,
    http: reqwest::Client,
}

async fn balance(State(b): State<Balancer>, body: Bytes) -> StatusCode {
    let n = b.next.fetch_add(1, Ordering::Relaxed);
    let target = &b.targets[n % b.targets.len()];
    if n % 20 == 0 {
        b.duplicates.fetch_add(1, Ordering::Relaxed);
        let (http, other, body) = (
            b.http.clone(),
            b.targets[(n + 1) % b.targets.len()].clone(),
            body.clone(),
        );
        tokio::spawn(async move {
            let _ = http
                .post(other)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
        });
    }
    match b
        .http
        .post(target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_messages_through_faults_kills_and_duplicates() {
    let binary = function_binary("sender");
    let db = e2e::bench::fresh_database(&format!("soak_{}", std::process::id()), 16)
        .await
        .expect("a fresh database");
    sqlx::query(
        "insert into users (phone_number, consent, attributes, last_inbound_at)
         select '+1415' || lpad(i::text, 7, '0'), 'opted_in', '{\"first_name\": \"Ada\"}', now()
         from generate_series(1, $1) i",
    )
    .bind(MESSAGES)
    .execute(&db)
    .await
    .unwrap();
    let c = campaign(
        &db,
        &CampaignSpec {
            rate_per_second: 500,
            max_attempts: 5,
            ..CampaignSpec::default()
        },
    )
    .await;

    // Twilio: a tenth of the requests answer each fault, the rest are accepted.
    let twilio = FaultyTwilio::start().await;
    twilio.choose(|| {
        let faults = &Fault::ALL[1..];
        let i = rand::random_range(0..10usize);
        faults.get(i).copied().unwrap_or(Fault::Accept)
    });

    let mut url = url::Url::parse(&e2e::bench::admin_url()).unwrap();
    url.set_path(&format!("soak_{}", std::process::id()));
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", url.to_string()),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
        ("REDIS_URL", e2e::redis_url()),
        ("REDIS_KEY_PREFIX", format!("soak-{}", Uuid::new_v4())),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", e2e::AUTH_TOKEN.into()),
        ("TWILIO_WHATSAPP_FROM", format!("whatsapp:{WHATSAPP_FROM}")),
        ("TWILIO_API_BASE", twilio.uri()),
        ("TWILIO_TIMEOUT_MS", "500".into()),
        ("PUBLIC_BASE_URL", e2e::PUBLIC_BASE_URL.into()),
        ("SENDER_RATE_PER_SECOND", "1000".into()),
        ("SEND_CLAIM_LEASE_MS", "4000".into()),
        ("SEND_UNKNOWN_GRACE_MS", "500".into()),
        ("SEND_RETRY_BASE_MS", "100".into()),
        ("SEND_ACCOUNT_HOLD_BASE_MS", "200".into()),
        ("SEND_PAUSED_RECHECK_MS", "500".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut senders = [
        FunctionProcess::start(&binary, &env),
        FunctionProcess::start(&binary, &env),
    ];

    let balancer = Balancer {
        targets: Arc::new(senders.iter().map(|s| s.url("/pubsub/push")).collect()),
        next: Arc::default(),
        duplicates: Arc::default(),
        http: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_endpoint = format!("http://{}/push", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/push", axum::routing::post(balance))
        .with_state(balancer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let emulator = pubsub_emulator::shared().await;
    let topic = unique_name("soak");
    emulator.create_topic(PROJECT, &topic).await.unwrap();
    emulator
        .create_push_subscription(PROJECT, &topic, &topic, &push_endpoint)
        .await
        .unwrap();
    let publisher = emulator.publisher(PROJECT, &topic).await;
    let fanout = FanoutSettings {
        run_for: Duration::ZERO,
        stale_after: Duration::from_secs(20),
        ..FanoutSettings::default()
    };
    let reconciling = ReconcileSettings {
        in_flight_for: Duration::from_secs(3),
        recheck: Duration::from_millis(500),
        ..ReconcileSettings::default()
    };
    let client = TwilioClient::new(twilio_config(&twilio.uri(), Duration::from_secs(2))).unwrap();

    let started = Instant::now();
    let (mut killed, mut restarted, mut resumed) = (None, false, 0);
    let settled = loop {
        tick(&db, &publisher, &fanout).await.unwrap();
        reconcile(&db, &client, &reconciling).await.unwrap();
        // An operator resumes a campaign that account errors paused.
        resumed += sqlx::query(
            "update campaigns set state = 'running', account_holds = 0 where state = 'paused'",
        )
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
        let sent = count(
            &db,
            "select count(*) from messages where sent_at is not null",
        )
        .await;
        if killed.is_none() && sent >= MESSAGES / 3 {
            senders[0].kill_9();
            killed = Some(Instant::now());
        }
        if let Some(at) = killed
            && !restarted
            && at.elapsed() > Duration::from_secs(2)
        {
            senders[0].spawn();
            restarted = true;
        }
        let state: String = sqlx::query_scalar("select state from campaigns where id = $1")
            .bind(c)
            .fetch_one(&db)
            .await
            .unwrap();
        // Settled: the campaign is complete and every send Twilio accepted
        // without naming its SID has had it found by reconciliation.
        let sid_unknown = count(
            &db,
            "select count(*) from messages where sent_at is not null and twilio_sid is null and reconcile_at is not null",
        )
        .await;
        if state == "completed" && sid_unknown == 0 {
            break Some(started.elapsed());
        }
        if started.elapsed() > SETTLE_LIMIT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let held = twilio.held();
    let mut per_person: HashMap<&str, usize> = HashMap::new();
    for h in &held {
        *per_person.entry(h.to.as_str()).or_default() += 1;
    }
    let most = per_person.values().copied().max().unwrap_or(0);
    let mut faults: HashMap<Fault, usize> = HashMap::new();
    for f in twilio.answered() {
        *faults.entry(f).or_default() += 1;
    }
    let open = count(
        &db,
        "select count(*) from messages where status in ('pending', 'queued', 'sending')",
    )
    .await;
    let not_completed = count(
        &db,
        "select count(*) from campaigns where state <> 'completed'",
    )
    .await;
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from messages group by 1 order by 1")
            .fetch_all(&db)
            .await
            .unwrap();
    println!("send-once soak");
    println!("| figure | value |\n|---|---|");
    println!("| messages | {MESSAGES} |");
    println!("| Twilio requests | {} |", twilio.answered().len());
    for f in Fault::ALL {
        println!(
            "| answered {f:?} | {} |",
            faults.get(&f).copied().unwrap_or(0)
        );
    }
    println!(
        "| duplicate pushes | {} |",
        balancer.duplicates.load(Ordering::Relaxed)
    );
    println!(
        "| sender SIGKILLed and restarted | {} |",
        u8::from(restarted)
    );
    println!("| campaign resumed after account holds | {resumed} |");
    println!("| Twilio messages held | {} |", held.len());
    println!("| Twilio messages per person, most | {most} |");
    println!("| messages without an end state | {open} |");
    println!("| campaigns not completed | {not_completed} |");
    println!("| messages by status | {by_status:?} |");
    println!(
        "| seconds until settled | {} |",
        settled.map_or("not settled".into(), |d| format!("{:.1}", d.as_secs_f64()))
    );
    assert!(most <= 1, "a person got {most} messages");
    assert_eq!(open, 0, "messages without an end");
    assert_eq!(not_completed, 0);
    assert!(restarted, "the sender was never killed");
    // Every message Twilio holds is one of ours, with its SID.
    let adopted = count(
        &db,
        "select count(*) from messages where twilio_sid is not null",
    )
    .await;
    assert_eq!(adopted, held.len() as i64);
}
