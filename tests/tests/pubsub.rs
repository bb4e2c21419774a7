//! `PubSubPublisher` against the Pub/Sub emulator: what the fan-out publishes
//! reaches a push endpoint as the envelope the sender parses, push retries
//! redeliver what was not acknowledged, and a missing topic is an error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use e2e::pubsub_emulator::{self, PROJECT, unique_name};
use shared::gcp::{PushEnvelope, SendTask, TaskPublisher};
use uuid::Uuid;

/// Long enough for a push retry on a busy machine, short enough to fail a hang.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A push endpoint on 127.0.0.1:0 that records every envelope and answers
/// 500 to the first `fail_first` deliveries of each message.
#[derive(Clone, Default)]
struct PushInbox {
    fail_first: u32,
    received: Arc<Mutex<Vec<PushEnvelope>>>,
}

impl PushInbox {
    async fn serve(self) -> String {
        let app = Router::new().route("/push", post(receive)).with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn envelopes(&self) -> Vec<PushEnvelope> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until every task has been delivered and acknowledged (answered 2xx).
    async fn wait_for_acks(&self, tasks: &[SendTask]) {
        let wanted: HashSet<Uuid> = tasks.iter().map(|t| t.message_id).collect();
        let acked = async {
            loop {
                let acked: HashSet<Uuid> = self.acked().into_iter().collect();
                if wanted.is_subset(&acked) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(DELIVERY_TIMEOUT, acked).await.is_err() {
            panic!(
                "not every task was acknowledged within {DELIVERY_TIMEOUT:?}: wanted {}, got {:?}",
                wanted.len(),
                self.deliveries()
            );
        }
    }

    /// Deliveries per message id.
    fn deliveries(&self) -> HashMap<Uuid, u32> {
        let mut counts = HashMap::new();
        for envelope in self.envelopes() {
            let task: SendTask = envelope.payload().expect("a SendTask payload");
            *counts.entry(task.message_id).or_default() += 1;
        }
        counts
    }

    /// The tasks that got a 2xx: those delivered more than `fail_first` times.
    fn acked(&self) -> Vec<Uuid> {
        self.deliveries()
            .into_iter()
            .filter(|(_, n)| *n > self.fail_first)
            .map(|(id, _)| id)
            .collect()
    }
}

async fn receive(State(inbox): State<PushInbox>, body: Bytes) -> StatusCode {
    let envelope = PushEnvelope::parse(&body).expect("a push envelope");
    let id = envelope.message.message_id.clone();
    let mut received = inbox.received.lock().unwrap();
    let earlier = received
        .iter()
        .filter(|e| e.message.message_id == id)
        .count();
    received.push(envelope);
    if earlier < inbox.fail_first as usize {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

fn tasks(n: usize) -> Vec<SendTask> {
    (0..n)
        .map(|_| SendTask {
            message_id: Uuid::now_v7(),
        })
        .collect()
}

/// A fresh topic with a push subscription to a fresh inbox.
async fn topic_pushing_to(inbox: &PushInbox) -> String {
    let emulator = pubsub_emulator::shared().await;
    eprintln!("Pub/Sub emulator answered in {:?}", emulator.started_in());
    let topic = unique_name("send-tasks");
    let url = inbox.clone().serve().await;
    emulator.create_topic(PROJECT, &topic).await.unwrap();
    emulator
        .create_push_subscription(PROJECT, &topic, &topic, &url)
        .await
        .unwrap();
    topic
}

#[tokio::test]
async fn pubsub_published_tasks_are_pushed_as_envelopes() {
    let inbox = PushInbox::default();
    let topic = topic_pushing_to(&inbox).await;
    let publisher = pubsub_emulator::shared()
        .await
        .publisher(PROJECT, &topic)
        .await;
    let sent = tasks(50);

    let published = tokio::time::timeout(DELIVERY_TIMEOUT, publisher.publish(&sent)).await;
    published
        .expect("publish returns")
        .expect("publish succeeds");
    inbox.wait_for_acks(&sent).await;

    let delivered = inbox.deliveries();
    for task in &sent {
        assert!(delivered.contains_key(&task.message_id), "{task:?} missing");
    }
    assert_eq!(delivered.len(), sent.len(), "only the tasks published");
    for envelope in inbox.envelopes() {
        let task: SendTask = envelope.payload().unwrap();
        assert_eq!(
            envelope.message.attributes["message_id"],
            task.message_id.to_string()
        );
        assert_eq!(
            envelope.subscription,
            format!("projects/{PROJECT}/subscriptions/{topic}")
        );
        assert!(!envelope.message.message_id.is_empty());
    }
}

#[tokio::test]
async fn pubsub_push_redelivers_what_the_endpoint_refused() {
    let inbox = PushInbox {
        fail_first: 1,
        ..PushInbox::default()
    };
    let topic = topic_pushing_to(&inbox).await;
    let publisher = pubsub_emulator::shared()
        .await
        .publisher(PROJECT, &topic)
        .await;
    let sent = tasks(3);

    publisher.publish(&sent).await.expect("publish succeeds");
    inbox.wait_for_acks(&sent).await;

    let delivered = inbox.deliveries();
    for task in &sent {
        assert!(
            delivered[&task.message_id] >= 2,
            "{task:?} refused once, so pushed again: {delivered:?}"
        );
    }
}

#[tokio::test]
async fn pubsub_publishing_to_a_missing_topic_is_an_error() {
    let emulator = pubsub_emulator::shared().await;
    let publisher = emulator
        .publisher(PROJECT, &unique_name("no-such-topic"))
        .await;

    let outcome = tokio::time::timeout(Duration::from_secs(30), publisher.publish(&tasks(2)))
        .await
        .expect("a missing topic fails fast, it does not hang");

    let error = outcome.expect_err("a missing topic is an error");
    assert!(
        error.to_string().contains("no-such-topic"),
        "the error names the topic: {error}"
    );
}
