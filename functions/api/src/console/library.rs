//! Segments and templates: edit with the API's own validation (errors shown
//! at the field they name), a segment's count and sample, a template
//! rendered for a chosen person.

use axum::Extension;
use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::http::ApiError;
use shared::store::{segments as segment_store, templates as template_store, users};
use uuid::Uuid;

use super::session::Session;
use super::{BASE, ConsoleError, FieldError, parse_id, redirect, render, text};
use crate::AppState;
use crate::extract::{ApiJson, ApiPath};
use crate::segments::{self as segment_api, CreateSegment, PatchSegment, PreviewRequest};
use crate::templates::{self as template_api, CreateTemplate, PatchTemplate, RenderRequest};

const LISTED: i64 = 500;

fn optional_id(raw: Option<&str>) -> Result<Option<Uuid>, ConsoleError> {
    match raw {
        None | Some("new") => Ok(None),
        Some(s) => parse_id(s, "no such id").map(Some),
    }
}

/// JSON typed into a form field, or an error naming that field.
fn json_field(field: &str, raw: &str) -> Result<Value, ApiError> {
    serde_json::from_str(raw)
        .map_err(|e| ApiError::unprocessable(field, format!("{field} is not valid JSON: {e}")))
}

// --- segments ---

pub async fn segments(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, ConsoleError> {
    let segments = segment_store::list(&state.db, None, LISTED).await?;
    render(
        "segments.html",
        minijinja::context! { title => "Segments", nav => "segments", csrf => session.csrf, segments => segments },
    )
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct SegmentForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    definition: String,
}

async fn segment_page(
    session: &Session,
    form: &SegmentForm,
    error: Option<FieldError>,
    preview: Option<minijinja::Value>,
    saved: bool,
) -> Result<Html<String>, ConsoleError> {
    let title = if form.id.is_empty() {
        "New segment".to_owned()
    } else {
        form.name.clone()
    };
    render(
        "segment.html",
        minijinja::context! {
            title => title, nav => "segments", csrf => session.csrf, form => form,
            error => error, preview => preview, saved => saved,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct SavedQuery {
    saved: Option<String>,
}

pub async fn segment(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Option<Path<String>>,
    Query(q): Query<SavedQuery>,
) -> Result<Html<String>, ConsoleError> {
    let form = match optional_id(id.as_ref().map(|p| p.0.as_str()))? {
        None => SegmentForm {
            definition: "{\"all\": [{\"field\": \"consent\", \"eq\": \"opted_in\"}]}".into(),
            ..SegmentForm::default()
        },
        Some(id) => {
            let s = segment_store::get(&state.db, id)
                .await?
                .ok_or_else(|| ApiError::not_found("no segment with this id"))?;
            SegmentForm {
                id: s.id.to_string(),
                name: s.name,
                description: s.description.unwrap_or_default(),
                definition: serde_json::to_string_pretty(&s.definition).unwrap_or_default(),
            }
        }
    };
    segment_page(&session, &form, None, None, q.saved.is_some()).await
}

pub async fn save_segment(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<SegmentForm>,
) -> Result<Response, ConsoleError> {
    let saved = async {
        let definition = json_field("definition", &form.definition)?;
        let s = State(state.clone());
        match optional_id(text(&form.id).as_deref())
            .map_err(|_| ApiError::not_found("no segment with this id"))?
        {
            None => segment_api::create(
                s,
                ApiJson(CreateSegment {
                    name: form.name.clone(),
                    description: text(&form.description),
                    definition,
                }),
            )
            .await
            .map(|(_, Json(r))| r),
            Some(id) => segment_api::patch(
                s,
                ApiPath(id),
                ApiJson(PatchSegment {
                    name: Some(form.name.clone()),
                    description: Some(text(&form.description)),
                    definition: Some(definition),
                }),
            )
            .await
            .map(|Json(r)| r),
        }
    }
    .await;
    match saved {
        Ok(s) => Ok(redirect(&format!("{BASE}/segments/{}?saved=1", s.id))),
        Err(e) if e.status.is_client_error() => {
            let status = e.status;
            Ok((
                status,
                segment_page(&session, &form, Some(e.into()), None, false).await?,
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The form's definition counted and sampled, shown under the form.
pub async fn preview_segment(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<SegmentForm>,
) -> Result<Response, ConsoleError> {
    let previewed = async {
        let definition = json_field("definition", &form.definition)?;
        segment_api::preview(State(state.clone()), ApiJson(PreviewRequest { definition })).await
    }
    .await;
    match previewed {
        Ok(Json(p)) => {
            let preview = minijinja::Value::from_serialize(&p);
            Ok(segment_page(&session, &form, None, Some(preview), false)
                .await?
                .into_response())
        }
        Err(e) if e.status.is_client_error() => {
            let status = e.status;
            Ok((
                status,
                segment_page(&session, &form, Some(e.into()), None, false).await?,
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// How many people a stored segment matches now (the new-campaign form shows it).
pub async fn segment_count(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let id =
        optional_id(Some(&id))?.ok_or_else(|| ApiError::not_found("no segment with this id"))?;
    let s = segment_store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no segment with this id"))?;
    let key = format!("segment-count:{}:{}", s.id, s.updated_at.timestamp_micros());
    let definition = s.definition;
    let count = super::cache::cached(
        &state,
        key,
        std::time::Duration::from_secs(60),
        move |st| async move {
            let segment = shared::segment::Segment::parse(&definition).map_err(|e| {
                sqlx::Error::Protocol(format!("the stored segment does not parse: {e}"))
            })?;
            users::count_matching(&st.db, &segment).await
        },
    )
    .await?;
    render(
        "segment_preview.html",
        minijinja::context! { count_only => true, count => count.value, age => count.age_seconds() },
    )
}

// --- templates ---

pub async fn templates(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, ConsoleError> {
    let templates = template_store::list(&state.db, None, LISTED).await?;
    render(
        "templates.html",
        minijinja::context! { title => "Templates", nav => "templates", csrf => session.csrf, templates => templates },
    )
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct TemplateForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    content_sid: String,
    #[serde(default)]
    content_variables: String,
    #[serde(default)]
    locale: String,
    /// Whose attributes a preview renders with.
    #[serde(default)]
    phone_number: String,
}

async fn template_page(
    session: &Session,
    form: &TemplateForm,
    error: Option<FieldError>,
    preview: Option<minijinja::Value>,
    saved: bool,
) -> Result<Html<String>, ConsoleError> {
    let title = if form.id.is_empty() {
        "New template".to_owned()
    } else {
        form.name.clone()
    };
    render(
        "template.html",
        minijinja::context! {
            title => title, nav => "templates", csrf => session.csrf, form => form,
            error => error, preview => preview, saved => saved,
        },
    )
}

pub async fn template(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    id: Option<Path<String>>,
    Query(q): Query<SavedQuery>,
) -> Result<Html<String>, ConsoleError> {
    let form = match optional_id(id.as_ref().map(|p| p.0.as_str()))? {
        None => TemplateForm {
            locale: "en".into(),
            ..TemplateForm::default()
        },
        Some(id) => template_form(&state, id).await?,
    };
    template_page(&session, &form, None, None, q.saved.is_some()).await
}

async fn template_form(state: &AppState, id: Uuid) -> Result<TemplateForm, ConsoleError> {
    let t = template_store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no template with this id"))?;
    Ok(TemplateForm {
        id: t.id.to_string(),
        name: t.name,
        body: t.body.unwrap_or_default(),
        content_sid: t.content_sid.unwrap_or_default(),
        content_variables: t
            .content_variables
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_default(),
        locale: t.locale,
        phone_number: String::new(),
    })
}

fn content_variables(raw: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    match json_field("content_variables", raw)? {
        Value::Object(m) => Ok(Some(m)),
        _ => Err(ApiError::unprocessable(
            "content_variables",
            "content_variables must be a JSON object: {\"1\": \"{{ first_name }}\"}",
        )),
    }
}

pub async fn save_template(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<TemplateForm>,
) -> Result<Response, ConsoleError> {
    let saved = async {
        let variables = content_variables(&form.content_variables)?;
        let s = State(state.clone());
        match optional_id(text(&form.id).as_deref())
            .map_err(|_| ApiError::not_found("no template with this id"))?
        {
            None => template_api::create(
                s,
                ApiJson(CreateTemplate {
                    name: form.name.clone(),
                    body: text(&form.body),
                    content_sid: text(&form.content_sid),
                    content_variables: variables,
                    locale: text(&form.locale),
                }),
            )
            .await
            .map(|(_, Json(r))| r),
            Some(id) => template_api::patch(
                s,
                ApiPath(id),
                ApiJson(PatchTemplate {
                    name: Some(form.name.clone()),
                    body: Some(text(&form.body)),
                    content_sid: Some(text(&form.content_sid)),
                    content_variables: Some(variables),
                    locale: text(&form.locale),
                }),
            )
            .await
            .map(|Json(r)| r),
        }
    }
    .await;
    match saved {
        Ok(t) => Ok(redirect(&format!("{BASE}/templates/{}?saved=1", t.id))),
        Err(e) if e.status.is_client_error() => {
            let status = e.status;
            Ok((
                status,
                template_page(&session, &form, Some(e.into()), None, false).await?,
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The stored template rendered for the person the form names.
pub async fn preview_template(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<TemplateForm>,
) -> Result<Response, ConsoleError> {
    let id =
        optional_id(Some(&id))?.ok_or_else(|| ApiError::not_found("no template with this id"))?;
    let mut shown = template_form(&state, id).await?;
    shown.phone_number = form.phone_number.clone();
    let phone = text(&form.phone_number);
    let rendered = match &phone {
        None => Err(ApiError::unprocessable(
            "phone_number",
            "give the number of a person to render for",
        )),
        Some(p) => {
            template_api::render(
                State(state.clone()),
                ApiPath(id),
                ApiJson(RenderRequest {
                    phone_number: Some(p.clone()),
                    attributes: None,
                }),
            )
            .await
        }
    };
    match rendered {
        Ok(Json(r)) => {
            let person = match &phone {
                Some(p) => users::get(&state.db, p).await?.map(|u| u.phone_number),
                None => None,
            };
            let preview = minijinja::context! { result => minijinja::Value::from_serialize(&r), person => person };
            Ok(template_page(&session, &shown, None, Some(preview), false)
                .await?
                .into_response())
        }
        Err(e) if e.status.is_client_error() => {
            let status = e.status;
            Ok((
                status,
                template_page(&session, &shown, Some(e.into()), None, false).await?,
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}
