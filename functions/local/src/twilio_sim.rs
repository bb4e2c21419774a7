//! A simulated Twilio for the local stack: it accepts sends on the Messages
//! API path, assigns SIDs, and posts **signed** status callbacks back —
//! queued → sent → delivered → read with realistic latency, and a share of
//! failures carrying Twilio's real error codes. It answers the Messages API's
//! list and fetch requests from what it accepted, so reconciliation runs
//! locally as against Twilio.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
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
    /// What it accepted, newest last, with the status last reported.
    held: Mutex<VecDeque<serde_json::Value>>,
}

/// Messages the simulator remembers for list and fetch.
const HELD: usize = 200_000;

impl SimulatedTwilio {
    pub fn new(account_sid: String, auth_token: String, failure_rate: f64) -> Self {
        Self {
            account_sid,
            auth_token,
            failure_rate,
            read_rate: 0.8,
            latency: (Duration::from_millis(50), Duration::from_millis(400)),
            http: reqwest::Client::new(),
            held: Mutex::default(),
        }
    }

    /// Mounted at `/sim/twilio`, the base the sender is pointed at.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/sim/twilio/2010-04-01/Accounts/{account}/Messages.json",
                post(create).get(list),
            )
            .route(
                "/sim/twilio/2010-04-01/Accounts/{account}/Messages/{sid}",
                get(fetch),
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
    let resource = json!({
        "sid": sid, "status": "queued", "account_sid": sim.account_sid, "to": to,
        "from": form.get("From"), "body": form.get("Body"), "direction": "outbound-api",
        "api_version": "2010-04-01", "num_segments": "1", "error_code": null, "error_message": null,
        "date_created": chrono::Utc::now().to_rfc2822(),
    });
    let mut held = sim.held.lock().expect("simulator state");
    if held.len() == HELD {
        held.pop_front();
    }
    held.push_back(resource.clone());
    (StatusCode::CREATED, Json(resource))
}

/// `GET …/Messages.json?To=…&From=…`: the newest first page, as Twilio lists.
async fn list(
    State(sim): State<Arc<SimulatedTwilio>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let held = sim.held.lock().expect("simulator state");
    let matches = |m: &&serde_json::Value, field: &str, key: &str| {
        query
            .get(key)
            .is_none_or(|want| m[field].as_str() == Some(want.as_str()))
    };
    let messages: Vec<serde_json::Value> = held
        .iter()
        .rev()
        .filter(|m| matches(m, "to", "To") && matches(m, "from", "From"))
        .take(50)
        .cloned()
        .collect();
    Json(json!({"messages": messages, "page": 0, "page_size": 50, "next_page_uri": null}))
}

/// `GET …/Messages/{sid}.json`.
async fn fetch(
    State(sim): State<Arc<SimulatedTwilio>>,
    Path((_, sid)): Path<(String, String)>,
) -> (StatusCode, Json<serde_json::Value>) {
    let sid = sid.trim_end_matches(".json");
    let held = sim.held.lock().expect("simulator state");
    match held.iter().rev().find(|m| m["sid"] == sid) {
        Some(m) => (StatusCode::OK, Json(m.clone())),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"code": 20404, "message": "The requested resource was not found", "status": 404}),
            ),
        ),
    }
}

impl SimulatedTwilio {
    /// Keeps the status (and error) a callback reported, for list and fetch.
    fn remember(&self, sid: &str, status: &str, error: Option<(i32, &str)>) {
        let mut held = self.held.lock().expect("simulator state");
        if let Some(m) = held.iter_mut().rev().find(|m| m["sid"] == sid) {
            m["status"] = status.into();
            if let Some((code, message)) = error {
                m["error_code"] = code.into();
                m["error_message"] = message.into();
            }
        }
    }
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
            self.remember(sid, status, error);
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Env;
    use shared::domain::PhoneNumber;
    use shared::twilio::{Outbound, TwilioClient, TwilioConfig};

    /// The simulator answers the client exactly as reconciliation reads Twilio.
    #[tokio::test]
    async fn lists_and_fetches_what_it_accepted() {
        let account = "AC00000000000000000000000000000000";
        let sim = Arc::new(SimulatedTwilio::new(account.into(), "token".into(), 0.0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, sim.router()).await });
        let config = TwilioConfig::from_env(&Env::from_pairs([
            ("TWILIO_ACCOUNT_SID", account.to_owned()),
            ("TWILIO_AUTH_TOKEN", "token".to_owned()),
            ("TWILIO_WHATSAPP_FROM", "+14155238886".to_owned()),
            ("TWILIO_API_BASE", format!("{base}/sim/twilio")),
            // Callbacks go nowhere: the test reads the simulator's own record.
            ("PUBLIC_BASE_URL", "http://127.0.0.1:9".to_owned()),
        ]))
        .unwrap();
        let client = TwilioClient::new(config).unwrap();
        let to = PhoneNumber::parse("+14155552671", None).unwrap();
        let other = PhoneNumber::parse("+14155552672", None).unwrap();
        let send = |to, body| Outbound {
            message_id: uuid::Uuid::new_v4(),
            to,
            body: Some(body),
            content_sid: None,
            content_variables: None,
        };
        let first = client.send(&send(&to, "one")).await.unwrap();
        client.send(&send(&other, "elsewhere")).await.unwrap();
        let second = client.send(&send(&to, "two")).await.unwrap();

        let listed = client.list_messages_to(&to).await.unwrap();
        let sids: Vec<_> = listed.iter().map(|(m, _)| Some(m.sid.clone())).collect();
        assert_eq!(sids, [second.sid.clone(), first.sid.clone()]);
        assert_eq!(listed[0].0.body.as_deref(), Some("two"));
        assert!(listed[0].0.created_at().is_some());

        let (fetched, _) = client
            .fetch_message(first.sid.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(fetched.body.as_deref(), Some("one"));
        let missing = client.fetch_message("SMnone").await.unwrap_err();
        assert_eq!(
            (missing.http_status, missing.code),
            (Some(404), Some(20404))
        );
    }
}
