use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use e2e::{AUTH_TOKEN, SignedForm, sign_form};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use shared::db::MIGRATOR;

/// Sends one request through the router and returns the status and body.
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

pub fn form_request(path: &str, form: &SignedForm) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", &form.signature)
        .body(Body::from(form.body.clone()))
        .unwrap()
}

/// Signs `params` with the test token and posts them to `path`.
pub async fn post_signed(
    router: &Router,
    path: &str,
    params: &[(&str, &str)],
) -> (StatusCode, String) {
    let form = sign_form(AUTH_TOKEN, path, params);
    send(router, form_request(path, &form)).await
}

pub async fn count(db: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .expect("count query")
}

/// The test database's URL, for a process of its own (it connects by URL).
pub fn url_of(db: &sqlx::PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(
        db.connect_options()
            .get_database()
            .expect("a database name"),
    );
    url.to_string()
}
