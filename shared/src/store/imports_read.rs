//! Read-only queries on `imports` and `import_rejects`, for the API.
//! (The ingest function writes them through `store::imports`.)

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

/// One import as the API shows it: the row the ingest function keeps.
pub type ImportRecord = super::imports::Import;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct ImportReject {
    pub line_number: i64,
    /// The line as read (truncated by the importer).
    pub raw_line: String,
    pub reason: String,
}

/// The sort key of the import list: newest first.
pub type ListKey = (DateTime<Utc>, Uuid);

/// The columns of a row, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, bucket, object, generation, state, failure_reason, format, size_bytes, bytes_read,
    rows_read, inserted, updated, unchanged, duplicates, consent_kept, rejected, attempts, started_at,
    finished_at, updated_at"
    };
}

#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    after: Option<ListKey>,
    limit: i64,
) -> Result<Vec<ImportRecord>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from imports
         where $1::timestamptz is null or (started_at, id) < ($1, $2)
         order by started_at desc, id desc
         limit $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ImportRecord>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from imports where id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The first `limit` rejected lines of an import, by line number.
#[tracing::instrument(skip_all)]
pub async fn rejects(
    db: impl PgExecutor<'_>,
    import_id: Uuid,
    limit: i64,
) -> Result<Vec<ImportReject>, sqlx::Error> {
    sqlx::query_as(
        "select line_number, raw_line, reason from import_rejects
         where import_id = $1 order by line_number, id limit $2",
    )
    .bind(import_id)
    .bind(limit)
    .fetch_all(db)
    .await
}
