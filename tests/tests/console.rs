//! The operator console in process: sign-in and sessions, CSRF, field
//! errors, the dry run, exports by outcome, uploads, a person's page. The
//! real browser walks it in `console_browser`.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use shared::config::Env;
use shared::http::auth::ApiKeys;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use crate::support::MIGRATOR;

const KEY: &str = "console-test-key-0123456789";

fn router(db: PgPool, keys: &[&str], inbox: Option<&Path>) -> Router {
    router_with(db, keys, inbox, None)
}

fn router_with(db: PgPool, keys: &[&str], inbox: Option<&Path>, twilio: Option<&str>) -> Router {
    let hashes: Vec<String> = keys.iter().map(|k| ApiKeys::hash(k)).collect();
    let mut vars = vec![
        (
            "DATABASE_URL",
            "postgres://unused@127.0.0.1/unused".to_owned(),
        ),
        ("API_KEYS", hashes.join(",")),
        ("DEFAULT_REGION", "US".to_owned()),
    ];
    if let Some(dir) = inbox {
        vars.push(("IMPORT_INBOX_DIR", dir.to_string_lossy().into_owned()));
    }
    if let Some(api_base) = twilio {
        vars.extend([
            ("TWILIO_ACCOUNT_SID", e2e::engine::ACCOUNT_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", e2e::AUTH_TOKEN.to_owned()),
            ("TWILIO_WHATSAPP_FROM", "+14155238886".to_owned()),
            ("TWILIO_API_BASE", api_base.to_owned()),
            ("PUBLIC_BASE_URL", e2e::PUBLIC_BASE_URL.to_owned()),
        ]);
    }
    let config = api::Config::from_env(&Env::from_pairs(vars)).expect("config");
    api::router(api::AppState::new(db, &config))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
    }
}

/// A browser of sorts: keeps cookies, sends forms with the page's CSRF token.
struct Client {
    router: Router,
    cookies: Vec<(String, String)>,
    csrf: String,
}

fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_owned())
}

impl Client {
    fn new(router: Router) -> Self {
        Self {
            router,
            cookies: vec![],
            csrf: String::new(),
        }
    }

    async fn send(&mut self, request: axum::http::request::Builder, body: Body) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = request
            .header("host", "127.0.0.1:8080")
            .header("cookie", cookie)
            .body(body)
            .unwrap();
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(token) = csrf_of(&body) {
            self.csrf = token;
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded");
        self.send(request, Body::from(body)).await
    }

    /// A form as the page would send it: with the session's token.
    async fn submit(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf.clone();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_form(path, &all).await
    }

    async fn sign_in(&mut self, key: &str) -> Answer {
        self.get("/console/sign-in").await;
        let csrf = self.csrf.clone();
        self.post_form(
            "/console/sign-in",
            &[
                ("api_key", key),
                ("csrf", &csrf),
                ("next", "/console/overview"),
            ],
        )
        .await
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn pages_need_a_session_that_a_key_opens_and_sign_out_ends(db: PgPool) {
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    let a = c.get("/console/overview").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/console/sign-in?next=%2Fconsole%2Foverview");
    let fragment = c
        .send(
            Request::get("/console/imports").header("x-console-fragment", "1"),
            Body::empty(),
        )
        .await;
    assert_eq!(fragment.status, StatusCode::UNAUTHORIZED);

    let wrong = c.sign_in("not-our-key").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("not one of ours"), "{}", wrong.body);
    assert!(c.cookies.iter().all(|(k, _)| k != "ese_console"));

    // The sign-in form's own token: a post without the cookie it set is refused.
    let mut bare = Client::new(router(db.clone(), &[KEY], None));
    let forged = bare
        .post_form(
            "/console/sign-in",
            &[
                ("api_key", KEY),
                ("csrf", "x"),
                ("next", "/console/overview"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let ok = c.sign_in(KEY).await;
    assert_eq!(
        (ok.status, ok.location()),
        (StatusCode::SEE_OTHER, "/console/overview")
    );
    let set: Vec<&str> = ok
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let session = set
        .iter()
        .find(|s| s.starts_with("ese_console="))
        .expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP on loopback: {session}"
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from console_sessions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let token = c
        .cookies
        .iter()
        .find(|(k, _)| k == "ese_console")
        .unwrap()
        .1
        .clone();
    let raw: i64 = sqlx::query_scalar(
        "select count(*) from console_sessions where token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&token)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(raw, 0, "only the token's hash is stored");

    let page = c.get("/console/overview").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Messages in the last 24 hours"));
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // The same session against a deployment whose API_KEYS no longer has the key.
    let mut rotated = Client::new(router(db.clone(), &["another-key"], None));
    rotated.cookies = c.cookies.clone();
    assert_eq!(
        rotated.get("/console/overview").await.status,
        StatusCode::SEE_OTHER
    );

    let out = c.submit("/console/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let mut replay = Client::new(router(db.clone(), &[KEY], None));
    replay.cookies = vec![("ese_console".into(), token)];
    assert_eq!(
        replay.get("/console/overview").await.status,
        StatusCode::SEE_OTHER
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_form_without_its_csrf_token_changes_nothing(db: PgPool) {
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    c.get("/console/segments/new").await;
    let definition = r#"{"attribute": "plan", "eq": "gold"}"#;
    let fields = [("name", "Gold"), ("definition", definition)];
    assert_eq!(
        c.post_form("/console/segments", &fields).await.status,
        StatusCode::FORBIDDEN
    );
    let zeros = "0".repeat(64);
    let mut with_wrong = vec![("csrf", zeros.as_str())];
    with_wrong.extend_from_slice(&fields);
    assert_eq!(
        c.post_form("/console/segments", &with_wrong).await.status,
        StatusCode::FORBIDDEN
    );
    let csrf = c.csrf.clone();
    let cross_site = c
        .send(
            Request::post("/console/segments")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", "https://evil.example"),
            Body::from(format!("csrf={csrf}&name=Gold&definition=%7B%7D")),
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let count: i64 = sqlx::query_scalar("select count(*) from segments")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 0);

    let saved = c.submit("/console/segments", &fields).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let count: i64 = sqlx::query_scalar("select count(*) from segments")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn errors_are_shown_at_the_field_they_name(db: PgPool) {
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    c.get("/console/segments/new").await;
    let bad = c
        .submit(
            "/console/segments",
            &[
                ("name", "Bad"),
                ("definition", r#"{"attribute": "plan", "eqq": 1}"#),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"err-definition\""), "{}", bad.body);
    assert!(bad.body.contains("unknown operator"));
    assert!(bad.body.contains("eqq"), "what was typed is kept");

    let not_json = c
        .submit(
            "/console/segments",
            &[("name", "Bad"), ("definition", "{plan: gold")],
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(not_json.body.contains("definition is not valid JSON"));

    c.get("/console/campaigns/new").await;
    let campaign = c
        .submit(
            "/console/campaigns",
            &[
                ("name", "X"),
                ("segment_id", &Uuid::new_v4().to_string()),
                ("template_id", &Uuid::new_v4().to_string()),
                ("rate_per_second", "5000"),
            ],
        )
        .await;
    assert_eq!(campaign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        campaign.body.contains("id=\"err-rate_per_second\""),
        "{}",
        campaign.body
    );
    assert!(
        campaign
            .body
            .contains("aria-invalid=\"true\" aria-describedby=\"err-rate_per_second\"")
    );
}

/// Users as the dry run's rules will read them.
async fn people(db: &PgPool) {
    sqlx::query(
        "insert into users (phone_number, consent, attributes, last_inbound_at) values
           ('+14155550001', 'opted_in', '{\"plan\": \"gold\", \"first_name\": \"Ada\"}', now() - interval '1 hour'),
           ('+14155550002', 'opted_in', '{\"plan\": \"gold\", \"first_name\": \"Bo\"}', now() - interval '1 hour'),
           ('+14155550003', 'opted_in', '{\"plan\": \"gold\"}', now() - interval '1 hour'),
           ('+14155550004', 'opted_in', '{\"plan\": \"gold\", \"first_name\": \"Cy\"}', now() - interval '3 days'),
           ('+14155550005', 'opted_out', '{\"plan\": \"gold\", \"first_name\": \"Di\"}', now()),
           ('+14155550006', 'unknown', '{\"plan\": \"gold\", \"first_name\": \"Ed\"}', now()),
           ('+14155550007', 'opted_in', '{\"plan\": \"gold\", \"first_name\": \"Fay\"}', now()),
           ('+14155550008', 'opted_in', '{\"plan\": \"silver\", \"first_name\": \"Gus\"}', now())",
    )
    .execute(db)
    .await
    .unwrap();
    // Fay left the topic; Bo already had a message today (the cap is 1).
    sqlx::query("insert into topic_subscriptions (phone_number, topic, subscribed, source) values ('+14155550007', 'promos', false, 'button')")
        .execute(db)
        .await
        .unwrap();
    let other = e2e::fixtures::campaign(db).await;
    sqlx::query("insert into messages (campaign_id, phone_number, status, status_rank, sent_at) values ($1, '+14155550002', 'sent', 6, now() - interval '2 hours')")
        .bind(other)
        .execute(db)
        .await
        .unwrap();
}

fn count_in(page: &str, decision: &str) -> Option<i64> {
    let row = page
        .split(&format!("<th scope=\"row\">{decision}</th><td>"))
        .nth(1)?;
    row.split('<').next()?.replace(',', "").parse().ok()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_dry_run_applies_the_senders_rules_to_the_whole_audience(db: PgPool) {
    people(&db).await;
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    c.get("/console/segments/new").await;
    let segment = c
        .submit(
            "/console/segments",
            &[
                ("name", "Gold"),
                ("definition", r#"{"attribute": "plan", "eq": "gold"}"#),
            ],
        )
        .await;
    let segment_id = segment
        .location()
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let template = c
        .submit(
            "/console/templates",
            &[
                ("name", "Hi"),
                ("body", "Hi {{ first_name }}!"),
                ("locale", "en"),
            ],
        )
        .await;
    let template_id = template
        .location()
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let created = c
        .submit(
            "/console/campaigns",
            &[
                ("name", "Promo"),
                ("segment_id", &segment_id),
                ("template_id", &template_id),
                ("frequency_cap", "1"),
                ("topic", "promos"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let campaign = created.location().to_owned();
    let messages_before: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&db)
        .await
        .unwrap();

    let run = c.submit(&format!("{campaign}/dry-run"), &[]).await;
    assert_eq!(run.status, StatusCode::OK);
    let page = &run.body;
    assert!(page.contains("all <strong>7</strong> people"), "{page}");
    assert_eq!(count_in(page, "would_send"), Some(1), "{page}");
    assert_eq!(count_in(page, "skipped_frequency_cap"), Some(1));
    assert_eq!(count_in(page, "skipped_render"), Some(1));
    assert_eq!(count_in(page, "needs_template_outside_window"), Some(1));
    assert_eq!(count_in(page, "skipped_no_consent"), Some(2));
    assert_eq!(count_in(page, "skipped_topic_unsubscribed"), Some(1));
    assert!(page.contains("<blockquote>Hi Ada!</blockquote>"), "{page}");
    let messages_after: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(messages_before, messages_after, "a dry run writes nothing");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn recipients_export_by_outcome(db: PgPool) {
    let campaign = e2e::fixtures::campaign(&db).await;
    for (phone, status, code) in [
        ("+14155550011", "failed", Some(63016)),
        ("+14155550012", "undelivered", Some(63016)),
        ("+14155550013", "failed", Some(63024)),
        ("+14155550014", "read", None),
        ("+14155550015", "delivered", None),
    ] {
        let id = e2e::fixtures::message(&db, campaign, phone, status, None).await;
        sqlx::query("update messages set error_code = $2 where id = $1")
            .bind(id)
            .bind(code)
            .execute(&db)
            .await
            .unwrap();
    }
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    let rows = |body: &str| {
        body.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let code = c
        .get(&format!(
            "/console/campaigns/{campaign}/recipients.csv?outcome=63016"
        ))
        .await;
    assert_eq!(code.status, StatusCode::OK);
    assert_eq!(
        code.headers.get("content-type").unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(code.body.starts_with("phone_number,status,error_code,"));
    let mut got = rows(&code.body);
    got.sort();
    assert_eq!(got, ["+14155550011", "+14155550012"]);
    assert_eq!(
        rows(
            &c.get(&format!(
                "/console/campaigns/{campaign}/recipients.csv?outcome=failed"
            ))
            .await
            .body
        )
        .len(),
        3
    );
    assert_eq!(
        rows(
            &c.get(&format!(
                "/console/campaigns/{campaign}/recipients.csv?outcome=read"
            ))
            .await
            .body
        ),
        ["+14155550014"]
    );
    assert_eq!(
        rows(
            &c.get(&format!(
                "/console/campaigns/{campaign}/recipients.csv?outcome=delivered"
            ))
            .await
            .body
        )
        .len(),
        2
    );
    let bad = c
        .get(&format!(
            "/console/campaigns/{campaign}/recipients.csv?outcome=bounced"
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("outcome must be"));
    let page = c.get(&format!("/console/campaigns/{campaign}")).await;
    assert!(page.body.contains("Delivery funnel"), "{}", page.body);
    assert!(
        page.body.contains("<th scope=\"row\">63016</th><td>2</td>"),
        "{}",
        page.body
    );
}

fn multipart(csrf: Option<&str>, file_name: &str, content: &str) -> (String, String) {
    let boundary = "----console-test-boundary";
    let mut body = String::new();
    if let Some(csrf) = csrf {
        body.push_str(&format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\ncontent-type: text/csv\r\n\r\n{content}\r\n--{boundary}--\r\n"
    ));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_upload_lands_in_the_inbox_whole(db: PgPool) {
    let inbox = std::env::temp_dir().join(format!("console-inbox-{}", Uuid::new_v4()));
    let mut c = Client::new(router(db.clone(), &[KEY], Some(&inbox)));
    c.sign_in(KEY).await;
    c.get("/console/imports").await;
    let csv = "phone_number,first_name\n+14155550100,Ada\n";
    let files = |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);

    let (kind, body) = multipart(None, "people.csv", csv);
    let refused = c
        .send(
            Request::post("/console/imports").header("content-type", kind),
            Body::from(body),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(files(&inbox), 0);

    let csrf = c.csrf.clone();
    let (kind, body) = multipart(Some(&csrf), "notes.txt", csv);
    let wrong_kind = c
        .send(
            Request::post("/console/imports").header("content-type", kind),
            Body::from(body),
        )
        .await;
    assert_eq!(wrong_kind.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong_kind
            .body
            .contains("is not a .csv, .json or .ndjson file"),
        "{}",
        wrong_kind.body
    );
    assert_eq!(files(&inbox), 0);

    let (kind, body) = multipart(Some(&csrf), "people.csv", csv);
    let ok = c
        .send(
            Request::post("/console/imports").header("content-type", kind),
            Body::from(body),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert!(
        ok.location()
            .starts_with("/console/imports/waiting?object=console-"),
        "{}",
        ok.location()
    );
    let stored: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1, "one file, no partial left: {stored:?}");
    assert_eq!(std::fs::read_to_string(&stored[0]).unwrap(), csv);
    let waiting = c.get(ok.location()).await;
    assert_eq!(waiting.status, StatusCode::OK);
    assert!(waiting.body.contains("waiting for its import to start"));
    std::fs::remove_dir_all(&inbox).ok();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_persons_page_says_why(db: PgPool) {
    let campaign = e2e::fixtures::campaign(&db).await;
    sqlx::query("insert into users (phone_number, consent, attributes) values ('+14155550021', 'opted_out', '{\"plan\": \"gold\"}')")
        .execute(&db)
        .await
        .unwrap();
    let message = e2e::fixtures::message(&db, campaign, "+14155550021", "skipped", None).await;
    sqlx::query(
        "insert into decisions (message_id, campaign_id, phone_number, decision, reason) values
           ($1, $2, '+14155550021', 'skipped_no_consent', '{\"consent\": \"opted_out\"}'),
           (null, $2, '+14155550021', 'trigger_not_in_audience', '{}')",
    )
    .bind(message)
    .bind(campaign)
    .execute(&db)
    .await
    .unwrap();
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    let found = c.get("/console/people?q=%2B1415555002").await;
    assert!(
        found
            .body
            .contains("href=\"/console/people/%2B14155550021\""),
        "{}",
        found.body
    );
    let by_attribute = c.get("/console/people?q=plan%3Dgold").await;
    assert!(by_attribute.body.contains("+14155550021"));
    let nonsense = c.get("/console/people?q=ada").await;
    assert!(nonsense.body.contains("is neither a number"));
    let page = c.get("/console/people/%2B14155550021").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("<strong>skipped_no_consent</strong>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"{"consent":"opted_out"}"#),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<strong>trigger_not_in_audience</strong>")
    );
    assert_eq!(
        c.get("/console/people/%2B19999999999").await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_test_send_obeys_consent_and_is_recorded(db: PgPool) {
    let campaign = e2e::fixtures::campaign(&db).await;
    sqlx::query(
        "insert into users (phone_number, consent, attributes, last_inbound_at) values
           ('+14155550031', 'opted_in', '{\"first_name\": \"Ada\"}', now()),
           ('+14155550032', 'opted_out', '{\"first_name\": \"Bo\"}', now())",
    )
    .execute(&db)
    .await
    .unwrap();
    let twilio = e2e::twilio_mock::FaultyTwilio::start().await;
    let mut c = Client::new(router_with(db.clone(), &[KEY], None, Some(&twilio.uri())));
    c.sign_in(KEY).await;
    let page = format!("/console/campaigns/{campaign}");
    c.get(&page).await;

    let refused = c
        .submit(
            &format!("{page}/test-send"),
            &[("phone_number", "+14155550032")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains("not sent: skipped_no_consent"),
        "{}",
        refused.body
    );
    let unknown = c
        .submit(
            &format!("{page}/test-send"),
            &[("phone_number", "+14155550039")],
        )
        .await;
    assert!(
        unknown.body.contains("is not a known person"),
        "{}",
        unknown.body
    );
    assert!(twilio.held().is_empty(), "nothing reached Twilio");

    let sent = c
        .submit(
            &format!("{page}/test-send"),
            &[("phone_number", "(415) 555-0031")],
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert!(
        sent.body
            .contains("sent to +14155550031: &quot;Hello Ada&quot;"),
        "{}",
        sent.body
    );
    let held = twilio.held();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].to.as_str(), held[0].body.as_deref()),
        ("whatsapp:+14155550031", Some("Hello Ada"))
    );
    let recorded: (String, Option<String>) = sqlx::query_as(
        "select decision, reason->>'sid' from decisions where phone_number = '+14155550031' and message_id is null",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        ("test_sent".to_owned(), Some(held[0].sid.clone()))
    );
    let messages: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(messages, 0, "a test send is no campaign message");

    let mut off = Client::new(router(db.clone(), &[KEY], None));
    off.sign_in(KEY).await;
    assert!(off.get(&page).await.body.contains("Test sends are off"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_list_page_renders_with_rows_in_it(db: PgPool) {
    let campaign = e2e::fixtures::campaign(&db).await;
    e2e::fixtures::message(&db, campaign, "+14155550041", "read", Some("SM0041")).await;
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    for page in [
        "/console/overview",
        "/console/campaigns",
        "/console/campaigns/new",
        "/console/imports",
        "/console/people",
        "/console/segments",
        "/console/segments/new",
        "/console/templates",
        "/console/templates/new",
    ] {
        let a = c.get(page).await;
        assert_eq!(a.status, StatusCode::OK, "{page}: {}", a.body);
        assert!(
            a.body.contains("aria-current=\"page\""),
            "{page} marks where we are"
        );
    }
    let templates = c.get("/console/templates").await;
    assert!(
        templates.body.contains("Hello {{ first_name }}"),
        "{}",
        templates.body
    );
    let segment: Uuid = sqlx::query_scalar("select segment_id from campaigns where id = $1")
        .bind(campaign)
        .fetch_one(&db)
        .await
        .unwrap();
    let count = c
        .send(
            Request::get(format!("/console/segments/{segment}/count"))
                .header("x-console-fragment", "1"),
            Body::empty(),
        )
        .await;
    assert_eq!(count.status, StatusCode::OK, "{}", count.body);
    assert!(
        count
            .body
            .contains("<span id=\"audience-count\">0</span> people match now."),
        "{}",
        count.body
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_slow_figure_is_shown_from_the_cache_and_recounted_behind(db: PgPool) {
    let campaign = e2e::fixtures::campaign(&db).await;
    e2e::fixtures::message(&db, campaign, "+14155550051", "read", Some("SM0051")).await;
    // As if counting this campaign had taken 500 ms an hour ago, and found 999.
    let stale = serde_json::json!({"compute_ms": 500, "value": {
        "messages": 999, "by_status": {}, "by_decision": {}, "by_error_code": {},
        "accepted_by_twilio": 999, "delivered": 0, "read": 0, "delivery_rate": null,
        "read_rate": null, "opt_outs": 0}});
    sqlx::query("insert into console_cache (key, value, computed_at) values ($1, $2, now() - interval '1 hour')")
        .bind(format!("campaign-stats:{campaign}"))
        .bind(&stale)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "insert into console_cache (key, value, computed_at)
         values ('segment-count:gone', '{}', now() - interval '2 days')",
    )
    .execute(&db)
    .await
    .unwrap();
    let mut c = Client::new(router(db.clone(), &[KEY], None));
    c.sign_in(KEY).await;
    let page = c.get(&format!("/console/campaigns/{campaign}")).await;
    assert!(
        page.body.contains("<td id=\"n-recipients\">999</td>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("counted 3600 s ago") || page.body.contains("counted 3601 s ago"),
        "{}",
        page.body
    );
    // Recounted in the background: the stored figure becomes the real one.
    let mut recounted = None;
    for _ in 0..100 {
        let messages: Option<i64> = sqlx::query_scalar(
            "select (value->'value'->>'messages')::bigint from console_cache where key = $1",
        )
        .bind(format!("campaign-stats:{campaign}"))
        .fetch_optional(&db)
        .await
        .unwrap();
        if messages == Some(1) {
            recounted = messages;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(recounted, Some(1));
    // Saving it also swept a figure nobody had needed for a day.
    let mut left: i64 = -1;
    for _ in 0..100 {
        left = sqlx::query_scalar(
            "select count(*) from console_cache where key = 'segment-count:gone'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0);
    let fresh = c.get(&format!("/console/campaigns/{campaign}")).await;
    assert!(
        fresh.body.contains("<td id=\"n-recipients\">1</td>"),
        "{}",
        fresh.body
    );
}
