//! Serves the API on loopback with a fresh, migrated database and a known
//! key, for schemathesis (`scripts/schemathesis`). The database is created
//! on the server at `DATABASE_URL` and dropped again on SIGTERM or Ctrl-C.
//!
//! Environment: `DATABASE_URL` (a role that may create databases),
//! `PORT` (default 18089), `API_KEY` (the plain key; default `fuzz-key`).
//!
//! The database is seeded with one row of each resource, all with the id
//! [`SEED_ID`], and the user [`SEED_PHONE`], so that schemathesis (told to use
//! them for `{id}` and `{phone_number}`) reaches the handlers' real work and
//! checks the 200 responses against the document, not only 404s.

use std::sync::Arc;

use shared::gcp::{PublishError, SendTask, TaskPublisher};
use shared::http::auth::ApiKeys;
use shared::http::server::{shutdown_signal, with_standard_routes};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The id of every seeded row (a segment, a template, a campaign over them, a
/// delivered message with its callback and decision, an import with a reject).
pub const SEED_ID: &str = "0193a8a4-0000-7000-8000-00000000f022";
/// The seeded user.
pub const SEED_PHONE: &str = "+14155552671";

const SEED: &str = r#"
insert into users (phone_number, attributes, consent) values
    ('+14155552671', '{"first_name": "Ada", "plan": {"tier": "gold"}, "timezone": "Europe/Paris"}', 'opted_in'),
    ('+14155550002', '{}', 'unknown');
insert into segments (id, name, definition)
    values ('0193a8a4-0000-7000-8000-00000000f022', 'seed segment', '{"all": []}');
insert into templates (id, name, body)
    values ('0193a8a4-0000-7000-8000-00000000f022', 'seed template', 'Hi {first_name}');
insert into campaigns (id, name, segment_id, template_id) values ('0193a8a4-0000-7000-8000-00000000f022',
    'seed campaign', '0193a8a4-0000-7000-8000-00000000f022', '0193a8a4-0000-7000-8000-00000000f022');
insert into messages (id, campaign_id, phone_number, status, status_rank, twilio_sid, body, sent_at, delivered_at,
                      last_decision)
    values ('0193a8a4-0000-7000-8000-00000000f022', '0193a8a4-0000-7000-8000-00000000f022',
            '+14155552671', 'delivered', 5, 'SMseed', 'Hi Ada', now(), now(), 'sent');
insert into webhook_events (kind, dedupe_key, message_sid, request_uri, content_type, raw_body, params)
    values ('status', 'SMseed:delivered', 'SMseed', '/webhooks/status', 'application/x-www-form-urlencoded',
            'MessageSid=SMseed&MessageStatus=delivered', '{"MessageSid": "SMseed", "MessageStatus": "delivered"}');
insert into decisions (message_id, campaign_id, phone_number, decision, reason)
    values ('0193a8a4-0000-7000-8000-00000000f022', '0193a8a4-0000-7000-8000-00000000f022',
            '+14155552671', 'sent', '{"attempt": 1}');
insert into imports (id, bucket, object, generation, state, rows_read, inserted, rejected, finished_at)
    values ('0193a8a4-0000-7000-8000-00000000f022', 'inbox', 'users.csv', 1, 'completed', 3, 2, 1, now());
insert into import_rejects (import_id, line_number, raw_line, reason)
    values ('0193a8a4-0000-7000-8000-00000000f022', 3, 'not-a-number,x', 'invalid phone number');
"#;

/// Takes send tasks and drops them: no sender runs here.
struct Nowhere;

impl TaskPublisher for Nowhere {
    async fn publish(&self, _: &[SendTask]) -> Result<(), PublishError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let admin: PgConnectOptions = std::env::var("DATABASE_URL")?.parse()?;
    let port: u16 = std::env::var("PORT").map_or(Ok(18089), |p| p.parse())?;
    let key = std::env::var("API_KEY").unwrap_or_else(|_| "fuzz-key".to_owned());
    let name = format!("api_fuzz_{}", std::process::id());

    let mut conn = PgConnection::connect_with(&admin).await?;
    sqlx::query(AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await?;
    let db = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(admin.clone().database(&name))
        .await?;
    shared::db::migrate(&db).await?;
    sqlx::raw_sql(SEED).execute(&db).await?;

    let state = api::AppState {
        db: db.clone(),
        keys: Arc::new(ApiKeys::from_hashes(&[ApiKeys::hash(&key)]).map_err(anyhow::Error::msg)?),
        default_region: Some("US".parse().map_err(anyhow::Error::msg)?),
        uploads: Arc::new(shared::gcp::uploads::Uploads::new(
            shared::gcp::uploads::UploadTarget::Off,
        )),
        twilio: None,
    };
    // The document lists the events function's POST /v1/events too: served
    // here as the local stack serves it, its triggered tasks going nowhere.
    let events_config = events::Config::from_env(&shared::config::Env::from_pairs([
        ("DATABASE_URL", std::env::var("DATABASE_URL")?),
        ("API_KEYS", ApiKeys::hash(&key)),
        ("DEFAULT_REGION", "US".to_owned()),
    ]))?;
    let app = api::router(state).merge(events::app(&events_config, db.clone(), Nowhere));
    let app = with_standard_routes(app, db.clone(), None);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "serving http://127.0.0.1:{port}{} on database {name}",
        api::OPENAPI_PATH
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;

    db.close().await;
    sqlx::query(AssertSqlSafe(format!("drop database {name} with (force)")))
        .execute(&mut conn)
        .await?;
    served?;
    Ok(())
}
