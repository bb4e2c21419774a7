//! Helpers for the end-to-end tests and the benchmarks: signed Twilio
//! requests, routers wired like production, database fixtures, storage
//! events and the Cloud Storage emulator.

use axum::Router;
use shared::config::{Env, TwilioWebhookConfig};
use shared::twilio::compute_signature;
use sqlx::PgPool;

pub mod bench;
pub mod bench_console;
pub mod bench_engine;
pub mod bench_events;
pub mod bench_ingest;
pub mod bench_lifecycle;
pub mod bench_webhooks;
pub mod engine;
pub mod fake_gcs;
pub mod fixtures;
pub mod ingest;
pub mod process;
pub mod pubsub_emulator;
pub mod twilio_mock;
pub mod webdriver;

/// The auth token the test Twilio account signs with.
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
/// The public base URL Twilio is configured to call in tests.
pub const PUBLIC_BASE_URL: &str = "https://hooks.example.test";

/// The Redis the tests use: `REDIS_URL` (scripts/test points it at a private
/// server of its own), else the one on the default port. Tests keep apart
/// by random key prefixes.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

pub fn webhook_config(tokens: &str) -> TwilioWebhookConfig {
    TwilioWebhookConfig::from_env(&Env::from_pairs([
        ("TWILIO_AUTH_TOKEN", tokens),
        ("PUBLIC_BASE_URL", PUBLIC_BASE_URL),
    ]))
    .expect("test webhook config is valid")
}

pub fn inbound_config() -> inbound::Config {
    inbound::Config::from_env(&Env::from_pairs([
        ("DATABASE_URL", "postgres://unused@127.0.0.1/unused"),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("PUBLIC_BASE_URL", PUBLIC_BASE_URL),
        ("DEFAULT_REGION", "US"),
    ]))
    .expect("test inbound config is valid")
}

/// Both webhook functions on one router, as the local stack mounts them.
pub fn webhooks_router(db: PgPool) -> Router {
    let inbound = inbound::router(inbound::AppState::new(db.clone(), &inbound_config()));
    let status = status::router(status::AppState::new(db, &webhook_config(AUTH_TOKEN)));
    inbound.merge(status)
}

/// A form body and the `X-Twilio-Signature` Twilio would send with it.
pub struct SignedForm {
    pub body: String,
    pub signature: String,
}

/// Signs `params` for a POST to `path_and_query` the way Twilio does.
pub fn sign_form(token: &str, path_and_query: &str, params: &[(&str, &str)]) -> SignedForm {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let url = format!("{PUBLIC_BASE_URL}{path_and_query}");
    let signature = compute_signature(token, &url, &owned);
    SignedForm {
        body: form_body(params),
        signature,
    }
}

/// `params` form-encoded, as Twilio posts them.
pub fn form_body(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

/// A status callback's parameters as Twilio sends them for a WhatsApp message.
pub fn status_params<'a>(sid: &'a str, status: &'a str, to: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("ChannelPrefix", "whatsapp"),
        ("From", "whatsapp:+14155238886"),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("To", to),
    ]
}
