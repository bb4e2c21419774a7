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
use shared::domain::{Consent, ConsentKeywords, Region};
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
    pub replies: ConsentReplies,
    pub gcp_project: Option<String>,
}

/// What to answer a consent keyword with, per direction (`CONSENT_OPT_OUT_REPLY`,
/// `CONSENT_OPT_IN_REPLY`); none by default. WhatsApp has no carrier
/// auto-reply, so this is the only confirmation a person gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentReplies {
    pub opted_out: Option<String>,
    pub opted_in: Option<String>,
}

impl ConsentReplies {
    pub fn from_env(env: &Env) -> Self {
        let text = |name| {
            env.raw(name)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        Self {
            opted_out: text("CONSENT_OPT_OUT_REPLY"),
            opted_in: text("CONSENT_OPT_IN_REPLY"),
        }
    }

    /// The TwiML for an inbound message that asked for `keyword`.
    pub fn twiml(&self, keyword: Option<Consent>) -> String {
        let reply = match keyword {
            Some(Consent::OptedOut) => self.opted_out.as_deref(),
            Some(Consent::OptedIn) => self.opted_in.as_deref(),
            _ => None,
        };
        match reply {
            Some(text) => format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>{}</Message></Response>"#,
                xml_escape(text)
            ),
            None => EMPTY_TWIML.to_owned(),
        }
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            twilio: TwilioWebhookConfig::from_env(env)?,
            default_region: config::default_region(env)?,
            keywords: config::consent_keywords(env),
            replies: ConsentReplies::from_env(env),
            gcp_project: config::gcp_project(env),
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub auth: Arc<WebhookAuth>,
    pub keywords: Arc<ConsentKeywords>,
    pub replies: Arc<ConsentReplies>,
    pub default_region: Option<Region>,
}

impl AppState {
    pub fn new(db: PgPool, config: &Config) -> Self {
        Self {
            db,
            auth: Arc::new(WebhookAuth::from_config(&config.twilio)),
            keywords: Arc::new(config.keywords.clone()),
            replies: Arc::new(config.replies.clone()),
            default_region: config.default_region,
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
    router(AppState::new(db, config))
}

/// `POST /webhooks/inbound`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/inbound", post(receive))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        .with_state(state)
}

/// An empty TwiML document: nothing to say back.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

async fn receive(
    State(state): State<AppState>,
    webhook: VerifiedWebhook,
) -> Result<impl IntoResponse, ApiError> {
    let outcome =
        inbound::record(&state.db, &webhook, &state.keywords, state.default_region).await?;
    let keyword = outcome.keyword.filter(|_| !outcome.duplicate);
    Ok(([(CONTENT_TYPE, "text/xml")], state.replies.twiml(keyword)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_is_sent_only_when_configured_and_escaped() {
        let none = ConsentReplies::default();
        assert_eq!(none.twiml(Some(Consent::OptedOut)), EMPTY_TWIML);
        let replies = ConsentReplies::from_env(&Env::from_pairs([(
            "CONSENT_OPT_OUT_REPLY",
            "You're unsubscribed <3 & done",
        )]));
        assert_eq!(
            replies.twiml(Some(Consent::OptedOut)),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>You&apos;re unsubscribed &lt;3 &amp; done</Message></Response>"#
        );
        assert_eq!(replies.twiml(Some(Consent::OptedIn)), EMPTY_TWIML);
        assert_eq!(replies.twiml(None), EMPTY_TWIML);
    }
}
