//! `POST /webhooks/inbound`: a user wrote to our WhatsApp sender.

use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;

use super::{VerifiedWebhook, WebhookError};
use crate::domain::{Consent, ConsentKeywords, ConsentSource, PhoneNumber, Region};
use crate::store::users::ConsentChange;
use crate::store::{inbound_messages, users, webhook_events};

/// An inbound WhatsApp message, normalized from Twilio's parameters.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub message_sid: String,
    pub from: PhoneNumber,
    pub to: String,
    pub wa_id: Option<String>,
    pub profile_name: Option<String>,
    pub body: String,
    pub media: Vec<Media>,
    pub button_payload: Option<String>,
    pub button_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Media {
    pub url: String,
    pub content_type: Option<String>,
}

/// Twilio sends at most 10 media items per message.
const MAX_MEDIA: usize = 10;

impl InboundMessage {
    pub fn from_webhook(w: &VerifiedWebhook, region: Option<Region>) -> Result<Self, WebhookError> {
        let message_sid = w
            .required(&["MessageSid", "SmsMessageSid", "SmsSid"])?
            .to_owned();
        let from_raw = w.required(&["From"])?;
        let from =
            PhoneNumber::parse(from_raw, region).map_err(|e| WebhookError::InvalidField {
                field: "From",
                reason: e.to_string(),
            })?;
        let to = w.required(&["To"])?.to_owned();
        let num_media: usize = match w.param("NumMedia") {
            None => 0,
            Some(n) => n.parse().ok().filter(|n| *n <= MAX_MEDIA).ok_or_else(|| {
                WebhookError::InvalidField {
                    field: "NumMedia",
                    reason: format!("expected 0 to {MAX_MEDIA}, got {n:?}"),
                }
            })?,
        };
        let media = (0..num_media)
            .filter_map(|i| {
                w.param(&format!("MediaUrl{i}")).map(|url| Media {
                    url: url.to_owned(),
                    content_type: w.param(&format!("MediaContentType{i}")).map(str::to_owned),
                })
            })
            .collect();
        let owned = |name: &str| w.param(name).map(str::to_owned);
        Ok(Self {
            message_sid,
            from,
            to,
            wa_id: owned("WaId"),
            profile_name: owned("ProfileName"),
            body: w.param("Body").unwrap_or_default().to_owned(),
            media,
            button_payload: owned("ButtonPayload"),
            button_text: owned("ButtonText"),
        })
    }

    /// The text a consent keyword is read from: the body, or a quick-reply button's payload.
    fn keyword_text(&self) -> &str {
        if self.body.trim().is_empty() {
            self.button_payload.as_deref().unwrap_or_default()
        } else {
            &self.body
        }
    }
}

/// What an inbound webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundOutcome {
    /// The same message was delivered before: nothing was written.
    pub duplicate: bool,
    /// `(from, to)` when a keyword changed the user's consent.
    pub consent_change: Option<(Consent, Consent)>,
}

/// Stores the raw request, the normalized message, the user and any consent
/// change in one transaction.
#[tracing::instrument(skip_all, fields(message_sid))]
pub async fn record(
    db: &PgPool,
    w: &VerifiedWebhook,
    keywords: &ConsentKeywords,
    region: Option<Region>,
) -> Result<InboundOutcome, WebhookError> {
    let message = InboundMessage::from_webhook(w, region)?;
    tracing::Span::current().record("message_sid", message.message_sid.as_str());
    let params = w.params_json();
    let event = w.event(
        "inbound",
        &message.message_sid,
        &message.message_sid,
        &params,
    );

    let mut tx = db.begin().await?;
    let Some(event_id) = webhook_events::insert(&mut *tx, &event).await? else {
        tracing::info!("duplicate inbound webhook ignored");
        return Ok(InboundOutcome {
            duplicate: true,
            consent_change: None,
        });
    };
    inbound_messages::insert(&mut *tx, event_id, &message).await?;
    users::record_inbound(
        &mut *tx,
        &message.from,
        message.wa_id.as_deref(),
        message.profile_name.as_deref(),
        Utc::now(),
    )
    .await?;
    let mut consent_change = None;
    if let Some(to) = keywords.classify(message.keyword_text()) {
        let change = ConsentChange {
            to,
            source: ConsentSource::Keyword,
            webhook_event_id: Some(event_id),
            import_id: None,
            detail: Some(message.keyword_text().trim()),
        };
        if let Some(from) = users::set_consent(&mut *tx, message.from.as_str(), change).await? {
            consent_change = Some((from, to));
        }
    }
    tx.commit().await?;
    tracing::info!(phone = %message.from, consent_change = ?consent_change, "inbound message stored");
    Ok(InboundOutcome {
        duplicate: false,
        consent_change,
    })
}
