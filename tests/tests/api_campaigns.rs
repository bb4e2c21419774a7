//! `/v1/campaigns`: drafts, the state machine over HTTP, stats.

use axum::http::StatusCode;
use e2e::fixtures;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api_support::{api, draft_campaign};
use crate::support::MIGRATOR;

#[sqlx::test(migrator = "MIGRATOR")]
async fn drafts_are_created_and_edited(db: PgPool) {
    let api = api(db);
    let id = draft_campaign(&api, "Spring").await;
    let path = format!("/v1/campaigns/{id}");
    let c = api.get(&path).await.expect(StatusCode::OK);
    assert_eq!(
        (
            c["state"].as_str(),
            c["rate_per_second"].as_i64(),
            c["default_timezone"].as_str(),
            c["max_attempts"].as_i64()
        ),
        (Some("draft"), Some(10), Some("UTC"), Some(5))
    );
    assert_eq!(c["starts_at"], json!(null));

    let edited = api
        .patch(
            &path,
            json!({
                "quiet_hours_start": "22:00", "quiet_hours_end": "08:30",
                "default_timezone": "Europe/Paris", "frequency_cap": 2,
                "starts_at": "2030-01-01T09:00:00Z", "rate_per_second": 50,
            }),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            edited["quiet_hours_start"].as_str(),
            edited["quiet_hours_end"].as_str()
        ),
        (Some("22:00"), Some("08:30"))
    );
    assert_eq!(edited["starts_at"], "2030-01-01T09:00:00Z");
    assert_eq!(edited["frequency_cap"], 2);
    let cleared = api
        .patch(
            &path,
            json!({"quiet_hours_start": null, "quiet_hours_end": null, "frequency_cap": null}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (&cleared["quiet_hours_start"], &cleared["frequency_cap"]),
        (&json!(null), &json!(null))
    );

    for (patch, field) in [
        (json!({"quiet_hours_start": "22:00"}), "quiet_hours_end"),
        (
            json!({"quiet_hours_start": "25:00", "quiet_hours_end": "08:00"}),
            "quiet_hours_start",
        ),
        (
            json!({"quiet_hours_start": "08:00", "quiet_hours_end": "08:00"}),
            "quiet_hours_end",
        ),
        (
            json!({"quiet_hours_start": "22:00", "quiet_hours_end": "8:00"}),
            "quiet_hours_end",
        ),
        (
            json!({"default_timezone": "Mars/Olympus"}),
            "default_timezone",
        ),
        (json!({"rate_per_second": 0}), "rate_per_second"),
        (json!({"max_attempts": 100}), "max_attempts"),
        (json!({"frequency_cap": 0}), "frequency_cap"),
        (json!({"segment_id": Uuid::new_v4()}), "segment_id"),
        (json!({"template_id": Uuid::new_v4()}), "template_id"),
        (json!({"state": "running"}), "state"),
        (json!({"starts_at": "tomorrow"}), "starts_at"),
    ] {
        let reply = api.patch(&path, patch.clone()).await;
        assert_eq!(
            (reply.status, reply.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{patch}: {:#}",
            reply.body
        );
    }
    let reply = api
        .post("/v1/campaigns", json!({"name": "Orphan", "segment_id": Uuid::new_v4(), "template_id": c["template_id"]}))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("segment_id"))
    );

    draft_campaign(&api, "Summer").await;
    let names = api.collect_pages("/v1/campaigns?limit=1", "name").await;
    assert_eq!(names, ["Summer", "Spring"]);
    let drafts = api
        .get("/v1/campaigns?state=draft")
        .await
        .expect(StatusCode::OK);
    assert_eq!(drafts["data"].as_array().unwrap().len(), 2);
    let running = api
        .get("/v1/campaigns?state=running")
        .await
        .expect(StatusCode::OK);
    assert_eq!(running["data"], json!([]));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_state_machine_holds_over_http(db: PgPool) {
    let api = api(db.clone());
    let id = draft_campaign(&api, "Launch me").await;
    let path = format!("/v1/campaigns/{id}");
    let act = |action: &str| format!("{path}/{action}");

    let reply = api.post_empty(&act("pause")).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::CONFLICT, Some("state"))
    );
    assert_eq!(reply.message(), "cannot pause a campaign that is draft");

    let launched = api.post_empty(&act("launch")).await.expect(StatusCode::OK);
    assert_eq!(launched["state"], "scheduled");
    assert!(
        launched["starts_at"].is_string(),
        "launch sets starts_at to now"
    );
    let reply = api.post_empty(&act("launch")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(reply.message().contains("scheduled"), "{}", reply.message());
    let reply = api.patch(&path, json!({"name": "Too late"})).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::CONFLICT, Some("state"))
    );
    assert!(reply.message().contains("scheduled"), "{}", reply.message());

    assert_eq!(
        api.post_empty(&act("pause")).await.expect(StatusCode::OK)["state"],
        "paused"
    );
    assert!(
        api.post_empty(&act("pause"))
            .await
            .message()
            .contains("paused")
    );
    assert_eq!(
        api.post_empty(&act("resume")).await.expect(StatusCode::OK)["state"],
        "scheduled"
    );

    // The fan-out starts it; an operator can still pause a running campaign.
    sqlx::query("update campaigns set state = 'running' where id = $1::uuid")
        .bind(&id)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        api.post_empty(&act("pause")).await.expect(StatusCode::OK)["state"],
        "paused"
    );
    assert_eq!(
        api.post_empty(&act("cancel")).await.expect(StatusCode::OK)["state"],
        "cancelled"
    );
    for action in ["launch", "pause", "resume", "cancel"] {
        let reply = api.post_empty(&act(action)).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{action}");
        assert_eq!(
            reply.message(),
            format!("cannot {action} a campaign that is cancelled")
        );
    }
    let reply = api
        .post_empty(&format!("/v1/campaigns/{}/launch", Uuid::new_v4()))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_launches_launch_once(db: PgPool) {
    let api = api(db);
    let id = draft_campaign(&api, "Race").await;
    let path = format!("/v1/campaigns/{id}/launch");
    let (a, b) = tokio::join!(api.post_empty(&path), api.post_empty(&path));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stats_count_statuses_decisions_and_errors(db: PgPool) {
    let api = api(db.clone());
    let campaign = fixtures::campaign(&db).await;
    let empty = api
        .get(&format!("/v1/campaigns/{campaign}/stats"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (empty["messages"].as_i64(), &empty["delivery_rate"]),
        (Some(0), &json!(null))
    );

    for (i, status) in [
        "pending",
        "skipped",
        "sent",
        "delivered",
        "delivered",
        "read",
        "failed",
        "undelivered",
    ]
    .iter()
    .enumerate()
    {
        let sid = (i >= 2).then(|| format!("SM{i}"));
        let id = fixtures::message(
            &db,
            campaign,
            &format!("+1415555{:04}", i),
            status,
            sid.as_deref(),
        )
        .await;
        sqlx::query(
            "update messages set
                 delivered_at = case when status in ('delivered', 'read') then now() end,
                 read_at = case when status = 'read' then now() end,
                 error_code = case status when 'failed' then 63016 when 'undelivered' then 30008 end
             where id = $1",
        )
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
        let decision = match *status {
            "pending" => "deferred_quiet_hours",
            "skipped" => "skipped_no_consent",
            _ => "sent",
        };
        sqlx::query("insert into decisions (message_id, campaign_id, phone_number, decision) values ($1, $2, 'x', $3)")
            .bind(id)
            .bind(campaign)
            .bind(decision)
            .execute(&db)
            .await
            .unwrap();
    }
    // Another campaign's messages do not count.
    let other = fixtures::campaign(&db).await;
    fixtures::message(&db, other, "+14155559999", "delivered", Some("SMother")).await;

    let stats = api
        .get(&format!("/v1/campaigns/{campaign}/stats"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(stats["messages"], 8);
    assert_eq!(
        stats["by_status"],
        json!({"pending": 1, "skipped": 1, "sent": 1, "delivered": 2, "read": 1, "failed": 1, "undelivered": 1})
    );
    assert_eq!(
        stats["by_decision"],
        json!({"deferred_quiet_hours": 1, "skipped_no_consent": 1, "sent": 6})
    );
    assert_eq!(stats["by_error_code"], json!({"63016": 1, "30008": 1}));
    assert_eq!(
        (
            stats["accepted_by_twilio"].as_i64(),
            stats["delivered"].as_i64(),
            stats["read"].as_i64()
        ),
        (Some(6), Some(3), Some(1))
    );
    assert_eq!(stats["delivery_rate"], 0.5);
    assert!((stats["read_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);

    let reply = api
        .get(&format!("/v1/campaigns/{}/stats", Uuid::new_v4()))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
