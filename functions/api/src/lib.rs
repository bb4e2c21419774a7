//! `api`: the `/v1` REST API that operators and other services drive
//! everything through — users, segments, templates, campaigns, messages,
//! imports and campaign stats — with its OpenAPI document at `/v1/openapi.json`.
//!
//! Every `/v1` route needs `Authorization: Bearer <key>` (the key's SHA-256
//! in `API_KEYS`), except the OpenAPI document; health checks are added by
//! `with_standard_routes`, outside the key check. The operator console
//! ([`console`]) is served beside it under `/console`, signed in with the same keys.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::{Router, middleware};
use shared::config::{ConfigError, Env};
use shared::domain::Region;
use shared::gcp::uploads::{UploadTarget, Uploads};
use shared::http::ApiError;
use shared::http::auth::{ApiKeys, KeyedServiceConfig, require_api_key};
use shared::twilio::{TwilioClient, TwilioConfig};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod campaigns;
pub mod console;
pub mod db;
pub mod extract;
pub mod imports;
pub mod inbound;
pub mod messages;
pub mod openapi;
pub mod segments;
pub mod templates;
pub mod users;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "API_KEYS"];

/// Where the OpenAPI document is served (without a key).
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// Its settings: a database, API keys (`API_KEYS`), the region national
/// numbers are read in (`DEFAULT_REGION`), and where the console's uploads
/// go (`IMPORT_BUCKET`, or `IMPORT_INBOX_DIR` locally).
#[derive(Debug, Clone)]
pub struct Config {
    pub service: KeyedServiceConfig,
    pub uploads: UploadTarget,
    /// The console's test sends: the sender's Twilio settings, when
    /// `TWILIO_ACCOUNT_SID` is set (else test sends are off).
    pub twilio: Option<TwilioConfig>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let twilio = match env.raw("TWILIO_ACCOUNT_SID") {
            Some(_) => Some(TwilioConfig::from_env(env)?),
            None => None,
        };
        Ok(Self {
            service: KeyedServiceConfig::from_env(env)?,
            uploads: UploadTarget::from_env(env)?,
            twilio,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub keys: Arc<ApiKeys>,
    /// How national numbers in requests are read.
    pub default_region: Option<Region>,
    /// Where the console's uploaded import files go.
    pub uploads: Arc<Uploads>,
    /// The console's test sends (`None`: off).
    pub twilio: Option<TwilioClient>,
}

impl AppState {
    pub fn new(db: PgPool, config: &Config) -> Self {
        Self {
            db,
            keys: Arc::new(config.service.api_keys.clone()),
            default_region: config.service.default_region,
            uploads: Arc::new(Uploads::new(config.uploads.clone())),
            twilio: config.twilio.clone().and_then(|t| {
                TwilioClient::new(t)
                    .inspect_err(
                        |e| tracing::error!(error = %e, "no Twilio client: test sends are off"),
                    )
                    .ok()
            }),
        }
    }
}

/// The function as its binary serves it (without the health routes, which
/// the server adds): what the local stack composes.
pub fn app(config: &Config, db: PgPool) -> Router {
    router(AppState::new(db, config))
}

/// Every `/v1` operation, with its OpenAPI description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(users::list, users::upsert))
        .routes(routes!(users::get, users::patch, users::delete))
        .routes(routes!(users::consent))
        .routes(routes!(inbound::list))
        .routes(routes!(segments::list, segments::create))
        .routes(routes!(segments::preview))
        .routes(routes!(segments::get, segments::patch, segments::delete))
        .routes(routes!(templates::list, templates::create))
        .routes(routes!(templates::get, templates::patch, templates::delete))
        .routes(routes!(templates::render))
        .routes(routes!(campaigns::list, campaigns::create))
        .routes(routes!(campaigns::get, campaigns::patch))
        .routes(routes!(campaigns::launch))
        .routes(routes!(campaigns::pause))
        .routes(routes!(campaigns::resume))
        .routes(routes!(campaigns::cancel))
        .routes(routes!(campaigns::stats))
        .routes(routes!(messages::list))
        .routes(routes!(messages::get))
        .routes(routes!(imports::list))
        .routes(routes!(imports::get))
}

/// The OpenAPI 3.1 document of every `/v1` operation, as JSON: this
/// function's, and the events function's `POST /v1/events`.
pub fn openapi() -> serde_json::Value {
    openapi::exact(with_events(api_routes().into_openapi()))
}

fn with_events(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    doc.merge(events::openapi::EventsDoc::openapi());
    doc
}

/// The `/v1` routes behind the key check, the OpenAPI document beside them,
/// request bodies up to 1 MiB, the console under `/console`, and a JSON 404
/// for any other path.
pub fn router(state: AppState) -> Router {
    let console = console::router(state.clone());
    let (routes, doc) = api_routes().split_for_parts();
    let doc = Arc::new(openapi::exact(with_events(doc)).to_string());
    routes
        .route_layer(middleware::from_fn_with_state(
            state.keys.clone(),
            require_api_key,
        ))
        .route(
            OPENAPI_PATH,
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .with_state(state)
        .merge(console)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Env;

    #[test]
    fn every_required_variable_is_named_when_missing() {
        let full = [
            ("DATABASE_URL", "postgres://u@127.0.0.1/db".to_owned()),
            ("API_KEYS", ApiKeys::hash("k")),
        ];
        assert!(Config::from_env(&Env::from_pairs(full.clone())).is_ok());
        for var in REQUIRED_ENV {
            let env = Env::from_pairs(full.iter().filter(|(k, _)| k != var).cloned());
            assert_eq!(Config::from_env(&env).unwrap_err().var, *var);
        }
        let bad_region = Env::from_pairs(
            full.into_iter()
                .chain([("DEFAULT_REGION", "XX".to_owned())]),
        );
        assert_eq!(
            Config::from_env(&bad_region).unwrap_err().var,
            "DEFAULT_REGION"
        );
    }
}
