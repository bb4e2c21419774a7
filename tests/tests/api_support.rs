//! Calling the API router as a client would: JSON in, status and JSON out.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use shared::config::Env;
use shared::http::auth::ApiKeys;
use sqlx::PgPool;

use crate::support::send;

/// The key the tests call with.
pub const KEY: &str = "test-api-key-0123456789";

pub fn config() -> api::Config {
    api::Config::from_env(&Env::from_pairs([
        (
            "DATABASE_URL",
            "postgres://unused@127.0.0.1/unused".to_owned(),
        ),
        (
            "API_KEYS",
            format!("{},{}", ApiKeys::hash("retired-key"), ApiKeys::hash(KEY)),
        ),
        ("DEFAULT_REGION", "US".to_owned()),
    ]))
    .expect("test API config is valid")
}

/// The API as the function serves it: the router plus health checks.
pub struct Api {
    pub router: Router,
}

pub fn api(db: PgPool) -> Api {
    let state = api::AppState::new(db.clone(), &config());
    Api {
        router: shared::http::server::with_standard_routes(api::router(state), db, None),
    }
}

/// A reply: status and body (JSON when it parses, else the text as a string).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The `error.field` of an error reply.
    pub fn field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{:#}", self.body);
        self.body
    }
}

impl Api {
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {KEY}"));
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).unwrap()).await
    }

    pub async fn raw(&self, request: Request<Body>) -> Reply {
        let (status, text) = send(&self.router, request).await;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(&body)).await
    }

    pub async fn post_empty(&self, path: &str) -> Reply {
        self.call(Method::POST, path, None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Follows `next_cursor` from `first` to the end, collecting `key` of each row.
    pub async fn collect_pages(&self, first: &str, key: &str) -> Vec<String> {
        let mut out = vec![];
        let sep = if first.contains('?') { '&' } else { '?' };
        let mut path = first.to_owned();
        loop {
            let page = self.get(&path).await.expect(StatusCode::OK);
            for row in page["data"].as_array().expect("data is a list") {
                out.push(row[key].as_str().expect("key is a string").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("{first}{sep}cursor={c}"),
                None => return out,
            }
        }
    }
}

/// A segment, a template and a draft campaign over them; returns the campaign's id.
pub async fn draft_campaign(api: &Api, name: &str) -> String {
    let segment = api
        .post(
            "/v1/segments",
            serde_json::json!({"name": format!("{name} segment"), "definition": {"all": []}}),
        )
        .await
        .expect(StatusCode::CREATED);
    let template = api
        .post(
            "/v1/templates",
            serde_json::json!({"name": format!("{name} template"), "body": "Hi {first_name}"}),
        )
        .await
        .expect(StatusCode::CREATED);
    let campaign = api
        .post(
            "/v1/campaigns",
            serde_json::json!({
                "name": name,
                "segment_id": segment["id"],
                "template_id": template["id"],
            }),
        )
        .await
        .expect(StatusCode::CREATED);
    campaign["id"].as_str().unwrap().to_owned()
}
