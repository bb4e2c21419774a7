//! `POST /webhooks/status`: Twilio reports where an outbound message is.

use sqlx::PgPool;
use uuid::Uuid;

use super::{VerifiedWebhook, WebhookError};
use crate::domain::{Consent, ConsentSource, MessageStatus, PhoneNumber};
use crate::store::messages::{self, CallbackOutcome, CallbackUpdate};
use crate::store::users::{self, ConsentChange};
use crate::store::webhook_events::NewWebhookEvent;
use crate::twilio::errors::{Reaction, meaning};

/// A status callback, read from Twilio's parameters and our `mid` query parameter.
#[derive(Debug, Clone)]
pub struct StatusCallback {
    pub message_id: Option<Uuid>,
    pub message_sid: String,
    pub raw_status: String,
    /// `None` for a status name we do not know (kept raw, changes nothing).
    pub status: Option<MessageStatus>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub to: Option<String>,
}

impl StatusCallback {
    pub fn from_webhook(w: &VerifiedWebhook) -> Result<Self, WebhookError> {
        let message_id = w
            .query_param("mid")
            .map(|m| {
                m.parse::<Uuid>().map_err(|e| WebhookError::InvalidField {
                    field: "mid",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let message_sid = w.required(&["MessageSid", "SmsSid"])?.to_owned();
        let raw_status = w.required(&["MessageStatus", "SmsStatus"])?.to_owned();
        let error_code = w
            .param("ErrorCode")
            .map(|c| {
                c.parse::<i32>().map_err(|_| WebhookError::InvalidField {
                    field: "ErrorCode",
                    reason: format!("expected a number, got {c:?}"),
                })
            })
            .transpose()?;
        Ok(Self {
            message_id,
            status: raw_status.parse().ok(),
            message_sid,
            raw_status,
            error_code,
            error_message: w.param("ErrorMessage").map(str::to_owned),
            to: w.param("To").map(str::to_owned),
        })
    }

    /// `MessageSid:MessageStatus`: the same pair delivered twice is one event.
    pub fn dedupe_key(&self) -> String {
        format!(
            "{}:{}",
            self.message_sid,
            self.raw_status.to_ascii_lowercase()
        )
    }
}

/// What a status callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOutcome {
    pub callback: CallbackOutcome,
    /// Error 21610 opted the recipient out.
    pub opted_out: bool,
}

/// Stores the raw callback and advances the message forward only. Error 21610
/// (the recipient replied STOP on Twilio's side) also opts the user out, in the
/// same transaction.
#[tracing::instrument(skip_all, fields(message_sid))]
pub async fn record(db: &PgPool, w: &VerifiedWebhook) -> Result<StatusOutcome, WebhookError> {
    let cb = StatusCallback::from_webhook(w)?;
    tracing::Span::current().record("message_sid", cb.message_sid.as_str());
    if cb.status.is_none() {
        tracing::warn!(status = cb.raw_status, "unknown message status kept raw");
    }
    let params = w.params_json();
    let dedupe_key = cb.dedupe_key();
    let event = w.event("status", &dedupe_key, &cb.message_sid, &params);
    apply(db, &event, &cb).await
}

/// Stores a status report (a callback, or what reconciliation fetched) and
/// applies it: the message moves forward only, and an error the table says is
/// the person's opt-out (21610) opts them out in the same transaction.
pub async fn apply(
    db: &PgPool,
    event: &NewWebhookEvent<'_>,
    cb: &StatusCallback,
) -> Result<StatusOutcome, WebhookError> {
    let update = CallbackUpdate {
        message_id: cb.message_id,
        message_sid: &cb.message_sid,
        status: cb.status,
        error_code: cb.error_code,
        error_message: cb.error_message.as_deref(),
    };
    let opts_out = cb
        .error_code
        .and_then(meaning)
        .is_some_and(|m| m.reaction == Reaction::OptOut);
    if !opts_out {
        let callback = messages::apply_status_callback(db, event, &update).await?;
        log_outcome(cb, &callback);
        return Ok(StatusOutcome {
            callback,
            opted_out: false,
        });
    }

    let mut tx = db.begin().await?;
    let callback = messages::apply_status_callback(&mut *tx, event, &update).await?;
    let mut opted_out = false;
    if let Some(event_id) = callback.event_id {
        let phone = callback.phone_number.clone().or_else(|| {
            cb.to
                .as_deref()
                .and_then(|to| PhoneNumber::parse(to, None).ok())
                .map(|p| p.as_str().to_owned())
        });
        if let Some(phone) = phone {
            let change = ConsentChange {
                to: Consent::OptedOut,
                source: ConsentSource::Twilio,
                webhook_event_id: Some(event_id),
                import_id: None,
                detail: Some("Twilio error 21610: recipient unsubscribed"),
            };
            opted_out = users::set_consent(&mut *tx, &phone, change)
                .await?
                .is_some();
        }
    }
    tx.commit().await?;
    log_outcome(cb, &callback);
    Ok(StatusOutcome {
        callback,
        opted_out,
    })
}

fn log_outcome(cb: &StatusCallback, outcome: &CallbackOutcome) {
    match (outcome.event_id, outcome.message_id) {
        (None, _) => tracing::info!(status = cb.raw_status, "duplicate status callback ignored"),
        (Some(_), None) => tracing::info!(
            status = cb.raw_status,
            "status callback for an unknown message kept raw"
        ),
        (Some(_), Some(id)) => tracing::info!(
            status = cb.raw_status,
            message_id = %id,
            advanced = outcome.advanced,
            error_code = cb.error_code,
            "status callback applied"
        ),
    }
}
