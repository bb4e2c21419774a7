//! `/v1/messages` and `/v1/imports`: filters, the status timeline, decisions,
//! rejects, and pages that hold still while rows arrive.

use axum::http::StatusCode;
use e2e::{fixtures, status_params, webhooks_router};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api_support::api;
use crate::support::{MIGRATOR, post_signed};

#[sqlx::test(migrator = "MIGRATOR")]
async fn messages_filter_and_show_their_timeline(db: PgPool) {
    let api = api(db.clone());
    let webhooks = webhooks_router(db.clone());
    let spring = fixtures::campaign(&db).await;
    let summer = fixtures::campaign(&db).await;
    let ada = fixtures::message(&db, spring, "+14155552671", "sending", Some("SMada")).await;
    fixtures::message(&db, spring, "+14155550002", "pending", None).await;
    fixtures::message(&db, summer, "+14155552671", "pending", None).await;
    for status in ["sent", "delivered", "read", "sent"] {
        let (code, _) = post_signed(
            &webhooks,
            "/webhooks/status",
            &status_params("SMada", status, "whatsapp:+14155552671"),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
    }
    for decision in ["queued", "sent"] {
        sqlx::query("insert into decisions (message_id, campaign_id, phone_number, decision, reason) values ($1, $2, '+14155552671', $3, '{\"why\": 1}')")
            .bind(ada)
            .bind(spring)
            .bind(decision)
            .execute(&db)
            .await
            .unwrap();
    }

    let ids = |path: String| {
        let api = &api;
        async move {
            let page = api.get(&path).await.expect(StatusCode::OK);
            page["data"].as_array().unwrap().len()
        }
    };
    assert_eq!(ids("/v1/messages".into()).await, 3);
    assert_eq!(ids(format!("/v1/messages?campaign_id={spring}")).await, 2);
    assert_eq!(
        ids("/v1/messages?phone_number=%2B14155552671".into()).await,
        2
    );
    assert_eq!(
        ids(format!("/v1/messages?campaign_id={spring}&status=pending")).await,
        1
    );
    assert_eq!(ids("/v1/messages?status=read".into()).await, 1);
    let reply = api.get("/v1/messages?phone_number=12").await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("phone_number"))
    );

    let detail = api
        .get(&format!("/v1/messages/{ada}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(detail["message"]["status"], "read");
    let timeline: Vec<&str> = detail["status_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    // Every callback, the late `sent` too, in the order received (the
    // duplicate `sent` is deduplicated by Twilio's MessageSid:MessageStatus key).
    assert_eq!(timeline, ["sent", "delivered", "read"]);
    let decisions: Vec<&str> = detail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["queued", "sent"]);
    assert_eq!(detail["decisions"][0]["reason"], json!({"why": 1}));

    let reply = api.get(&format!("/v1/messages/{}", Uuid::new_v4())).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn message_pages_are_stable_while_messages_are_inserted(db: PgPool) {
    let api = api(db.clone());
    let campaign = fixtures::campaign(&db).await;
    fixtures::sending_messages(&db, campaign, "SMa", 40)
        .await
        .unwrap();
    let before: Vec<String> = sqlx::query_scalar("select id::text from messages")
        .fetch_all(&db)
        .await
        .unwrap();

    let first = format!("/v1/messages?campaign_id={campaign}&limit=9");
    let mut path = first.clone();
    let mut seen: Vec<String> = vec![];
    let mut batch = 0;
    loop {
        let page = api.get(&path).await.expect(StatusCode::OK);
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        // The fan-out materializes more recipients between two pages.
        batch += 1;
        sqlx::query(
            "insert into messages (campaign_id, phone_number, status, status_rank)
             select $1, '+1415666' || lpad((i + $2 * 10)::text, 4, '0'), 'pending', 0 from generate_series(0, 4) i",
        )
        .bind(campaign)
        .bind(batch)
        .execute(&db)
        .await
        .unwrap();
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("{first}&cursor={c}"),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a message was listed twice");
    for id in &before {
        assert!(seen.contains(id), "{id} was skipped");
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn imports_show_counts_and_the_first_rejects(db: PgPool) {
    let api = api(db.clone());
    let import: Uuid = sqlx::query_scalar(
        "insert into imports (bucket, object, generation, state, rows_read, inserted, updated, duplicates, rejected, finished_at)
         values ('inbox', 'users.csv', 1, 'completed', 1000, 700, 140, 10, 150, now()) returning id",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    sqlx::query(
        "insert into import_rejects (import_id, line_number, raw_line, reason)
         select $1, i, 'bad,' || i, 'invalid phone number' from generate_series(150, 1, -1) i",
    )
    .bind(import)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "insert into imports (bucket, object, generation) values ('inbox', 'later.csv', 2)",
    )
    .execute(&db)
    .await
    .unwrap();

    let objects = api.collect_pages("/v1/imports?limit=1", "object").await;
    assert_eq!(objects.len(), 2);
    let detail = api
        .get(&format!("/v1/imports/{import}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            detail["import"]["state"].as_str(),
            detail["import"]["inserted"].as_i64(),
            detail["import"]["rejected"].as_i64()
        ),
        (Some("completed"), Some(700), Some(150))
    );
    let rejects = detail["rejects"].as_array().unwrap();
    assert_eq!(rejects.len(), 100);
    assert_eq!(
        (
            rejects[0]["line_number"].as_i64(),
            rejects[99]["line_number"].as_i64()
        ),
        (Some(1), Some(100))
    );
    assert_eq!(rejects[0]["reason"], "invalid phone number");

    let reply = api.get(&format!("/v1/imports/{}", Uuid::new_v4())).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
