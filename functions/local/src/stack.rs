//! Every function's router on one port, each outside service replaced by an
//! embedded default unless its environment variable points at the real one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use shared::config::{DatabaseConfig, Env, Secret, TwilioWebhookConfig};
use shared::engine::fanout::FanoutSettings;
use shared::engine::send::SendEngine;
use shared::gcp::{PubSubConfig, PubSubPublisher, PublishError, SendTask, TaskPublisher};
use shared::ratelimit::Limiter;
use shared::twilio::{TwilioClient, TwilioConfig};
use sqlx::PgPool;

use crate::inbox::{Inbox, LOCAL_BUCKET};
use crate::postgres::{EmbeddedPostgres, ensure_database};
use crate::queue::InProcessQueue;
use crate::twilio_sim::SimulatedTwilio;

/// The auth token of the simulated Twilio account (signs its callbacks).
pub const LOCAL_AUTH_TOKEN: &str = "local-simulated-twilio-auth-token";
pub const LOCAL_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
pub const LOCAL_WHATSAPP_FROM: &str = "whatsapp:+14155238886";

/// Where the stack keeps its data (`LOCAL_DATA_DIR`, default `.local` in the project).
pub fn data_dir(env: &Env) -> PathBuf {
    env.raw("LOCAL_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local")))
}

/// Pub/Sub when `GCP_PROJECT` and `SEND_TOPIC` are set, else the in-process queue.
pub enum LocalPublisher {
    PubSub(PubSubPublisher),
    Queue(InProcessQueue),
}

impl TaskPublisher for LocalPublisher {
    async fn publish(&self, tasks: &[SendTask]) -> Result<(), PublishError> {
        match self {
            LocalPublisher::PubSub(p) => p.publish(tasks).await,
            LocalPublisher::Queue(q) => q.publish(tasks).await,
        }
    }
}

/// A running stack.
pub struct Running {
    pub base_url: String,
    pub db: PgPool,
    /// The `/v1` API key (`LOCAL_API_KEY`, or a fixed development key).
    pub api_key: String,
    /// Files dropped here are imported.
    pub inbox: PathBuf,
    simulated_twilio: bool,
    /// What each outside service is (embedded or real), for the banner.
    pub services: Vec<(&'static str, String)>,
    postgres: Option<EmbeddedPostgres>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// The token the simulated Twilio signs with, when Twilio is simulated.
    pub fn simulated_twilio_token(&self) -> Option<&'static str> {
        self.simulated_twilio.then_some(LOCAL_AUTH_TOKEN)
    }

    /// Stops serving and stops the private PostgreSQL (its data stays).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        self.db.close().await;
        if let Some(pg) = self.postgres {
            pg.stop();
        }
    }

    /// Serves until SIGTERM or Ctrl-C, then stops.
    pub async fn wait(self) {
        shared::http::server::shutdown_signal().await;
        self.stop().await;
    }
}

pub async fn start(env: &Env) -> anyhow::Result<Running> {
    let port: u16 = env.or("LOCAL_PORT", 8080)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("port {port} is taken: set LOCAL_PORT to another"))?;
    let port = listener.local_addr()?.port();
    let base_url = format!("http://127.0.0.1:{port}");
    let mut services = vec![];

    // PostgreSQL.
    let (database, postgres) = match env.raw("DATABASE_URL") {
        Some(_) => {
            services.push(("PostgreSQL", "DATABASE_URL".to_owned()));
            (DatabaseConfig::from_env(env)?, None)
        }
        None => {
            let dir = data_dir(env).join("postgres");
            let pg = EmbeddedPostgres::new(dir.clone(), env.or("LOCAL_PG_PORT", 54329)?)?;
            pg.start()?;
            ensure_database(&pg.url("postgres"), "ese").await?;
            services.push((
                "PostgreSQL",
                format!(
                    "private cluster in {} on port {}",
                    dir.display(),
                    env.or("LOCAL_PG_PORT", 54329u16)?
                ),
            ));
            let url = pg.url("ese");
            (
                DatabaseConfig {
                    url: Secret::new(url),
                    max_connections: 20,
                    statement_timeout_ms: env.or("DATABASE_STATEMENT_TIMEOUT_MS", 30_000)?,
                },
                Some(pg),
            )
        }
    };
    let db = shared::db::pool(&database)?;
    shared::db::migrate(&db)
        .await
        .context("applying migrations")?;

    // Twilio: the real API with credentials, else the simulator on this port.
    let real_twilio = env.raw("TWILIO_ACCOUNT_SID").is_some();
    let twilio_env = if real_twilio {
        env.clone()
    } else {
        Env::from_pairs([
            ("TWILIO_ACCOUNT_SID", LOCAL_ACCOUNT_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", LOCAL_AUTH_TOKEN.to_owned()),
            ("TWILIO_WHATSAPP_FROM", LOCAL_WHATSAPP_FROM.to_owned()),
            ("TWILIO_API_BASE", format!("{base_url}/sim/twilio")),
            ("PUBLIC_BASE_URL", base_url.clone()),
        ])
    };
    let twilio_config = TwilioConfig::from_env(&twilio_env)?;
    let webhook_config = TwilioWebhookConfig::from_env(&twilio_env)?;
    services.push((
        "Twilio",
        if real_twilio {
            "real API (TWILIO_ACCOUNT_SID)".into()
        } else {
            format!("simulated at {base_url}/sim/twilio")
        },
    ));

    // Redis.
    let limiter = match env.raw("REDIS_URL") {
        Some(_) => {
            services.push(("Redis", "REDIS_URL".into()));
            Limiter::from_config(&shared::config::RedisConfig::from_env(env)?).await?
        }
        None => {
            services.push(("Redis", "in-process rate limiter".into()));
            Limiter::local()
        }
    };

    // Pub/Sub.
    let publisher = if env.raw("SEND_TOPIC").is_some() {
        services.push(("Pub/Sub", "SEND_TOPIC".into()));
        LocalPublisher::PubSub(PubSubPublisher::from_config(&PubSubConfig::from_env(env)?).await?)
    } else {
        services.push(("Pub/Sub", "in-process queue pushing to /pubsub/push".into()));
        LocalPublisher::Queue(InProcessQueue::start(format!("{base_url}/pubsub/push")))
    };

    let inbound_config = inbound::Config {
        port,
        database: database.clone(),
        twilio: webhook_config.clone(),
        default_region: shared::config::default_region(env)?,
        keywords: shared::config::consent_keywords(env),
        replies: inbound::ConsentReplies::from_env(env),
        gcp_project: None,
    };
    let sender_settings =
        ::sender::settings_from_env(env, shared::engine::send::SenderSettings::default())?;
    let twilio = TwilioClient::new(twilio_config)?;
    let sender = Arc::new(SendEngine::new(
        db.clone(),
        twilio.clone(),
        limiter,
        sender_settings,
    ));
    let fanout_state = Arc::new(fanout::AppState {
        db: db.clone(),
        publisher,
        settings: FanoutSettings {
            run_for: Duration::ZERO,
            ..fanout::settings_from_env(env)?
        },
        twilio: Some(twilio),
        reconcile: fanout::reconcile_settings_from_env(env)?,
    });

    // The /v1 API, with a development key unless one is given.
    let api_key = env.or("LOCAL_API_KEY", "local-dev-api-key".to_owned())?;
    let api_config = api::Config {
        port,
        database: database.clone(),
        api_keys: shared::http::auth::ApiKeys::from_hashes(&[shared::http::auth::ApiKeys::hash(
            &api_key,
        )])
        .map_err(anyhow::Error::msg)?,
        default_region: shared::config::default_region(env)?,
        gcp_project: None,
    };

    // Cloud Storage: the real bucket when IMPORT_BUCKET is set (its events reach
    // /ingest from a push subscription or by hand), else the inbox folder,
    // delivered to ingest as CloudEvents.
    let inbox = Inbox::new(&data_dir(env))?;
    let real_bucket = env.raw("IMPORT_BUCKET").map(str::to_owned);
    let (import_bucket, objects) = match &real_bucket {
        Some(bucket) => (bucket.clone(), shared::gcp::ObjectsConfig::from_env(env)?),
        None => (
            LOCAL_BUCKET.to_owned(),
            shared::gcp::ObjectsConfig::Local {
                root: inbox.objects.clone(),
            },
        ),
    };
    let ingest_config = ingest::Config {
        port,
        database: database.clone(),
        import_bucket,
        objects,
        default_region: shared::config::default_region(env)?,
        max_import_bytes: env.or("MAX_IMPORT_BYTES", 2u64 << 30)?,
        gcp_project: None,
    };
    let ingest_state = ingest::AppState::new(db.clone(), &ingest_config).await?;
    services.push((
        "Cloud Storage",
        match &real_bucket {
            Some(bucket) => format!("bucket {bucket} (IMPORT_BUCKET); events to {base_url}/ingest"),
            None => format!("inbox folder {}", inbox.inbox.display()),
        },
    ));

    let mut app = Router::new()
        .merge(inbound::router(inbound::AppState::new(
            db.clone(),
            &inbound_config,
        )))
        .merge(status::router(status::AppState::new(
            db.clone(),
            &webhook_config,
        )))
        .merge(::sender::router(sender))
        .merge(fanout::router(fanout_state))
        .merge(api::router(api::AppState::new(db.clone(), &api_config)))
        .nest("/ingest", ingest::router(ingest_state));
    if !real_twilio {
        let sim = SimulatedTwilio::new(
            LOCAL_ACCOUNT_SID.into(),
            LOCAL_AUTH_TOKEN.into(),
            env.or("SIM_FAILURE_RATE", 0.05)?,
        );
        app = app.merge(Arc::new(sim).router());
    }
    let app = shared::http::server::with_standard_routes(app, db.clone(), None);

    let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.changed().await;
            })
            .await
    });

    // Cloud Scheduler: a tick every LOCAL_TICK_MS.
    let tick_every = Duration::from_millis(env.or("LOCAL_TICK_MS", 1000)?);
    let tick_url = format!("{base_url}/tick");
    services.push((
        "Cloud Scheduler",
        format!("ticker every {} ms", tick_every.as_millis()),
    ));
    let mut tick_stop = shutdown.subscribe();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut every = tokio::time::interval(tick_every);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(e) = http.post(&tick_url).send().await {
                        tracing::warn!(error = %e, "tick failed");
                    }
                }
                _ = tick_stop.changed() => break,
            }
        }
    });

    let inbox_dir = inbox.inbox.clone();
    if real_bucket.is_none() {
        inbox.watch(
            format!("{base_url}/ingest"),
            Duration::from_millis(250),
            shutdown.subscribe(),
        );
    }
    Ok(Running {
        base_url,
        db,
        api_key,
        inbox: inbox_dir,
        simulated_twilio: !real_twilio,
        services,
        postgres,
        server,
        shutdown,
    })
}
