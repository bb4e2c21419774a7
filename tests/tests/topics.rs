//! Topics: per-topic subscriptions set by the person (a button) or by the API
//! under the same precedence as consent; a campaign about a topic skips
//! people who left it; segments test subscriptions.

use axum::http::StatusCode;
use e2e::engine::{CampaignSpec, campaign, fast_settings, push_request, queued_message, sender};
use e2e::webhooks_router;
use serde_json::json;
use shared::ratelimit::Limiter;
use sqlx::PgPool;
use wiremock::MockServer;

use crate::api_support::api;
use crate::support::{MIGRATOR, count, post_signed, send};

const ADA: &str = "/v1/users/%2B14155552671";

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_person_leaves_a_topic_and_only_they_can_rejoin(db: PgPool) {
    let api = api(db.clone());
    api.post(
        "/v1/users",
        json!({"phone_number": "+14155552671", "consent": "opted_in", "topics": {"promotions": true}}),
    )
    .await
    .expect(StatusCode::CREATED);
    // Ada taps "no more promotions".
    let webhooks = webhooks_router(db.clone());
    let tap = [
        ("Body", ""),
        ("ButtonPayload", "topic:promotions:off"),
        ("ButtonText", "No more promotions"),
        ("From", "whatsapp:+14155552671"),
        ("MessageSid", "SMtap"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &tap).await.0,
        StatusCode::OK
    );

    let reply = api
        .patch(ADA, json!({"topics": {"promotions": true}}))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.field(), Some("topics.promotions"));
    // The API may still unsubscribe from other topics, and the refusal is evidence.
    api.patch(ADA, json!({"topics": {"order-updates": false}}))
        .await
        .expect(StatusCode::OK);
    let history = api
        .get(&format!("{ADA}/consent"))
        .await
        .expect(StatusCode::OK);
    let topics: Vec<(String, String, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["topic"].is_null())
        .map(|e| {
            (
                e["topic"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
                e["refused"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        topics,
        [
            ("promotions".to_owned(), "button".to_owned(), false),
            ("promotions".to_owned(), "api".to_owned(), true),
            ("order-updates".to_owned(), "api".to_owned(), false),
        ]
    );
    assert_eq!(
        api.patch(ADA, json!({"topics": {"Not A Topic": true}}))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Segments see it.
    let preview = api
        .post(
            "/v1/segments/preview",
            json!({"definition": {"topic": "promotions", "subscribed": false}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(preview["count"], 1, "{preview}");

    // A campaign about promotions skips her, with a decision; one without a topic does not.
    sqlx::query("update users set last_inbound_at = now() where phone_number = '+14155552671'")
        .execute(&db)
        .await
        .unwrap();
    let twilio = MockServer::start().await;
    let router = ::sender::router(sender(&db, &twilio.uri(), Limiter::Off, fast_settings()));
    let about = campaign(&db, &CampaignSpec::default()).await;
    sqlx::query("update campaigns set topic = 'promotions' where id = $1")
        .bind(about)
        .execute(&db)
        .await
        .unwrap();
    let id = queued_message(&db, about, "+14155552671").await;
    send(&router, push_request(id)).await;
    let (decision, reason): (String, serde_json::Value) = sqlx::query_as(
        "select decision, reason from decisions where message_id = $1 order by id desc limit 1",
    )
    .bind(id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (decision.as_str(), &reason["topic"]),
        ("skipped_topic_unsubscribed", &json!("promotions"))
    );
    assert!(twilio.received_requests().await.unwrap().is_empty());

    // Ada taps "promotions again": she may rejoin.
    let rejoin = [
        ("ButtonPayload", "topic:promotions:on"),
        ("From", "whatsapp:+14155552671"),
        ("MessageSid", "SMtap2"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &rejoin).await.0,
        StatusCode::OK
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from topic_subscriptions where topic = 'promotions' and subscribed"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_campaign_names_its_topic(db: PgPool) {
    let api = api(db.clone());
    let segment = api
        .post(
            "/v1/segments",
            json!({"name": "all", "definition": {"all": []}}),
        )
        .await
        .expect(StatusCode::CREATED);
    let template = api
        .post("/v1/templates", json!({"name": "t", "body": "Hi"}))
        .await
        .expect(StatusCode::CREATED);
    let c = api
        .post(
            "/v1/campaigns",
            json!({"name": "sale", "segment_id": segment["id"], "template_id": template["id"], "topic": "promotions"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(c["topic"], "promotions");
    let reply = api
        .post(
            "/v1/campaigns",
            json!({"name": "bad", "segment_id": segment["id"], "template_id": template["id"], "topic": "Promo Tions"}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("topic"))
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_import_sets_topics_under_the_same_precedence(db: PgPool) {
    use e2e::ingest::{Inbox, finalized, ingest_config, ingest_router};
    // Ada left promotions herself (a button); Bob left it through the API.
    sqlx::raw_sql(
        "insert into users (phone_number, consent) values ('+14155552671', 'opted_in'), ('+14155552672', 'opted_in');
         insert into topic_subscriptions (phone_number, topic, subscribed, source)
         values ('+14155552671', 'promotions', false, 'button'), ('+14155552672', 'promotions', false, 'api')",
    )
    .execute(&db)
    .await
    .unwrap();
    let inbox = Inbox::new();
    let ingest = ingest_router(db.clone(), &ingest_config(&[]), inbox.objects());
    let csv = "phone,topic.promotions,topic.order-updates\n+14155552671,subscribed,\n+14155552672,yes,no\n+14155552673,no,\n+14155552674,maybe,\n";
    let (code, body) = send(&ingest, finalized(&inbox.put("topics.csv", csv))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&body["consent_kept"], &body["rejected"]),
        (&json!(1), &json!(1)),
        "{body}"
    );
    let subs: Vec<(String, String, bool, String)> = sqlx::query_as(
        "select phone_number, topic, subscribed, source from topic_subscriptions order by 1, 2",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let row =
        |p: &str, t: &str, s: bool, src: &str| (p.to_owned(), t.to_owned(), s, src.to_owned());
    assert_eq!(
        subs,
        [
            row("+14155552671", "promotions", false, "button"),
            row("+14155552672", "order-updates", false, "import"),
            row("+14155552672", "promotions", true, "import"),
            row("+14155552673", "promotions", false, "import"),
        ]
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from consent_events where refused and topic = 'promotions'"
        )
        .await,
        1
    );
}
