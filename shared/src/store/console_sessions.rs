//! `console_sessions`: who is signed in to the operator console. The cookie
//! carries a random token; only its SHA-256 is stored.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// The SHA-256 hex of the API key that signed in (as configured in `API_KEYS`).
    pub key_hash: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session, and drops every expired one while it is at it.
#[tracing::instrument(skip_all)]
pub async fn open(
    db: &sqlx::PgPool,
    token_hash: &[u8],
    key_hash: &str,
    csrf_token: &str,
    lifetime_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from console_sessions where expires_at < now()")
        .execute(db)
        .await?;
    sqlx::query!(
        "insert into console_sessions (token_hash, key_hash, csrf_token, expires_at)
         values ($1, $2, $3, now() + make_interval(secs => $4))",
        token_hash,
        key_hash,
        csrf_token,
        lifetime_secs
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The unexpired session with this token hash.
#[tracing::instrument(skip_all)]
pub async fn find(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<ConsoleSession>, sqlx::Error> {
    sqlx::query_as!(
        ConsoleSession,
        "select key_hash, csrf_token, expires_at from console_sessions
         where token_hash = $1 and expires_at > now()",
        token_hash
    )
    .fetch_optional(db)
    .await
}

/// Signs out: the token is worth nothing afterwards.
#[tracing::instrument(skip_all)]
pub async fn close(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from console_sessions where token_hash = $1",
        token_hash
    )
    .execute(db)
    .await?;
    Ok(())
}
