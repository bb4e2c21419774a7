//! Rows the webhook tests need before Twilio can call about them.

use sqlx::PgPool;
use uuid::Uuid;

/// A running campaign over an everyone segment, ready to own messages.
pub async fn campaign(db: &PgPool) -> Uuid {
    let name = format!("fixture-{}", Uuid::new_v4());
    sqlx::query_scalar(
        "with s as (insert into segments (name, definition) values ($1, '{\"all\": []}') returning id),
              t as (insert into templates (name, body) values ($1, 'Hello {{ first_name }}') returning id)
         insert into campaigns (name, segment_id, template_id, state)
         select $1, s.id, t.id, 'running' from s, t
         returning id",
    )
    .bind(name)
    .fetch_one(db)
    .await
    .expect("insert fixture campaign")
}

/// A message for `phone` in `status`, with a Twilio SID when given.
pub async fn message(
    db: &PgPool,
    campaign: Uuid,
    phone: &str,
    status: &str,
    sid: Option<&str>,
) -> Uuid {
    let rank = status
        .parse::<shared::domain::MessageStatus>()
        .expect("fixture status is valid")
        .rank();
    sqlx::query_scalar(
        "insert into messages (campaign_id, phone_number, status, status_rank, twilio_sid, body)
         values ($1, $2, $3, $4, $5, 'Hello') returning id",
    )
    .bind(campaign)
    .bind(phone)
    .bind(status)
    .bind(rank)
    .bind(sid)
    .fetch_one(db)
    .await
    .expect("insert fixture message")
}

/// `n` messages in `sending` with SIDs `{prefix}{i}`, inserted set-based.
pub async fn sending_messages(
    db: &PgPool,
    campaign: Uuid,
    prefix: &str,
    n: i64,
) -> Result<(), sqlx::Error> {
    sending_messages_to(db, campaign, prefix, n, "+1415").await
}

/// As [`sending_messages`], to the numbers `{area}` followed by `i` in 7 digits.
pub async fn sending_messages_to(
    db: &PgPool,
    campaign: Uuid,
    prefix: &str,
    n: i64,
    area: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into messages (campaign_id, phone_number, status, status_rank, twilio_sid, body)
         select $1, $4 || lpad(i::text, 7, '0'), 'sending', 2, $2 || i, 'Hello'
         from generate_series(0, $3 - 1) as i",
    )
    .bind(campaign)
    .bind(prefix)
    .bind(n)
    .bind(area)
    .execute(db)
    .await?;
    Ok(())
}
