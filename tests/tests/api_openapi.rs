//! The API's edges: API keys, health checks, the OpenAPI document, and
//! what every malformed request gets back.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::api_support::{KEY, api};
use crate::support::MIGRATOR;

/// Every route the document lists, as `(method, path)`: the API function's,
/// and the events function's `POST /v1/events`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/events"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("get", "/v1/users/{phone_number}"),
    ("patch", "/v1/users/{phone_number}"),
    ("delete", "/v1/users/{phone_number}"),
    ("get", "/v1/users/{phone_number}/consent"),
    ("get", "/v1/inbound-messages"),
    ("get", "/v1/segments"),
    ("post", "/v1/segments"),
    ("post", "/v1/segments/preview"),
    ("get", "/v1/segments/{id}"),
    ("patch", "/v1/segments/{id}"),
    ("delete", "/v1/segments/{id}"),
    ("get", "/v1/templates"),
    ("post", "/v1/templates"),
    ("get", "/v1/templates/{id}"),
    ("patch", "/v1/templates/{id}"),
    ("delete", "/v1/templates/{id}"),
    ("post", "/v1/templates/{id}/render"),
    ("get", "/v1/campaigns"),
    ("post", "/v1/campaigns"),
    ("get", "/v1/campaigns/{id}"),
    ("patch", "/v1/campaigns/{id}"),
    ("post", "/v1/campaigns/{id}/launch"),
    ("post", "/v1/campaigns/{id}/pause"),
    ("post", "/v1/campaigns/{id}/resume"),
    ("post", "/v1/campaigns/{id}/cancel"),
    ("get", "/v1/campaigns/{id}/stats"),
    ("get", "/v1/messages"),
    ("get", "/v1/messages/{id}"),
    ("get", "/v1/imports"),
    ("get", "/v1/imports/{id}"),
];

fn request(method: &str, path: &str, key: Option<&str>) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap())
        .uri(
            path.replace("{id}", "0193a8a4-0000-7000-8000-000000000000")
                .replace("{phone_number}", "%2B14155552671"),
        )
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    req.body(Body::from("{}")).unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_document_is_open_api_3_1_and_lists_every_route(db: PgPool) {
    let db_for_events = db.clone();
    let api = api(db);
    let unauthenticated = Request::get(api::OPENAPI_PATH).body(Body::empty()).unwrap();
    let doc = api.raw(unauthenticated).await.expect(StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );

    let mut documented = vec![];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is not in the document"
        );
    }
    assert_eq!(documented.len(), ROUTES.len(), "{documented:?}");

    // And every documented operation is served (by the API, or by the events
    // function, as the local stack mounts them together): with a key it
    // reaches a handler (not the 404 fallback, not 405), without one it is refused.
    let events = crate::events::service(db_for_events);
    for (method, path) in &documented {
        let api = if path == "/v1/events" { &events } else { &api };
        let reply = api.raw(request(method, path, Some(KEY))).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_ne!(reply.message(), "no such route", "{method} {path}");
        let reply = api.raw(request(method, path, None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

/// What the annotations alone did not say: 413/415 on bodies, 400 where
/// parameters parse, the cursor's shape, unique operation ids, and links from
/// what returns an id to what takes it.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_document_says_every_status_and_links_ids_to_their_operations(db: PgPool) {
    let api = api(db);
    let doc = api
        .raw(Request::get(api::OPENAPI_PATH).body(Body::empty()).unwrap())
        .await
        .expect(StatusCode::OK);
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if op.get("requestBody").is_some() {
                for status in ["413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                assert!(responses.contains_key("400"), "{method} {path}: 400");
            }
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "{id} twice");
        }
    }
    let list = &doc["paths"]["/v1/segments"]["get"];
    let cursor = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cursor")
        .unwrap();
    assert_eq!(cursor["schema"]["pattern"], "^[A-Za-z0-9_-]+$");
    let links = &list["responses"]["200"]["links"];
    assert_eq!(
        links["NextPage"]["parameters"]["cursor"],
        "$response.body#/next_cursor"
    );
    assert_eq!(
        links["get_v1_segments_id"]["parameters"]["id"],
        "$response.body#/data/0/id"
    );
    let created = &doc["paths"]["/v1/campaigns"]["post"]["responses"]["201"]["links"];
    for op in [
        "get_v1_campaigns_id",
        "post_v1_campaigns_id_launch",
        "get_v1_campaigns_id_stats",
    ] {
        assert_eq!(
            created[op]["parameters"]["id"], "$response.body#/id",
            "{op}"
        );
        assert_eq!(created[op]["operationId"], op);
    }
    let user = &doc["paths"]["/v1/users"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        user["delete_v1_users_phone_number"]["parameters"]["phone_number"],
        "$response.body#/phone_number"
    );
    // A link names an operation that exists.
    for (_, item) in doc["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            for (_, response) in op["responses"].as_object().unwrap() {
                for (_, link) in response["links"].as_object().into_iter().flatten() {
                    assert!(
                        ids.contains(link["operationId"].as_str().unwrap()),
                        "{link}"
                    );
                }
            }
        }
    }
    let upsert = &doc["components"]["schemas"]["UpsertUser"]["properties"];
    assert_eq!(upsert["topics"]["additionalProperties"]["type"], "boolean");
    let zones = upsert["attributes"]["properties"]["timezone"]["enum"]
        .as_array()
        .unwrap();
    assert!(zones.contains(&json!("Europe/Paris")) && zones.contains(&Value::Null));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn keys_are_checked_and_health_checks_are_open(db: PgPool) {
    let api = api(db);
    let with = |auth: Option<&str>| {
        let mut req = Request::get("/v1/users");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(Body::empty()).unwrap()
    };
    for bad in [
        None,
        Some("Bearer wrong-key"),
        Some(KEY),
        Some("Basic dGVzdA=="),
        Some("Bearer "),
    ] {
        let reply = api.raw(with(bad)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(reply.body["error"]["code"], "unauthorized");
    }
    let reply = api.raw(with(Some(&format!("Bearer {KEY}")))).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The second configured key works too (rotation).
    let reply = api.raw(with(Some("Bearer retired-key"))).await;
    assert_eq!(reply.status, StatusCode::OK);

    for open in ["/healthz", "/readyz"] {
        let reply = api
            .raw(Request::get(open).body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{open}");
    }
    let reply = api.get("/v1/nothing-here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["error"]["code"], "not_found");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn malformed_requests_get_4xx_naming_the_field(db: PgPool) {
    let api = api(db);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"phone_number": "+14155552671", "nickname": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "nickname",
        ),
        (
            json!({"attributes": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "phone_number",
        ),
        (
            json!({"phone_number": 14155552671_i64}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "phone_number",
        ),
        (
            json!({"phone_number": "+1555"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "phone_number",
        ),
        (
            json!({"phone_number": "+14155552671", "attributes": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "attributes",
        ),
        (
            json!({"phone_number": "+14155552671", "consent": "maybe"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "consent",
        ),
        (
            json!({"phone_number": "+14155552671", "attributes": {"timezone": "Mars/Olympus"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "attributes.timezone",
        ),
    ];
    for (body, status, field) in cases {
        let reply = api.post("/v1/users", body.clone()).await;
        assert_eq!(
            (reply.status, reply.field()),
            (status, Some(field)),
            "{body}: {:#}",
            reply.body
        );
    }

    let raw = |body: &str, content_type: &str| {
        Request::post("/v1/users")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let reply = api
        .raw(raw("{\"phone_number\": ", "application/json"))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::BAD_REQUEST, Some("body"))
    );
    let reply = api
        .raw(raw("phone_number=x", "application/x-www-form-urlencoded"))
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(
        "{{\"phone_number\": \"+14155552671\", \"attributes\": {{\"blob\": \"{}\"}}}}",
        "x".repeat(1024 * 1024)
    );
    let reply = api.raw(raw(&huge, "application/json")).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    // A value Postgres cannot store is the caller's problem, not a 500.
    let reply = api
        .post(
            "/v1/segments",
            json!({"name": "nul\u{0}name", "definition": {"all": []}}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:#}",
        reply.body
    );

    for (path, field) in [
        ("/v1/users?limit=0", "limit"),
        ("/v1/users?limit=501", "limit"),
        ("/v1/users?limit=ten", "limit"),
        ("/v1/users?cursor=garbage", "cursor"),
        ("/v1/users?consent=perhaps", "consent"),
        ("/v1/messages?status=lost", "status"),
        ("/v1/messages?campaign_id=nope", "campaign_id"),
        ("/v1/campaigns?state=done", "state"),
        ("/v1/campaigns/not-a-uuid", "id"),
    ] {
        let reply = api.get(path).await;
        assert_eq!(
            (reply.status, reply.field()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{path}: {:#}",
            reply.body
        );
    }
    let reply = api
        .get("/v1/campaigns/0193a8a4-0000-7000-8000-000000000000")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
