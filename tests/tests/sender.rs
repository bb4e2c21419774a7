//! The sender against a Twilio mock: every branch, duplicates, failures,
//! Redis away, and the rate limit across two instances.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use e2e::engine::{
    CampaignSpec, TwilioAccepts, campaign, fast_settings, messages_path, push_request,
    queued_message, sender, twilio_error, user,
};
use serde_json::{Value, json};
use shared::ratelimit::Limiter;
use shared::store::messages;
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{MIGRATOR, send};

const PHONE: &str = "+14155552671";

async fn twilio_accepting() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(TwilioAccepts::new())
        .mount(&server)
        .await;
    server
}

async fn twilio_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn router(db: &PgPool, twilio: &MockServer) -> axum::Router {
    ::sender::router(sender(db, &twilio.uri(), Limiter::Off, fast_settings()))
}

async fn decisions(db: &PgPool, id: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("select decision, reason from decisions where message_id = $1 order by id")
        .bind(id)
        .fetch_all(db)
        .await
        .unwrap()
}

async fn last_decision(db: &PgPool, id: Uuid) -> (String, Value) {
    decisions(db, id)
        .await
        .pop()
        .expect("a decision was written")
}

async fn twilio_forms(server: &MockServer) -> Vec<HashMap<String, String>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| form_urlencoded::parse(&r.body).into_owned().collect())
        .collect()
}

async fn opted_in(db: &PgPool, attributes: Value) {
    user(db, PHONE, "opted_in", attributes, Some(Utc::now())).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn sends_the_rendered_body_and_records_the_sid(db: PgPool) {
    let twilio = twilio_accepting().await;
    opted_in(&db, json!({"first_name": "Ada"})).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, c, PHONE).await;
    let (code, body) = send(&router(&db, &twilio), push_request(id)).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");

    let forms = twilio_forms(&twilio).await;
    assert_eq!(forms.len(), 1);
    let f = &forms[0];
    assert_eq!(f["To"], "whatsapp:+14155552671");
    assert_eq!(f["From"], "whatsapp:+14155238886");
    assert_eq!(f["Body"], "Hi Ada, your order is on its way");
    assert_eq!(
        f["StatusCallback"],
        format!("https://hooks.example.test/webhooks/status?mid={id}")
    );
    let auth = twilio.received_requests().await.unwrap()[0].headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(auth.starts_with("Basic "), "{auth}");

    let m = messages::get(&db, id).await.unwrap().unwrap();
    assert_eq!(m.status, "sent");
    assert!(m.twilio_sid.as_deref().unwrap().starts_with("SM"));
    assert_eq!(m.body.as_deref(), Some("Hi Ada, your order is on its way"));
    assert_eq!(m.attempts, 1);
    let (decision, reason) = last_decision(&db, id).await;
    assert_eq!(decision, "sent");
    assert_eq!(reason["twilio_status"], "queued");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_duplicate_push_never_sends_twice(db: PgPool) {
    let twilio = twilio_accepting().await;
    opted_in(&db, json!({"first_name": "Ada"})).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, c, PHONE).await;
    let router = router(&db, &twilio);
    // Concurrent and later duplicates alike.
    let (a, b) = tokio::join!(
        send(&router, push_request(id)),
        send(&router, push_request(id))
    );
    assert_eq!((a.0, b.0), (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT));
    let (c2, _) = send(&router, push_request(id)).await;
    assert_eq!(c2, StatusCode::NO_CONTENT);
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1);
    assert_eq!(decisions(&db, id).await.len(), 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn skips_users_without_consent(db: PgPool) {
    let twilio = twilio_accepting().await;
    user(
        &db,
        PHONE,
        "opted_out",
        json!({"first_name": "Ada"}),
        Some(Utc::now()),
    )
    .await;
    user(&db, "+14155552672", "unknown", json!({}), None).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let out = queued_message(&db, c, PHONE).await;
    let unknown = queued_message(&db, c, "+14155552672").await;
    let gone = queued_message(&db, c, "+14155552673").await;
    let router = router(&db, &twilio);
    for id in [out, unknown, gone] {
        send(&router, push_request(id)).await;
        assert_eq!(
            messages::get(&db, id).await.unwrap().unwrap().status,
            "skipped"
        );
        assert_eq!(last_decision(&db, id).await.0, "skipped_no_consent");
    }
    assert_eq!(last_decision(&db, out).await.1["consent"], "opted_out");
    assert_eq!(last_decision(&db, gone).await.1["consent"], "no such user");
    assert!(twilio.received_requests().await.unwrap().is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn outside_the_window_only_a_content_template_is_sent(db: PgPool) {
    let twilio = twilio_accepting().await;
    user(
        &db,
        PHONE,
        "opted_in",
        json!({"first_name": "Ada", "order_id": 7}),
        Some(Utc::now() - chrono::Duration::hours(30)),
    )
    .await;
    let plain = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, plain, PHONE).await;
    let router = router(&db, &twilio);
    send(&router, push_request(id)).await;
    assert_eq!(
        last_decision(&db, id).await.0,
        "needs_template_outside_window"
    );
    assert!(twilio.received_requests().await.unwrap().is_empty());

    let spec = CampaignSpec {
        body: None,
        content_sid: Some("HXb5b62575e6e4ff6129ad7c8efe1f983e"),
        content_variables: Some(json!({"1": "{first_name}", "2": "{{ order_id }}"})),
        ..CampaignSpec::default()
    };
    let content = campaign(&db, &spec).await;
    let id = queued_message(&db, content, PHONE).await;
    send(&router, push_request(id)).await;
    assert_eq!(last_decision(&db, id).await.0, "sent");
    let f = &twilio_forms(&twilio).await[0];
    assert_eq!(f["ContentSid"], "HXb5b62575e6e4ff6129ad7c8efe1f983e");
    let vars: Value = serde_json::from_str(&f["ContentVariables"]).unwrap();
    assert_eq!(vars, json!({"1": "Ada", "2": "7"}));
    assert!(!f.contains_key("Body"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn quiet_hours_defer_to_their_end_in_the_users_timezone(db: PgPool) {
    let twilio = twilio_accepting().await;
    // Quiet all day except the minute before midnight, so "now" is quiet in any test run.
    let now_tokyo = Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    let end = (now_tokyo + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let start = (now_tokyo - chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let spec = CampaignSpec {
        quiet_hours: Some((
            Box::leak(start.into_boxed_str()),
            Box::leak(end.clone().into_boxed_str()),
        )),
        default_timezone: "America/New_York",
        ..CampaignSpec::default()
    };
    opted_in(&db, json!({"first_name": "Ada", "timezone": "Asia/Tokyo"})).await;
    let c = campaign(&db, &spec).await;
    let id = queued_message(&db, c, PHONE).await;
    send(&router(&db, &twilio), push_request(id)).await;
    let m = messages::get(&db, id).await.unwrap().unwrap();
    assert_eq!(m.status, "pending");
    let until_local = m.next_attempt_at.with_timezone(&chrono_tz::Asia::Tokyo);
    assert_eq!(until_local.format("%H:%M").to_string(), end);
    let (decision, reason) = last_decision(&db, id).await;
    assert_eq!(decision, "deferred_quiet_hours");
    assert_eq!(reason["timezone"], "Asia/Tokyo");
    assert!(twilio.received_requests().await.unwrap().is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_frequency_cap_counts_the_last_24_hours(db: PgPool) {
    let twilio = twilio_accepting().await;
    opted_in(&db, json!({"first_name": "Ada"})).await;
    let spec = CampaignSpec {
        frequency_cap: Some(1),
        ..CampaignSpec::default()
    };
    let earlier = campaign(&db, &CampaignSpec::default()).await;
    sqlx::query("insert into messages (campaign_id, phone_number, status, status_rank, sent_at) values ($1, $2, 'delivered', 5, now() - interval '2 hours')")
        .bind(earlier)
        .bind(PHONE)
        .execute(&db)
        .await
        .unwrap();
    let c = campaign(&db, &spec).await;
    let id = queued_message(&db, c, PHONE).await;
    send(&router(&db, &twilio), push_request(id)).await;
    let (decision, reason) = last_decision(&db, id).await;
    assert_eq!(decision, "skipped_frequency_cap");
    assert_eq!(reason, json!({"sent_last_24h": 1, "cap": 1}));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_missing_variable_skips_with_its_name(db: PgPool) {
    let twilio = twilio_accepting().await;
    opted_in(&db, json!({"last_name": "Lovelace"})).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, c, PHONE).await;
    send(&router(&db, &twilio), push_request(id)).await;
    let (decision, reason) = last_decision(&db, id).await;
    assert_eq!(decision, "skipped_render");
    assert_eq!(reason["missing_variables"], json!(["first_name"]));
    assert_eq!(
        messages::get(&db, id).await.unwrap().unwrap().status,
        "skipped"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn transient_errors_retry_with_backoff_then_fail(db: PgPool) {
    let twilio = twilio_answering(twilio_error(429, 20429, "Too Many Requests")).await;
    opted_in(&db, json!({"first_name": "Ada"})).await;
    let c = campaign(
        &db,
        &CampaignSpec {
            max_attempts: 2,
            ..CampaignSpec::default()
        },
    )
    .await;
    let id = queued_message(&db, c, PHONE).await;
    let router = router(&db, &twilio);
    send(&router, push_request(id)).await;
    let m = messages::get(&db, id).await.unwrap().unwrap();
    assert_eq!((m.status.as_str(), m.attempts), ("pending", 1));
    assert!(m.next_attempt_at > Utc::now() - chrono::Duration::seconds(1));
    let (decision, reason) = last_decision(&db, id).await;
    assert_eq!(decision, "retry");
    assert_eq!(reason["code"], 20429);

    // The fan-out requeues it; the second attempt is the last.
    sqlx::query("update messages set status = 'queued', status_rank = 1 where id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    send(&router, push_request(id)).await;
    let m = messages::get(&db, id).await.unwrap().unwrap();
    assert_eq!((m.status.as_str(), m.error_code), ("failed", Some(20429)));
    assert_eq!(
        last_decision(&db, id).await.1["reason"],
        "attempts exhausted"
    );
    assert_eq!(twilio.received_requests().await.unwrap().len(), 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn permanent_errors_fail_at_once_and_21610_opts_out(db: PgPool) {
    opted_in(&db, json!({"first_name": "Ada"})).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    for (code, msg) in [
        (21211, "Invalid 'To' Phone Number"),
        (63016, "outside the allowed window"),
        (21610, "Attempt to send to unsubscribed recipient"),
    ] {
        let twilio = twilio_answering(twilio_error(400, code, msg)).await;
        sqlx::query("delete from messages where campaign_id = $1 and status <> 'queued'")
            .bind(c)
            .execute(&db)
            .await
            .ok();
        let phone = format!("+1415555{code:04}");
        user(
            &db,
            &phone,
            "opted_in",
            json!({"first_name": "Ada"}),
            Some(Utc::now()),
        )
        .await;
        let id = queued_message(&db, c, &phone).await;
        send(&router(&db, &twilio), push_request(id)).await;
        let m = messages::get(&db, id).await.unwrap().unwrap();
        assert_eq!(
            (m.status.as_str(), m.error_code, m.attempts),
            ("failed", Some(code), 1),
            "{code}"
        );
        assert_eq!(m.error_message.as_deref(), Some(msg));
        assert_eq!(last_decision(&db, id).await.1["code"], code);
        let consent: String =
            sqlx::query_scalar("select consent from users where phone_number = $1")
                .bind(&phone)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(
            consent,
            if code == 21610 {
                "opted_out"
            } else {
                "opted_in"
            },
            "{code}"
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn redis_away_is_503_and_nothing_is_sent(db: PgPool) {
    let twilio = twilio_accepting().await;
    opted_in(&db, json!({"first_name": "Ada"})).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, c, PHONE).await;
    // A Redis that was reachable at start and is gone now.
    let limiter = redis_that_goes_away().await;
    let router = ::sender::router(sender(&db, &twilio.uri(), limiter, fast_settings()));
    let (code, body) = send(&router, push_request(id)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(twilio.received_requests().await.unwrap().is_empty());
    // The claim was given back, so Pub/Sub's redelivery can take it.
    assert_eq!(
        messages::get(&db, id).await.unwrap().unwrap().status,
        "queued"
    );
}

/// A limiter connected to a Redis that then stops answering.
async fn redis_that_goes_away() -> Limiter {
    let port = free_port();
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let limiter = loop {
        match Limiter::redis(&url, "t").await {
            Ok(l) => break l,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("private redis-server did not start: {e}"),
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    limiter
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_malformed_envelope_is_400(db: PgPool) {
    let twilio = twilio_accepting().await;
    let router = router(&db, &twilio);
    let bad = axum::http::Request::post("/pubsub/push")
        .body(axum::body::Body::from("{\"nope\": 1}"))
        .unwrap();
    let (code, body) = send(&router, bad).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("\"field\":\"message\""), "{body}");
    let payload = shared::gcp::PushEnvelope::wrap("1", b"not json", Default::default());
    let req = axum::http::Request::post("/pubsub/push")
        .body(axum::body::Body::from(
            serde_json::to_vec(&payload).unwrap(),
        ))
        .unwrap();
    let (code, body) = send(&router, req).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("message.data"), "{body}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_rate_limit_holds_across_two_sender_instances(db: PgPool) {
    const RATE: i32 = 25;
    const MESSAGES: usize = 100;
    // How late a granted send may reach Twilio on a loaded machine: the GCRA
    // spaces grants, the network and the scheduler may bunch their arrivals.
    const ARRIVAL_JITTER_S: f64 = 0.5;
    let arrivals = ArrivalTimes::default();
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(arrivals.clone())
        .mount(&twilio)
        .await;
    let c = campaign(
        &db,
        &CampaignSpec {
            rate_per_second: RATE,
            ..CampaignSpec::default()
        },
    )
    .await;
    let mut ids = vec![];
    for i in 0..MESSAGES {
        let phone = format!("+1415555{i:04}");
        user(
            &db,
            &phone,
            "opted_in",
            json!({"first_name": "Ada"}),
            Some(Utc::now()),
        )
        .await;
        ids.push(queued_message(&db, c, &phone).await);
    }
    let prefix = format!("test-{}", Uuid::new_v4());
    let settings = shared::engine::send::SenderSettings {
        max_wait: Duration::from_secs(30),
        ..fast_settings()
    };
    let mut instances = vec![];
    for _ in 0..2 {
        let limiter = Limiter::redis(&e2e::redis_url(), &prefix)
            .await
            .expect("the test Redis (REDIS_URL)");
        instances.push(::sender::router(sender(
            &db,
            &twilio.uri(),
            limiter,
            settings.clone(),
        )));
    }
    let mut tasks = vec![];
    for (i, id) in ids.iter().enumerate() {
        let router = instances[i % 2].clone();
        let id = *id;
        tasks.push(tokio::spawn(async move {
            send(&router, push_request(id)).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::NO_CONTENT);
    }
    let times = arrivals.sorted();
    assert_eq!(times.len(), MESSAGES);
    // The limit is never exceeded, over any stretch of the run: between the i-th
    // and j-th arrival the GCRA (burst 1) granted j - i intervals of 1/RATE, less
    // the jitter of their way to Twilio. A slow machine sends slower, never faster.
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let span = times[j].duration_since(times[i]).as_secs_f64();
            let allowed = f64::from(RATE) * (span + ARRIVAL_JITTER_S);
            assert!(
                (j - i) as f64 <= allowed,
                "{} sends in {span:.3} s (arrivals {i}..={j}) against a limit of {RATE}/s",
                j - i + 1
            );
        }
    }
}

/// Accepts like Twilio and records when each request arrived.
#[derive(Clone, Default)]
struct ArrivalTimes {
    at: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    accepts: std::sync::Arc<TwilioAccepts>,
}

impl ArrivalTimes {
    fn sorted(&self) -> Vec<Instant> {
        let mut times = self.at.lock().unwrap().clone();
        times.sort();
        times
    }
}

impl wiremock::Respond for ArrivalTimes {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        self.at.lock().unwrap().push(Instant::now());
        self.accepts.respond(request)
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_callback_that_beats_twilios_answer_keeps_the_sent_decision(db: PgPool) {
    use shared::store::messages::outbox::{self, Ending, Finish};
    use shared::store::messages::{CallbackUpdate, apply_status_callback};
    use shared::store::webhook_events::NewWebhookEvent;

    opted_in(&db, json!({"first_name": "Ada"})).await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, c, PHONE).await;
    let claim = outbox::claim(&db, id, 60.0)
        .await
        .unwrap()
        .expect("claimed")
        .claim;
    // Twilio delivered and called back (with our id) before its API answer reached us.
    let params = json!({"MessageSid": "SMfast", "MessageStatus": "delivered"});
    let event = NewWebhookEvent {
        kind: "status",
        dedupe_key: "SMfast:delivered",
        idempotency_token: None,
        message_sid: Some("SMfast"),
        request_uri: "/webhooks/status",
        content_type: "application/x-www-form-urlencoded",
        raw_body: "MessageSid=SMfast&MessageStatus=delivered",
        params: &params,
    };
    let update = CallbackUpdate {
        message_id: Some(id),
        message_sid: "SMfast",
        status: Some(shared::domain::MessageStatus::Delivered),
        error_code: None,
        error_message: None,
    };
    assert!(
        apply_status_callback(&db, &event, &update)
            .await
            .unwrap()
            .advanced
    );
    let ending = Ending::Sent {
        sid: Some("SMfast".into()),
        twilio_status: "queued".into(),
        reconcile_at: None,
    };
    let sent = |ending| Finish {
        ending,
        decision: "sent",
        reason: json!({}),
        rendered: None,
        attempted: true,
    };
    assert!(outbox::finish(&db, id, claim, &sent(ending)).await.unwrap());
    let m = messages::get(&db, id).await.unwrap().unwrap();
    assert_eq!(
        (m.status.as_str(), m.twilio_sid.as_deref()),
        ("delivered", Some("SMfast"))
    );
    assert_eq!(last_decision(&db, id).await.0, "sent");
    // Another message's SID does not let a late answer through.
    let other = Ending::Sent {
        sid: Some("SMother".into()),
        twilio_status: "queued".into(),
        reconcile_at: None,
    };
    assert!(!outbox::finish(&db, id, claim, &sent(other)).await.unwrap());
}
