use axum::http::StatusCode;
use e2e::webhooks_router;
use shared::domain::ConsentSource;
use shared::domain::consent::{DEFAULT_OPT_IN, DEFAULT_OPT_OUT};
use shared::store::users;
use sqlx::PgPool;

use crate::support::{MIGRATOR, count, post_signed};

const PATH: &str = "/webhooks/inbound";

fn inbound<'a>(sid: &'a str, from: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("Body", body),
        ("From", from),
        ("MessageSid", sid),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("ProfileName", "Ada"),
        ("SmsMessageSid", sid),
        ("SmsStatus", "received"),
        ("To", "whatsapp:+14155238886"),
        ("WaId", "14155552671"),
    ]
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stores_raw_normalizes_and_opens_the_window(db: PgPool) {
    let router = webhooks_router(db.clone());
    let mut params = inbound("SM0001", "whatsapp:+14155552671", "Hi there");
    params.push(("NumMedia", "1"));
    params.retain(|(k, v)| *k != "NumMedia" || *v == "1");
    params.push(("MediaUrl0", "https://api.twilio.com/media/ME1"));
    params.push(("MediaContentType0", "image/jpeg"));
    params.push(("SomethingNew", "kept raw"));
    let (status, body) = post_signed(&router, PATH, &params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<Response/>"), "{body}");

    let (raw, kept): (String, String) = sqlx::query_as(
        "select raw_body, params->>'SomethingNew' from webhook_events where kind = 'inbound'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(raw.contains("SomethingNew=kept+raw"), "{raw}");
    assert_eq!(kept, "kept raw");

    let (from, body_text, num_media, media_type, wa_id): (String, String, i32, String, String) = sqlx::query_as(
        "select from_number, body, num_media, media->0->>'content_type', wa_id from inbound_messages",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (from.as_str(), body_text.as_str(), num_media),
        ("+14155552671", "Hi there", 1)
    );
    assert_eq!(
        (media_type.as_str(), wa_id.as_str()),
        ("image/jpeg", "14155552671")
    );

    let user = users::get(&db, "+14155552671")
        .await
        .unwrap()
        .expect("user created");
    assert_eq!(user.consent, "unknown");
    assert_eq!(user.profile_name.as_deref(), Some("Ada"));
    assert!(user.last_inbound_at.is_some());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_keyword_changes_consent_and_is_recorded(db: PgPool) {
    let router = webhooks_router(db.clone());
    let phone = "whatsapp:+14155552671";
    let mut n = 0;
    for (out_word, in_word) in DEFAULT_OPT_OUT.iter().zip(DEFAULT_OPT_IN.iter().cycle()) {
        for (word, expected) in [
            (format!("  {}", out_word.to_lowercase()), "opted_out"),
            (format!("{in_word} "), "opted_in"),
        ] {
            n += 1;
            let sid = format!("SMkw{n}");
            let (status, _) = post_signed(&router, PATH, &inbound(&sid, phone, &word)).await;
            assert_eq!(status, StatusCode::OK);
            let user = users::get(&db, "+14155552671").await.unwrap().unwrap();
            assert_eq!(user.consent, expected, "after {word:?}");
            assert_eq!(
                user.consent_source.map(ConsentSource::as_str),
                Some("keyword")
            );
        }
    }
    // Every message changed consent, so every one left an event with its source.
    assert_eq!(
        count(
            &db,
            "select count(*) from consent_events where source = 'keyword'"
        )
        .await,
        n
    );
    let first: (String, String) =
        sqlx::query_as("select from_consent, to_consent from consent_events order by id limit 1")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(first, ("unknown".to_owned(), "opted_out".to_owned()));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_repeated_keyword_writes_no_second_event(db: PgPool) {
    let router = webhooks_router(db.clone());
    for sid in ["SMa", "SMb"] {
        let (status, _) = post_signed(&router, PATH, &inbound(sid, "+14155552671", "STOP")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(count(&db, "select count(*) from consent_events").await, 1);
    assert_eq!(count(&db, "select count(*) from inbound_messages").await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_duplicate_delivery_changes_nothing(db: PgPool) {
    let router = webhooks_router(db.clone());
    let params = inbound("SMdup", "+14155552671", "STOP");
    for _ in 0..3 {
        let (status, body) = post_signed(&router, PATH, &params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 1);
    assert_eq!(count(&db, "select count(*) from inbound_messages").await, 1);
    assert_eq!(count(&db, "select count(*) from consent_events").await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_same_idempotency_token_is_one_delivery(db: PgPool) {
    use crate::support::{form_request, send};
    let router = webhooks_router(db.clone());
    for sid in ["SMt1", "SMt2"] {
        let form = e2e::sign_form(
            e2e::AUTH_TOKEN,
            PATH,
            &inbound(sid, "+14155552671", "hello"),
        );
        let mut req = form_request(PATH, &form);
        req.headers_mut()
            .insert("i-twilio-idempotency-token", "tok-1".parse().unwrap());
        let (status, _) = send(&router, req).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_window_only_moves_forward(db: PgPool) {
    let router = webhooks_router(db.clone());
    post_signed(&router, PATH, &inbound("SMw1", "+14155552671", "one")).await;
    let first = users::get(&db, "+14155552671")
        .await
        .unwrap()
        .unwrap()
        .last_inbound_at
        .unwrap();
    sqlx::query("update users set last_inbound_at = now() + interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();
    post_signed(&router, PATH, &inbound("SMw2", "+14155552671", "two")).await;
    let after = users::get(&db, "+14155552671")
        .await
        .unwrap()
        .unwrap()
        .last_inbound_at
        .unwrap();
    assert!(
        after > first + chrono::Duration::minutes(59),
        "the later window was kept"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unreadable_requests_are_kept_raw_flagged_and_answered_200(db: PgPool) {
    let router = webhooks_router(db.clone());
    let flags = || async {
        sqlx::query_scalar::<_, String>(
            "select parse_error from webhook_events where parse_error is not null order by id",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let mut no_from = inbound("SMx", "+14155552671", "hi");
    no_from.retain(|(k, _)| *k != "From");
    let (status, _) = post_signed(&router, PATH, &no_from).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = post_signed(&router, PATH, &inbound("SMy", "whatsapp:+1555", "hi")).await;
    assert_eq!(status, StatusCode::OK);

    let mut no_sid = inbound("SMz", "+14155552671", "hi");
    no_sid.retain(|(k, _)| !k.ends_with("Sid") || *k == "AccountSid");
    for _ in 0..2 {
        let (status, _) = post_signed(&router, PATH, &no_sid).await;
        assert_eq!(status, StatusCode::OK);
    }
    let flagged = flags().await;
    assert_eq!(flagged.len(), 3, "{flagged:?}");
    assert!(flagged[0].contains("From"), "{flagged:?}");
    assert!(flagged[1].contains("too short"), "{flagged:?}");
    assert!(flagged[2].contains("MessageSid"), "{flagged:?}");
    // Kept exactly as received; the same request twice is one event.
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 3);
    assert_eq!(count(&db, "select count(*) from users").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_stop_from_a_number_the_metadata_does_not_know_still_opts_out(db: PgPool) {
    let router = webhooks_router(db.clone());
    // +999 is no country calling code the bundled metadata knows; Twilio routed it, so it exists.
    let (status, _) = post_signed(
        &router,
        PATH,
        &inbound("SMnew", "whatsapp:+99912345678", "Stop."),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let consent: String =
        sqlx::query_scalar("select consent from users where phone_number = '+99912345678'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(consent, "opted_out");
    let flag: String = sqlx::query_scalar("select parse_error from webhook_events")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(flag.contains("E.164 shape"), "{flag}");
    // A NumMedia that does not parse is read as no media, and flagged.
    let mut odd = inbound("SModd", "+14155552671", "hi");
    odd.push(("NumMedia", "lots"));
    assert_eq!(post_signed(&router, PATH, &odd).await.0, StatusCode::OK);
    assert_eq!(count(&db, "select count(*) from inbound_messages").await, 2);
}

/// Every message a person sends is a `message.received` event too (once,
/// however often Twilio delivers it), with its keyword and button payload.
#[sqlx::test(migrator = "MIGRATOR")]
async fn inbound_messages_are_events_once(db: PgPool) {
    let router = webhooks_router(db.clone());
    let mut tap = inbound("SM0101", "whatsapp:+14155552671", "Track my order");
    tap.push(("ButtonPayload", "track-order"));
    tap.push(("ButtonText", "Track my order"));
    for _ in 0..2 {
        let (status, body) = post_signed(&router, PATH, &tap).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = post_signed(
        &router,
        PATH,
        &inbound("SM0102", "whatsapp:+14155552671", "stop"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "select idempotency_key, source, properties from events
         where name = 'message.received' order by id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("inbound:SM0101", "inbound")
    );
    assert_eq!(rows[0].2["button_payload"], "track-order");
    assert_eq!(rows[0].2["body"], "Track my order");
    assert_eq!(rows[0].2["keyword"], serde_json::Value::Null);
    assert_eq!(rows[1].2["keyword"], "opted_out");
}
