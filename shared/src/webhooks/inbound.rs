//! `POST /webhooks/inbound`: a user wrote to our WhatsApp sender.

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;

use super::{VerifiedWebhook, WebhookError};
use crate::domain::event::MESSAGE_RECEIVED;
use crate::domain::{Consent, ConsentKeywords, ConsentSource, PhoneNumber, Region, Topic};
use crate::domain::{EventName, EventSource};
use crate::engine::triggers::{self, StoredEvent};
use crate::store::events::{self, NewEvent};
use crate::store::inbound_messages::{self, InboundMessage, Media};
use crate::store::users::ConsentChange;
use crate::store::{users, webhook_events};

/// Twilio sends at most 10 media items per message.
const MAX_MEDIA: usize = 10;

impl InboundMessage {
    /// The message, and what did not parse but was read anyway (kept on the
    /// raw event as its `parse_error`). `Err` when the message cannot be read
    /// at all (no SID, no usable sender).
    pub fn from_webhook(
        w: &VerifiedWebhook,
        region: Option<Region>,
    ) -> Result<(Self, Vec<String>), WebhookError> {
        let mut notes = vec![];
        let message_sid = w
            .required(&["MessageSid", "SmsMessageSid", "SmsSid"])?
            .to_owned();
        let from_raw = w.required(&["From"])?;
        let from = match PhoneNumber::parse(from_raw, region) {
            Ok(p) => p,
            Err(e) => {
                // Twilio routed it to us, so the sender exists: the E.164 shape is enough.
                let p = PhoneNumber::parse_shape(from_raw).ok_or(WebhookError::InvalidField {
                    field: "From",
                    reason: e.to_string(),
                })?;
                notes.push(format!("From: {e}; kept by its E.164 shape"));
                p
            }
        };
        let to = w.param("To").unwrap_or_default().to_owned();
        let num_media: usize = match w.param("NumMedia") {
            None => 0,
            Some(n) => n
                .parse()
                .ok()
                .filter(|n| *n <= MAX_MEDIA)
                .unwrap_or_else(|| {
                    notes.push(format!(
                        "NumMedia: expected 0 to {MAX_MEDIA}, got {n:?}; read as 0"
                    ));
                    0
                }),
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
        let message = Self {
            message_sid,
            from,
            to,
            wa_id: owned("WaId"),
            profile_name: owned("ProfileName"),
            body: w.param("Body").unwrap_or_default().to_owned(),
            media,
            button_payload: owned("ButtonPayload"),
            button_text: owned("ButtonText"),
        };
        Ok((message, notes))
    }

    /// The consent a keyword asks for, the text it was read from, and whether
    /// the person typed it or tapped a quick-reply button (whose payload is
    /// read first, then its label, which Twilio sends as the body).
    fn keyword(&self, keywords: &ConsentKeywords) -> Option<(Consent, &str, ConsentSource)> {
        match self.button_payload.as_deref() {
            Some(payload) => [payload, self.body.as_str()]
                .into_iter()
                .find_map(|t| keywords.classify(t).map(|c| (c, t, ConsentSource::Button))),
            None => keywords
                .classify(&self.body)
                .map(|c| (c, self.body.as_str(), ConsentSource::Keyword)),
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
    /// The consent a keyword (or button) asked for, changed or not.
    pub keyword: Option<Consent>,
    /// The request was kept raw only: why it could not be read.
    pub unreadable: Option<String>,
}

/// Stores the raw request first, then the normalized message, the user and
/// any consent change, in one transaction. A request that cannot be read is
/// kept raw with the reason (answered 2xx: Twilio would not retry a 4xx, and
/// nothing would be gained).
#[tracing::instrument(skip_all, fields(message_sid))]
pub async fn record(
    db: &PgPool,
    w: &VerifiedWebhook,
    keywords: &ConsentKeywords,
    region: Option<Region>,
) -> Result<InboundOutcome, WebhookError> {
    let sid = w
        .required(&["MessageSid", "SmsMessageSid", "SmsSid"])
        .ok()
        .map(str::to_owned);
    if let Some(sid) = &sid {
        tracing::Span::current().record("message_sid", sid.as_str());
    }
    let dedupe_key = sid.clone().unwrap_or_else(|| w.body_digest());
    let params = w.params_json();
    let event = w.event("inbound", &dedupe_key, sid.as_deref(), &params);

    let mut tx = db.begin().await?;
    let Some(event_id) = webhook_events::insert(&mut *tx, &event).await? else {
        tracing::info!("duplicate inbound webhook ignored");
        return Ok(InboundOutcome {
            duplicate: true,
            consent_change: None,
            keyword: None,
            unreadable: None,
        });
    };
    let (message, notes) = match InboundMessage::from_webhook(w, region) {
        Ok(read) => read,
        Err(e) => {
            let reason = e.to_string();
            webhook_events::flag(&mut *tx, event_id, &reason).await?;
            tx.commit().await?;
            tracing::warn!(error = %reason, "inbound webhook kept raw: it cannot be read");
            return Ok(InboundOutcome {
                duplicate: false,
                consent_change: None,
                keyword: None,
                unreadable: Some(reason),
            });
        }
    };
    if !notes.is_empty() {
        webhook_events::flag(&mut *tx, event_id, &notes.join("; ")).await?;
    }
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
    let asked = message.keyword(keywords);
    let keyword = asked.map(|(to, _, _)| to);
    if let Some((to, text, source)) = asked {
        let change = ConsentChange {
            to,
            source,
            webhook_event_id: Some(event_id),
            import_id: None,
            detail: Some(text.trim()),
        };
        if let Some(from) = users::set_consent(&mut *tx, message.from.as_str(), change)
            .await?
            .changed_from()
        {
            consent_change = Some((from, to));
        }
    } else if let Some((topic, subscribed)) = message
        .button_payload
        .as_deref()
        .and_then(Topic::from_payload)
    {
        // A quick-reply button that leaves or rejoins one topic.
        users::set_topic(
            &mut *tx,
            message.from.as_str(),
            &topic,
            subscribed,
            ConsentSource::Button,
            Some(event_id),
        )
        .await?;
    }
    // The message is an event too, so a reply can trigger a follow-up.
    let received = NewEvent {
        idempotency_key: format!("inbound:{}", message.message_sid),
        phone_number: message.from.clone(),
        name: EventName::parse(MESSAGE_RECEIVED).expect("a valid event name"),
        properties: json!({
            "message_sid": message.message_sid,
            "body": message.body,
            "keyword": keyword.map(Consent::as_str),
            "button_payload": message.button_payload,
            "button_text": message.button_text,
            "num_media": message.media.len(),
        }),
        occurred_at: Utc::now(),
        source: EventSource::Inbound,
    };
    let ids = events::insert_batch(&mut *tx, std::slice::from_ref(&received)).await?;
    // A reply can start a triggered campaign's follow-up (or cancel a waiting
    // message). Its messages wait for the fan-out's next tick: this webhook
    // answers Twilio and publishes nothing.
    if let Some(id) = ids.first().copied().flatten() {
        let stored = StoredEvent::new(&received, id);
        triggers::fire(&mut tx, std::slice::from_ref(&stored), Utc::now()).await?;
    }
    tx.commit().await?;
    tracing::info!(phone = %message.from, consent_change = ?consent_change, "inbound message stored");
    Ok(InboundOutcome {
        duplicate: false,
        consent_change,
        keyword,
        unreadable: None,
    })
}
