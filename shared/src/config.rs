//! Typed configuration from the environment.
//!
//! Each binary builds one struct from the shared parts below. A missing or
//! malformed variable stops the binary at start with one line naming it
//! ([`load_or_exit`]); secrets are wrapped in [`Secret`] and never print.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::domain::consent;
use crate::domain::{ConsentKeywords, Region};

/// One variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {var} {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &str, problem: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            problem: problem.into(),
        }
    }

    /// One JSON line like every other log, so Cloud Logging reads it.
    pub fn log_line(&self) -> String {
        serde_json::json!({
            "severity": "CRITICAL",
            "message": format!("configuration: {self}"),
            "variable": self.var,
        })
        .to_string()
    }
}

/// A snapshot of the environment, so that tests build configs without
/// touching the process environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// This environment over `defaults`: a variable set here wins, one set
    /// only in `defaults` is taken from there. How the local stack gives
    /// every function its embedded defaults and still builds each function's
    /// configuration the one way the function's binary does.
    pub fn with_defaults<K: Into<String>, V: Into<String>>(
        &self,
        defaults: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut vars = self.vars.clone();
        for (k, v) in defaults {
            let k = k.into();
            if self.raw(&k).is_none() {
                vars.insert(k, v.into());
            }
        }
        Self { vars }
    }

    /// The raw value, with an empty value treated as unset.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn optional<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.raw(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ConfigError::new(name, format!("is malformed: {e}")))
            })
            .transpose()
    }

    pub fn required<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.optional(name)?
            .ok_or_else(|| ConfigError::new(name, "is missing"))
    }

    pub fn or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    pub fn secret(&self, name: &str) -> Result<Secret, ConfigError> {
        self.raw(name)
            .map(|v| Secret::new(v.to_owned()))
            .ok_or_else(|| ConfigError::new(name, "is missing"))
    }

    /// A comma-separated list; empty entries are dropped.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.raw(name).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// Builds a config or stops the process with one line naming the variable.
pub fn load_or_exit<T>(build: impl FnOnce(&Env) -> Result<T, ConfigError>) -> T {
    match build(&Env::from_process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}", e.log_line());
            std::process::exit(2);
        }
    }
}

/// A value that must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The rate limiter's Redis: `REDIS_URL` (`redis://` on loopback, `rediss://`
/// with AUTH for Memorystore; a secret, since it holds the auth string),
/// `REDIS_KEY_PREFIX` (`ese`) and `REDIS_CA_CERT`, the PEM of the server's CA
/// that a `rediss://` connection trusts.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    pub key_prefix: String,
    pub ca_cert: Option<String>,
}

impl RedisConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.secret("REDIS_URL")?;
        let tls = url.expose().starts_with("rediss://");
        if !tls && !url.expose().starts_with("redis://") {
            return Err(ConfigError::new(
                "REDIS_URL",
                "is malformed: expected redis://host:port or rediss://:auth@host:port",
            ));
        }
        let ca_cert = env.raw("REDIS_CA_CERT").map(str::to_owned);
        if let Some(pem) = &ca_cert {
            if !tls {
                return Err(ConfigError::new(
                    "REDIS_CA_CERT",
                    "is set but REDIS_URL is not rediss://",
                ));
            }
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::new(
                    "REDIS_CA_CERT",
                    "is malformed: expected PEM certificates",
                ));
            }
        }
        Ok(Self {
            url,
            key_prefix: env.or("REDIS_KEY_PREFIX", "ese".to_owned())?,
            ca_cert,
        })
    }
}

/// `PORT`, as Cloud Run sets it.
pub fn port(env: &Env) -> Result<u16, ConfigError> {
    env.or("PORT", 8080)
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    /// `DATABASE_STATEMENT_TIMEOUT_MS` (30,000; 0 for none): no statement holds
    /// a connection longer. Imports turn it off on their own session.
    pub statement_timeout_ms: u64,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.secret("DATABASE_URL")?;
        if !url.expose().starts_with("postgres://") && !url.expose().starts_with("postgresql://") {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "is malformed: expected postgres://user@host:port/database",
            ));
        }
        Ok(Self {
            url,
            max_connections: env.or("DATABASE_MAX_CONNECTIONS", 10)?,
            statement_timeout_ms: env.or("DATABASE_STATEMENT_TIMEOUT_MS", 30_000)?,
        })
    }
}

/// The base URL Twilio calls (`https://inbound-xyz.a.run.app`), without a trailing slash.
/// Signatures are computed over it, never over the `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicBaseUrl(String);

impl FromStr for PublicBaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = url::Url::parse(s).map_err(|e| format!("{e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err("expected an http(s) URL such as https://hooks.example.com".into());
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err("must not carry a query or fragment".into());
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

impl PublicBaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full URL Twilio used for a request path with its query (`/webhooks/status?mid=…`).
    pub fn join(&self, path_and_query: &str) -> String {
        format!("{}{}", self.0, path_and_query)
    }
}

/// What the webhook functions need to authenticate Twilio.
#[derive(Clone, Debug)]
pub struct TwilioWebhookConfig {
    pub public_base_url: PublicBaseUrl,
    /// `TWILIO_AUTH_TOKEN`: one token, or several separated by commas while a
    /// token is rotated (the new one first).
    pub auth_tokens: Vec<Secret>,
}

impl TwilioWebhookConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth_tokens: Vec<Secret> = env
            .list("TWILIO_AUTH_TOKEN")
            .unwrap_or_default()
            .into_iter()
            .map(Secret::new)
            .collect();
        if auth_tokens.is_empty() {
            return Err(ConfigError::new("TWILIO_AUTH_TOKEN", "is missing"));
        }
        Ok(Self {
            public_base_url: env.required("PUBLIC_BASE_URL")?,
            auth_tokens,
        })
    }
}

/// `DEFAULT_REGION`, for national numbers.
pub fn default_region(env: &Env) -> Result<Option<Region>, ConfigError> {
    env.optional("DEFAULT_REGION")
}

/// `CONSENT_OPT_OUT_KEYWORDS` and `CONSENT_OPT_IN_KEYWORDS`, each a comma-separated
/// list that replaces Twilio's defaults when set.
pub fn consent_keywords(env: &Env) -> ConsentKeywords {
    let owned = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    match (
        env.list("CONSENT_OPT_OUT_KEYWORDS"),
        env.list("CONSENT_OPT_IN_KEYWORDS"),
    ) {
        (None, None) => ConsentKeywords::default(),
        (out, inn) => ConsentKeywords::new(
            out.unwrap_or_else(|| owned(&consent::DEFAULT_OPT_OUT)),
            inn.unwrap_or_else(|| owned(&consent::DEFAULT_OPT_IN)),
        ),
    }
}

/// `GCP_PROJECT`, used to name traces in logs; optional everywhere.
pub fn gcp_project(env: &Env) -> Option<String> {
    env.raw("GCP_PROJECT").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_values_name_the_variable() {
        let env = Env::from_pairs([("PORT", "eighty"), ("DATABASE_URL", "mysql://x")]);
        assert_eq!(
            port(&env).unwrap_err().to_string(),
            "configuration error: PORT is malformed: invalid digit found in string"
        );
        assert_eq!(
            DatabaseConfig::from_env(&env).unwrap_err().var,
            "DATABASE_URL"
        );
        let empty = Env::default();
        assert_eq!(
            TwilioWebhookConfig::from_env(&empty)
                .unwrap_err()
                .to_string(),
            "configuration error: TWILIO_AUTH_TOKEN is missing"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let env = Env::from_pairs([
            ("TWILIO_AUTH_TOKEN", "new-token, old-token"),
            ("PUBLIC_BASE_URL", "https://hooks.example.com/"),
        ]);
        let cfg = TwilioWebhookConfig::from_env(&env).unwrap();
        assert_eq!(cfg.auth_tokens.len(), 2);
        assert_eq!(cfg.auth_tokens[1].expose(), "old-token");
        let printed = format!("{cfg:?}");
        assert!(
            !printed.contains("new-token") && !printed.contains("old-token"),
            "{printed}"
        );
        assert_eq!(
            cfg.public_base_url.join("/webhooks/status?mid=1"),
            "https://hooks.example.com/webhooks/status?mid=1"
        );
    }

    #[test]
    fn public_base_url_must_be_http() {
        assert!("ftp://x".parse::<PublicBaseUrl>().is_err());
        assert!("https://x.example?a=1".parse::<PublicBaseUrl>().is_err());
        assert!("not a url".parse::<PublicBaseUrl>().is_err());
    }

    #[test]
    fn keyword_lists_come_from_the_environment() {
        let env = Env::from_pairs([("CONSENT_OPT_OUT_KEYWORDS", "BAJA, PARAR")]);
        let k = consent_keywords(&env);
        assert_eq!(k.classify("baja"), Some(crate::domain::Consent::OptedOut));
        assert_eq!(k.classify("stop"), None);
        assert_eq!(k.classify("start"), Some(crate::domain::Consent::OptedIn));
    }
}
