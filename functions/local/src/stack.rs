//! Every function's router on one port, each outside service replaced by an
//! embedded default unless its environment variable points at the real one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use shared::config::{DatabaseConfig, Env, RedisConfig};
use shared::gcp::{PubSubConfig, PubSubPublisher, PublishError, SendTask, TaskPublisher};
use shared::ratelimit::Limiter;
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

    // What stands in for each outside service. Its settings go into the
    // environment as defaults (a variable set in the process wins), and every
    // function then builds its configuration the one way its binary does.
    let mut defaults: Vec<(&str, String)> = vec![
        ("PORT", port.to_string()),
        // The ticker comes every second: a tick does one round and returns.
        ("FANOUT_TICK_SECONDS", "0".into()),
    ];

    // PostgreSQL.
    let postgres = match env.raw("DATABASE_URL") {
        Some(_) => {
            services.push(("PostgreSQL", "DATABASE_URL".to_owned()));
            None
        }
        None => {
            let dir = data_dir(env).join("postgres");
            let pg_port: u16 = env.or("LOCAL_PG_PORT", 54329)?;
            let pg = EmbeddedPostgres::new(dir.clone(), pg_port)?;
            pg.start()?;
            ensure_database(&pg.url("postgres"), "ese").await?;
            services.push((
                "PostgreSQL",
                format!("private cluster in {} on port {pg_port}", dir.display()),
            ));
            defaults.push(("DATABASE_URL", pg.url("ese")));
            defaults.push(("DATABASE_MAX_CONNECTIONS", "20".into()));
            Some(pg)
        }
    };

    // Twilio: the real API with credentials, else the simulator on this port.
    let real_twilio = env.raw("TWILIO_ACCOUNT_SID").is_some();
    if real_twilio {
        services.push(("Twilio", "real API (TWILIO_ACCOUNT_SID)".into()));
    } else {
        defaults.extend([
            ("TWILIO_ACCOUNT_SID", LOCAL_ACCOUNT_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", LOCAL_AUTH_TOKEN.to_owned()),
            ("TWILIO_WHATSAPP_FROM", LOCAL_WHATSAPP_FROM.to_owned()),
            ("TWILIO_API_BASE", format!("{base_url}/sim/twilio")),
            ("PUBLIC_BASE_URL", base_url.clone()),
        ]);
        services.push(("Twilio", format!("simulated at {base_url}/sim/twilio")));
    }

    // The /v1 API, with a development key unless one is given.
    let api_key = env.or("LOCAL_API_KEY", "local-dev-api-key".to_owned())?;
    defaults.push(("API_KEYS", shared::http::auth::ApiKeys::hash(&api_key)));

    // Cloud Storage: the real bucket when IMPORT_BUCKET is set (its events reach
    // /ingest from a push subscription or by hand), else the inbox folder,
    // delivered to ingest as CloudEvents.
    let inbox = Inbox::new(&data_dir(env))?;
    let real_bucket = env.raw("IMPORT_BUCKET").map(str::to_owned);
    match &real_bucket {
        Some(bucket) => services.push((
            "Cloud Storage",
            format!("bucket {bucket} (IMPORT_BUCKET); events to {base_url}/ingest"),
        )),
        None => {
            defaults.push(("IMPORT_BUCKET", LOCAL_BUCKET.to_owned()));
            defaults.push((
                "IMPORT_LOCAL_DIR",
                inbox.objects.to_string_lossy().into_owned(),
            ));
            // The console's uploads land in the inbox, like a dropped file.
            defaults.push((
                "IMPORT_INBOX_DIR",
                inbox.inbox.to_string_lossy().into_owned(),
            ));
            services.push((
                "Cloud Storage",
                format!("inbox folder {}", inbox.inbox.display()),
            ));
        }
    }
    let env = env.with_defaults(defaults);

    let db = shared::db::pool(&DatabaseConfig::from_env(&env)?)?;
    shared::db::migrate(&db)
        .await
        .context("applying migrations")?;

    // Redis: a dependency of the sender, not a URL, when embedded.
    let limiter = match env.raw("REDIS_URL") {
        Some(_) => {
            services.push(("Redis", "REDIS_URL".into()));
            Limiter::from_config(&RedisConfig::from_env(&env)?).await?
        }
        None => {
            services.push(("Redis", "in-process rate limiter".into()));
            Limiter::local()
        }
    };

    // Pub/Sub: a dependency of the fan-out, likewise.
    // One publisher for the fan-out and the events function (triggered messages).
    let publisher = Arc::new(if env.raw("SEND_TOPIC").is_some() {
        services.push(("Pub/Sub", "SEND_TOPIC".into()));
        LocalPublisher::PubSub(PubSubPublisher::from_config(&PubSubConfig::from_env(&env)?).await?)
    } else {
        services.push(("Pub/Sub", "in-process queue pushing to /pubsub/push".into()));
        LocalPublisher::Queue(InProcessQueue::start(format!("{base_url}/pubsub/push")))
    });

    let mut app = Router::new()
        .merge(inbound::app(&inbound::Config::from_env(&env)?, db.clone()))
        .merge(status::app(&status::Config::from_env(&env)?, db.clone()))
        .merge(::sender::app(
            &::sender::Config::from_env(&env)?,
            db.clone(),
            limiter,
        )?)
        .merge(fanout::app(
            &fanout::Config::from_env(&env)?,
            db.clone(),
            publisher.clone(),
        )?)
        .merge(api::app(&api::Config::from_env(&env)?, db.clone()))
        .merge(events::app(
            &events::Config::from_env(&env)?,
            db.clone(),
            publisher,
        ))
        .nest(
            "/ingest",
            ingest::app(&ingest::Config::from_env(&env)?, db.clone()).await?,
        );
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
