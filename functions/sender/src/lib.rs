//! `sender`: Pub/Sub pushes one send task per message; the sender claims the
//! message, decides (consent, window, quiet hours, frequency cap, rate limit,
//! render) and sends it through Twilio.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chrono_tz::Tz;
use shared::config::{self, ConfigError, DatabaseConfig, Env};
use shared::engine::send::{SendFailure, Sender, SenderSettings};
use shared::gcp::{PushEnvelope, SendTask};
use shared::http::ApiError;
use shared::twilio::TwilioConfig;

/// The variables this binary cannot start without.
pub const REQUIRED_ENV: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WHATSAPP_FROM",
    "PUBLIC_BASE_URL",
];

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub database: DatabaseConfig,
    pub twilio: TwilioConfig,
    pub redis_url: String,
    pub redis_prefix: String,
    pub settings: SenderSettings,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = SenderSettings::default();
        let redis_url: String = env.required("REDIS_URL")?;
        if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
            return Err(ConfigError::new(
                "REDIS_URL",
                "is malformed: expected redis://host:port",
            ));
        }
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            twilio: TwilioConfig::from_env(env)?,
            redis_url,
            redis_prefix: env.or("REDIS_KEY_PREFIX", "ese".to_owned())?,
            settings: settings_from_env(env, defaults)?,
            gcp_project: config::gcp_project(env),
        })
    }
}

/// `DEFAULT_TIMEZONE`, `SENDER_RATE_PER_SECOND`, `RATE_LIMIT_MAX_WAIT_MS`, `DEFAULT_FREQUENCY_CAP`.
pub fn settings_from_env(
    env: &Env,
    defaults: SenderSettings,
) -> Result<SenderSettings, ConfigError> {
    Ok(SenderSettings {
        default_timezone: env.or::<Tz>("DEFAULT_TIMEZONE", defaults.default_timezone)?,
        sender_rate_per_second: env
            .or("SENDER_RATE_PER_SECOND", defaults.sender_rate_per_second)?,
        max_wait: Duration::from_millis(env.or(
            "RATE_LIMIT_MAX_WAIT_MS",
            defaults.max_wait.as_millis() as u64,
        )?),
        default_frequency_cap: env
            .optional("DEFAULT_FREQUENCY_CAP")?
            .or(defaults.default_frequency_cap),
        ..defaults
    })
}

/// `POST /pubsub/push`: one send task in a Pub/Sub push envelope.
pub fn router(sender: Arc<Sender>) -> Router {
    Router::new()
        .route("/pubsub/push", post(push))
        .with_state(sender)
}

async fn push(State(sender): State<Arc<Sender>>, body: Bytes) -> Result<StatusCode, ApiError> {
    // A malformed envelope is answered 400 and logged; the subscription's
    // dead-letter policy ends its redelivery.
    let envelope = PushEnvelope::parse(&body).map_err(|e| {
        tracing::warn!(error = %e, "malformed push envelope");
        ApiError::bad_request("message", e.to_string())
    })?;
    let task: SendTask = envelope.payload().map_err(|e| {
        tracing::warn!(message_id = envelope.message.message_id, error = %e, "malformed send task");
        ApiError::bad_request("message.data", e.to_string())
    })?;
    match sender.handle(task.message_id).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(SendFailure::Unavailable(e)) => Err(ApiError::unavailable(anyhow::anyhow!(e))),
        Err(SendFailure::Database(e)) => Err(e.into()),
    }
}
