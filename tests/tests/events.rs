//! The events function: intake over HTTP (one event or a batch, per-item
//! outcomes) and Pub/Sub push, idempotent on the key, people created on first
//! sight, events erased with the person.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use e2e::engine::RecordingPublisher;
use serde_json::{Value, json};
use shared::config::Env;
use shared::gcp::PushEnvelope;
use shared::http::auth::ApiKeys;
use shared::store::{events as store, users};
use sqlx::PgPool;

use crate::api_support::{Api, KEY};
use crate::support::MIGRATOR;

pub fn service(db: PgPool) -> Api {
    service_publishing_to(db, RecordingPublisher::default())
}

/// The events function, its triggered messages' tasks going to `publisher`.
pub fn service_publishing_to(db: PgPool, publisher: RecordingPublisher) -> Api {
    let config = events::Config::from_env(&Env::from_pairs([
        (
            "DATABASE_URL",
            "postgres://unused@127.0.0.1/unused".to_owned(),
        ),
        ("API_KEYS", ApiKeys::hash(KEY)),
        ("DEFAULT_REGION", "US".to_owned()),
    ]))
    .expect("test events config is valid");
    Api {
        router: shared::http::server::with_standard_routes(
            events::app(&config, db.clone(), publisher),
            db,
            None,
        ),
    }
}

fn event(phone: &str, name: &str, key: &str) -> Value {
    json!({"phone_number": phone, "name": name, "idempotency_key": key, "properties": {"order_id": key}})
}

async fn stored(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from events")
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn one_event_is_stored_once_and_creates_the_person(db: PgPool) {
    let events = service(db.clone());
    let body = event("(415) 555-2671", "order.shipped", "order-1-shipped");
    let created = events
        .call(Method::POST, "/v1/events", Some(&body))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["status"], "created");
    assert!(created["id"].as_i64().is_some());
    let again = events
        .call(Method::POST, "/v1/events", Some(&body))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again["status"], "duplicate");
    assert_eq!(stored(&db).await, 1);
    // Read with the default region, the person exists now, consent unknown.
    let person = users::get(&db, "+14155552671")
        .await
        .unwrap()
        .expect("created");
    assert_eq!(person.consent, "unknown");
    assert_eq!(
        store::count(&db, "+14155552671", "order.shipped")
            .await
            .unwrap(),
        1
    );
    let row: (Value, String) = sqlx::query_as("select properties, source from events")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        row,
        (json!({"order_id": "order-1-shipped"}), "api".to_owned())
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_batch_reports_each_event_and_a_bad_one_loses_nothing_else(db: PgPool) {
    let events = service(db.clone());
    events
        .call(
            Method::POST,
            "/v1/events",
            Some(&event("+14155552671", "cart.abandoned", "seen-before")),
        )
        .await
        .expect(StatusCode::CREATED);
    let batch = json!({"events": [
        event("+14155552671", "order.paid", "a"),
        event("+14155552672", "order.paid", "a"),
        event("not a number", "order.paid", "b"),
        event("+14155552671", "cart.abandoned", "seen-before"),
        event("+14155552673", "order paid", "c"),
        {"phone_number": "+14155552674", "name": "order.paid"},
        event("+14155552675", "order.paid", "d"),
    ]});
    let reply = events
        .call(Method::POST, "/v1/events", Some(&batch))
        .await
        .expect(StatusCode::OK);
    let statuses: Vec<&str> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created",
            "duplicate",
            "rejected",
            "duplicate",
            "rejected",
            "rejected",
            "created"
        ]
    );
    let fields: Vec<&str> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["error"]["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "events[2].phone_number",
            "events[4].name",
            "events[5].idempotency_key"
        ]
    );
    assert_eq!(
        (&reply["created"], &reply["duplicates"], &reply["rejected"]),
        (&json!(2), &json!(2), &json!(3))
    );
    assert_eq!(stored(&db).await, 3);
    // The second copy of key `a` named another person: the first copy won.
    assert!(users::get(&db, "+14155552672").await.unwrap().is_none());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn replaying_a_full_batch_stores_nothing_more(db: PgPool) {
    let events = service(db.clone());
    let batch = json!({"events": (0..events::MAX_BATCH)
        .map(|i| event(&format!("+1415555{:04}", i % 500), "page.viewed", &format!("view-{i}")))
        .collect::<Vec<_>>()});
    for round in 0..3 {
        let reply = events
            .call(Method::POST, "/v1/events", Some(&batch))
            .await
            .expect(StatusCode::OK);
        let created = if round == 0 { events::MAX_BATCH } else { 0 };
        assert_eq!(reply["created"], json!(created), "round {round}");
        assert_eq!(stored(&db).await, events::MAX_BATCH as i64);
    }
    let people: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(people, 500);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn what_is_not_an_event_or_a_batch_is_refused_whole(db: PgPool) {
    let events = service(db.clone());
    let too_many = json!({"events": vec![event("+14155552671", "x", "k"); events::MAX_BATCH + 1]});
    for (body, field) in [
        (json!({"events": []}), "events"),
        (too_many, "events"),
        (
            json!({"events": {"phone_number": "+14155552671"}}),
            "events",
        ),
        (json!([1, 2]), "body"),
        (
            json!({"phone_number": "+14155552671", "name": "x"}),
            "idempotency_key",
        ),
    ] {
        let reply = events.call(Method::POST, "/v1/events", Some(&body)).await;
        assert_eq!(
            (reply.status, reply.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}"
        );
    }
    let plain = Request::post("/v1/events")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        events.raw(plain).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let broken = Request::post("/v1/events")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"events\": ["))
        .unwrap();
    assert_eq!(events.raw(broken).await.status, StatusCode::BAD_REQUEST);
    let keyless = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(event("+14155552671", "x", "k").to_string()))
        .unwrap();
    assert_eq!(events.raw(keyless).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stored(&db).await, 0);
}

fn push(message_id: &str, data: &[u8]) -> Request<Body> {
    let envelope = PushEnvelope::wrap(message_id, data, Default::default());
    Request::post("/pubsub/events")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&envelope).unwrap()))
        .unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn pushed_events_are_keyed_by_message_id_and_redeliveries_are_duplicates(db: PgPool) {
    let events = service(db.clone());
    let data = json!({"phone_number": "+14155552671", "name": "order.shipped"}).to_string();
    for _ in 0..3 {
        assert_eq!(
            events.raw(push("4242", data.as_bytes())).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let keyed =
        json!({"phone_number": "+14155552671", "name": "order.shipped", "idempotency_key": "own"});
    assert_eq!(
        events
            .raw(push("4243", keyed.to_string().as_bytes()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let rows: Vec<(String, String)> =
        sqlx::query_as("select idempotency_key, source from events order by id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("pubsub:4242".to_owned(), "pubsub".to_owned()),
            ("own".to_owned(), "pubsub".to_owned())
        ]
    );
    // Not an event: 400, so Pub/Sub redelivers it until the dead-letter topic takes it.
    for bad in [
        &b"not json"[..],
        br#"{"name": "x"}"#,
        br#"{"phone_number": "+14155552671", "name": "bad name"}"#,
    ] {
        assert_eq!(
            events.raw(push("4244", bad)).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(stored(&db).await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn erasing_a_person_erases_their_events(db: PgPool) {
    let events = service(db.clone());
    events
        .call(
            Method::POST,
            "/v1/events",
            Some(&event("+14155552671", "order.shipped", "k1")),
        )
        .await
        .expect(StatusCode::CREATED);
    events
        .call(
            Method::POST,
            "/v1/events",
            Some(&event("+14155552672", "order.shipped", "k2")),
        )
        .await
        .expect(StatusCode::CREATED);
    let mut tx = db.begin().await.unwrap();
    assert!(users::erase(&mut tx, "+14155552671").await.unwrap());
    tx.commit().await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("select phone_number from events")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(left, ["+14155552672"]);
}
