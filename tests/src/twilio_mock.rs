//! A Twilio Messages API mock that injects faults per request and serves the
//! list and fetch endpoints from what it really accepted, as Twilio does: the
//! tests of reconciliation and the send-once soak run against it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::engine::{ACCOUNT_SID, messages_path};

/// How the mock answers one send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// 201 with the message resource.
    Accept,
    /// Accepts (the message exists), answers 201 with a body that is not JSON.
    AcceptGarbage,
    /// Accepts, then answers only after the client has given up.
    AcceptThenTimeout,
    /// 500 without a code, the message not taken.
    ServerErrorBefore,
    /// Accepts, then fails with a 500 without a code.
    ServerErrorAfter,
    /// 401, error 20003: the credentials are wrong.
    Unauthorized,
    /// 429, error 20429: too many requests.
    TooManyRequests,
    /// 429, error 63038: the account's daily limit.
    DailyLimit,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Accept,
        Fault::AcceptGarbage,
        Fault::AcceptThenTimeout,
        Fault::ServerErrorBefore,
        Fault::ServerErrorAfter,
        Fault::Unauthorized,
        Fault::TooManyRequests,
        Fault::DailyLimit,
    ];

    /// Whether Twilio holds the message after answering so.
    pub fn accepts(self) -> bool {
        matches!(
            self,
            Fault::Accept
                | Fault::AcceptGarbage
                | Fault::AcceptThenTimeout
                | Fault::ServerErrorAfter
        )
    }
}

/// One message the mock accepted.
#[derive(Debug, Clone)]
pub struct Held {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub body: Option<String>,
    pub created: chrono::DateTime<Utc>,
    pub status: String,
}

impl Held {
    fn resource(&self) -> Value {
        json!({
            "sid": self.sid, "account_sid": ACCOUNT_SID, "to": self.to, "from": self.from,
            "body": self.body, "status": self.status, "direction": "outbound-api",
            "date_created": self.created.to_rfc2822(),
            "api_version": "2010-04-01", "error_code": null, "error_message": null,
        })
    }
}

/// What the mock does and has done; shared by its responders.
#[derive(Default)]
pub struct State {
    /// Faults for the next requests, in order; then `default`.
    pub script: VecDeque<Fault>,
    /// Chooses a fault when the script is empty (e.g. at random).
    pub chooser: Option<Box<dyn Fn() -> Fault + Send + Sync>>,
    pub held: Vec<Held>,
    /// Every fault answered, in order.
    pub answered: Vec<Fault>,
    next: u64,
}

/// The mock: a wiremock server with the create, list and fetch routes.
#[derive(Clone)]
pub struct FaultyTwilio {
    pub server: Arc<MockServer>,
    pub state: Arc<Mutex<State>>,
    /// How long "then time out" waits: longer than the client's timeout.
    pub timeout_delay: Duration,
}

impl FaultyTwilio {
    pub async fn start() -> Self {
        let server = Arc::new(MockServer::start().await);
        let state = Arc::new(Mutex::new(State::default()));
        let mock = Self {
            server,
            state,
            timeout_delay: Duration::from_secs(2),
        };
        Mock::given(method("POST"))
            .and(path(messages_path()))
            .respond_with(Create(mock.clone()))
            .mount(&mock.server)
            .await;
        Mock::given(method("GET"))
            .and(path(messages_path()))
            .respond_with(List(mock.clone()))
            .mount(&mock.server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"/Messages/SM[0-9a-f]+\.json$"))
            .respond_with(Fetch(mock.clone()))
            .mount(&mock.server)
            .await;
        mock
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The next requests answer these faults, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().script.extend(faults);
    }

    /// Requests past the script answer what `choose` says.
    pub fn choose(&self, choose: impl Fn() -> Fault + Send + Sync + 'static) {
        self.state.lock().unwrap().chooser = Some(Box::new(choose));
    }

    /// Messages the mock holds, per recipient.
    pub fn held_to(&self, to: &str) -> Vec<Held> {
        let to = format!("whatsapp:{to}");
        self.state
            .lock()
            .unwrap()
            .held
            .iter()
            .filter(|h| h.to == to)
            .cloned()
            .collect()
    }

    pub fn held(&self) -> Vec<Held> {
        self.state.lock().unwrap().held.clone()
    }

    pub fn answered(&self) -> Vec<Fault> {
        self.state.lock().unwrap().answered.clone()
    }

    /// Sets a held message's status, as its delivery would.
    pub fn set_status(&self, sid: &str, status: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(h) = state.held.iter_mut().find(|h| h.sid == sid) {
            h.status = status.to_owned();
        }
    }

    /// Send requests received (whatever they were answered).
    pub async fn send_requests(&self) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method == wiremock::http::Method::POST)
            .count()
    }
}

fn error(status: u16, code: i32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"code": code, "message": message, "status": status}))
}

struct Create(FaultyTwilio);

impl Respond for Create {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        let mut state = self.0.state.lock().unwrap();
        let fault = match state.script.pop_front() {
            Some(f) => f,
            None => state.chooser.as_ref().map_or(Fault::Accept, |c| c()),
        };
        state.answered.push(fault);
        let held = fault.accepts().then(|| {
            state.next += 1;
            let h = Held {
                sid: format!("SM{:032x}", state.next),
                to: form.get("To").cloned().unwrap_or_default(),
                from: form.get("From").cloned(),
                body: form.get("Body").cloned(),
                created: Utc::now(),
                status: "queued".to_owned(),
            };
            state.held.push(h.clone());
            h
        });
        match fault {
            Fault::Accept => ResponseTemplate::new(201).set_body_json(held.unwrap().resource()),
            Fault::AcceptGarbage => {
                ResponseTemplate::new(201).set_body_string("<html>502 Bad Gateway</html>")
            }
            Fault::AcceptThenTimeout => ResponseTemplate::new(201)
                .set_body_json(held.unwrap().resource())
                .set_delay(self.0.timeout_delay),
            Fault::ServerErrorBefore | Fault::ServerErrorAfter => {
                ResponseTemplate::new(500).set_body_string("Internal Server Error")
            }
            Fault::Unauthorized => error(401, 20003, "Authenticate"),
            Fault::TooManyRequests => error(429, 20429, "Too Many Requests"),
            Fault::DailyLimit => error(429, 63038, "Account exceeded the daily messages limit"),
        }
    }
}

struct List(FaultyTwilio);

impl Respond for List {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query: std::collections::HashMap<String, String> = request
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let state = self.0.state.lock().unwrap();
        // Newest first, as Twilio lists them.
        let messages: Vec<Value> = state
            .held
            .iter()
            .rev()
            .filter(|h| query.get("To").is_none_or(|to| *to == h.to))
            .filter(|h| query.get("From").is_none_or(|f| Some(f) == h.from.as_ref()))
            .take(50)
            .map(Held::resource)
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "messages": messages, "page": 0, "page_size": 50, "next_page_uri": null,
        }))
    }
}

struct Fetch(FaultyTwilio);

impl Respond for Fetch {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let sid = request
            .url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".json");
        let state = self.0.state.lock().unwrap();
        match state.held.iter().find(|h| h.sid == sid) {
            Some(h) => ResponseTemplate::new(200).set_body_json(h.resource()),
            None => error(404, 20404, "The requested resource was not found"),
        }
    }
}
