//! `inbound`: Twilio's webhook for messages users send us.
//!
//! Verify the signature → store the raw request → normalize → consent
//! keywords → open the 24-hour window → reply with empty TwiML.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use shared::config::{self, ConfigError, DatabaseConfig, Env, TwilioWebhookConfig};
use shared::domain::{ConsentKeywords, Region};
use shared::http::webhook::WEBHOOK_BODY_LIMIT;
use shared::http::{ApiError, WebhookAuth};
use shared::webhooks::{VerifiedWebhook, inbound};
use sqlx::PgPool;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"];

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub database: DatabaseConfig,
    pub twilio: TwilioWebhookConfig,
    pub default_region: Option<Region>,
    pub keywords: ConsentKeywords,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            twilio: TwilioWebhookConfig::from_env(env)?,
            default_region: config::default_region(env)?,
            keywords: config::consent_keywords(env),
            gcp_project: config::gcp_project(env),
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub auth: Arc<WebhookAuth>,
    pub keywords: Arc<ConsentKeywords>,
    pub default_region: Option<Region>,
}

impl AppState {
    pub fn new(db: PgPool, config: &Config) -> Self {
        Self {
            db,
            auth: Arc::new(WebhookAuth::from_config(&config.twilio)),
            keywords: Arc::new(config.keywords.clone()),
            default_region: config.default_region,
        }
    }
}

impl FromRef<AppState> for Arc<WebhookAuth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// `POST /webhooks/inbound`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/inbound", post(receive))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        .with_state(state)
}

/// An empty TwiML document: we answer asynchronously, never inline.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

async fn receive(
    State(state): State<AppState>,
    webhook: VerifiedWebhook,
) -> Result<impl IntoResponse, ApiError> {
    inbound::record(&state.db, &webhook, &state.keywords, state.default_region).await?;
    Ok(([(CONTENT_TYPE, "text/xml")], EMPTY_TWIML))
}
