//! The operator console: server-rendered pages under `/console` for
//! campaigns, imports, people, segments and templates, signed in with an API
//! key ([`session`]). Every change goes through the same handler the `/v1`
//! API runs, so a form and a `curl` meet the same rules and errors.
//!
//! Pages are minijinja templates and their assets (one stylesheet, one small
//! script) are compiled into the binary; charts are SVG drawn here
//! ([`charts`]), so the console works offline, keeps a strict
//! Content-Security-Policy (`'self'` only, nothing inline), and reads
//! without JavaScript; the script only refreshes live parts of a page.

pub mod cache;
mod campaigns;
pub mod charts;
mod imports;
mod library;
mod overview;
mod people;
pub mod session;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Serialize;
use shared::http::ApiError;

use crate::AppState;

/// Where the console lives.
pub const BASE: &str = "/console";

/// Uploaded import files over this are refused (Cloud Run takes request
/// bodies up to 32 MiB; larger files go to the bucket directly).
pub const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every console route: the sign-in page and the assets are public, every
/// other page and fragment needs a session (and a form, its CSRF token).
pub fn router(state: AppState) -> Router {
    let signed_in = Router::new()
        .route(
            BASE,
            get(|| async { redirect(&format!("{BASE}/overview")) }),
        )
        .route(&format!("{BASE}/overview"), get(overview::page))
        .route(&format!("{BASE}/sign-out"), post(session::sign_out))
        .route(
            &format!("{BASE}/campaigns"),
            get(campaigns::list).post(campaigns::create),
        )
        .route(&format!("{BASE}/campaigns/new"), get(campaigns::new))
        .route(&format!("{BASE}/campaigns/{{id}}"), get(campaigns::page))
        .route(
            &format!("{BASE}/campaigns/{{id}}/funnel"),
            get(campaigns::funnel),
        )
        .route(
            &format!("{BASE}/campaigns/{{id}}/dry-run"),
            post(campaigns::dry_run),
        )
        .route(
            &format!("{BASE}/campaigns/{{id}}/test-send"),
            post(campaigns::test_send),
        )
        .route(
            &format!("{BASE}/campaigns/{{id}}/action/{{action}}"),
            post(campaigns::act),
        )
        .route(
            &format!("{BASE}/campaigns/{{id}}/recipients.csv"),
            get(campaigns::export),
        )
        .route(
            &format!("{BASE}/imports"),
            get(imports::list).post(imports::upload),
        )
        .route(&format!("{BASE}/imports/waiting"), get(imports::waiting))
        .route(&format!("{BASE}/imports/{{id}}"), get(imports::page))
        .route(
            &format!("{BASE}/imports/{{id}}/progress"),
            get(imports::progress),
        )
        .route(
            &format!("{BASE}/imports/{{id}}/rejects.csv"),
            get(imports::rejects),
        )
        .route(&format!("{BASE}/people"), get(people::search))
        .route(&format!("{BASE}/people/{{phone}}"), get(people::page))
        .route(
            &format!("{BASE}/segments"),
            get(library::segments).post(library::save_segment),
        )
        .route(&format!("{BASE}/segments/new"), get(library::segment))
        .route(
            &format!("{BASE}/segments/preview"),
            post(library::preview_segment),
        )
        .route(&format!("{BASE}/segments/{{id}}"), get(library::segment))
        .route(
            &format!("{BASE}/segments/{{id}}/count"),
            get(library::segment_count),
        )
        .route(
            &format!("{BASE}/templates"),
            get(library::templates).post(library::save_template),
        )
        .route(&format!("{BASE}/templates/new"), get(library::template))
        .route(&format!("{BASE}/templates/{{id}}"), get(library::template))
        .route(
            &format!("{BASE}/templates/{{id}}/preview"),
            post(library::preview_template),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require,
        ));
    Router::new()
        .route(
            &format!("{BASE}/sign-in"),
            get(session::sign_in_page).post(session::sign_in),
        )
        .route(&format!("{BASE}/assets/{{file}}"), get(asset))
        .merge(signed_in)
        .layer(middleware::map_response(secure_headers))
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
        .with_state(state)
}

/// Every console answer: a strict CSP, no framing, no sniffing, no caching of pages.
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The stylesheet and the script, compiled in.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("../../console/assets/console.css"), "text/css"),
        "console.js" => (
            include_str!("../../console/assets/console.js"),
            "text/javascript",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
        ],
        body,
    )
        .into_response()
}

/// A form field as typed: `None` when left empty.
pub fn text(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// An id from a path; one that does not parse is a 404 saying `not_found`.
pub fn parse_id(raw: &str, not_found: &str) -> Result<uuid::Uuid, ConsoleError> {
    raw.parse()
        .map_err(|_| ConsoleError::Api(ApiError::not_found(not_found)))
}

/// A 303 to `to` (after a form: the browser GETs the next page).
pub fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad redirect").into_response(),
    }
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../console/templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "forms.html",
    "sign_in.html",
    "overview.html",
    "campaigns.html",
    "campaign_new.html",
    "campaign.html",
    "funnel.html",
    "imports.html",
    "import.html",
    "import_progress.html",
    "people.html",
    "person.html",
    "segments.html",
    "segment.html",
    "segment_preview.html",
    "templates.html",
    "template.html",
    "template_preview.html",
    "error.html",
);

/// The page templates, parsed once. `.html` names autoescape.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name} does not parse: {e:#}"));
        }
        env.add_filter("num", filters::num);
        env.add_filter("when", filters::when);
        env.add_filter("json", filters::json);
        env.add_filter("error_meaning", filters::error_meaning);
        env.add_filter("excerpt", filters::excerpt);
        env
    })
}

mod filters {
    use minijinja::Value;

    /// `1234567` → `1,234,567`.
    pub fn num(v: Value) -> String {
        let Some(n) = i64::try_from(v.clone()).ok() else {
            return v.to_string();
        };
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    }

    /// An RFC 3339 timestamp as `2026-11-30 15:04:05 UTC`; empty for none.
    pub fn when(v: Value) -> String {
        if v.is_none() || v.is_undefined() {
            return String::new();
        }
        let s = v.to_string();
        chrono::DateTime::parse_from_rfc3339(&s).map_or(s, |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
    }

    /// What a Twilio error code means and what the engine does about it.
    pub fn error_meaning(code: i32) -> String {
        match shared::twilio::errors::meaning(code) {
            Some(m) => format!(
                "{}; the engine {}",
                m.meaning,
                super::overview::reaction_text(m.reaction)
            ),
            None => "not in our table of Twilio codes".to_owned(),
        }
    }

    /// The first 80 characters of a text, with `…` when cut; empty for none.
    pub fn excerpt(v: Value) -> String {
        let Some(s) = v.as_str() else {
            return String::new();
        };
        match s.char_indices().nth(80) {
            Some((cut, _)) => format!("{}…", &s[..cut]),
            None => s.to_owned(),
        }
    }

    /// Pretty JSON of any value.
    pub fn json(v: Value) -> String {
        serde_json::to_value(&v)
            .ok()
            .and_then(|j| serde_json::to_string_pretty(&j).ok())
            .unwrap_or_default()
    }
}

/// Renders a page; `ctx` is serialized into the template's context.
pub fn render(name: &str, ctx: impl Serialize) -> Result<Html<String>, ConsoleError> {
    let template = environment()
        .get_template(name)
        .map_err(|e| ConsoleError::Render(e.to_string()))?;
    template
        .render(ctx)
        .map(Html)
        .map_err(|e| ConsoleError::Render(format!("{e:#}")))
}

/// What a console request can fail with: a page that says so.
#[derive(Debug)]
pub enum ConsoleError {
    /// What the API would answer (not found, conflict, unavailable…).
    Api(ApiError),
    /// A page template failed: a bug, logged.
    Render(String),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Api(e) => {
                if e.status.is_server_error() {
                    tracing::error!(error = ?e, "console request failed");
                }
                (e.status, e.message)
            }
            Self::Render(e) => {
                tracing::error!(error = %e, "console page did not render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be drawn".to_owned(),
                )
            }
        };
        let ctx =
            minijinja::context! { status => status.as_u16(), message => message, title => "Error" };
        match render("error.html", ctx) {
            Ok(page) => (status, page).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// A form field's error, shown beside that field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

impl From<ApiError> for FieldError {
    fn from(e: ApiError) -> Self {
        Self {
            field: e.field,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Value;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(environment().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn excerpts_cut_long_texts_at_a_character() {
        assert_eq!(filters::excerpt(Value::from("short")), "short");
        let long = "é".repeat(100);
        assert_eq!(
            filters::excerpt(Value::from(long.as_str())).chars().count(),
            81
        );
        assert_eq!(filters::excerpt(Value::from(())), "");
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(filters::num(1_234_567.into()), "1,234,567");
        assert_eq!(filters::num(999.into()), "999");
        assert_eq!(filters::num((-1000).into()), "-1,000");
    }

    #[test]
    fn the_audience_count_renders() {
        let page = super::render(
            "segment_preview.html",
            minijinja::context! { count_only => true, count => 3, age => Option::<i64>::None },
        );
        let page = page.map(|h| h.0).map_err(|e| format!("{e:?}"));
        assert!(
            page.as_deref().unwrap_or("").contains("audience-count"),
            "{page:?}"
        );
    }
}
