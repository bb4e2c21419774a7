//! Triggered campaigns end to end: a campaign written through the API, events
//! posted to the events function, the messages they start (or why not), the
//! task handed to the sender and what Twilio receives.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use e2e::engine::{RecordingPublisher, TwilioAccepts, fast_settings, messages_path, sender, user};
use serde_json::{Value, json};
use shared::engine::fanout;
use shared::ratelimit::Limiter;
use shared::store::campaigns;
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::api_support::{Api, api};
use crate::events::service_publishing_to;
use crate::fanout::one_round;
use crate::support::{MIGRATOR, send};

const ADA: &str = "+14155552671";
const BOB: &str = "+14155552672";

/// Writes a template and a triggered campaign through the API and launches
/// it; the fan-out's start makes it `running`. Returns its id.
async fn triggered(db: &PgPool, body: &str, trigger: Value, segment: Option<Value>) -> Uuid {
    let api = api(db.clone());
    let template = api
        .call(
            Method::POST,
            "/v1/templates",
            Some(&json!({"name": format!("t-{}", Uuid::new_v4()), "body": body})),
        )
        .await
        .expect(StatusCode::CREATED);
    let mut campaign = json!({
        "name": "triggered", "template_id": template["id"], "trigger": trigger, "rate_per_second": 1000,
    });
    if let Some(definition) = segment {
        let s = api
            .call(
                Method::POST,
                "/v1/segments",
                Some(&json!({"name": format!("s-{}", Uuid::new_v4()), "definition": definition})),
            )
            .await
            .expect(StatusCode::CREATED);
        campaign["segment_id"] = s["id"].clone();
    }
    let c = api
        .call(Method::POST, "/v1/campaigns", Some(&campaign))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(c["kind"], "triggered");
    let id: Uuid = c["id"].as_str().unwrap().parse().unwrap();
    api.call(Method::POST, &format!("/v1/campaigns/{id}/launch"), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(campaigns::start_due_campaigns(db).await.unwrap(), vec![id]);
    id
}

fn event(phone: &str, name: &str, key: &str, properties: Value, at: DateTime<Utc>) -> Value {
    json!({"phone_number": phone, "name": name, "idempotency_key": key,
           "properties": properties, "occurred_at": at.to_rfc3339()})
}

/// Posts each event alone, in order; each is new.
async fn post_each(events: &Api, list: &[Value]) {
    for e in list {
        events
            .call(Method::POST, "/v1/events", Some(e))
            .await
            .expect(StatusCode::CREATED);
    }
}

/// (id, phone, status, last_decision, next_attempt_at) of the campaign's messages.
async fn messages_of(
    db: &PgPool,
    campaign: Uuid,
) -> Vec<(Uuid, String, String, String, DateTime<Utc>)> {
    sqlx::query_as(
        "select id, phone_number, status, last_decision, next_attempt_at from messages
         where campaign_id = $1 order by created_at, id",
    )
    .bind(campaign)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Decisions without a message: why events started nothing, by kind.
async fn not_started(db: &PgPool, campaign: Uuid) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "select decision, count(*) from decisions where campaign_id = $1 and message_id is null
         group by decision",
    )
    .bind(campaign)
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_event_sends_at_once_with_its_properties_and_a_replay_sends_nothing(db: PgPool) {
    user(
        &db,
        ADA,
        "opted_in",
        json!({"first_name": "Ada"}),
        Some(Utc::now()),
    )
    .await;
    let c = triggered(
        &db,
        "Hi {{ first_name }}, order {{ event.order_id }} has shipped",
        json!({"event": "order.shipped", "per_person": "every_event"}),
        None,
    )
    .await;
    let publisher = RecordingPublisher::default();
    let events = service_publishing_to(db.clone(), publisher.clone());
    let shipped = event(
        ADA,
        "order.shipped",
        "A-17-shipped",
        json!({"order_id": "A-17"}),
        Utc::now(),
    );
    events
        .call(Method::POST, "/v1/events", Some(&shipped))
        .await
        .expect(StatusCode::CREATED);

    let rows = messages_of(&db, c).await;
    assert_eq!(rows.len(), 1);
    let (id, phone, status, decision, _) = rows[0].clone();
    assert_eq!(
        (phone.as_str(), status.as_str(), decision.as_str()),
        (ADA, "queued", "queued")
    );
    let tasks = publisher.tasks.lock().unwrap().clone();
    assert_eq!(
        tasks.iter().map(|t| t.message_id).collect::<Vec<_>>(),
        vec![id]
    );

    // The ordinary sender takes it from there.
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(TwilioAccepts::new())
        .mount(&twilio)
        .await;
    let router = ::sender::router(sender(&db, &twilio.uri(), Limiter::Off, fast_settings()));
    let (code, body) = send(&router, e2e::engine::push_request(id)).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let requests = twilio.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let form: HashMap<String, String> = form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    assert_eq!(form["Body"], "Hi Ada, order A-17 has shipped");

    // The same event again (and again, in a batch): stored once, sent once.
    events
        .call(Method::POST, "/v1/events", Some(&shipped))
        .await
        .expect(StatusCode::OK);
    let replay = events
        .call(
            Method::POST,
            "/v1/events",
            Some(&json!({"events": [shipped.clone(), shipped]})),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(replay["duplicates"], 2);
    assert_eq!(messages_of(&db, c).await.len(), 1);
    assert_eq!(publisher.tasks.lock().unwrap().len(), 1);
    // A triggered campaign does not complete when its messages are done.
    let tick = fanout::tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!((tick.materialized, tick.completed), (0, 0));
    let state: String = sqlx::query_scalar("select state from campaigns where id = $1")
        .bind(c)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(state, "running");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn filter_audience_lateness_delay_and_the_per_person_rule(db: PgPool) {
    user(&db, ADA, "opted_in", json!({"vip": true}), None).await;
    user(&db, BOB, "opted_in", json!({"vip": false}), None).await;
    let c = triggered(
        &db,
        "Your cart ({{ event.total }}) is waiting",
        json!({"event": "cart.abandoned", "filter": {"property": "total", "gte": 50},
               "delay_seconds": 1800, "per_person": "once"}),
        Some(json!({"attribute": "vip", "eq": true})),
    )
    .await;
    let publisher = RecordingPublisher::default();
    let events = service_publishing_to(db.clone(), publisher.clone());
    let now = Utc::now();
    let batch = json!({"events": [
        event(ADA, "cart.abandoned", "small", json!({"total": 10}), now),
        event(BOB, "cart.abandoned", "not-vip", json!({"total": 90}), now),
        event(ADA, "cart.abandoned", "stale", json!({"total": 90}), now - Duration::hours(30)),
        event(ADA, "cart.abandoned", "first", json!({"total": 80}), now - Duration::minutes(5)),
        event(ADA, "cart.abandoned", "second", json!({"total": 70}), now),
    ]});
    let reply = events
        .call(Method::POST, "/v1/events", Some(&batch))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply["created"], 5, "{reply:#}");

    let rows = messages_of(&db, c).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_, phone, status, decision, due) = &rows[0];
    assert_eq!(
        (phone.as_str(), status.as_str(), decision.as_str()),
        (ADA, "pending", "triggered")
    );
    // Thirty minutes after the event it answers (the earliest of the person's two).
    let expected = now - Duration::minutes(5) + Duration::minutes(30);
    assert!(
        (*due - expected).num_seconds().abs() <= 1,
        "due {due}, expected {expected}"
    );
    assert!(
        publisher.tasks.lock().unwrap().is_empty(),
        "a delayed message is not dispatched at once"
    );
    assert_eq!(
        not_started(&db, c).await,
        HashMap::from([
            ("trigger_filtered".to_owned(), 1),
            ("trigger_not_in_audience".to_owned(), 1),
            ("trigger_too_late".to_owned(), 1),
            ("trigger_limited".to_owned(), 1),
        ])
    );
    // Once means once: a later event (another request) starts nothing more.
    events
        .call(
            Method::POST,
            "/v1/events",
            Some(&event(
                ADA,
                "cart.abandoned",
                "third",
                json!({"total": 99}),
                Utc::now(),
            )),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(messages_of(&db, c).await.len(), 1);
    assert_eq!(not_started(&db, c).await["trigger_limited"], 2);

    // When it falls due, the fan-out dispatches it like any other.
    sqlx::query("update messages set next_attempt_at = now() where campaign_id = $1")
        .bind(c)
        .execute(&db)
        .await
        .unwrap();
    let tick = fanout::tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(tick.dispatched, 1);
    assert_eq!(publisher.tasks.lock().unwrap().len(), 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_cancel_event_calls_off_the_waiting_message_in_either_order(db: PgPool) {
    user(&db, ADA, "opted_in", json!({}), None).await;
    user(&db, BOB, "opted_in", json!({}), None).await;
    let c = triggered(
        &db,
        "Your cart is waiting",
        json!({"event": "cart.abandoned", "delay_seconds": 1800, "per_person": "every_event",
               "cancel_event": "order.paid"}),
        None,
    )
    .await;
    let events = service_publishing_to(db.clone(), RecordingPublisher::default());
    let t0 = Utc::now() - Duration::minutes(10);
    // Ada abandons, then pays: the reminder is called off.
    post_each(
        &events,
        &[
            event(ADA, "cart.abandoned", "ada-cart", json!({}), t0),
            event(
                ADA,
                "order.paid",
                "ada-paid",
                json!({}),
                t0 + Duration::minutes(2),
            ),
        ],
    )
    .await;
    let rows = messages_of(&db, c).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].2.as_str(), rows[0].3.as_str()),
        ("skipped", "cancelled_by_event")
    );
    // Bob's payment reaches us before the abandonment it follows: nothing starts.
    post_each(
        &events,
        &[
            event(
                BOB,
                "order.paid",
                "bob-paid",
                json!({}),
                t0 + Duration::minutes(2),
            ),
            event(BOB, "cart.abandoned", "bob-cart", json!({}), t0),
        ],
    )
    .await;
    assert_eq!(messages_of(&db, c).await.len(), 1);
    assert_eq!(not_started(&db, c).await["trigger_cancelled_already"], 1);
    // A cancel event for an abandonment after it leaves the later reminder alone.
    post_each(
        &events,
        &[event(
            BOB,
            "cart.abandoned",
            "bob-cart-2",
            json!({}),
            t0 + Duration::minutes(5),
        )],
    )
    .await;
    let rows = messages_of(&db, c).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), (BOB, "pending"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_failed_publish_leaves_the_message_to_the_fan_out(db: PgPool) {
    user(&db, ADA, "opted_in", json!({}), Some(Utc::now())).await;
    let c = triggered(
        &db,
        "Shipped",
        json!({"event": "order.shipped", "per_person": "every_event"}),
        None,
    )
    .await;
    // The send topic refuses: the event is still stored (201) and the message
    // goes back to pending instead of sitting queued with no task.
    let down = RecordingPublisher {
        fail: true,
        ..RecordingPublisher::default()
    };
    let events = service_publishing_to(db.clone(), down);
    post_each(
        &events,
        &[event(ADA, "order.shipped", "A-1", json!({}), Utc::now())],
    )
    .await;
    let rows = messages_of(&db, c).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "pending");
    // The next tick dispatches it with a topic that answers.
    let publisher = RecordingPublisher::default();
    let tick = fanout::tick(&db, &publisher, &one_round()).await.unwrap();
    assert_eq!(tick.dispatched, 1);
    let tasks = publisher.tasks.lock().unwrap().clone();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].message_id, rows[0].0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_events_for_one_person_start_one_message(db: PgPool) {
    user(&db, ADA, "opted_in", json!({}), Some(Utc::now())).await;
    let c = triggered(
        &db,
        "Welcome",
        json!({"event": "signed.up", "per_person": "once_per_period", "period_seconds": 86400}),
        None,
    )
    .await;
    let publisher = RecordingPublisher::default();
    let events = std::sync::Arc::new(service_publishing_to(db.clone(), publisher.clone()));
    let calls = (0..24).map(|i| {
        let events = events.clone();
        tokio::spawn(async move {
            events
                .call(
                    Method::POST,
                    "/v1/events",
                    Some(&event(
                        ADA,
                        "signed.up",
                        &format!("k{i}"),
                        json!({}),
                        Utc::now(),
                    )),
                )
                .await
                .expect(StatusCode::CREATED)
        })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap();
    }
    assert_eq!(messages_of(&db, c).await.len(), 1);
    assert_eq!(not_started(&db, c).await["trigger_limited"], 23);
    assert_eq!(publisher.tasks.lock().unwrap().len(), 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_api_names_what_is_wrong_with_a_trigger(db: PgPool) {
    let api = api(db.clone());
    let template = api
        .call(
            Method::POST,
            "/v1/templates",
            Some(&json!({"name": "t", "body": "Hi"})),
        )
        .await
        .expect(StatusCode::CREATED);
    let create = |body: Value| {
        let api = &api;
        async move { api.call(Method::POST, "/v1/campaigns", Some(&body)).await }
    };
    let no_segment = create(json!({"name": "c", "template_id": template["id"]})).await;
    assert_eq!(no_segment.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_segment.field(), Some("segment_id"));
    for (trigger, field) in [
        (json!({"event": "order placed"}), "trigger.event"),
        (
            json!({"event": "a", "delay_seconds": 999999999}),
            "trigger.delay_seconds",
        ),
        (
            json!({"event": "a", "filter": {"attribute": "x", "eq": 1}}),
            "trigger.filter",
        ),
        (
            json!({"event": "a", "per_person": "once_per_period"}),
            "trigger.period_seconds",
        ),
        (
            json!({"event": "a", "cancel_event": "a"}),
            "trigger.cancel_event",
        ),
    ] {
        let r =
            create(json!({"name": "c", "template_id": template["id"], "trigger": trigger})).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{trigger}: {:#}",
            r.body
        );
        assert_eq!(r.field(), Some(field), "{trigger}: {:#}", r.body);
    }
    let ok = create(
        json!({"name": "c", "template_id": template["id"], "trigger": {"event": "order.shipped"}}),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(ok["kind"], "triggered");
    assert_eq!(ok["segment_id"], Value::Null);
    assert_eq!(ok["trigger"]["per_person"], "once");
}
