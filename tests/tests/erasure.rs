//! Erasure leaves no trace of a number: written in every format through every
//! path, then erased, then looked for in every text and jsonb column.

use axum::http::StatusCode;
use e2e::engine::{CampaignSpec, campaign, push_request, queued_message, sender, twilio_error};
use e2e::ingest::{Inbox, finalized, ingest_config, ingest_router};
use e2e::{fixtures, status_params, webhooks_router};
use serde_json::json;
use shared::ratelimit::Limiter;
use sqlx::PgPool;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

use crate::api_support::api;
use crate::support::{MIGRATOR, count, post_signed, send};

/// The national number's digits: every written form of the number holds them.
const DIGITS: &str = "4155552671";

/// Every (table, column) of text or jsonb whose values' digits contain `digits`.
async fn traces(db: &PgPool, digits: &str) -> Vec<(String, String, i64)> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select table_name::text, column_name::text from information_schema.columns
         where table_schema = 'public' and data_type in ('text', 'jsonb', 'character varying')
           and table_name <> '_sqlx_migrations'
         order by 1, 2",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(columns.len() > 20, "{columns:?}");
    let mut found = vec![];
    for (table, column) in columns {
        let sql = format!(
            "select count(*) from {table} where regexp_replace({column}::text, '\\D', '', 'g') like '%' || $1 || '%'"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(digits)
            .fetch_one(db)
            .await
            .unwrap();
        if n > 0 {
            found.push((table, column, n));
        }
    }
    found
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn erasure_leaves_no_trace_of_the_number_anywhere(db: PgPool) {
    let api = api(db.clone());
    let webhooks = webhooks_router(db.clone());

    // The API, in the national form.
    api.post(
        "/v1/users",
        json!({"phone_number": "(415) 555-2671", "attributes": {"first_name": "Ada"}, "consent": "opted_in"}),
    )
    .await
    .expect(StatusCode::CREATED);

    // An import: the number as digits, and a rejected line that quotes it.
    let inbox = Inbox::new();
    let ingest = ingest_router(db.clone(), &ingest_config(&[]), inbox.objects());
    let csv = "phone_number,first_name,consent\n14155552671,Ada,\n+1 415-555-2671,Ada,maybe\n";
    let (code, body) = send(&ingest, finalized(&inbox.put("people.csv", csv))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(count(&db, "select count(*) from import_rejects").await >= 1);

    // Inbound messages, with the whatsapp: prefix, one quoting the number in its text.
    for (sid, text) in [("SMin1", "call me at 415-555-2671"), ("SMin2", "STOP")] {
        let params = [
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("Body", text),
            ("From", "whatsapp:+14155552671"),
            ("MessageSid", sid),
            ("ProfileName", "Ada"),
            ("To", "whatsapp:+14155238886"),
            ("WaId", "14155552671"),
        ];
        assert_eq!(
            post_signed(&webhooks, "/webhooks/inbound", &params).await.0,
            StatusCode::OK
        );
    }
    // Someone else writes the number to us.
    let other = [
        ("Body", "my friend is +1 (415) 555 2671"),
        ("From", "whatsapp:+14155550000"),
        ("MessageSid", "SMother"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &other).await.0,
        StatusCode::OK
    );

    // A send Twilio refuses with a text that quotes the To, through the sender.
    sqlx::query("update users set consent = 'opted_in', consent_source = 'api' where phone_number = '+14155552671'")
        .execute(&db)
        .await
        .unwrap();
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(
            400,
            21211,
            "The 'To' number whatsapp:+14155552671 is not a valid phone number.",
        ))
        .mount(&twilio)
        .await;
    let c = campaign(&db, &CampaignSpec::default()).await;
    let id = queued_message(&db, c, "+14155552671").await;
    let router = ::sender::router(sender(
        &db,
        &twilio.uri(),
        Limiter::Off,
        e2e::engine::fast_settings(),
    ));
    send(&router, push_request(id)).await;

    // Status callbacks: one for a message of ours, with an error text quoting
    // the number, and one whose SID matches nothing.
    let ours = fixtures::message(
        &db,
        fixtures::campaign(&db).await,
        "+14155552671",
        "sent",
        Some("SMout1"),
    )
    .await;
    let mut failed = status_params("SMout1", "undelivered", "whatsapp:+14155552671");
    failed.push(("ErrorCode", "30003"));
    failed.push((
        "ErrorMessage",
        "Unreachable destination handset +14155552671",
    ));
    let path = format!("/webhooks/status?mid={ours}");
    assert_eq!(
        post_signed(&webhooks, &path, &failed).await.0,
        StatusCode::OK
    );
    let stray = status_params("SMstray", "delivered", "whatsapp:+14155552671");
    assert_eq!(
        post_signed(&webhooks, "/webhooks/status", &stray).await.0,
        StatusCode::OK
    );

    assert!(
        !traces(&db, DIGITS).await.is_empty(),
        "the number was written"
    );
    let consent_events = count(&db, "select count(*) from consent_events").await;

    // Erased through the URL-encoded form.
    api.delete("/v1/users/%2B14155552671")
        .await
        .expect(StatusCode::NO_CONTENT);

    assert_eq!(traces(&db, DIGITS).await, vec![]);
    // What proves consent stays, against the token.
    assert_eq!(
        count(&db, "select count(*) from consent_events").await,
        consent_events
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from consent_events where phone_number like 'erased:%'"
        )
        .await,
        consent_events
            - count(
                &db,
                "select count(*) from consent_events where phone_number = '+14155550000'"
            )
            .await
    );
    // The other person's own data is untouched but for the mention.
    assert_eq!(
        count(
            &db,
            "select count(*) from users where phone_number = '+14155550000'"
        )
        .await,
        1
    );
}
