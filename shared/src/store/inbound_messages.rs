//! `inbound_messages`: what users wrote to us, normalized.

use serde::Serialize;
use sqlx::PgExecutor;

use crate::domain::PhoneNumber;

/// An inbound WhatsApp message, normalized from Twilio's parameters
/// (`webhooks::inbound` reads it from the webhook).
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

#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    webhook_event_id: i64,
    m: &InboundMessage,
) -> Result<(), sqlx::Error> {
    let media = serde_json::to_value(&m.media).expect("media serializes");
    sqlx::query!(
        "insert into inbound_messages
             (webhook_event_id, message_sid, from_number, to_number, wa_id, profile_name,
              body, num_media, media, button_payload, button_text)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (message_sid) do nothing",
        webhook_event_id,
        &m.message_sid,
        m.from.as_str(),
        &m.to,
        m.wa_id.as_deref(),
        m.profile_name.as_deref(),
        &m.body,
        m.media.len() as i32,
        media,
        m.button_payload.as_deref(),
        m.button_text.as_deref()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An inbound message as the API lists it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct InboundRecord {
    pub id: i64,
    pub message_sid: String,
    pub from_number: String,
    pub to_number: String,
    pub profile_name: Option<String>,
    pub body: String,
    pub num_media: i32,
    #[schema(value_type = Object)]
    pub media: serde_json::Value,
    pub button_payload: Option<String>,
    pub button_text: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The raw webhook it was read from.
    pub webhook_event_id: i64,
}

/// Filters of the inbound list.
#[derive(Debug, Clone, Default)]
pub struct InboundFilter<'a> {
    pub from_number: Option<&'a str>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The sort key of the inbound list: newest first.
pub type ListKey = i64;

#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: InboundFilter<'_>,
    after: Option<ListKey>,
    limit: i64,
) -> Result<Vec<InboundRecord>, sqlx::Error> {
    sqlx::query_as!(
        InboundRecord,
        "select id, message_sid, from_number, to_number, profile_name, body, num_media, media,
                button_payload, button_text, received_at, webhook_event_id
         from inbound_messages
         where ($1::text is null or from_number = $1)
           and ($2::timestamptz is null or received_at >= $2)
           and ($3::bigint is null or id < $3)
         order by id desc
         limit $4",
        filter.from_number,
        filter.since,
        after,
        limit
    )
    .fetch_all(db)
    .await
}
