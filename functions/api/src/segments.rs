//! `/v1/segments`: stored segment definitions, and a preview of who a definition matches.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::domain::phone::mask;
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::segment::Segment;
use shared::store::segments::{self as store, SegmentFields, SegmentRecord};
use shared::store::users;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::db::{Known, OrDb};
use crate::extract::{ApiJson, ApiPath, ApiQuery, check_name, nullable};
use crate::openapi::ErrorBody;

const NAME_TAKEN: Known = Known::conflict(
    "segments_name_key",
    "name",
    "a segment with this name exists",
);
const IN_USE: Known = Known::conflict(
    "campaigns_segment_id_fkey",
    "id",
    "the segment is used by campaigns",
);

/// How many users a preview shows.
pub const PREVIEW_SAMPLE: i64 = 20;

/// A definition the DSL accepts; 422 naming the JSON path of the problem otherwise.
pub fn parse_definition(definition: &Value) -> Result<Segment, ApiError> {
    Segment::parse(definition).map_err(|e| ApiError::unprocessable("definition", e.to_string()))
}

/// List segments, newest first.
#[utoipa::path(
    get, path = "/v1/segments", tag = "segments",
    params(PageParams),
    responses(
        (status = 200, body = Page<SegmentRecord>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<SegmentRecord>>, ApiError> {
    let limit = page.limit()?;
    let rows = store::list(&state.db, page.after()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |s| (s.created_at, s.id))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSegment {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    pub description: Option<String>,
    /// The segment DSL, e.g. `{"all": [{"attribute": "plan", "eq": "pro"}]}`.
    #[schema(value_type = Object, example = json!({"all": [{"attribute": "plan", "eq": "gold"}]}))]
    pub definition: Value,
}

/// Create a segment.
#[utoipa::path(
    post, path = "/v1/segments", tag = "segments",
    request_body = CreateSegment,
    responses(
        (status = 201, body = SegmentRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateSegment>,
) -> Result<(StatusCode, Json<SegmentRecord>), ApiError> {
    check_name(&req.name)?;
    parse_definition(&req.definition)?;
    let fields = SegmentFields {
        name: &req.name,
        description: req.description.as_deref(),
        definition: &req.definition,
    };
    let segment = store::insert(&state.db, fields)
        .await
        .or_db(&[NAME_TAKEN])?;
    Ok((StatusCode::CREATED, Json(segment)))
}

/// Get a segment.
#[utoipa::path(
    get, path = "/v1/segments/{id}", tag = "segments",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = SegmentRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SegmentRecord>, ApiError> {
    Ok(Json(find(&state, id).await?))
}

async fn find(state: &AppState, id: Uuid) -> Result<SegmentRecord, ApiError> {
    store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no segment with this id"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSegment {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
}

/// Change a segment's name, description or definition.
#[utoipa::path(
    patch, path = "/v1/segments/{id}", tag = "segments",
    params(("id" = Uuid, Path)),
    request_body = PatchSegment,
    responses(
        (status = 200, body = SegmentRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchSegment>,
) -> Result<Json<SegmentRecord>, ApiError> {
    let current = find(&state, id).await?;
    let name = req.name.unwrap_or(current.name);
    let description = req.description.unwrap_or(current.description);
    let definition = req.definition.unwrap_or(current.definition);
    check_name(&name)?;
    parse_definition(&definition)?;
    let fields = SegmentFields {
        name: &name,
        description: description.as_deref(),
        definition: &definition,
    };
    store::update(&state.db, id, fields)
        .await
        .or_db(&[NAME_TAKEN])?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no segment with this id"))
}

/// Delete a segment that no campaign uses.
#[utoipa::path(
    delete, path = "/v1/segments/{id}", tag = "segments",
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    if store::delete(&state.db, id).await.or_db(&[IN_USE])? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no segment with this id"))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    #[schema(value_type = Object, example = json!({"field": "consent", "eq": "opted_in"}))]
    pub definition: Value,
}

/// A user in a preview, with the number masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleUser {
    /// Masked: `+1415*****71`.
    pub phone_number: String,
    pub consent: String,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub last_inbound_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Users the definition matches now.
    pub count: i64,
    /// Up to 20 of them, by phone number.
    pub sample: Vec<SampleUser>,
}

/// How many users a definition matches, with a sample.
#[utoipa::path(
    post, path = "/v1/segments/preview", tag = "segments",
    request_body = PreviewRequest,
    responses(
        (status = 200, body = Preview),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn preview(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    let segment = parse_definition(&req.definition)?;
    let count = users::count_matching(&state.db, &segment)
        .await
        .or_db(&[])?;
    let sample = users::list_page(&state.db, None, Some(&segment), None, PREVIEW_SAMPLE)
        .await
        .or_db(&[])?
        .into_iter()
        .map(|u| SampleUser {
            phone_number: mask(&u.phone_number),
            consent: u.consent.as_str().to_owned(),
            attributes: u.attributes,
            last_inbound_at: u.last_inbound_at,
        })
        .collect();
    Ok(Json(Preview { count, sample }))
}
