//! Extractors that turn every malformed request into a 4xx naming the field:
//! JSON bodies (unknown fields refused by the types), path and query parameters.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use shared::http::ApiError;

/// Request bodies over this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body: 415 when it is not JSON, 400 when it does not parse, 422
/// naming the field when it parses but does not fit the type.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        shared::http::require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body over {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::bad_request("body", r.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads a JSON document into `T`, with errors that name the field.
///
/// JSON Schema counts `3.0` as an integer, so where `T` wants an integer and
/// the body has an integral number written with a fraction or an exponent,
/// the body is read again with such numbers as integers.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| {
                ApiError::bad_request("body", format!("body is not valid JSON: {e}"))
            })?;
            Ok(value)
        }
        Err(e)
            if e.inner()
                .to_string()
                .starts_with("invalid type: floating point") =>
        {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                let message = strip_position(&e.to_string());
                ApiError::bad_request("body", format!("body is not valid JSON: {message}"))
            })?;
            integral_numbers_as_integers(&mut value);
            serde_path_to_error::deserialize(value).map_err(json_error)
        }
        Err(e) => Err(json_error(e)),
    }
}

fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                #[allow(clippy::cast_possible_truncation)]
                let integer = f as i64;
                *value = Value::from(integer);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = e.inner();
    let message = strip_position(&inner.to_string());
    match inner.classify() {
        Category::Data => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // The path of a missing field stops at its parent; serde names
            // the field only inside the message.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (path.as_str(), missing) {
                ("", Some(n)) => n.to_owned(),
                (p, Some(n)) => format!("{p}.{n}"),
                ("", None) => "body".to_owned(),
                (p, None) => p.to_owned(),
            };
            ApiError::unprocessable(&field, message)
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("body", format!("body is not valid JSON: {message}"))
        }
    }
}

/// serde_json's messages end in ` at line 1 column 9`, which says nothing to a caller.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A name an operator can read: 1 to 200 characters, not blank.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "name",
            "name must be 1 to 200 characters and not blank",
        ));
    }
    Ok(())
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Path parameters; 400 naming the parameter when one does not parse.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| {
                use axum::extract::path::ErrorKind;
                let field = match &r {
                    PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                        ErrorKind::ParseErrorAtKey { key, .. }
                        | ErrorKind::DeserializeError { key, .. }
                        | ErrorKind::InvalidUtf8InPathParam { key } => key.clone(),
                        _ => "path".to_owned(),
                    },
                    _ => "path".to_owned(),
                };
                ApiError::bad_request(&field, r.body_text())
            })
    }
}

/// Query parameters; 400 naming the parameter when one does not parse.
/// Unknown parameters are ignored.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                ApiError::bad_request(&field, format!("invalid query: {}", e.inner()))
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        rate: i32,
    }

    fn err(body: &str) -> ApiError {
        parse_json::<Outer>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn integral_numbers_with_a_fraction_are_integers_as_json_schema_says() {
        let parsed = parse_json::<Outer>(br#"{"name": "a", "inner": {"rate": 3.0}}"#).unwrap();
        assert_eq!(parsed.inner.map(|i| i.rate), Some(3));
        let parsed = parse_json::<Outer>(br#"{"name": "a", "inner": {"rate": 1e2}}"#).unwrap();
        assert_eq!(parsed.inner.map(|i| i.rate), Some(100));
        let e = err(r#"{"name": "a", "inner": {"rate": 3.5}}"#);
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("inner.rate"))
        );
        let e = err(r#"{"name": "a", "inner": {"rate": 3.0}"#);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"name": "a", "nmae": 1}"#);
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("nmae"))
        );
        let e = err(r#"{}"#);
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = err(r#"{"name": "a", "inner": {"rate": "fast"}}"#);
        assert_eq!(e.field.as_deref(), Some("inner.rate"));
        assert!(!e.message.contains("line"), "{}", e.message);
        let e = err(r#"{"name": "a", "inner": {"rat": 1}}"#);
        assert_eq!(e.field.as_deref(), Some("inner.rat"));
        let e = err(r#"{"name": "a""#);
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("body"))
        );
        let e = err(r#"{"name": "a"} trailing"#);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = err(r#"[1]"#);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
