//! The Pub/Sub emulator for end-to-end tests: one per test process, started on
//! first use, topics and push subscriptions created over its REST API.
//!
//! ```ignore
//! let emulator = e2e::pubsub_emulator::shared().await;
//! let topic = e2e::pubsub_emulator::unique_name("send");
//! emulator.create_topic(PROJECT, &topic).await?;
//! emulator.create_push_subscription(PROJECT, &topic, &topic, "http://127.0.0.1:4321/push").await?;
//! let publisher = emulator.publisher(PROJECT, &topic).await;
//! ```

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::gcp::PubSubPublisher;
use tokio::sync::OnceCell;

/// Where the `google-cloud-cli-pubsub-emulator` package installs the emulator
/// (`PUBSUB_EMULATOR_BIN` names another place, as scripts/test does).
pub const EMULATOR_BIN: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";
/// The emulator's start script: `PUBSUB_EMULATOR_BIN`, else [`EMULATOR_BIN`].
pub fn emulator_bin() -> PathBuf {
    std::env::var_os("PUBSUB_EMULATOR_BIN")
        .map_or_else(|| PathBuf::from(EMULATOR_BIN), PathBuf::from)
}

/// The project the tests publish in; the emulator accepts any name.
pub const PROJECT: &str = "ese-test";
/// Java starts in about a second on an idle machine; allow for a busy one.
const START_TIMEOUT: Duration = Duration::from_secs(90);

static SHARED: OnceCell<PubSubEmulator> = OnceCell::const_new();

/// The emulator of this test process, started by the first caller. Tests
/// share it and keep apart by naming their own topics ([`unique_name`]).
pub async fn shared() -> &'static PubSubEmulator {
    SHARED
        .get_or_init(|| async {
            PubSubEmulator::start()
                .await
                .expect("the Pub/Sub emulator starts")
        })
        .await
}

/// `{prefix}-{random}`: a topic or subscription name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A running emulator. Dropping it stops the emulator; so does the end of
/// the test process, even for the shared one, which is never dropped.
pub struct PubSubEmulator {
    endpoint: String,
    /// `sh` running the emulator, which exits when the emulator does. Once
    /// `lifeline` closes (on drop, or by the kernel when the test process
    /// ends, however it ends) the emulator is stopped and its log removed.
    watchdog: Child,
    lifeline: Option<ChildStdin>,
    log: PathBuf,
    started_in: Duration,
}

impl PubSubEmulator {
    /// Starts a private emulator on a free port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = emulator_bin();
        if !bin.exists() {
            bail!(
                "{} is missing: install the google-cloud-cli-pubsub-emulator package or set PUBSUB_EMULATOR_BIN",
                bin.display()
            );
        }
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("pubsub-emulator-{port}.log"));
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let started = Instant::now();
        let mut watchdog = Command::new("sh")
            .arg("-c")
            // The emulator runs in the background; a second background job
            // waits for the pipe (fd 3, since background jobs get /dev/null
            // as stdin) and then stops it. `sh` itself exits with the emulator.
            .arg(concat!(
                r#"log="$1"; shift; exec 3<&0; "$@" & emulator=$!; "#,
                r#"{ read _ignored <&3; kill "$emulator" 2>/dev/null; rm -f "$log"; } & "#,
                r#"wait "$emulator""#
            ))
            .arg("pubsub-emulator")
            .arg(&log)
            .arg(&bin)
            .arg("--host=127.0.0.1")
            .arg(format!("--port={port}"))
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let lifeline = watchdog.stdin.take();
        let mut emulator = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            watchdog,
            lifeline,
            log,
            started_in: Duration::ZERO,
        };
        emulator.started_in = emulator.wait_until_ready(started).await?;
        Ok(emulator)
    }

    /// `http://127.0.0.1:{port}`: gRPC and REST on one port; what `PUBSUB_ENDPOINT` takes.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A publisher for `topic`, connected to this emulator.
    pub async fn publisher(&self, project: &str, topic: &str) -> PubSubPublisher {
        PubSubPublisher::new(project, topic, Some(self.endpoint.clone()))
            .await
            .expect("a publisher for the emulator")
    }

    pub async fn create_topic(&self, project: &str, topic: &str) -> anyhow::Result<()> {
        self.put(
            &format!("v1/projects/{project}/topics/{topic}"),
            &serde_json::json!({}),
        )
        .await
    }

    /// A subscription that POSTs each message of `topic` to `push_endpoint`
    /// as a push envelope, redelivering until the endpoint answers 2xx.
    pub async fn create_push_subscription(
        &self,
        project: &str,
        subscription: &str,
        topic: &str,
        push_endpoint: &str,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "topic": format!("projects/{project}/topics/{topic}"),
            "pushConfig": { "pushEndpoint": push_endpoint },
            "ackDeadlineSeconds": 10,
        });
        self.put(
            &format!("v1/projects/{project}/subscriptions/{subscription}"),
            &body,
        )
        .await
    }

    async fn put(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        let url = format!("{}/{path}", self.endpoint);
        let response = client()
            .put(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("PUT {url}: {status}: {text}");
        }
        Ok(())
    }

    /// How long the emulator took to answer after its spawn.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    async fn wait_until_ready(&mut self, started: Instant) -> anyhow::Result<Duration> {
        let client = client();
        loop {
            if let Some(status) = self.watchdog.try_wait()? {
                bail!(
                    "the Pub/Sub emulator exited ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = client.get(&self.endpoint).send().await
                && r.status().is_success()
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "the Pub/Sub emulator did not answer on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.endpoint,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4000);
        text[text.ceil_char_boundary(start)..].to_owned()
    }
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.watchdog.wait();
    }
}

/// A client per call: tests run on different runtimes, and a pooled
/// connection from a finished runtime would be dead.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}

/// A port nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
