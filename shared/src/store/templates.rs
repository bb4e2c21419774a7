//! `templates`: message bodies and Twilio Content API references.

use crate::store::PageKey;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct TemplateRecord {
    pub id: Uuid,
    pub name: String,
    /// A minijinja template (`{first_name}` also accepted), for sessions inside the 24-hour window.
    pub body: Option<String>,
    /// An approved WhatsApp template (`HX…`), for messages outside the window.
    pub content_sid: Option<String>,
    /// The template's variables (`{"1": "{{ first_name }}"}`), rendered per user.
    #[schema(value_type = Option<Object>)]
    pub content_variables: Option<serde_json::Value>,
    pub locale: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an operator writes; validated before it gets here.
#[derive(Debug, Clone, Copy)]
pub struct TemplateFields<'a> {
    pub name: &'a str,
    pub body: Option<&'a str>,
    pub content_sid: Option<&'a str>,
    pub content_variables: Option<&'a serde_json::Value>,
    pub locale: &'a str,
}

#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    t: TemplateFields<'_>,
) -> Result<TemplateRecord, sqlx::Error> {
    sqlx::query_as!(
        TemplateRecord,
        "insert into templates (name, body, content_sid, content_variables, locale)
         values ($1, $2, $3, $4, $5) returning *",
        t.name,
        t.body,
        t.content_sid,
        t.content_variables,
        t.locale
    )
    .fetch_one(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<TemplateRecord>, sqlx::Error> {
    sqlx::query_as!(TemplateRecord, "select * from templates where id = $1", id)
        .fetch_optional(db)
        .await
}

/// Up to `limit` templates after `after`, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    after: Option<PageKey>,
    limit: i64,
) -> Result<Vec<TemplateRecord>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        TemplateRecord,
        "select * from templates
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

/// A campaign that is sending (or may resume sending) with the template, when
/// one is: such a template is frozen, so every recipient of a campaign gets
/// the text it launched with.
pub async fn live_campaign_using(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let row = sqlx::query!(
        "select id, state from campaigns
         where template_id = $1 and state in ('scheduled', 'running', 'paused')
         order by created_at limit 1",
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.state)))
}

/// Replaces every field; `None` when there is no such template.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    t: TemplateFields<'_>,
) -> Result<Option<TemplateRecord>, sqlx::Error> {
    sqlx::query_as!(
        TemplateRecord,
        "update templates set name = $2, body = $3, content_sid = $4, content_variables = $5, locale = $6
         where id = $1 returning *",
        id,
        t.name,
        t.body,
        t.content_sid,
        t.content_variables,
        t.locale
    )
    .fetch_optional(db)
    .await
}

/// Deletes a template no campaign uses (`campaigns_template_id_fkey` otherwise);
/// `false` when there was none.
#[tracing::instrument(skip_all)]
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("delete from templates where id = $1", id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
