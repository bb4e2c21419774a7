//! `users`, and the `consent_events` written with every consent change.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{Consent, ConsentSource, PhoneNumber};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub phone_number: String,
    pub attributes: serde_json::Value,
    pub consent: String,
    pub consent_changed_at: Option<DateTime<Utc>>,
    pub consent_source: Option<String>,
    pub wa_id: Option<String>,
    pub profile_name: Option<String>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn get(db: impl PgExecutor<'_>, phone: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("select * from users where phone_number = $1")
        .bind(phone)
        .fetch_optional(db)
        .await
}

/// Creates the user on first contact (consent `unknown`) and opens the 24-hour
/// window: `last_inbound_at` only ever moves forward, whatever order messages arrive in.
#[tracing::instrument(skip_all)]
pub async fn record_inbound(
    db: impl PgExecutor<'_>,
    phone: &PhoneNumber,
    wa_id: Option<&str>,
    profile_name: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into users (phone_number, wa_id, profile_name, last_inbound_at)
         values ($1, $2, $3, $4)
         on conflict (phone_number) do update set
             wa_id = coalesce(excluded.wa_id, users.wa_id),
             profile_name = coalesce(excluded.profile_name, users.profile_name),
             last_inbound_at = greatest(users.last_inbound_at, excluded.last_inbound_at)",
    )
    .bind(phone.as_str())
    .bind(wa_id)
    .bind(profile_name)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// Where a consent change came from, for its `consent_events` row.
#[derive(Debug, Clone, Copy)]
pub struct ConsentChange<'a> {
    pub to: Consent,
    pub source: ConsentSource,
    pub webhook_event_id: Option<i64>,
    pub import_id: Option<uuid::Uuid>,
    pub detail: Option<&'a str>,
}

/// Sets an existing user's consent and records the change in one statement.
/// Returns the previous consent when it changed; `None` when the user is
/// unknown or already had that consent (then nothing is written).
#[tracing::instrument(skip_all, fields(to = %change.to, source = change.source.as_str()))]
pub async fn set_consent(
    db: impl PgExecutor<'_>,
    phone: &str,
    change: ConsentChange<'_>,
) -> Result<Option<Consent>, sqlx::Error> {
    let previous: Option<String> = sqlx::query_scalar(
        "with prev as (
             select phone_number, consent from users where phone_number = $1 for update
         ), changed as (
             update users u set consent = $2, consent_changed_at = now(), consent_source = $3
             from prev
             where u.phone_number = prev.phone_number and prev.consent <> $2
             returning prev.consent as from_consent
         )
         insert into consent_events (phone_number, from_consent, to_consent, source, webhook_event_id, import_id, detail)
         select $1, from_consent, $2, $3, $4, $5, $6 from changed
         returning from_consent",
    )
    .bind(phone)
    .bind(change.to.as_str())
    .bind(change.source.as_str())
    .bind(change.webhook_event_id)
    .bind(change.import_id)
    .bind(change.detail)
    .fetch_optional(db)
    .await?;
    Ok(previous.map(|p| {
        p.parse()
            .expect("users.consent is constrained to valid values")
    }))
}
