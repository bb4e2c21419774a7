//! API keys: `Authorization: Bearer <key>`, checked against SHA-256 hashes.
//!
//! Only hashes are configured (`API_KEYS`, comma-separated hex), so a leaked
//! configuration does not leak a key. Several hashes allow rotation.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{self, ConfigError, DatabaseConfig, Env};
use crate::domain::Region;
use crate::http::ApiError;

/// What a function that serves JSON to API-key holders reads (`api`,
/// `events`): `PORT`, the database, `API_KEYS`, `DEFAULT_REGION`.
#[derive(Debug, Clone)]
pub struct KeyedServiceConfig {
    pub port: u16,
    pub database: DatabaseConfig,
    pub api_keys: ApiKeys,
    pub default_region: Option<Region>,
    pub gcp_project: Option<String>,
}

impl KeyedServiceConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::port(env)?,
            database: DatabaseConfig::from_env(env)?,
            api_keys: ApiKeys::from_env(env)?,
            default_region: config::default_region(env)?,
            gcp_project: config::gcp_project(env),
        })
    }
}

/// The SHA-256 hashes of the keys that may call the API.
#[derive(Clone)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} hashes)", self.hashes.len())
    }
}

impl ApiKeys {
    /// `API_KEYS`: one or more SHA-256 hex digests, comma-separated.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let list = env.list("API_KEYS").unwrap_or_default();
        if list.is_empty() {
            return Err(ConfigError::new("API_KEYS", "is missing"));
        }
        Self::from_hashes(&list).map_err(|e| ConfigError::new("API_KEYS", e))
    }

    pub fn from_hashes<S: AsRef<str>>(hashes: &[S]) -> Result<Self, String> {
        let hashes = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h.as_ref().trim(), &mut out).map_err(|_| {
                    format!(
                        "is malformed: entry {} is not a SHA-256 hex digest (64 hex digits)",
                        i + 1
                    )
                })?;
                Ok(out)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { hashes })
    }

    /// The hex digest to configure for `key`.
    pub fn hash(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    /// Whether `key` is one of ours. Every configured hash is compared, each in
    /// constant time, so the timing says nothing about which one matched.
    pub fn verify(&self, key: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.hashes
            .iter()
            .fold(Choice::from(0), |acc, h| acc | h.ct_eq(&presented))
            .into()
    }
}

impl ApiKeys {
    /// Whether `hex` (a key's SHA-256, as [`ApiKeys::hash`] writes it) is
    /// still configured: a console session opened with a key ends when the
    /// key is removed.
    pub fn knows_hash(&self, hex: &str) -> bool {
        let mut wanted = [0u8; 32];
        if hex::decode_to_slice(hex, &mut wanted).is_err() {
            return false;
        }
        self.hashes
            .iter()
            .fold(Choice::from(0), |acc, h| acc | h.ct_eq(&wanted))
            .into()
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: 401 unless the request carries a configured API key.
pub async fn require_api_key(
    State(keys): State<Arc<ApiKeys>>,
    request: Request,
    next: Next,
) -> Response {
    match bearer_token(&request) {
        Some(token) if keys.verify(token) => next.run(request).await,
        _ => (
            [(WWW_AUTHENTICATE, "Bearer")],
            ApiError::unauthorized().into_response(),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_configured_keys() {
        let keys = ApiKeys::from_hashes(&[ApiKeys::hash("old"), ApiKeys::hash("new")]).unwrap();
        assert!(keys.verify("old"));
        assert!(keys.verify("new"));
        assert!(!keys.verify("other"));
        assert!(!keys.verify(""));
        // A hash is not a key.
        assert!(!keys.verify(&ApiKeys::hash("new")));
    }

    #[test]
    fn configuration_needs_hex_digests() {
        let e = ApiKeys::from_env(&Env::from_pairs([("API_KEYS", "secret")])).unwrap_err();
        assert_eq!(e.var, "API_KEYS");
        assert!(e.problem.contains("entry 1"), "{e}");
        assert!(ApiKeys::from_env(&Env::default()).is_err());
        let two = format!("{}, {}", ApiKeys::hash("a"), ApiKeys::hash("b"));
        let keys = ApiKeys::from_env(&Env::from_pairs([("API_KEYS", two)])).unwrap();
        assert!(keys.verify("b"));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 hashes)");
    }

    #[test]
    fn reads_bearer_tokens() {
        let req = |v: &str| {
            Request::builder()
                .header(AUTHORIZATION, v)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(bearer_token(&req("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&req("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&req("Basic abc")), None);
        assert_eq!(bearer_token(&req("Bearer ")), None);
        assert_eq!(bearer_token(&req("abc")), None);
    }
}
