//! Twilio's Messages API: one WhatsApp message per call.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Env, PublicBaseUrl, Secret};
use crate::domain::PhoneNumber;
use crate::twilio::errors::{Reaction, reaction};

/// Who the messages come from: one WhatsApp number, or a messaging service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromAddress {
    WhatsAppFrom(PhoneNumber),
    MessagingService(String),
}

impl FromAddress {
    /// The key the per-sender rate limit counts under.
    pub fn limit_key(&self) -> String {
        match self {
            FromAddress::WhatsAppFrom(p) => format!("sender:{}", p.as_str()),
            FromAddress::MessagingService(s) => format!("sender:{s}"),
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
    pub sender: FromAddress,
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
            (_, Some(ms)) => FromAddress::MessagingService(ms.to_owned()),
            (Some(from), None) => {
                FromAddress::WhatsAppFrom(PhoneNumber::parse(from, None).map_err(|e| {
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

/// Twilio took the message: any 2xx. The SID is `None` when the body did not
/// say it (unreadable); reconciliation then finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub sid: Option<String>,
    pub status: String,
}

#[derive(Deserialize)]
struct AcceptedBody {
    sid: String,
    status: String,
}

/// Why a send did not end with Twilio's acceptance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Twilio answered with an error; [`SendError::reaction`] says what to do.
    #[error("Twilio refused the message (HTTP {http_status}{}): {message}", code.map(|c| format!(", error {c}")).unwrap_or_default())]
    Refused {
        http_status: u16,
        code: Option<i32>,
        message: String,
    },
    /// The request never reached Twilio (no connection): safe to send again.
    #[error("Twilio not reached: {message}")]
    NotSent { message: String },
    /// The request may have reached Twilio (a timeout, a connection cut after
    /// sending): the outcome is unknown until reconciliation asks Twilio.
    #[error("outcome unknown: {message}")]
    Unknown { message: String },
}

impl SendError {
    /// What the engine does about it ([`errors::ERRORS`](super::errors::ERRORS)).
    pub fn reaction(&self) -> Reaction {
        match self {
            SendError::Refused {
                http_status, code, ..
            } => reaction(*http_status, *code),
            SendError::NotSent { .. } => Reaction::Retry,
            SendError::Unknown { .. } => Reaction::Reconcile,
        }
    }

    pub fn code(&self) -> Option<i32> {
        match self {
            SendError::Refused { code, .. } => *code,
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            SendError::Refused { message, .. }
            | SendError::NotSent { message }
            | SendError::Unknown { message } => message,
        }
    }
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i32>,
    message: Option<String>,
}

/// A message as Twilio's Messages API describes it (list and fetch).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TwilioMessage {
    pub sid: String,
    pub status: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// RFC 2822, as Twilio writes it (`Thu, 30 Jul 2015 20:12:31 +0000`).
    #[serde(default)]
    pub date_created: Option<String>,
    #[serde(default)]
    pub error_code: Option<i32>,
    #[serde(default)]
    pub error_message: Option<String>,
}

impl TwilioMessage {
    pub fn created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.date_created
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
    }
}

#[derive(Deserialize)]
struct MessagePage {
    messages: Vec<serde_json::Value>,
}

/// A Messages API read that did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Twilio lookup failed{}: {message}", http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct LookupError {
    pub http_status: Option<u16>,
    pub code: Option<i32>,
    pub message: String,
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

    pub fn sender(&self) -> &FromAddress {
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
            FromAddress::WhatsAppFrom(p) => {
                from = p.whatsapp_address();
                form.push(("From", &from));
            }
            FromAddress::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
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
            .map_err(|e| {
                let message = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    e.to_string()
                };
                if e.is_connect() {
                    SendError::NotSent { message }
                } else {
                    SendError::Unknown { message }
                }
            })?;
        let status = response.status();
        let bytes = response.bytes().await;
        if status.is_success() {
            // A 2xx means Twilio has the message, whatever its body says.
            let body = bytes
                .ok()
                .and_then(|b| serde_json::from_slice::<AcceptedBody>(&b).ok());
            if body.is_none() {
                tracing::warn!(
                    http_status = status.as_u16(),
                    "Twilio accepted with an unreadable body; reconciliation finds the SID"
                );
            }
            return Ok(match body {
                Some(b) => Accepted {
                    sid: Some(b.sid),
                    status: b.status,
                },
                None => Accepted {
                    sid: None,
                    status: "accepted".to_owned(),
                },
            });
        }
        let bytes = bytes.map_err(|e| SendError::Unknown {
            message: e.to_string(),
        })?;
        let (code, message) = error_of(status, &bytes);
        Err(SendError::Refused {
            http_status: status.as_u16(),
            code,
            message,
        })
    }

    fn messages_url(&self) -> String {
        let c = &self.config;
        format!(
            "{}/2010-04-01/Accounts/{}/Messages",
            c.api_base, c.account_sid
        )
    }

    /// The newest messages to `to` from our sender (first page, newest first):
    /// what reconciliation searches for a send whose outcome is unknown.
    #[tracing::instrument(skip_all)]
    pub async fn list_messages_to(
        &self,
        to: &PhoneNumber,
    ) -> Result<Vec<(TwilioMessage, serde_json::Value)>, LookupError> {
        let c = &self.config;
        let to = to.whatsapp_address();
        let mut query: Vec<(&str, String)> = vec![("To", to), ("PageSize", "50".to_owned())];
        if let FromAddress::WhatsAppFrom(p) = &c.sender {
            query.push(("From", p.whatsapp_address()));
        }
        let page: MessagePage = self
            .read(
                self.http
                    .get(format!("{}.json", self.messages_url()))
                    .query(&query),
            )
            .await?;
        Ok(page
            .messages
            .into_iter()
            .filter_map(|raw| {
                serde_json::from_value::<TwilioMessage>(raw.clone())
                    .ok()
                    .map(|m| (m, raw))
            })
            .collect())
    }

    /// One message by SID, as Twilio holds it now.
    #[tracing::instrument(skip_all)]
    pub async fn fetch_message(
        &self,
        sid: &str,
    ) -> Result<(TwilioMessage, serde_json::Value), LookupError> {
        let raw: serde_json::Value = self
            .read(self.http.get(format!("{}/{sid}.json", self.messages_url())))
            .await?;
        let message = serde_json::from_value(raw.clone()).map_err(|e| LookupError {
            http_status: None,
            code: None,
            message: format!("unreadable message resource: {e}"),
        })?;
        Ok((message, raw))
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, LookupError> {
        let c = &self.config;
        let failed = |e: reqwest::Error| LookupError {
            http_status: None,
            code: None,
            message: e.to_string(),
        };
        let response = request
            .basic_auth(&c.username, Some(c.password.expose()))
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(failed)?;
        if !status.is_success() {
            let (code, message) = error_of(status, &bytes);
            return Err(LookupError {
                http_status: Some(status.as_u16()),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| LookupError {
            http_status: Some(status.as_u16()),
            code: None,
            message: format!("unreadable Twilio answer: {e}"),
        })
    }
}

/// Twilio's error body (`{"code": 20003, "message": "…"}`), or the HTTP status.
fn error_of(status: reqwest::StatusCode, bytes: &[u8]) -> (Option<i32>, String) {
    let err: Option<TwilioError> = serde_json::from_slice(bytes).ok();
    let code = err.as_ref().and_then(|e| e.code);
    let message = err
        .and_then(|e| e.message)
        .unwrap_or_else(|| format!("HTTP {status}"));
    (code, message)
}
