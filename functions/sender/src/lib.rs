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
use shared::config::{self, ConfigError, DatabaseConfig, Env, RedisConfig};
use shared::engine::send::{SendEngine, SendFailure, SenderSettings};
use shared::gcp::{PushEnvelope, SendTask};
use shared::http::ApiError;
use shared::http::server::{serve, with_standard_routes};
use shared::ratelimit::Limiter;
use shared::twilio::{TwilioClient, TwilioConfig};
use sqlx::PgPool;

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
    pub settings: SenderSettings,
    pub gcp_project: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = SenderSettings::default();
        let twilio = TwilioConfig::from_env(env)?;
        let settings = settings_from_env(env, defaults)?;
        // A live claim must outlast its longest path to Twilio's answer, or
        // reconciliation could take it over while its request is in flight.
        if settings.claim_lease <= twilio.timeout + settings.max_wait {
            return Err(ConfigError::new(
                "SEND_CLAIM_LEASE_MS",
                format!(
                    "must exceed TWILIO_TIMEOUT_MS + RATE_LIMIT_MAX_WAIT_MS ({} ms)",
                    (twilio.timeout + settings.max_wait).as_millis()
                ),
            ));
        }
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            twilio,
            settings,
            gcp_project: config::gcp_project(env),
        })
    }
}

/// `DEFAULT_TIMEZONE`, `SENDER_RATE_PER_SECOND`, `RATE_LIMIT_MAX_WAIT_MS`,
/// `DEFAULT_FREQUENCY_CAP`, and the send-once timings: `SEND_CLAIM_LEASE_MS`,
/// `SEND_UNKNOWN_GRACE_MS`, `SEND_RETRY_BASE_MS`, `SEND_ACCOUNT_HOLD_BASE_MS`,
/// `SEND_ACCOUNT_HOLDS_TO_PAUSE`, `SEND_PAUSED_RECHECK_MS`.
pub fn settings_from_env(
    env: &Env,
    defaults: SenderSettings,
) -> Result<SenderSettings, ConfigError> {
    let ms = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(
            env.or(name, default.as_millis() as u64)?,
        ))
    };
    let settings = SenderSettings {
        default_timezone: env.or::<Tz>("DEFAULT_TIMEZONE", defaults.default_timezone)?,
        sender_rate_per_second: env
            .or("SENDER_RATE_PER_SECOND", defaults.sender_rate_per_second)?,
        max_wait: ms("RATE_LIMIT_MAX_WAIT_MS", defaults.max_wait)?,
        default_frequency_cap: env
            .optional("DEFAULT_FREQUENCY_CAP")?
            .or(defaults.default_frequency_cap),
        claim_lease: ms("SEND_CLAIM_LEASE_MS", defaults.claim_lease)?,
        unknown_grace: ms("SEND_UNKNOWN_GRACE_MS", defaults.unknown_grace)?,
        retry_base: ms("SEND_RETRY_BASE_MS", defaults.retry_base)?,
        account_hold_base: ms("SEND_ACCOUNT_HOLD_BASE_MS", defaults.account_hold_base)?,
        account_holds_to_pause: env.or(
            "SEND_ACCOUNT_HOLDS_TO_PAUSE",
            defaults.account_holds_to_pause,
        )?,
        paused_recheck: ms("SEND_PAUSED_RECHECK_MS", defaults.paused_recheck)?,
        ..defaults
    };
    if settings.account_holds_to_pause < 1 {
        return Err(ConfigError::new(
            "SEND_ACCOUNT_HOLDS_TO_PAUSE",
            "must be at least 1",
        ));
    }
    Ok(settings)
}

/// The function (without the health routes, which the server adds) over
/// its dependencies: the database and the rate limiter (Redis in
/// production, in-process on the local stack). What the local stack composes.
pub fn app(config: &Config, db: PgPool, limiter: Limiter) -> anyhow::Result<Router> {
    let twilio = TwilioClient::new(config.twilio.clone())?;
    Ok(router(Arc::new(SendEngine::new(
        db,
        twilio,
        limiter,
        config.settings.clone(),
    ))))
}

/// Serves the sender as its binary does: the Redis rate limiter from
/// `redis`, on `config.port` until SIGTERM.
pub async fn run(config: Config, redis: RedisConfig) -> anyhow::Result<()> {
    let db = shared::db::pool(&config.database)?;
    let limiter = Limiter::from_config(&redis).await?;
    let app = with_standard_routes(
        app(&config, db.clone(), limiter)?,
        db,
        config.gcp_project.clone(),
    );
    serve(app, config.port).await?;
    Ok(())
}

/// `POST /pubsub/push`: one send task in a Pub/Sub push envelope.
pub fn router(sender: Arc<SendEngine>) -> Router {
    Router::new()
        .route("/pubsub/push", post(push))
        .with_state(sender)
}

async fn push(State(sender): State<Arc<SendEngine>>, body: Bytes) -> Result<StatusCode, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![
            ("DATABASE_URL", "postgres://u@127.0.0.1/db"),
            ("REDIS_URL", "redis://127.0.0.1:6379/"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_WHATSAPP_FROM", "+14155238886"),
            ("PUBLIC_BASE_URL", "https://hooks.example.test"),
        ];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs.into_iter().map(|(k, v)| (k, v.to_owned())))
    }

    #[test]
    fn a_lease_shorter_than_the_way_to_twilio_is_refused_at_start() {
        assert!(Config::from_env(&env(&[])).is_ok());
        let e = Config::from_env(&env(&[
            ("TWILIO_TIMEOUT_MS", "10000"),
            ("SEND_CLAIM_LEASE_MS", "10500"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("SEND_CLAIM_LEASE_MS"), "{e}");
    }

    #[test]
    fn the_send_once_timings_are_read() {
        let c = Config::from_env(&env(&[
            ("SEND_UNKNOWN_GRACE_MS", "250"),
            ("SEND_ACCOUNT_HOLDS_TO_PAUSE", "5"),
        ]))
        .unwrap();
        assert_eq!(c.settings.unknown_grace, Duration::from_millis(250));
        assert_eq!(c.settings.account_holds_to_pause, 5);
        assert!(Config::from_env(&env(&[("SEND_ACCOUNT_HOLDS_TO_PAUSE", "0")])).is_err());
    }
}
