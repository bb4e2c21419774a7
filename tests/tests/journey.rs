//! The whole product in one story: an inbound webhook opts a user in, users
//! exist, a campaign is scheduled, the fan-out tick publishes through the real
//! Pub/Sub emulator, pushes reach the sender over HTTP, the sender calls a
//! Twilio mock, signed status callbacks come back, and every recipient's
//! outcome is explained by its decisions.

use std::time::{Duration, Instant};

use chrono::Utc;
use e2e::engine::{
    CampaignSpec, TwilioAccepts, campaign, fast_settings, messages_path, sender, user,
};
use e2e::pubsub_emulator::{self, PROJECT, unique_name};
use e2e::{status_params, webhooks_router};
use serde_json::json;
use shared::engine::fanout::{FanoutSettings, tick};
use shared::ratelimit::Limiter;
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{MIGRATOR, post_signed};

#[sqlx::test(migrator = "MIGRATOR")]
async fn from_opt_in_to_delivered_with_every_decision_explained(db: PgPool) {
    // Twilio, the sender served over HTTP, and Pub/Sub pushing to it.
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(TwilioAccepts::new())
        .mount(&twilio)
        .await;
    let sender_router = ::sender::router(sender(
        &db,
        &twilio.uri(),
        Limiter::local(),
        fast_settings(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sender_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sender_router).await });
    let emulator = pubsub_emulator::shared().await;
    let topic = unique_name("send-tasks");
    emulator.create_topic(PROJECT, &topic).await.unwrap();
    emulator
        .create_push_subscription(
            PROJECT,
            &topic,
            &topic,
            &format!("http://{sender_addr}/pubsub/push"),
        )
        .await
        .unwrap();
    let publisher = emulator.publisher(PROJECT, &topic).await;

    // Users: one writes START on WhatsApp; the others came from an import.
    let webhooks = webhooks_router(db.clone());
    user(
        &db,
        "+14155550001",
        "unknown",
        json!({"first_name": "Eve"}),
        None,
    )
    .await;
    let (code, _) = post_signed(
        &webhooks,
        "/webhooks/inbound",
        &[
            ("MessageSid", "SMin1"),
            ("From", "whatsapp:+14155550001"),
            ("To", "whatsapp:+14155238886"),
            ("Body", "START"),
            ("WaId", "14155550001"),
        ],
    )
    .await;
    assert_eq!(code, axum::http::StatusCode::OK);
    let now = Some(Utc::now());
    user(
        &db,
        "+14155550002",
        "opted_in",
        json!({"first_name": "Ada"}),
        now,
    )
    .await;
    user(
        &db,
        "+14155550003",
        "opted_out",
        json!({"first_name": "Bob"}),
        now,
    )
    .await;
    user(
        &db,
        "+14155550004",
        "opted_in",
        json!({"nickname": "Cy"}),
        now,
    )
    .await;
    user(
        &db,
        "+14155550005",
        "opted_in",
        json!({"first_name": "Dai", "timezone": "Asia/Tokyo"}),
        now,
    )
    .await;

    // Quiet hours around "now" in Tokyo: only the Tokyo user is inside them.
    let tokyo = Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    let quiet_start: &'static str = Box::leak(
        (tokyo - chrono::Duration::hours(1))
            .format("%H:%M")
            .to_string()
            .into_boxed_str(),
    );
    let quiet_end: &'static str = Box::leak(
        (tokyo + chrono::Duration::hours(1))
            .format("%H:%M")
            .to_string()
            .into_boxed_str(),
    );
    let spec = CampaignSpec {
        segment: json!({"all": []}),
        body: Some("Hi {first_name}!"),
        state: "scheduled",
        quiet_hours: Some((quiet_start, quiet_end)),
        ..CampaignSpec::default()
    };
    let c = campaign(&db, &spec).await;

    let report = tick(
        &db,
        &publisher,
        &FanoutSettings {
            run_for: Duration::ZERO,
            ..FanoutSettings::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (report.started, report.materialized, report.dispatched),
        (1, 5, 5)
    );

    // Every push is handled: nothing left queued or sending.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from messages where status in ('queued', 'sending')",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} messages still in flight");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Twilio reports back, signed, for what it accepted.
    let sent: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, twilio_sid from messages where status = 'sent' order by phone_number",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(sent.len(), 2);
    for (id, sid) in &sent {
        for status in ["sent", "delivered"] {
            let (code, body) = post_signed(
                &webhooks,
                &format!("/webhooks/status?mid={id}"),
                &status_params(sid, status, "whatsapp:+1"),
            )
            .await;
            assert_eq!(code, axum::http::StatusCode::OK, "{body}");
        }
    }

    let outcomes: Vec<(String, String, String)> = sqlx::query_as(
        "select m.phone_number, m.status,
                (select d.decision from decisions d where d.message_id = m.id order by d.id desc limit 1)
         from messages m where m.campaign_id = $1 order by m.phone_number",
    )
    .bind(c)
    .fetch_all(&db)
    .await
    .unwrap();
    let expect = |phone: &str, status: &str, decision: &str| {
        (phone.to_owned(), status.to_owned(), decision.to_owned())
    };
    assert_eq!(
        outcomes,
        vec![
            expect("+14155550001", "delivered", "sent"),
            expect("+14155550002", "delivered", "sent"),
            expect("+14155550003", "skipped", "skipped_no_consent"),
            expect("+14155550004", "skipped", "skipped_render"),
            expect("+14155550005", "pending", "deferred_quiet_hours"),
        ]
    );
    let bodies: Vec<String> = twilio
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            form_urlencoded::parse(&r.body)
                .find(|(k, _)| k == "Body")
                .unwrap()
                .1
                .into_owned()
        })
        .collect();
    let mut bodies = bodies;
    bodies.sort();
    assert_eq!(bodies, vec!["Hi Ada!", "Hi Eve!"]);
    // Every recipient was queued first, then decided.
    let queued: i64 = sqlx::query_scalar(
        "select count(distinct message_id) from decisions where decision = 'queued'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(queued, 5);
    // Each row keeps its latest decision beside it, for summaries that cannot
    // search the decisions of a million recipients.
    let kept: Vec<(String, Option<String>)> = sqlx::query_as(
        "select phone_number, last_decision from messages where campaign_id = $1 order by phone_number",
    )
    .bind(c)
    .fetch_all(&db)
    .await
    .unwrap();
    let latest: Vec<(String, Option<String>)> = outcomes
        .into_iter()
        .map(|(phone, _, decision)| (phone, Some(decision)))
        .collect();
    assert_eq!(kept, latest);
}
