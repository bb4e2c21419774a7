use axum::http::StatusCode;
use e2e::{fixtures, status_params, webhooks_router};
use shared::domain::ConsentSource;
use shared::store::{messages, users};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{MIGRATOR, count, post_signed};

const TO: &str = "whatsapp:+14155552671";

async fn callback(
    router: &axum::Router,
    mid: Option<Uuid>,
    sid: &str,
    status: &str,
    extra: &[(&str, &str)],
) -> StatusCode {
    let path = match mid {
        Some(id) => format!("/webhooks/status?mid={id}"),
        None => "/webhooks/status".to_owned(),
    };
    let mut params = status_params(sid, status, TO);
    params.extend_from_slice(extra);
    let (code, body) = post_signed(router, &path, &params).await;
    assert!(code == StatusCode::OK, "{code} {body}");
    code
}

async fn status_of(db: &PgPool, id: Uuid) -> messages::Message {
    messages::get(db, id)
        .await
        .unwrap()
        .expect("message exists")
}

fn permutations(items: &[&'static str]) -> Vec<Vec<&'static str>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = vec![];
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_ordering_of_progress_ends_in_read(db: PgPool) {
    let router = webhooks_router(db.clone());
    let campaign = fixtures::campaign(&db).await;
    let orders = permutations(&["queued", "sent", "delivered", "read"]);
    assert_eq!(orders.len(), 24);
    for (i, order) in orders.iter().enumerate() {
        let sid = format!("SMorder{i:02}");
        let phone = format!("+1415555{i:04}");
        let id = fixtures::message(&db, campaign, &phone, "sending", Some(&sid)).await;
        for status in order {
            callback(&router, None, &sid, status, &[]).await;
        }
        let m = status_of(&db, id).await;
        assert_eq!(m.status, "read", "order {order:?}");
        assert!(
            m.read_at.is_some() && m.delivered_at.is_some() && m.sent_at.is_some(),
            "{order:?}"
        );
    }
    // Every callback is kept, whatever it changed.
    assert_eq!(
        count(
            &db,
            "select count(*) from webhook_events where kind = 'status'"
        )
        .await,
        96
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn matches_by_mid_when_the_sid_was_never_stored(db: PgPool) {
    let router = webhooks_router(db.clone());
    let campaign = fixtures::campaign(&db).await;
    let id = fixtures::message(&db, campaign, "+14155552671", "sending", None).await;
    callback(&router, Some(id), "SMlost", "sent", &[]).await;
    let m = status_of(&db, id).await;
    assert_eq!(m.status, "sent");
    assert_eq!(m.twilio_sid.as_deref(), Some("SMlost"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn failures_keep_their_code_and_are_terminal(db: PgPool) {
    let router = webhooks_router(db.clone());
    let campaign = fixtures::campaign(&db).await;
    for (i, end) in ["failed", "undelivered"].into_iter().enumerate() {
        let sid = format!("SMfail{i}");
        let id = fixtures::message(
            &db,
            campaign,
            &format!("+1415555000{i}"),
            "sending",
            Some(&sid),
        )
        .await;
        callback(&router, Some(id), &sid, "sent", &[]).await;
        callback(
            &router,
            Some(id),
            &sid,
            end,
            &[("ErrorCode", "30008"), ("ErrorMessage", "Unknown error")],
        )
        .await;
        for later in ["delivered", "read", "sent"] {
            callback(&router, Some(id), &sid, later, &[]).await;
        }
        let m = status_of(&db, id).await;
        assert_eq!(m.status, end);
        assert_eq!(m.error_code, Some(30008));
        assert_eq!(m.error_message.as_deref(), Some("Unknown error"));
        assert!(m.failed_at.is_some() && m.delivered_at.is_none());
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn error_21610_opts_the_recipient_out(db: PgPool) {
    let router = webhooks_router(db.clone());
    sqlx::query("insert into users (phone_number, consent) values ('+14155552671', 'opted_in')")
        .execute(&db)
        .await
        .unwrap();
    let campaign = fixtures::campaign(&db).await;
    let id = fixtures::message(&db, campaign, "+14155552671", "sending", Some("SMstop")).await;
    callback(
        &router,
        Some(id),
        "SMstop",
        "failed",
        &[("ErrorCode", "21610")],
    )
    .await;
    let user = users::get(&db, "+14155552671").await.unwrap().unwrap();
    assert_eq!(user.consent, "opted_out");
    assert_eq!(
        user.consent_source.map(ConsentSource::as_str),
        Some("twilio")
    );
    let event: (String, String, Option<i64>) =
        sqlx::query_as("select from_consent, source, webhook_event_id from consent_events")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((event.0.as_str(), event.1.as_str()), ("opted_in", "twilio"));
    assert!(event.2.is_some(), "the consent event names the webhook");
    assert_eq!(status_of(&db, id).await.error_code, Some(21610));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_unknown_message_is_stored_raw_and_answered_200(db: PgPool) {
    let router = webhooks_router(db.clone());
    callback(&router, None, "SMnobody", "delivered", &[]).await;
    callback(&router, Some(Uuid::new_v4()), "SMnobody2", "delivered", &[]).await;
    assert_eq!(
        count(
            &db,
            "select count(*) from webhook_events where kind = 'status'"
        )
        .await,
        2
    );
    assert_eq!(count(&db, "select count(*) from messages").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_duplicate_callback_changes_nothing(db: PgPool) {
    let router = webhooks_router(db.clone());
    let campaign = fixtures::campaign(&db).await;
    let id = fixtures::message(&db, campaign, "+14155552671", "sending", Some("SMdup")).await;
    callback(&router, Some(id), "SMdup", "delivered", &[]).await;
    let before = status_of(&db, id).await.delivered_at;
    callback(&router, Some(id), "SMdup", "delivered", &[]).await;
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 1);
    assert_eq!(status_of(&db, id).await.delivered_at, before);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_unknown_status_is_kept_raw_and_changes_nothing(db: PgPool) {
    let router = webhooks_router(db.clone());
    let campaign = fixtures::campaign(&db).await;
    let id = fixtures::message(&db, campaign, "+14155552671", "sent", Some("SMnew")).await;
    callback(&router, Some(id), "SMnew", "teleported", &[]).await;
    assert_eq!(status_of(&db, id).await.status, "sent");
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_malformed_field_is_kept_raw_and_flagged_never_refused(db: PgPool) {
    let router = webhooks_router(db.clone());
    let params = status_params("SMbad", "sent", TO);
    let (code, _) = post_signed(&router, "/webhooks/status?mid=not-a-uuid", &params).await;
    assert_eq!(code, StatusCode::OK);
    let mut with_code = status_params("SMbad", "failed", TO);
    with_code.push(("ErrorCode", "abc"));
    let (code, _) = post_signed(&router, "/webhooks/status", &with_code).await;
    assert_eq!(code, StatusCode::OK);
    let mut no_status = status_params("SMbad", "delivered", TO);
    no_status.retain(|(k, _)| !k.ends_with("Status"));
    let (code, _) = post_signed(&router, "/webhooks/status", &no_status).await;
    assert_eq!(code, StatusCode::OK);
    let flags: Vec<String> =
        sqlx::query_scalar("select parse_error from webhook_events order by id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(flags.len(), 3);
    assert!(flags[0].contains("mid"), "{flags:?}");
    assert!(flags[1].contains("ErrorCode"), "{flags:?}");
    assert!(flags[2].contains("MessageStatus"), "{flags:?}");
}
