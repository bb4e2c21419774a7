//! `POST /webhooks/status`: Twilio reports where an outbound message is.

use sqlx::PgPool;
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::{VerifiedWebhook, WebhookError};
use crate::domain::{Consent, ConsentSource, MessageStatus, PhoneNumber};
use crate::store::messages::{self, BatchedCallback, CallbackOutcome, CallbackUpdate};
use crate::store::users::{self, ConsentChange};
use crate::store::webhook_events::{self, NewWebhookEvent};
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
    /// The callback, and what did not parse but was read past (kept on the
    /// raw event as its `parse_error`): a malformed `mid` or `ErrorCode` is
    /// ignored, the message then found by its SID. `Err` when there is no SID
    /// or no status to apply.
    pub fn from_webhook(w: &VerifiedWebhook) -> Result<(Self, Vec<String>), WebhookError> {
        let mut notes = vec![];
        let message_id = w.query_param("mid").and_then(|m| match m.parse::<Uuid>() {
            Ok(id) => Some(id),
            Err(e) => {
                notes.push(format!("mid: {e}; matched by MessageSid"));
                None
            }
        });
        let message_sid = w.required(&["MessageSid", "SmsSid"])?.to_owned();
        let raw_status = w.required(&["MessageStatus", "SmsStatus"])?.to_owned();
        let error_code = w.param("ErrorCode").and_then(|c| match c.parse::<i32>() {
            Ok(code) => Some(code),
            Err(_) => {
                notes.push(format!("ErrorCode: expected a number, got {c:?}"));
                None
            }
        });
        let cb = Self {
            message_id,
            status: raw_status.parse().ok(),
            message_sid,
            raw_status,
            error_code,
            error_message: w.param("ErrorMessage").map(str::to_owned),
            to: w.param("To").map(str::to_owned),
        };
        Ok((cb, notes))
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
    /// The request was kept raw only: why it could not be applied.
    pub unreadable: Option<String>,
}

/// Stores the raw callback and advances the message forward only. Error 21610
/// (the recipient replied STOP on Twilio's side) also opts the user out, in the
/// same transaction.
///
/// With a [`GroupCommit`], an ordinary callback is written in its next batch
/// (and this returns once that batch has committed); an opt-out or an
/// unreadable request is written on its own, as without one.
#[tracing::instrument(skip_all, fields(message_sid))]
pub async fn record(
    db: &PgPool,
    group: Option<&GroupCommit>,
    w: &VerifiedWebhook,
) -> Result<StatusOutcome, WebhookError> {
    let params = w.params_json();
    let (cb, notes) = match StatusCallback::from_webhook(w) {
        Ok(read) => read,
        Err(e) => {
            // Raw first: kept, flagged, and answered 2xx (Twilio would not retry a 4xx).
            let reason = e.to_string();
            let dedupe_key = w.body_digest();
            let sid = w.param("MessageSid").or(w.param("SmsSid"));
            let event = w.event("status", &dedupe_key, sid, &params);
            let mut tx = db.begin().await?;
            let event_id = webhook_events::insert(&mut *tx, &event).await?;
            if let Some(id) = event_id {
                webhook_events::flag(&mut *tx, id, &reason).await?;
            }
            tx.commit().await?;
            tracing::warn!(error = %reason, "status callback kept raw: it cannot be applied");
            return Ok(StatusOutcome {
                callback: CallbackOutcome {
                    event_id,
                    message_id: None,
                    phone_number: None,
                    advanced: false,
                },
                opted_out: false,
                unreadable: Some(reason),
            });
        }
    };
    tracing::Span::current().record("message_sid", cb.message_sid.as_str());
    if cb.status.is_none() {
        tracing::warn!(status = cb.raw_status, "unknown message status kept raw");
    }
    if let (Some(group), false) = (group, opts_out(&cb)) {
        let callback = group
            .submit(BatchedCallback::from_callback(w, &cb, params, &notes))
            .await?;
        log_outcome(&cb, &callback);
        return Ok(StatusOutcome {
            callback,
            opted_out: false,
            unreadable: None,
        });
    }
    let dedupe_key = cb.dedupe_key();
    let event = w.event("status", &dedupe_key, Some(&cb.message_sid), &params);
    let outcome = apply(db, &event, &cb).await?;
    if let (Some(id), false) = (outcome.callback.event_id, notes.is_empty()) {
        webhook_events::flag(db, id, &notes.join("; ")).await?;
    }
    Ok(outcome)
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
    if !opts_out(cb) {
        let callback = messages::apply_status_callback(db, event, &update).await?;
        log_outcome(cb, &callback);
        return Ok(StatusOutcome {
            callback,
            opted_out: false,
            unreadable: None,
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
                .changed_from()
                .is_some();
        }
    }
    tx.commit().await?;
    log_outcome(cb, &callback);
    Ok(StatusOutcome {
        callback,
        opted_out,
        unreadable: None,
    })
}

/// Whether the callback's error is the person's opt-out (21610), which
/// changes their consent in the same transaction.
fn opts_out(cb: &StatusCallback) -> bool {
    cb.error_code
        .and_then(meaning)
        .is_some_and(|m| m.reaction == Reaction::OptOut)
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
