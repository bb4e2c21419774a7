//! Fixtures for the campaign engine: campaigns as the API would create them,
//! users, a Twilio Messages API mock that behaves like Twilio's, senders and
//! publishers wired like production.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::config::Env;
use shared::engine::send::{SendEngine, SenderSettings};
use shared::gcp::{PublishError, PushEnvelope, SendTask, TaskPublisher};
use shared::ratelimit::Limiter;
use shared::twilio::{TwilioClient, TwilioConfig};
use sqlx::PgPool;
use uuid::Uuid;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const WHATSAPP_FROM: &str = "+14155238886";

/// A campaign as an operator would define it.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    pub segment: Value,
    pub body: Option<&'static str>,
    pub content_sid: Option<&'static str>,
    pub content_variables: Option<Value>,
    pub rate_per_second: i32,
    pub quiet_hours: Option<(&'static str, &'static str)>,
    pub default_timezone: &'static str,
    pub frequency_cap: Option<i32>,
    pub max_attempts: i32,
    pub state: &'static str,
}

impl Default for CampaignSpec {
    fn default() -> Self {
        Self {
            segment: json!({"field": "consent", "eq": "opted_in"}),
            body: Some("Hi {first_name}, your order {{ order | default('is on its way') }}"),
            content_sid: None,
            content_variables: None,
            rate_per_second: 1000,
            quiet_hours: None,
            default_timezone: "UTC",
            frequency_cap: None,
            max_attempts: 3,
            state: "running",
        }
    }
}

pub async fn campaign(db: &PgPool, spec: &CampaignSpec) -> Uuid {
    let name = format!("campaign-{}", Uuid::new_v4());
    let quiet = |i: usize| spec.quiet_hours.map(|q| if i == 0 { q.0 } else { q.1 });
    sqlx::query_scalar(
        "with s as (insert into segments (name, definition) values ($1, $2) returning id),
              t as (insert into templates (name, body, content_sid, content_variables) values ($1, $3, $4, $5) returning id)
         insert into campaigns (name, segment_id, template_id, state, rate_per_second, quiet_hours_start,
                                quiet_hours_end, default_timezone, frequency_cap, max_attempts, starts_at)
         select $1, s.id, t.id, $6, $7, $8::time, $9::time, $10, $11, $12, now() from s, t
         returning id",
    )
    .bind(name)
    .bind(&spec.segment)
    .bind(spec.body)
    .bind(spec.content_sid)
    .bind(&spec.content_variables)
    .bind(spec.state)
    .bind(spec.rate_per_second)
    .bind(quiet(0))
    .bind(quiet(1))
    .bind(spec.default_timezone)
    .bind(spec.frequency_cap)
    .bind(spec.max_attempts)
    .fetch_one(db)
    .await
    .expect("insert campaign")
}

pub async fn user(
    db: &PgPool,
    phone: &str,
    consent: &str,
    attributes: Value,
    last_inbound_at: Option<DateTime<Utc>>,
) {
    sqlx::query(
        "insert into users (phone_number, consent, attributes, last_inbound_at) values ($1, $2, $3, $4)
         on conflict (phone_number) do update set consent = excluded.consent, attributes = excluded.attributes,
             last_inbound_at = excluded.last_inbound_at",
    )
    .bind(phone)
    .bind(consent)
    .bind(attributes)
    .bind(last_inbound_at)
    .execute(db)
    .await
    .expect("insert user");
}

/// A message ready for the sender (`queued`), as the fan-out leaves it.
pub async fn queued_message(db: &PgPool, campaign: Uuid, phone: &str) -> Uuid {
    sqlx::query_scalar(
        "insert into messages (campaign_id, phone_number, status, status_rank, queued_at)
         values ($1, $2, 'queued', 1, now()) returning id",
    )
    .bind(campaign)
    .bind(phone)
    .fetch_one(db)
    .await
    .expect("insert queued message")
}

pub fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
}

pub fn twilio_config(api_base: &str, timeout: Duration) -> TwilioConfig {
    TwilioConfig::from_env(&Env::from_pairs([
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.to_owned()),
        ("TWILIO_AUTH_TOKEN", crate::AUTH_TOKEN.to_owned()),
        ("TWILIO_WHATSAPP_FROM", format!("whatsapp:{WHATSAPP_FROM}")),
        ("TWILIO_API_BASE", api_base.to_owned()),
        ("PUBLIC_BASE_URL", crate::PUBLIC_BASE_URL.to_owned()),
        ("TWILIO_TIMEOUT_MS", timeout.as_millis().to_string()),
    ]))
    .expect("test Twilio config is valid")
}

/// Settings that keep tests fast: short retries, no long sleeps.
pub fn fast_settings() -> SenderSettings {
    SenderSettings {
        retry_base: Duration::from_millis(10),
        retry_cap: Duration::from_millis(100),
        account_hold_base: Duration::from_millis(50),
        ..SenderSettings::default()
    }
}

pub fn sender(
    db: &PgPool,
    api_base: &str,
    limiter: Limiter,
    settings: SenderSettings,
) -> Arc<SendEngine> {
    let twilio =
        TwilioClient::new(twilio_config(api_base, Duration::from_millis(500))).expect("client");
    Arc::new(SendEngine::new(db.clone(), twilio, limiter, settings))
}

/// A push of one send task, as Pub/Sub delivers it.
pub fn push_request(message_id: Uuid) -> Request<Body> {
    let payload = serde_json::to_vec(&SendTask { message_id }).unwrap();
    let envelope = PushEnvelope::wrap(Uuid::new_v4().to_string(), &payload, Default::default());
    Request::post("/pubsub/push")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&envelope).unwrap()))
        .unwrap()
}

/// Answers like Twilio's Messages API on success: 201 with a fresh SID.
pub struct TwilioAccepts {
    next: AtomicU64,
}

impl TwilioAccepts {
    pub fn new() -> Self {
        Self {
            next: AtomicU64::new(1),
        }
    }
}

impl Default for TwilioAccepts {
    fn default() -> Self {
        Self::new()
    }
}

impl wiremock::Respond for TwilioAccepts {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        wiremock::ResponseTemplate::new(201).set_body_json(json!({
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": form.get("Body"),
            "date_created": Utc::now().to_rfc2822(),
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": form.get("From"),
            "messaging_service_sid": null,
            "num_media": "0",
            "num_segments": "1",
            "price": null,
            "sid": format!("SM{n:032x}"),
            "status": "queued",
            "to": form.get("To"),
            "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{n:032x}.json"),
        }))
    }
}

/// Twilio's error shape: `{"code", "message", "more_info", "status"}`.
pub fn twilio_error(status: u16, code: i32, message: &str) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

/// A publisher that keeps what it was given.
#[derive(Default, Clone)]
pub struct RecordingPublisher {
    pub tasks: Arc<Mutex<Vec<SendTask>>>,
    pub fail: bool,
}

impl TaskPublisher for RecordingPublisher {
    async fn publish(&self, tasks: &[SendTask]) -> Result<(), PublishError> {
        if self.fail {
            return Err(PublishError("topic unavailable".into()));
        }
        self.tasks.lock().unwrap().extend_from_slice(tasks);
        Ok(())
    }
}

/// A publisher that only counts, for the fan-out benchmark.
#[derive(Default)]
pub struct CountingPublisher(pub AtomicU64);

impl TaskPublisher for CountingPublisher {
    async fn publish(&self, tasks: &[SendTask]) -> Result<(), PublishError> {
        self.0.fetch_add(tasks.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
