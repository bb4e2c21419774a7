//! Storage functions, one module per table (with submodules by use where a
//! table has many: `messages::{outbox, dispatch, reconcile}`). Each takes an
//! executor (a pool, a connection or a transaction) so callers decide the
//! transaction.
//!
//! Fixed queries are `sqlx::query!` macros, checked at compile time against
//! the query data in `.sqlx/` (`scripts/sqlx-check` keeps it true to the
//! migrations). Checked at run time instead, on purpose: SQL built per
//! request (the segment compiler, the user list, a triggered campaign's audience), the import merge over the
//! session's staging table (`pg_temp.import_rows` exists only inside the
//! import's session), the erasure sweep (composed per table from one
//! pattern), and the webhook-event insert that `webhook_events::insert` and
//! `messages::apply_status_callback` share (one text, composed; the macros
//! take only a literal).

pub mod campaigns;
pub mod console;
pub mod console_cache;
pub mod console_sessions;
pub mod events;
pub mod imports;
pub mod inbound_messages;
pub mod messages;
pub mod segments;
pub mod templates;
pub mod triggers;
mod types;
pub mod users;
pub mod webhook_events;

/// Where a newest-first page starts: after the row with this timestamp
/// (`created_at`, or `started_at` for imports) and id. The lists read
/// `where ($n::timestamptz is null or (created_at, id) < ($n, $n+1))
/// order by created_at desc, id desc`, so a page never repeats or skips a row
/// when rows are inserted between requests.
pub type PageKey = (chrono::DateTime<chrono::Utc>, uuid::Uuid);

/// Whether a JSON value holds the NUL character (in a key or a string), which
/// PostgreSQL's `text` and `jsonb` cannot store: callers refuse it up front,
/// naming the field, rather than let the statement fail.
pub fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
