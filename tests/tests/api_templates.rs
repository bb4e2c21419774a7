//! `/v1/templates`: CRUD, validation, rendering for a user or for attributes.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::api_support::{api, draft_campaign};
use crate::support::MIGRATOR;

const CONTENT_SID: &str = "HX0123456789abcdef0123456789abcdef";

#[sqlx::test(migrator = "MIGRATOR")]
async fn create_read_update_delete(db: PgPool) {
    let api = api(db);
    let created = api
        .post(
            "/v1/templates",
            json!({"name": "Welcome", "body": "Hi {first_name}!"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["locale"], "en");
    let path = format!("/v1/templates/{}", created["id"].as_str().unwrap());
    assert_eq!(
        api.get(&path).await.expect(StatusCode::OK)["body"],
        "Hi {first_name}!"
    );

    let patched = api
        .patch(&path, json!({"content_sid": CONTENT_SID, "content_variables": {"1": "{{ first_name }}"}, "locale": "pt_BR"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (patched["content_sid"].as_str(), patched["locale"].as_str()),
        (Some(CONTENT_SID), Some("pt_BR"))
    );
    assert_eq!(patched["body"], "Hi {first_name}!");
    // Clearing the body leaves the content template.
    let patched = api
        .patch(&path, json!({"body": null}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["body"], json!(null));
    // Clearing both is refused.
    let reply = api
        .patch(
            &path,
            json!({"content_sid": null, "content_variables": null}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("body"))
    );

    let reply = api
        .post("/v1/templates", json!({"name": "Welcome", "body": "again"}))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::CONFLICT, Some("name"))
    );

    let names = api.collect_pages("/v1/templates?limit=1", "name").await;
    assert_eq!(names, ["Welcome"]);
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn templates_are_validated(db: PgPool) {
    let api = api(db);
    for (body, field) in [
        (json!({"name": "Empty"}), "body"),
        (
            json!({"name": "Broken", "body": "Hi {{ first_name"}),
            "body",
        ),
        (json!({"name": "Sid", "content_sid": "HX12"}), "content_sid"),
        (
            json!({"name": "Vars", "content_sid": CONTENT_SID, "content_variables": {"1": 5}}),
            "content_variables",
        ),
        (
            json!({"name": "Vars", "body": "x", "content_variables": {"1": "a"}}),
            "content_variables",
        ),
        (
            json!({"name": "Locale", "body": "x", "locale": "en US!"}),
            "locale",
        ),
        (
            json!({"name": "Extra", "body": "x", "language": "en"}),
            "language",
        ),
    ] {
        let reply = api.post("/v1/templates", body.clone()).await;
        assert_eq!(
            (reply.status, reply.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {:#}",
            reply.body
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_template_in_use_cannot_be_deleted(db: PgPool) {
    let api = api(db);
    let campaign = draft_campaign(&api, "In use").await;
    let c = api
        .get(&format!("/v1/campaigns/{campaign}"))
        .await
        .expect(StatusCode::OK);
    let reply = api
        .delete(&format!(
            "/v1/templates/{}",
            c["template_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_template_is_frozen_while_its_campaign_runs(db: PgPool) {
    let api = api(db);
    let campaign = draft_campaign(&api, "Frozen").await;
    let c = api
        .get(&format!("/v1/campaigns/{campaign}"))
        .await
        .expect(StatusCode::OK);
    let template = format!("/v1/templates/{}", c["template_id"].as_str().unwrap());
    // A draft's template may still change.
    api.patch(&template, json!({"body": "Hello {first_name}"}))
        .await
        .expect(StatusCode::OK);
    api.post_empty(&format!("/v1/campaigns/{campaign}/launch"))
        .await
        .expect(StatusCode::OK);
    let reply = api.patch(&template, json!({"body": "Changed"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    assert!(reply.message().contains("frozen"), "{}", reply.message());
    assert_eq!(
        api.get(&template).await.expect(StatusCode::OK)["body"],
        "Hello {first_name}"
    );
    // Once the campaign has ended, the template may change again.
    api.post_empty(&format!("/v1/campaigns/{campaign}/cancel"))
        .await
        .expect(StatusCode::OK);
    api.patch(&template, json!({"body": "Changed"}))
        .await
        .expect(StatusCode::OK);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn renders_for_a_user_or_for_attributes(db: PgPool) {
    let api = api(db);
    let t = api
        .post(
            "/v1/templates",
            json!({
                "name": "Promo",
                "body": "Hi {first_name}, your plan is {{ plan.tier }}",
                "content_sid": CONTENT_SID,
                "content_variables": {"1": "{{ first_name }}"},
            }),
        )
        .await
        .expect(StatusCode::CREATED);
    let render = format!("/v1/templates/{}/render", t["id"].as_str().unwrap());

    api.post("/v1/users", json!({"phone_number": "+14155552671", "attributes": {"first_name": "Ada", "plan": {"tier": "gold"}}}))
        .await
        .expect(StatusCode::CREATED);
    let out = api
        .post(&render, json!({"phone_number": "+14155552671"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(out["rendered"]["body"], "Hi Ada, your plan is gold");
    assert_eq!(out["rendered"]["content_sid"], CONTENT_SID);
    let vars: serde_json::Value =
        serde_json::from_str(out["rendered"]["content_variables"].as_str().unwrap()).unwrap();
    assert_eq!(vars, json!({"1": "Ada"}));
    assert_eq!(out["missing_variables"], json!([]));

    let out = api
        .post(&render, json!({"attributes": {"first_name": "Bo"}}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(out["rendered"], json!(null));
    assert_eq!(out["missing_variables"], json!(["plan.tier"]));

    let reply = api
        .post(&render, json!({"phone_number": "+14155550100"}))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("phone_number"))
    );
    let reply = api.post(&render, json!({})).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("phone_number"))
    );
    let reply = api
        .post(
            "/v1/templates/0193a8a4-0000-7000-8000-000000000000/render",
            json!({"attributes": {}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
