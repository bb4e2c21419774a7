//! `/v1/imports`: the user files analysts dropped in the bucket, and what became of them.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::store::imports::{self as store, ImportRecord, ImportReject};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::ErrorBody;

/// How many rejected lines an import shows.
pub const REJECTS_SHOWN: i64 = 100;

/// List imports, newest first.
#[utoipa::path(
    get, path = "/v1/imports", tag = "imports",
    params(PageParams),
    responses(
        (status = 200, body = Page<ImportRecord>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<ImportRecord>>, ApiError> {
    let limit = page.limit()?;
    let rows = store::list(&state.db, page.after()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |i| (i.started_at, i.id))))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportDetail {
    /// The import with its counts.
    pub import: ImportRecord,
    /// The first 100 rejected lines, by line number (`import.rejected` counts them all).
    pub rejects: Vec<ImportReject>,
}

/// Get an import with its counts and first rejected lines.
#[utoipa::path(
    get, path = "/v1/imports/{id}", tag = "imports",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ImportDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ImportDetail>, ApiError> {
    let import = store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no import with this id"))?;
    let rejects = store::rejects(&state.db, id, REJECTS_SHOWN).await?;
    Ok(Json(ImportDetail { import, rejects }))
}
