//! `/v1/segments`: CRUD, validation by JSON path, preview with masked numbers.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::api_support::{api, draft_campaign};
use crate::support::MIGRATOR;

#[sqlx::test(migrator = "MIGRATOR")]
async fn create_read_update_delete(db: PgPool) {
    let api = api(db);
    let gold = json!({"attribute": "plan", "eq": "gold"});
    let created = api
        .post(
            "/v1/segments",
            json!({"name": "Gold", "description": "paying", "definition": gold}),
        )
        .await
        .expect(StatusCode::CREATED);
    let path = format!("/v1/segments/{}", created["id"].as_str().unwrap());
    assert_eq!(
        api.get(&path).await.expect(StatusCode::OK)["definition"],
        gold
    );

    let patched = api
        .patch(&path, json!({"name": "Gold plan", "description": null}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (patched["name"].as_str(), &patched["description"]),
        (Some("Gold plan"), &json!(null))
    );
    assert_eq!(patched["definition"], gold);

    let reply = api
        .post(
            "/v1/segments",
            json!({"name": "Gold plan", "definition": gold}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::CONFLICT, Some("name"))
    );
    api.post("/v1/segments", json!({"name": "Other", "definition": gold}))
        .await
        .expect(StatusCode::CREATED);
    let reply = api.patch(&path, json!({"name": "Other"})).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::CONFLICT, Some("name"))
    );

    let list = api.get("/v1/segments?limit=1").await.expect(StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["name"], "Other", "newest first");
    let all = api.collect_pages("/v1/segments?limit=1", "name").await;
    assert_eq!(all, ["Other", "Gold plan"]);

    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.delete(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.patch(&path, json!({"name": "x"})).await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn definitions_and_names_are_validated(db: PgPool) {
    let api = api(db);
    let reply = api
        .post(
            "/v1/segments",
            json!({"name": "Bad", "definition": {"all": [{"attribute": "age", "gte": null}]}}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("definition"))
    );
    assert!(
        reply.message().starts_with("$.all[0]"),
        "{}",
        reply.message()
    );
    let reply = api
        .post(
            "/v1/segments",
            json!({"name": "  ", "definition": {"all": []}}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    let reply = api
        .post("/v1/segments", json!({"name": "No definition"}))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("definition"))
    );
    let reply = api
        .post(
            "/v1/segments",
            json!({"name": "x", "definition": {"all": []}, "owner": "me"}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("owner"))
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_segment_in_use_cannot_be_deleted(db: PgPool) {
    let api = api(db);
    let campaign = draft_campaign(&api, "In use").await;
    let c = api
        .get(&format!("/v1/campaigns/{campaign}"))
        .await
        .expect(StatusCode::OK);
    let reply = api
        .delete(&format!(
            "/v1/segments/{}",
            c["segment_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.message().contains("used by campaigns"),
        "{}",
        reply.message()
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn preview_counts_and_masks(db: PgPool) {
    let api = api(db.clone());
    sqlx::query(
        "insert into users (phone_number, attributes, consent)
         select '+1415555' || lpad(i::text, 4, '0'), jsonb_build_object('n', i), 'opted_in'
         from generate_series(1, 30) i",
    )
    .execute(&db)
    .await
    .unwrap();
    let preview = api
        .post(
            "/v1/segments/preview",
            json!({"definition": {"attribute": "n", "gt": 5}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(preview["count"], 25);
    let sample = preview["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 20);
    assert_eq!(sample[0]["phone_number"], "+1415*****06");
    assert_eq!(sample[0]["attributes"]["n"], 6);

    let none = api
        .post("/v1/segments/preview", json!({"definition": {"any": []}}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            none["count"].as_i64(),
            none["sample"].as_array().unwrap().len()
        ),
        (Some(0), 0)
    );
    let reply = api
        .post("/v1/segments/preview", json!({"definition": {"nand": []}}))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("definition"))
    );
}
