//! Signing in to the console with an API key (the same hashes as `/v1`).
//!
//! - The session is a random 256-bit token in an HttpOnly, SameSite=Strict
//!   cookie scoped to `/console`, `Secure` unless the console is reached on
//!   loopback; the database keeps only the token's SHA-256 (`console_sessions`).
//! - A session ends at sign-out, after [`LIFETIME`], or when its API key is
//!   removed from `API_KEYS`.
//! - CSRF: every state-changing request carries the session's synchronizer
//!   token (a form's `csrf` field, or the `x-csrf-token` header), compared in
//!   constant time; a request whose `Origin` names another host is refused
//!   first. The sign-in form itself carries a double-submit token.

use axum::body::{Body, to_bytes};
use axum::extract::{Form, Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::http::ApiError;
use shared::http::auth::ApiKeys;
use shared::store::console_sessions as store;
use subtle::ConstantTimeEq;

use super::{BASE, ConsoleError, redirect, render};
use crate::AppState;

/// The session cookie.
pub const COOKIE_NAME: &str = "ese_console";
/// The sign-in form's double-submit cookie.
const SIGN_IN_COOKIE: &str = "ese_console_sign_in";
/// How long a session lasts from sign-in.
pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// Form bodies read for their CSRF field (uploads carry theirs in the multipart form).
const FORM_LIMIT: usize = 1024 * 1024;

/// The signed-in request's session, for the page (its CSRF token goes into every form).
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    /// The SHA-256 of the API key that signed in: who did what, in the records.
    pub key_hash: String,
}

impl Session {
    /// Enough of the key's hash to tell keys apart in a record, not to guess one.
    pub fn key_id(&self) -> &str {
        self.key_hash.get(..12).unwrap_or(&self.key_hash)
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request came in on a loopback host (the local stack): there
/// the cookie cannot be `Secure`, since the console is plain HTTP.
fn on_loopback(headers: &HeaderMap) -> bool {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if on_loopback(headers) { "" } else { "; Secure" };
    let cookie = format!(
        "{name}={value}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a present `Origin` names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a console path may be returned to after sign-in (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with(&format!("{BASE}/")) && !n.contains("//") && !n.contains('\\'))
        .map_or_else(|| format!("{BASE}/overview"), str::to_owned)
}

pub async fn sign_in_page(
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Result<Response, ConsoleError> {
    sign_in_form(&headers, q.next.as_deref(), None, StatusCode::OK)
}

fn sign_in_form(
    headers: &HeaderMap,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let token = random_token();
    let page = render(
        "sign_in.html",
        minijinja::context! {
            title => "Sign in", csrf => token, next => safe_next(next), error => error,
        },
    )?;
    let cookie = set_cookie(headers, SIGN_IN_COOKIE, &token, 3600);
    Ok((status, [(SET_COOKIE, cookie)], page).into_response())
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    api_key: String,
    csrf: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if !same_origin(&headers) || expected.is_empty() || !tokens_match(expected, &form.csrf) {
        return sign_in_form(
            &headers,
            form.next.as_deref(),
            Some("The sign-in form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let key = form.api_key.trim();
    if !state.keys.verify(key) {
        tracing::warn!("console sign-in with an unknown API key");
        return sign_in_form(
            &headers,
            form.next.as_deref(),
            Some("That API key is not one of ours."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let token = random_token();
    store::open(
        &state.db,
        &token_hash(&token),
        &ApiKeys::hash(key),
        &random_token(),
        LIFETIME.as_secs_f64(),
    )
    .await?;
    tracing::info!("console session opened");
    let mut response = redirect(&safe_next(form.next.as_deref()));
    let h = response.headers_mut();
    h.append(
        SET_COOKIE,
        set_cookie(&headers, COOKIE_NAME, &token, LIFETIME.as_secs()),
    );
    h.append(SET_COOKIE, set_cookie(&headers, SIGN_IN_COOKIE, "", 0));
    Ok(response)
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    if let Some(token) = cookie(&headers, COOKIE_NAME) {
        store::close(&state.db, &token_hash(token)).await?;
    }
    let mut response = redirect(&format!("{BASE}/sign-in"));
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(&headers, COOKIE_NAME, "", 0));
    Ok(response)
}

/// Middleware: no session, no page (a page redirects to sign-in, anything
/// else is 401); a state-changing request without the session's CSRF token is 403.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let session = match cookie(request.headers(), COOKIE_NAME) {
        Some(token) => match store::find(&state.db, &token_hash(token)).await {
            Ok(found) => found.filter(|s| state.keys.knows_hash(&s.key_hash)),
            Err(e) => return ConsoleError::from(e).into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        return if request.method() == Method::GET && !is_fragment(request.headers()) {
            let here = request
                .uri()
                .path_and_query()
                .map_or(BASE, |p| p.as_str())
                .to_owned();
            let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
            redirect(&format!("{BASE}/sign-in?next={next}"))
        } else {
            ConsoleError::Api(ApiError::unauthorized()).into_response()
        };
    };
    let mut request = request;
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if !same_origin(request.headers()) {
            return forbidden("the request came from another site");
        }
        match checked(request, &session.csrf_token).await {
            Ok(r) => request = r,
            Err(response) => return *response,
        }
    }
    request.extensions_mut().insert(Session {
        csrf: session.csrf_token,
        key_hash: session.key_hash,
    });
    next.run(request).await
}

/// A fetch from the console's script (it asks for a fragment, not a page).
fn is_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("x-console-fragment")
}

fn forbidden(why: &str) -> Response {
    ConsoleError::Api(ApiError::forbidden(why)).into_response()
}

/// The request, if it carries `csrf`: in the header, or as the `csrf` field
/// of a urlencoded form (read and put back). A multipart upload's handler
/// checks its own (the field comes first).
async fn checked(request: Request, csrf: &str) -> Result<Request, Box<Response>> {
    if let Some(header) = request.headers().get("x-csrf-token") {
        return if header.to_str().is_ok_and(|h| tokens_match(h, csrf)) {
            Ok(request)
        } else {
            Err(Box::new(forbidden(
                "the form's security token is wrong; reload the page",
            )))
        };
    }
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| Box::new(forbidden("the form is too large")))?;
    let found = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| tokens_match(&v, csrf));
    if !found {
        return Err(Box::new(forbidden(
            "the form's security token is missing or wrong; reload the page",
        )));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// For a multipart upload: whether its `csrf` field matches.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    tokens_match(&session.csrf, presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_returned_to() {
        assert_eq!(
            safe_next(Some("/console/people?q=1")),
            "/console/people?q=1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/v1/users",
            "/console/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console/overview", "{bad}");
        }
        assert_eq!(safe_next(None), "/console/overview");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; ese_console=tok; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE_NAME), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn the_cookie_is_secure_except_on_loopback() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let local = set_cookie(&h, COOKIE_NAME, "t", 60);
        assert!(!local.to_str().unwrap().contains("Secure"));
        h.insert(HOST, HeaderValue::from_static("api-xyz.a.run.app"));
        let public = set_cookie(&h, COOKIE_NAME, "t", 60);
        let public = public.to_str().unwrap();
        assert!(public.contains("; Secure") && public.contains("HttpOnly"));
        assert!(public.contains("SameSite=Strict"));
    }

    #[test]
    fn another_sites_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("console.example"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("https://console.example"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
    }
}
