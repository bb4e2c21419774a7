//! `status`: Twilio's status callbacks for the messages we send.
//!
//! Verify the signature → store the raw callback → advance the message
//! forward only → keep error codes → 21610 opts the recipient out.
//! Callbacks that arrive together are written in one transaction (group
//! commit); each is answered after the commit that holds it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use shared::config::{self, ConfigError, DatabaseConfig, Env, TwilioWebhookConfig};
use shared::http::webhook::WEBHOOK_BODY_LIMIT;
use shared::http::{ApiError, WebhookAuth};
use shared::webhooks::group_commit::{GroupCommit, GroupCommitSettings};
use shared::webhooks::{VerifiedWebhook, status};
use sqlx::PgPool;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"];

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub database: DatabaseConfig,
    pub twilio: TwilioWebhookConfig,
    pub group_commit: GroupCommitSettings,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            twilio: TwilioWebhookConfig::from_env(env)?,
            group_commit: GroupCommitSettings::from_env(env)?,
            gcp_project: config::gcp_project(env),
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub auth: Arc<WebhookAuth>,
    /// Callbacks that arrive together are committed together.
    pub group: GroupCommit,
}

impl AppState {
    /// Starts the group commit's writer: call on the Tokio runtime.
    pub fn new(db: PgPool, config: &TwilioWebhookConfig) -> Self {
        Self::with_group_commit(db, config, GroupCommitSettings::default())
    }

    /// As [`AppState::new`], with batches formed by `settings`.
    pub fn with_group_commit(
        db: PgPool,
        config: &TwilioWebhookConfig,
        settings: GroupCommitSettings,
    ) -> Self {
        Self {
            group: GroupCommit::spawn(db.clone(), settings),
            db,
            auth: Arc::new(WebhookAuth::from_config(config)),
        }
    }
}

impl FromRef<AppState> for Arc<WebhookAuth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The function as its binary serves it (without the health routes, which
/// the server adds): what the local stack composes.
pub fn app(config: &Config, db: PgPool) -> Router {
    router(AppState::with_group_commit(
        db,
        &config.twilio,
        config.group_commit,
    ))
}

/// `POST /webhooks/status`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/status", post(receive))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        .with_state(state)
}

async fn receive(
    State(state): State<AppState>,
    webhook: VerifiedWebhook,
) -> Result<StatusCode, ApiError> {
    status::record(&state.db, Some(&state.group), &webhook).await?;
    Ok(StatusCode::OK)
}
