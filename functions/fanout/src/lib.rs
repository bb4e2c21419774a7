//! `fanout`: Cloud Scheduler calls `POST /tick` every minute. A tick
//! reconciles with Twilio what the senders could not know, starts due
//! campaigns, materializes their recipients and dispatches due messages to
//! Pub/Sub at each campaign's rate; ticks may overlap safely. `POST /reconcile`
//! runs reconciliation alone (for a scheduler job of its own).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use shared::config::{self, ConfigError, DatabaseConfig, Env};
use shared::engine::fanout::{self, FanoutSettings, TickReport};
use shared::engine::reconcile::{self, ReconcileReport, ReconcileSettings};
use shared::gcp::TaskPublisher;
use shared::http::ApiError;
use shared::twilio::{TwilioClient, TwilioConfig};
use sqlx::PgPool;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &[
    "DATABASE_URL",
    "GCP_PROJECT",
    "SEND_TOPIC",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WHATSAPP_FROM",
    "PUBLIC_BASE_URL",
];

/// `RECONCILE_IN_FLIGHT_SECONDS` (how long a send may still be on its way to
/// Twilio), `RECONCILE_FINAL_AFTER_SECONDS` (when a sent message without its
/// final status is fetched).
pub fn reconcile_settings_from_env(env: &Env) -> Result<ReconcileSettings, ConfigError> {
    let defaults = ReconcileSettings::default();
    Ok(ReconcileSettings {
        in_flight_for: Duration::from_secs(env.or(
            "RECONCILE_IN_FLIGHT_SECONDS",
            defaults.in_flight_for.as_secs(),
        )?),
        final_after: Duration::from_secs(env.or(
            "RECONCILE_FINAL_AFTER_SECONDS",
            defaults.final_after.as_secs(),
        )?),
        ..defaults
    })
}

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
    pub settings: FanoutSettings,
    /// The Messages API that reconciliation reads.
    pub twilio: TwilioConfig,
    pub reconcile: ReconcileSettings,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig {
                // A tick's set-based statements grow with a campaign: a
                // million-recipient cancel sweep is one statement.
                statement_timeout_ms: env.or("DATABASE_STATEMENT_TIMEOUT_MS", 300_000)?,
                ..DatabaseConfig::from_env(env)?
            },
            settings: settings_from_env(env)?,
            twilio: TwilioConfig::from_env(env)?,
            reconcile: reconcile_settings_from_env(env)?,
            gcp_project: config::gcp_project(env),
        })
    }
}

pub struct AppState<P> {
    pub db: PgPool,
    pub publisher: P,
    pub settings: FanoutSettings,
    /// Reconciliation runs at the start of each tick when Twilio is configured.
    pub twilio: Option<TwilioClient>,
    pub reconcile: ReconcileSettings,
}

/// The function (without the health routes, which the server adds) over
/// its dependencies: the database and where send tasks go (Pub/Sub in
/// production, an in-process queue on the local stack). What the local
/// stack composes.
pub fn app<P: TaskPublisher + Send + Sync + 'static>(
    config: &Config,
    db: PgPool,
    publisher: P,
) -> anyhow::Result<Router> {
    Ok(router(Arc::new(AppState {
        db,
        publisher,
        settings: config.settings.clone(),
        twilio: Some(TwilioClient::new(config.twilio.clone())?),
        reconcile: config.reconcile.clone(),
    })))
}

/// `POST /tick` and `POST /reconcile`.
pub fn router<P: TaskPublisher>(state: Arc<AppState<P>>) -> Router {
    Router::new()
        .route("/tick", post(tick::<P>))
        .route("/reconcile", post(reconcile_only::<P>))
        .with_state(state)
}

/// What a tick did, reconciliation included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TickOutcome {
    #[serde(flatten)]
    pub tick: TickReport,
    pub reconciled: Option<ReconcileReport>,
}

async fn tick<P: TaskPublisher>(
    State(state): State<Arc<AppState<P>>>,
) -> Result<Json<TickOutcome>, ApiError> {
    // Dispatch goes on when reconciliation fails: it is tried again next tick.
    let reconciled = reconcile_pass(&state).await.unwrap_or_else(|e| {
        tracing::error!(error = ?e, "reconciliation failed this tick");
        None
    });
    let tick = fanout::tick(&state.db, &state.publisher, &state.settings)
        .await
        .map_err(|fanout::FanoutError::Database(e)| ApiError::from(e))?;
    Ok(Json(TickOutcome { tick, reconciled }))
}

async fn reconcile_only<P: TaskPublisher>(
    State(state): State<Arc<AppState<P>>>,
) -> Result<Json<Option<ReconcileReport>>, ApiError> {
    Ok(Json(reconcile_pass(&state).await?))
}

async fn reconcile_pass<P>(state: &AppState<P>) -> Result<Option<ReconcileReport>, ApiError> {
    let Some(twilio) = &state.twilio else {
        return Ok(None);
    };
    Ok(Some(
        reconcile::reconcile(&state.db, twilio, &state.reconcile).await?,
    ))
}
