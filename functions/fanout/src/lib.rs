//! `fanout`: Cloud Scheduler calls `POST /tick` every minute. A tick starts
//! due campaigns, materializes their recipients and dispatches due messages to
//! Pub/Sub at each campaign's rate; ticks may overlap safely.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use shared::config::{self, ConfigError, DatabaseConfig, Env};
use shared::engine::fanout::{self, FanoutSettings, TickReport};
use shared::gcp::{PubSubConfig, TaskPublisher};
use shared::http::ApiError;
use sqlx::PgPool;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "GCP_PROJECT", "SEND_TOPIC"];

/// `FANOUT_BATCH_SIZE`, `FANOUT_TICK_SECONDS` (how long a tick dispatches).
pub fn settings_from_env(env: &Env) -> Result<FanoutSettings, ConfigError> {
    let defaults = FanoutSettings::default();
    Ok(FanoutSettings {
        batch_size: env.or("FANOUT_BATCH_SIZE", defaults.batch_size)?,
        run_for: Duration::from_secs(env.or("FANOUT_TICK_SECONDS", defaults.run_for.as_secs())?),
        ..defaults
    })
}

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub database: DatabaseConfig,
    pub pubsub: PubSubConfig,
    pub settings: FanoutSettings,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            pubsub: PubSubConfig::from_env(env)?,
            settings: settings_from_env(env)?,
            gcp_project: config::gcp_project(env),
        })
    }
}

pub struct AppState<P> {
    pub db: PgPool,
    pub publisher: P,
    pub settings: FanoutSettings,
}

/// `POST /tick`.
pub fn router<P: TaskPublisher>(state: Arc<AppState<P>>) -> Router {
    Router::new()
        .route("/tick", post(tick::<P>))
        .with_state(state)
}

async fn tick<P: TaskPublisher>(
    State(state): State<Arc<AppState<P>>>,
) -> Result<Json<TickReport>, ApiError> {
    fanout::tick(&state.db, &state.publisher, &state.settings)
        .await
        .map(Json)
        .map_err(|fanout::FanoutError::Database(e)| e.into())
}
