//! Import pages: upload a file (it lands in the import bucket, or the local
//! inbox, and takes the same path as an analyst's file), watch it run, read
//! and download its rejected lines.

use axum::Extension;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use shared::http::ApiError;
use shared::store::{console as reads, imports as store};
use uuid::Uuid;

use super::session::{Session, csrf_matches};
use super::{BASE, ConsoleError, redirect, render};
use crate::AppState;

/// Rejected lines shown on the page (the CSV has them all, up to [`REJECTS_EXPORTED`]).
const REJECTS_SHOWN: i64 = 100;
const REJECTS_EXPORTED: i64 = 1_000_000;

async fn list_page(
    state: &AppState,
    session: &Session,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let imports = store::list(&state.db, None, 50).await?;
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = render(
        "imports.html",
        minijinja::context! {
            title => "Imports", nav => "imports", csrf => session.csrf, imports => imports,
            target => state.uploads.target().describe(), error => error,
        },
    )?;
    Ok((status, page).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, ConsoleError> {
    list_page(&state, &session, None).await
}

/// A file name as an object name: letters, digits, `.`, `-` and `_` only,
/// with one of the extensions the importer reads.
fn object_name(
    file_name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, &'static str), String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or("");
    let (stem, ext) = base.rsplit_once('.').unwrap_or((base, ""));
    let content_type = match ext.to_ascii_lowercase().as_str() {
        "csv" => "text/csv",
        "json" => "application/json",
        "ndjson" | "jsonl" => "application/x-ndjson",
        _ => return Err(format!("{base:?} is not a .csv, .json or .ndjson file")),
    };
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let stamp = now.format("%Y%m%d-%H%M%S%3f");
    Ok((
        format!("console-{stamp}-{clean}.{}", ext.to_ascii_lowercase()),
        content_type,
    ))
}

/// `multipart/form-data` with `csrf` first, then `file`.
pub async fn upload(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    mut form: Multipart,
) -> Result<Response, ConsoleError> {
    let mut csrf_ok = false;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return list_page(&state, &session, Some("choose a file to upload".into())).await;
            }
            Err(e) => {
                return list_page(
                    &state,
                    &session,
                    Some(format!("the upload did not arrive whole: {e}")),
                )
                .await;
            }
        };
        match field.name() {
            Some("csrf") => {
                let value = field.text().await.unwrap_or_default();
                csrf_ok = csrf_matches(&session, &value);
            }
            Some("file") if csrf_ok => {
                let file_name = field.file_name().unwrap_or("").to_owned();
                let (name, content_type) = match object_name(&file_name, chrono::Utc::now()) {
                    Ok(n) => n,
                    Err(e) => return list_page(&state, &session, Some(e)).await,
                };
                let body = match field.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        let message = format!(
                            "the file did not arrive whole (at most {} MiB): {e}",
                            super::UPLOAD_LIMIT >> 20
                        );
                        return list_page(&state, &session, Some(message)).await;
                    }
                };
                if body.is_empty() {
                    return list_page(&state, &session, Some(format!("{file_name:?} is empty")))
                        .await;
                }
                if let Err(e) = state.uploads.put(&name, content_type, body).await {
                    tracing::warn!(error = %e, "console upload not stored");
                    return list_page(&state, &session, Some(e.to_string())).await;
                }
                tracing::info!(object = %name, "console upload stored");
                let object: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
                return Ok(redirect(&format!("{BASE}/imports/waiting?object={object}")));
            }
            _ if !csrf_ok => {
                return Err(ApiError::forbidden(
                    "the form's security token is missing or wrong; reload the page",
                )
                .into());
            }
            _ => {}
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct WaitingQuery {
    object: String,
}

/// Until the import of an uploaded object has started: then its page.
pub async fn waiting(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<WaitingQuery>,
) -> Result<Response, ConsoleError> {
    if let Some(id) = reads::import_for_object(&state.db, &q.object).await? {
        return Ok(redirect(&format!("{BASE}/imports/{id}")));
    }
    let page = render(
        "imports.html",
        minijinja::context! {
            title => "Imports", nav => "imports", csrf => session.csrf, waiting => q.object,
            imports => store::list(&state.db, None, 50).await?, target => state.uploads.target().describe(),
        },
    )?;
    Ok(page.into_response())
}

fn parse_id(raw: &str) -> Result<Uuid, ConsoleError> {
    super::parse_id(raw, "no import with this id")
}

async fn find(state: &AppState, id: &str) -> Result<store::Import, ConsoleError> {
    Ok(store::get(&state.db, parse_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no import with this id"))?)
}

pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let import = find(&state, &id).await?;
    let rejects = store::rejects(&state.db, import.id, REJECTS_SHOWN).await?;
    render(
        "import.html",
        minijinja::context! {
            title => format!("Import {}", import.object), nav => "imports", csrf => session.csrf,
            import => import, rejects => rejects,
        },
    )
}

/// The live part of an import page.
pub async fn progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let import = find(&state, &id).await?;
    render(
        "import_progress.html",
        minijinja::context! { import => import },
    )
}

/// Every rejected line, with its number and reason, as CSV.
pub async fn rejects(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let import = find(&state, &id).await?;
    let rows = store::rejects(&state.db, import.id, REJECTS_EXPORTED).await?;
    let mut out = String::from("line_number,reason,raw_line\n");
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for r in rows {
        out.push_str(&format!(
            "{},{},{}\n",
            r.line_number,
            quote(&r.reason),
            quote(&r.raw_line)
        ));
    }
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"import-{}-rejects.csv\"", import.id),
            ),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_names_become_safe_object_names() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T15:04:05.123Z")
            .unwrap()
            .to_utc();
        let (name, kind) = object_name("../../etc/My Users (v2).CSV", now).unwrap();
        assert_eq!(name, "console-20261130-150405123-My_Users__v2_.csv");
        assert_eq!(kind, "text/csv");
        assert_eq!(
            object_name("people.ndjson", now).unwrap().1,
            "application/x-ndjson"
        );
        assert!(
            object_name("notes.txt", now)
                .unwrap_err()
                .contains("notes.txt")
        );
        assert!(object_name("csv", now).is_err());
    }
}
