//! Send tasks on Pub/Sub, with Google's official client (`google-cloud-pubsub`):
//! gRPC, batched in a background task, each publish acknowledged by the server.

use std::time::Duration;

use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;

use super::publish::{PublishError, SendTask, TaskPublisher};
use crate::config::{ConfigError, Env};

/// How long the client keeps retrying transient publish errors. The client's
/// default (600 s) would outlive a Cloud Scheduler tick; after this the fan-out
/// sees the error and the next tick dispatches the messages again.
const PUBLISH_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Messages per publish request: Pub/Sub's most (1,000). The fan-out hands
/// the client a whole dispatch batch at once, so full requests form at once;
/// the client's default of 100 would send ten times the requests. A send task
/// is under 100 bytes, far from the 1 MB byte threshold; a lone task still
/// leaves within the client's default 10 ms delay threshold.
const PUBLISH_BATCH_MESSAGES: u32 = 1000;

/// Where send tasks go: `GCP_PROJECT`, `SEND_TOPIC` and, for the emulator or a
/// regional endpoint, `PUBSUB_ENDPOINT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubSubConfig {
    pub project: String,
    /// The topic's short name (`send-tasks`) or full name (`projects/p/topics/send-tasks`).
    pub topic: String,
    /// `http://127.0.0.1:8085` for the emulator; `None` for `https://pubsub.googleapis.com`.
    pub endpoint: Option<String>,
}

impl PubSubConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let endpoint = env
            .optional::<url::Url>("PUBSUB_ENDPOINT")?
            .map(|url| {
                if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
                    Ok(url.as_str().trim_end_matches('/').to_owned())
                } else {
                    Err(ConfigError::new(
                        "PUBSUB_ENDPOINT",
                        "is malformed: expected an http(s) URL such as http://127.0.0.1:8085",
                    ))
                }
            })
            .transpose()?;
        Ok(Self {
            project: env.required("GCP_PROJECT")?,
            topic: env.required("SEND_TOPIC")?,
            endpoint,
        })
    }
}

/// Publishes each task as one message: data = the task's JSON, attribute
/// `message_id`. Cheap to clone; build one per process and share it.
#[derive(Clone, Debug)]
pub struct PubSubPublisher {
    publisher: Publisher,
    topic: String,
}

impl PubSubPublisher {
    /// A publisher for `topic` in `project`. A plain-`http` endpoint is the
    /// emulator and gets anonymous credentials; otherwise Application Default
    /// Credentials (the Cloud Run service account). Must run inside a Tokio
    /// runtime, which hosts the client's batching task.
    pub async fn new(
        project: &str,
        topic: &str,
        endpoint: Option<String>,
    ) -> Result<Self, PublishError> {
        let topic = topic_name(project, topic);
        let mut builder = Publisher::builder(topic.clone())
            .with_retry_policy(RetryableErrors.with_time_limit(PUBLISH_RETRY_LIMIT))
            .set_message_count_threshold(PUBLISH_BATCH_MESSAGES);
        if let Some(endpoint) = endpoint {
            if endpoint.starts_with("http://") {
                builder = builder.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
            builder = builder.with_endpoint(endpoint);
        }
        let publisher = builder.build().await.map_err(|e| {
            PublishError(format!("cannot build the Pub/Sub client for {topic}: {e}"))
        })?;
        Ok(Self { publisher, topic })
    }

    pub async fn from_config(config: &PubSubConfig) -> Result<Self, PublishError> {
        Self::new(&config.project, &config.topic, config.endpoint.clone()).await
    }

    /// The full topic name, `projects/{project}/topics/{topic}`.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl TaskPublisher for PubSubPublisher {
    #[tracing::instrument(skip_all, fields(topic = %self.topic, tasks = tasks.len()))]
    async fn publish(&self, tasks: &[SendTask]) -> Result<(), PublishError> {
        // Hand every message to the client first so that it batches them, then
        // wait for each server ack.
        let pending: Vec<_> = tasks
            .iter()
            .map(|task| {
                let data = serde_json::to_vec(task).expect("a SendTask serializes");
                let id = task.message_id.to_string();
                (
                    id.clone(),
                    self.publisher.publish(
                        Message::new()
                            .set_data(data)
                            .set_attributes([("message_id", id)]),
                    ),
                )
            })
            .collect();
        for (message_id, ack) in pending {
            // The client's error already displays the status the server answered.
            ack.await.map_err(|e| {
                PublishError(format!("send task {message_id} to {}: {e}", self.topic))
            })?;
        }
        Ok(())
    }
}

fn topic_name(project: &str, topic: &str) -> String {
    if topic.starts_with("projects/") {
        topic.to_owned()
    } else {
        format!("projects/{project}/topics/{topic}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_comes_from_the_environment() {
        let env = Env::from_pairs([
            ("GCP_PROJECT", "ese-prod"),
            ("SEND_TOPIC", "send-tasks"),
            ("PUBSUB_ENDPOINT", "http://127.0.0.1:8085/"),
        ]);
        assert_eq!(
            PubSubConfig::from_env(&env).unwrap(),
            PubSubConfig {
                project: "ese-prod".into(),
                topic: "send-tasks".into(),
                endpoint: Some("http://127.0.0.1:8085".into()),
            }
        );
        let missing = Env::from_pairs([("GCP_PROJECT", "ese-prod")]);
        assert_eq!(
            PubSubConfig::from_env(&missing).unwrap_err().var,
            "SEND_TOPIC"
        );
        let bad = Env::from_pairs([
            ("GCP_PROJECT", "p"),
            ("SEND_TOPIC", "t"),
            ("PUBSUB_ENDPOINT", "127.0.0.1:8085"),
        ]);
        assert_eq!(
            PubSubConfig::from_env(&bad).unwrap_err().var,
            "PUBSUB_ENDPOINT"
        );
    }

    #[test]
    fn topics_are_named_in_full() {
        assert_eq!(topic_name("p", "t"), "projects/p/topics/t");
        assert_eq!(
            topic_name("p", "projects/other/topics/t"),
            "projects/other/topics/t"
        );
    }
}
