//! A simulated Twilio for the local stack: it accepts sends on the Messages
//! API path, assigns SIDs, and posts **signed** status callbacks back —
//! queued → sent → delivered → read with realistic latency, and a share of
//! failures carrying Twilio's real error codes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::json;
use shared::twilio::compute_signature;

/// Delivery failures the simulator reports, with Twilio's codes.
const FAILURES: &[(&str, i32, &str)] = &[
    ("undelivered", 30003, "Unreachable destination handset"),
    ("failed", 63024, "Invalid message recipient"),
    ("undelivered", 30008, "Unknown error"),
];

pub struct SimulatedTwilio {
    pub account_sid: String,
    /// Callbacks are signed with this token, as Twilio signs with the account's.
    pub auth_token: String,
    /// Share of messages that fail after `sent` (0.0–1.0).
    pub failure_rate: f64,
    /// Share of delivered messages that are also read.
    pub read_rate: f64,
    /// Delay before each callback, drawn uniformly from this range.
    pub latency: (Duration, Duration),
    http: reqwest::Client,
}

impl SimulatedTwilio {
    pub fn new(account_sid: String, auth_token: String, failure_rate: f64) -> Self {
        Self {
            account_sid,
            auth_token,
            failure_rate,
            read_rate: 0.8,
            latency: (Duration::from_millis(50), Duration::from_millis(400)),
            http: reqwest::Client::new(),
        }
    }

    /// Mounted at `/sim/twilio`, the base the sender is pointed at.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/sim/twilio/2010-04-01/Accounts/{account}/Messages.json",
                post(create),
            )
            .with_state(self)
    }
}

async fn create(
    State(sim): State<Arc<SimulatedTwilio>>,
    Path(account): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let refuse = |code: i32, message: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": 400}),
            ),
        )
    };
    if account != sim.account_sid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        );
    }
    let Some(to) = form.get("To").filter(|t| t.starts_with("whatsapp:+")) else {
        return refuse(21211, "Invalid 'To' Phone Number");
    };
    if !form.contains_key("From") && !form.contains_key("MessagingServiceSid") {
        return refuse(
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required",
        );
    }
    if !form.contains_key("Body") && !form.contains_key("ContentSid") {
        return refuse(21602, "Message body is required");
    }
    // Unique across runs too: the local database keeps messages between runs.
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    if let Some(callback) = form.get("StatusCallback").cloned() {
        let sim = sim.clone();
        let (sid, to, from) = (
            sid.clone(),
            to.clone(),
            form.get("From").cloned().unwrap_or_default(),
        );
        tokio::spawn(async move { sim.report(&callback, &sid, &to, &from).await });
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "sid": sid, "status": "queued", "account_sid": sim.account_sid, "to": to,
            "from": form.get("From"), "body": form.get("Body"), "direction": "outbound-api",
            "api_version": "2010-04-01", "num_segments": "1", "error_code": null, "error_message": null,
        })),
    )
}

impl SimulatedTwilio {
    async fn report(&self, callback: &str, sid: &str, to: &str, from: &str) {
        let failure = (rand::random::<f64>() < self.failure_rate)
            .then(|| FAILURES[rand::random_range(0..FAILURES.len())]);
        let mut steps: Vec<(&str, Option<(i32, &str)>)> = vec![("queued", None), ("sent", None)];
        match failure {
            Some((status, code, message)) => steps.push((status, Some((code, message)))),
            None => {
                steps.push(("delivered", None));
                if rand::random::<f64>() < self.read_rate {
                    steps.push(("read", None));
                }
            }
        }
        for (status, error) in steps {
            let (lo, hi) = self.latency;
            let wait = lo + (hi.saturating_sub(lo)).mul_f64(rand::random::<f64>());
            tokio::time::sleep(wait).await;
            let mut params: Vec<(String, String)> = [
                ("AccountSid", self.account_sid.as_str()),
                ("ApiVersion", "2010-04-01"),
                ("ChannelPrefix", "whatsapp"),
                ("From", from),
                ("MessageSid", sid),
                ("MessageStatus", status),
                ("SmsSid", sid),
                ("SmsStatus", status),
                ("To", to),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            if let Some((code, message)) = error {
                params.push(("ErrorCode".into(), code.to_string()));
                params.push(("ErrorMessage".into(), message.to_owned()));
            }
            let signature = compute_signature(&self.auth_token, callback, &params);
            let result = self
                .http
                .post(callback)
                .header("X-Twilio-Signature", signature)
                .form(&params)
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = r.status().as_u16(), "status callback refused"),
                // The stack stopping while callbacks are still on their way.
                Err(e) if e.is_connect() => {
                    tracing::debug!(error = %e, "status callback not delivered")
                }
                Err(e) => tracing::warn!(error = %e, "status callback failed"),
            }
        }
    }
}
