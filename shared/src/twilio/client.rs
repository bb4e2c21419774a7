//! Twilio's Messages API: one WhatsApp message per call.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Env, PublicBaseUrl, Secret};
use crate::domain::PhoneNumber;
use crate::twilio::errors::classify;

/// Who the messages come from: one WhatsApp number, or a messaging service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    WhatsAppFrom(PhoneNumber),
    MessagingService(String),
}

impl Sender {
    /// The key the per-sender rate limit counts under.
    pub fn limit_key(&self) -> String {
        match self {
            Sender::WhatsAppFrom(p) => format!("sender:{}", p.as_str()),
            Sender::MessagingService(s) => format!("sender:{s}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    /// Basic-auth user and password: an API key pair when configured, else
    /// the account SID and the first auth token.
    pub username: String,
    pub password: Secret,
    pub sender: Sender,
    /// `https://api.twilio.com` unless pointed at a mock.
    pub api_base: String,
    /// Where status callbacks go (`…/webhooks/status?mid=<id>` is appended).
    pub status_callback_base: PublicBaseUrl,
    pub timeout: Duration,
}

impl TwilioConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let account_sid: String = env.required("TWILIO_ACCOUNT_SID")?;
        if !account_sid.starts_with("AC") {
            return Err(ConfigError::new(
                "TWILIO_ACCOUNT_SID",
                "is malformed: expected AC…",
            ));
        }
        let token = env
            .list("TWILIO_AUTH_TOKEN")
            .and_then(|t| t.into_iter().next())
            .ok_or_else(|| ConfigError::new("TWILIO_AUTH_TOKEN", "is missing"))?;
        let (username, password) = match env.raw("TWILIO_API_KEY_SID") {
            Some(key) => (key.to_owned(), env.secret("TWILIO_API_KEY_SECRET")?),
            None => (account_sid.clone(), Secret::new(token)),
        };
        let sender = match (
            env.raw("TWILIO_WHATSAPP_FROM"),
            env.raw("TWILIO_MESSAGING_SERVICE_SID"),
        ) {
            (_, Some(ms)) => Sender::MessagingService(ms.to_owned()),
            (Some(from), None) => {
                Sender::WhatsAppFrom(PhoneNumber::parse(from, None).map_err(|e| {
                    ConfigError::new("TWILIO_WHATSAPP_FROM", format!("is malformed: {e}"))
                })?)
            }
            (None, None) => return Err(ConfigError::new("TWILIO_WHATSAPP_FROM", "is missing")),
        };
        Ok(Self {
            account_sid,
            username,
            password,
            sender,
            api_base: env.or("TWILIO_API_BASE", "https://api.twilio.com".to_owned())?,
            status_callback_base: env.required("PUBLIC_BASE_URL")?,
            timeout: Duration::from_millis(env.or("TWILIO_TIMEOUT_MS", 10_000)?),
        })
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub message_id: uuid::Uuid,
    pub to: &'a PhoneNumber,
    pub body: Option<&'a str>,
    pub content_sid: Option<&'a str>,
    pub content_variables: Option<&'a str>,
}

/// Twilio took the message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    pub sid: String,
    pub status: String,
}

/// Why Twilio did not take the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later. `ambiguous`: the request may have reached Twilio
    /// (a timeout after sending), so a retry must first give a status callback
    /// time to show whether it was accepted.
    #[error("transient Twilio failure{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Transient {
        code: Option<i32>,
        message: String,
        ambiguous: bool,
    },
    #[error("Twilio refused the message{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Permanent { code: Option<i32>, message: String },
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i32>,
    message: Option<String>,
}

#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    config: std::sync::Arc<TwilioConfig>,
}

impl TwilioClient {
    pub fn new(config: TwilioConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            config: std::sync::Arc::new(config),
        })
    }

    pub fn sender(&self) -> &Sender {
        &self.config.sender
    }

    /// The StatusCallback URL for a message: it names our id, so callbacks
    /// match even when the SID was never stored.
    pub fn status_callback(&self, message_id: uuid::Uuid) -> String {
        self.config
            .status_callback_base
            .join(&format!("/webhooks/status?mid={message_id}"))
    }

    #[tracing::instrument(skip_all, fields(message_id = %m.message_id))]
    pub async fn send(&self, m: &Outbound<'_>) -> Result<Accepted, SendError> {
        let c = &self.config;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            c.api_base, c.account_sid
        );
        let to = m.to.whatsapp_address();
        let callback = self.status_callback(m.message_id);
        let mut form: Vec<(&str, &str)> = vec![("To", &to), ("StatusCallback", &callback)];
        let from;
        match &c.sender {
            Sender::WhatsAppFrom(p) => {
                from = p.whatsapp_address();
                form.push(("From", &from));
            }
            Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        if let Some(sid) = m.content_sid {
            form.push(("ContentSid", sid));
            if let Some(vars) = m.content_variables {
                form.push(("ContentVariables", vars));
            }
        } else if let Some(body) = m.body {
            form.push(("Body", body));
        }
        let response = self
            .http
            .post(url)
            .basic_auth(&c.username, Some(c.password.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::Transient {
                code: None,
                ambiguous: !e.is_connect(),
                message: if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    e.to_string()
                },
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| SendError::Transient {
            code: None,
            message: e.to_string(),
            ambiguous: true,
        })?;
        if status.is_success() {
            return serde_json::from_slice::<Accepted>(&bytes).map_err(|e| SendError::Transient {
                code: None,
                message: format!("unreadable Twilio response: {e}"),
                ambiguous: true,
            });
        }
        let err: Option<TwilioError> = serde_json::from_slice(&bytes).ok();
        let code = err.as_ref().and_then(|e| e.code);
        let message = err
            .and_then(|e| e.message)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(classify(status.as_u16(), code, message))
    }
}
