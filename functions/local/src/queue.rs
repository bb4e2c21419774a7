//! An in-process stand-in for a Pub/Sub topic with a push subscription: each
//! task is POSTed to the sender route in the same envelope Pub/Sub uses, and
//! redelivered with exponential backoff until the route answers 2xx.

use std::sync::Arc;
use std::time::Duration;

use shared::gcp::{PublishError, PushEnvelope, SendTask, TaskPublisher};
use tokio::sync::{Semaphore, mpsc};

/// Pushes at most this many tasks at once, like a subscription's outstanding limit.
const MAX_OUTSTANDING: usize = 32;
/// After this many failed deliveries a task is dead-lettered (logged and dropped).
const MAX_DELIVERIES: u32 = 10;

#[derive(Clone)]
pub struct InProcessQueue {
    tx: mpsc::UnboundedSender<SendTask>,
}

impl InProcessQueue {
    /// Starts delivering to `push_url`.
    pub fn start(push_url: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<SendTask>();
        let http = reqwest::Client::new();
        let permits = Arc::new(Semaphore::new(MAX_OUTSTANDING));
        tokio::spawn(async move {
            let mut n: u64 = 0;
            while let Some(task) = rx.recv().await {
                n += 1;
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore stays open");
                let (http, url) = (http.clone(), push_url.clone());
                tokio::spawn(async move {
                    deliver(&http, &url, task, n).await;
                    drop(permit);
                });
            }
        });
        Self { tx }
    }
}

async fn deliver(http: &reqwest::Client, url: &str, task: SendTask, n: u64) {
    let payload = serde_json::to_vec(&task).expect("a task serializes");
    let mut envelope = PushEnvelope::wrap(n.to_string(), &payload, Default::default());
    envelope.subscription = "projects/local/subscriptions/send-tasks".into();
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=MAX_DELIVERIES {
        match http.post(url).json(&envelope).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                attempt,
                "push refused; redelivering"
            ),
            Err(e) => tracing::warn!(error = %e, attempt, "push failed; redelivering"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    tracing::error!(message_id = %task.message_id, "task dead-lettered after {MAX_DELIVERIES} deliveries");
}

impl TaskPublisher for InProcessQueue {
    async fn publish(&self, tasks: &[SendTask]) -> Result<(), PublishError> {
        for t in tasks {
            self.tx
                .send(*t)
                .map_err(|_| PublishError("the in-process queue has stopped".into()))?;
        }
        Ok(())
    }
}
