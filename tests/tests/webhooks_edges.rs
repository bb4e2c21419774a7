//! The edges every webhook shares: signatures, rotation, limits, a database away.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use e2e::{AUTH_TOKEN, PUBLIC_BASE_URL, sign_form, status_params, webhook_config};
use shared::twilio::compute_signature;
use shared::twilio::signature::body_sha256;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::{MIGRATOR, count, form_request, send};

const PATH: &str = "/webhooks/status";

fn status_router(db: PgPool, tokens: &str) -> Router {
    status::router(status::AppState::new(db, &webhook_config(tokens)))
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn forged_or_missing_signatures_are_403_and_store_nothing(db: PgPool) {
    let router = e2e::webhooks_router(db.clone());
    let params = status_params("SM1", "sent", "whatsapp:+14155552671");
    for path in [PATH, "/webhooks/inbound"] {
        let mut forged = sign_form("some-other-token", path, &params);
        let (code, _) = send(&router, form_request(path, &forged)).await;
        assert_eq!(code, StatusCode::FORBIDDEN);

        // Signed for another host: the Host header must not be trusted.
        forged.signature = compute_signature(
            AUTH_TOKEN,
            &format!("https://attacker.example{path}"),
            &params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        );
        let mut req = form_request(path, &forged);
        req.headers_mut()
            .insert("host", "attacker.example".parse().unwrap());
        let (code, _) = send(&router, req).await;
        assert_eq!(code, StatusCode::FORBIDDEN);

        let valid = sign_form(AUTH_TOKEN, path, &params);
        let missing = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(valid.body.clone()))
            .unwrap();
        let (code, body) = send(&router, missing).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.contains("X-Twilio-Signature"), "{body}");

        // A valid signature over a body that was changed in transit.
        let tampered = e2e::SignedForm {
            body: valid.body.replace("sent", "read"),
            signature: valid.signature.clone(),
        };
        let (code, _) = send(&router, form_request(path, &tampered)).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    }
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn both_tokens_are_accepted_while_rotating(db: PgPool) {
    let router = status_router(db.clone(), &format!("new-token-abc,{AUTH_TOKEN}"));
    for (i, token) in ["new-token-abc", AUTH_TOKEN].into_iter().enumerate() {
        let sid = format!("SMrot{i}");
        let form = sign_form(
            token,
            PATH,
            &status_params(&sid, "sent", "whatsapp:+14155552671"),
        );
        let (code, body) = send(&router, form_request(PATH, &form)).await;
        assert_eq!(code, StatusCode::OK, "{token}: {body}");
    }
    let retired = sign_form("retired-token", PATH, &status_params("SMrot9", "sent", "x"));
    let (code, _) = send(&router, form_request(PATH, &retired)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_json_webhook_is_validated_with_its_body_hash(db: PgPool) {
    let router = status_router(db.clone(), AUTH_TOKEN);
    let body =
        r#"{"MessageSid":"SMjson","MessageStatus":"delivered","To":"whatsapp:+14155552671"}"#;
    let path = format!("{PATH}?bodySHA256={}", body_sha256(body.as_bytes()));
    let signature = compute_signature(AUTH_TOKEN, &format!("{PUBLIC_BASE_URL}{path}"), &[]);
    let request = |b: &str| {
        Request::post(&path)
            .header("content-type", "application/json")
            .header("x-twilio-signature", &signature)
            .body(Body::from(b.to_owned()))
            .unwrap()
    };
    let (code, text) = send(&router, request(body)).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let (code, _) = send(&router, request(&body.replace("delivered", "read"))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_body_over_64_kib_is_413(db: PgPool) {
    let router = e2e::webhooks_router(db.clone());
    let big = "x".repeat(65 * 1024);
    let mut params = status_params("SMbig", "sent", "whatsapp:+14155552671");
    params.push(("Padding", &big));
    let form = sign_form(AUTH_TOKEN, PATH, &params);
    let (code, _) = send(&router, form_request(PATH, &form)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 0);
}

#[tokio::test]
async fn a_database_away_is_503_never_2xx() {
    let unreachable = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let router = e2e::webhooks_router(unreachable);
    let status_form = sign_form(
        AUTH_TOKEN,
        PATH,
        &status_params("SMdown", "sent", "whatsapp:+14155552671"),
    );
    let (code, body) = send(&router, form_request(PATH, &status_form)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let inbound_params = [
        ("MessageSid", "SMdown"),
        ("From", "+14155552671"),
        ("To", "+14155238886"),
        ("Body", "hi"),
    ];
    let inbound_form = sign_form(AUTH_TOKEN, "/webhooks/inbound", &inbound_params);
    let (code, _) = send(&router, form_request("/webhooks/inbound", &inbound_form)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn health_and_readiness(db: PgPool) {
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let up =
        shared::http::server::with_standard_routes(status_router(db.clone(), AUTH_TOKEN), db, None);
    assert_eq!(send(&up, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(send(&up, get("/readyz")).await.0, StatusCode::OK);

    let away = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(300))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let down = shared::http::server::with_standard_routes(
        status_router(away.clone(), AUTH_TOKEN),
        away,
        None,
    );
    assert_eq!(send(&down, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(
        send(&down, get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_panicking_handler_answers_500_and_the_process_serves_on(db: PgPool) {
    let router = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if true {
                panic!("a bug");
            }
            "unreachable"
        }),
    );
    let app = shared::http::server::with_standard_routes(router, db, None);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let (code, body) = send(&app, get("/boom")).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("\"internal\""), "{body}");
    assert_eq!(send(&app, get("/healthz")).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_pool_has_a_statement_timeout(
    _pool: PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let url = format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    );
    let config = shared::config::DatabaseConfig::from_env(&shared::config::Env::from_pairs([
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "200"),
    ]))
    .unwrap();
    let pool = shared::db::pool(&config).unwrap();
    let err = sqlx::query("select pg_sleep(5)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
    // The default holds every function's pool to 30 s.
    let default = shared::config::DatabaseConfig::from_env(&shared::config::Env::from_pairs([(
        "DATABASE_URL",
        url.as_str(),
    )]))
    .unwrap();
    let shown: String = sqlx::query_scalar("show statement_timeout")
        .fetch_one(&shared::db::pool(&default).unwrap())
        .await
        .unwrap();
    assert_eq!(shown, "30s");
}

#[test]
fn a_start_up_error_is_one_json_line() {
    let e = shared::config::ConfigError::new("REDIS_URL", "is missing");
    let line: serde_json::Value = serde_json::from_str(&e.log_line()).unwrap();
    assert_eq!(line["severity"], "CRITICAL");
    assert_eq!(line["variable"], "REDIS_URL");
    assert!(line["message"].as_str().unwrap().contains("REDIS_URL"));
}
