//! `inbound_messages`: what users wrote to us, normalized.

use sqlx::PgExecutor;

use crate::webhooks::inbound::InboundMessage;

#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    webhook_event_id: i64,
    m: &InboundMessage,
) -> Result<(), sqlx::Error> {
    let media = serde_json::to_value(&m.media).expect("media serializes");
    sqlx::query(
        "insert into inbound_messages
             (webhook_event_id, message_sid, from_number, to_number, wa_id, profile_name,
              body, num_media, media, button_payload, button_text)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (message_sid) do nothing",
    )
    .bind(webhook_event_id)
    .bind(&m.message_sid)
    .bind(m.from.as_str())
    .bind(&m.to)
    .bind(&m.wa_id)
    .bind(&m.profile_name)
    .bind(&m.body)
    .bind(m.media.len() as i32)
    .bind(media)
    .bind(&m.button_payload)
    .bind(&m.button_text)
    .execute(db)
    .await?;
    Ok(())
}
