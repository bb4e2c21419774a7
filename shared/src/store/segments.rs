//! `segments`: named, stored segment definitions (the DSL of DESIGN §4).

use crate::store::PageKey;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct SegmentRecord {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// The segment DSL: `all` / `any` / `not` nodes over conditions.
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an operator writes; the definition is validated before it gets here.
#[derive(Debug, Clone, Copy)]
pub struct SegmentFields<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub definition: &'a serde_json::Value,
}

#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    s: SegmentFields<'_>,
) -> Result<SegmentRecord, sqlx::Error> {
    sqlx::query_as!(
        SegmentRecord,
        "insert into segments (name, description, definition) values ($1, $2, $3) returning *",
        s.name,
        s.description,
        s.definition
    )
    .fetch_one(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<SegmentRecord>, sqlx::Error> {
    sqlx::query_as!(SegmentRecord, "select * from segments where id = $1", id)
        .fetch_optional(db)
        .await
}

/// Up to `limit` segments after `after`, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    after: Option<PageKey>,
    limit: i64,
) -> Result<Vec<SegmentRecord>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        SegmentRecord,
        "select * from segments
         where $1::timestamptz is null or (created_at, id) < ($1, $2)
         order by created_at desc, id desc
         limit $3",
        at,
        id,
        limit
    )
    .fetch_all(db)
    .await
}

/// Replaces every field; `None` when there is no such segment.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    s: SegmentFields<'_>,
) -> Result<Option<SegmentRecord>, sqlx::Error> {
    sqlx::query_as!(
        SegmentRecord,
        "update segments set name = $2, description = $3, definition = $4
         where id = $1 returning *",
        id,
        s.name,
        s.description,
        s.definition
    )
    .fetch_optional(db)
    .await
}

/// Deletes a segment no campaign uses (`campaigns_segment_id_fkey` otherwise);
/// `false` when there was none.
#[tracing::instrument(skip_all)]
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("delete from segments where id = $1", id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
