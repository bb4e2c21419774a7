//! `console_cache`: figures the console computes from many rows, kept with
//! when they were computed (see `functions/api/src/console/cache.rs`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

/// The stored value of `key` and when it was computed.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    key: &str,
) -> Result<Option<(Value, DateTime<Utc>)>, sqlx::Error> {
    let row = sqlx::query!(
        "select value, computed_at from console_cache where key = $1",
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.value, r.computed_at)))
}

/// Drops figures nobody has needed recomputed for a day (a list's progress
/// under an old set of campaigns, a segment since edited): they would only
/// be read again by the key that wrote them, and that key recomputes anyway.
#[tracing::instrument(skip_all)]
pub async fn sweep(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let swept =
        sqlx::query!("delete from console_cache where computed_at < now() - interval '1 day'")
            .execute(db)
            .await?;
    Ok(swept.rows_affected())
}

/// Stores `value` for `key`, computed now.
#[tracing::instrument(skip_all)]
pub async fn put(db: impl PgExecutor<'_>, key: &str, value: &Value) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into console_cache (key, value, computed_at) values ($1, $2, now())
         on conflict (key) do update set value = excluded.value, computed_at = excluded.computed_at",
        key,
        value
    )
    .execute(db)
    .await?;
    Ok(())
}
