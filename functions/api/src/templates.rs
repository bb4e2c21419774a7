//! `/v1/templates`: message templates, and rendering one for a user or for attributes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::store::templates::{self as store, TemplateFields, TemplateRecord};
use shared::store::users;
use shared::template::{RenderError, Template, TemplateError, user_context};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::db::{Known, OrDb};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::extract::{check_name, nullable};
use crate::openapi::ErrorBody;
use crate::users::parse_phone;

const NAME_TAKEN: Known = Known::conflict(
    "templates_name_key",
    "name",
    "a template with this name exists",
);
const NO_CONTENT: Known = Known::invalid(
    "templates_has_content",
    "body",
    "a template needs a body or a content_sid",
);
const IN_USE: Known = Known::conflict(
    "campaigns_template_id_fkey",
    "id",
    "the template is used by campaigns",
);

/// Checks a template as the sender will read it; 422 naming the field otherwise.
fn validate(t: &TemplateFields<'_>) -> Result<Template, ApiError> {
    check_name(t.name)?;
    if let Some(sid) = t.content_sid {
        let ok = sid.len() == 34
            && sid.starts_with("HX")
            && sid[2..].chars().all(|c| c.is_ascii_hexdigit());
        if !ok {
            return Err(ApiError::unprocessable(
                "content_sid",
                "content_sid must be a Twilio Content SID: HX and 32 hex digits",
            ));
        }
    }
    if t.content_variables.is_some() && t.content_sid.is_none() {
        return Err(ApiError::unprocessable(
            "content_variables",
            "content_variables need a content_sid",
        ));
    }
    let locale = t.locale;
    if locale.is_empty()
        || locale.len() > 35
        || !locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::unprocessable(
            "locale",
            "locale must be a language tag such as en or pt_BR",
        ));
    }
    Template::new(t.body, t.content_sid, t.content_variables).map_err(|e| match &e {
        TemplateError::Empty => ApiError::unprocessable("body", e.to_string()),
        TemplateError::Syntax { field, .. } => ApiError::unprocessable(field, e.to_string()),
        TemplateError::ContentVariables => {
            ApiError::unprocessable("content_variables", e.to_string())
        }
    })
}

/// List templates, newest first.
#[utoipa::path(
    get, path = "/v1/templates", tag = "templates",
    params(PageParams),
    responses(
        (status = 200, body = Page<TemplateRecord>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<TemplateRecord>>, ApiError> {
    let limit = page.limit()?;
    let rows = store::list(&state.db, page.after()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |t| (t.created_at, t.id))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Text with `{{ variable }}` (or `{variable}`) placeholders; needed inside the 24-hour window.
    #[schema(example = "Hi {first_name}, your order shipped")]
    pub body: Option<String>,
    /// An approved Twilio Content template (`HX…`), needed outside the window.
    #[schema(
        example = "HX0123456789abcdef0123456789abcdef",
        pattern = "^HX[0-9a-fA-F]{32}$"
    )]
    pub content_sid: Option<String>,
    /// The content template's variables, each a template: `{"1": "{{ first_name }}"}`.
    #[schema(value_type = Option<Object>)]
    pub content_variables: Option<Map<String, Value>>,
    /// Default `en`.
    pub locale: Option<String>,
}

/// Create a template.
#[utoipa::path(
    post, path = "/v1/templates", tag = "templates",
    request_body = CreateTemplate,
    responses(
        (status = 201, body = TemplateRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateTemplate>,
) -> Result<(StatusCode, Json<TemplateRecord>), ApiError> {
    let content_variables = req.content_variables.map(Value::Object);
    let fields = TemplateFields {
        name: &req.name,
        body: req.body.as_deref(),
        content_sid: req.content_sid.as_deref(),
        content_variables: content_variables.as_ref(),
        locale: req.locale.as_deref().unwrap_or("en"),
    };
    validate(&fields)?;
    let template = store::insert(&state.db, fields)
        .await
        .or_db(&[NAME_TAKEN, NO_CONTENT])?;
    Ok((StatusCode::CREATED, Json(template)))
}

async fn find(state: &AppState, id: Uuid) -> Result<TemplateRecord, ApiError> {
    store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no template with this id"))
}

/// Get a template.
#[utoipa::path(
    get, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = TemplateRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TemplateRecord>, ApiError> {
    Ok(Json(find(&state, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTemplate {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// `null` clears it (a template keeps a body or a content_sid).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub body: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub content_sid: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub content_variables: Option<Option<Map<String, Value>>>,
    pub locale: Option<String>,
}

/// Change a template. A template that a scheduled, running or paused campaign
/// uses is frozen (409) until that campaign ends, so every recipient gets the
/// text it launched with.
#[utoipa::path(
    patch, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = Uuid, Path)),
    request_body = PatchTemplate,
    responses(
        (status = 200, body = TemplateRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchTemplate>,
) -> Result<Json<TemplateRecord>, ApiError> {
    let current = find(&state, id).await?;
    if let Some((campaign, campaign_state)) = store::live_campaign_using(&state.db, id).await? {
        return Err(ApiError::conflict(format!(
            "campaign {campaign} is {campaign_state} with this template, which is frozen until it ends; create a new template for new campaigns"
        ))
        .with_field("id"));
    }
    let name = req.name.unwrap_or(current.name);
    let body = req.body.unwrap_or(current.body);
    let content_sid = req.content_sid.unwrap_or(current.content_sid);
    let content_variables = match req.content_variables {
        Some(v) => v.map(Value::Object),
        None => current.content_variables,
    };
    let locale = req.locale.unwrap_or(current.locale);
    let fields = TemplateFields {
        name: &name,
        body: body.as_deref(),
        content_sid: content_sid.as_deref(),
        content_variables: content_variables.as_ref(),
        locale: &locale,
    };
    validate(&fields)?;
    store::update(&state.db, id, fields)
        .await
        .or_db(&[NAME_TAKEN, NO_CONTENT])?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no template with this id"))
}

/// Delete a template that no campaign uses.
#[utoipa::path(
    delete, path = "/v1/templates/{id}", tag = "templates",
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
        Err(ApiError::not_found("no template with this id"))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// Render for this stored user (their attributes and profile name).
    pub phone_number: Option<String>,
    /// Render for these attributes instead of a stored user's.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenderedView {
    pub body: Option<String>,
    pub content_sid: Option<String>,
    /// The `ContentVariables` JSON as Twilio takes it.
    pub content_variables: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenderResult {
    /// What the recipient would get; `null` when variables are missing.
    pub rendered: Option<RenderedView>,
    /// The variables the context lacks (the sender would skip this recipient).
    pub missing_variables: Vec<String>,
}

/// Render a template for a stored user or for given attributes.
#[utoipa::path(
    post, path = "/v1/templates/{id}/render", tag = "templates",
    params(("id" = Uuid, Path)),
    request_body = RenderRequest,
    responses(
        (status = 200, body = RenderResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn render(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RenderRequest>,
) -> Result<Json<RenderResult>, ApiError> {
    let record = find(&state, id).await?;
    let phone = req
        .phone_number
        .as_deref()
        .map(|p| parse_phone(p, state.default_region, "phone_number"))
        .transpose()?;
    let ctx = match (req.attributes, &phone) {
        (Some(attributes), _) => user_context(
            phone.as_ref().map_or("", |p| p.as_str()),
            &Value::Object(attributes),
            None,
        ),
        (None, Some(phone)) => {
            let user = users::get(&state.db, phone.as_str())
                .await?
                .ok_or_else(|| {
                    ApiError::unprocessable("phone_number", "no user with this phone number")
                })?;
            user_context(
                &user.phone_number,
                &user.attributes,
                user.profile_name.as_deref(),
            )
        }
        (None, None) => {
            return Err(ApiError::unprocessable(
                "phone_number",
                "give a phone_number or attributes to render for",
            ));
        }
    };
    let template = Template::new(
        record.body.as_deref(),
        record.content_sid.as_deref(),
        record.content_variables.as_ref(),
    )
    .map_err(|e| {
        ApiError::unprocessable("id", format!("the stored template no longer parses: {e}"))
    })?;
    let result = match template.render(&ctx) {
        Ok(r) => RenderResult {
            rendered: Some(RenderedView {
                body: r.body,
                content_sid: r.content_sid,
                content_variables: r.content_variables,
            }),
            missing_variables: vec![],
        },
        Err(RenderError::MissingVariables(missing)) => RenderResult {
            rendered: None,
            missing_variables: missing,
        },
        Err(e @ RenderError::Failed(_)) => {
            return Err(ApiError::unprocessable("body", e.to_string()));
        }
    };
    Ok(Json(result))
}
