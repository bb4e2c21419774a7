//! Group commit for status callbacks: the callbacks that reach one instance
//! while a batch is being written go together into the next one, one
//! transaction for all of them (one multi-row insert of the raw events, one
//! set-based forward-only update).
//!
//! Each request is answered only after the commit that holds it, so a 2xx
//! still means committed. Nothing waits for company: a lone callback is
//! written at once, through the same one statement as without batching, and a
//! batch forms only from what queues up while earlier batches are in flight.
//! A batch that fails is written again one callback at a time, so that a bad
//! request fails alone and the rest of its batch still commits.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::WebhookError;
use super::status::StatusCallback;
use crate::config::{ConfigError, Env};
use crate::store::messages::{self, BatchedCallback, CallbackOutcome, CallbackUpdate};
use crate::store::webhook_events::{self, NewWebhookEvent};

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitSettings {
    /// The most callbacks one transaction holds.
    pub max_batch: usize,
    /// How many batches may be in flight at once (each on a connection of its own).
    pub max_in_flight: usize,
}

impl GroupCommitSettings {
    /// `STATUS_BATCH_MAX` and `STATUS_BATCHES_IN_FLIGHT`, each at least 1,
    /// else the defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        let at_least_one = |name: &str, default: usize| -> Result<usize, ConfigError> {
            match env.or(name, default)? {
                0 => Err(ConfigError::new(name, "must be at least 1")),
                n => Ok(n),
            }
        };
        Ok(Self {
            max_batch: at_least_one("STATUS_BATCH_MAX", default.max_batch)?,
            max_in_flight: at_least_one("STATUS_BATCHES_IN_FLIGHT", default.max_in_flight)?,
        })
    }
}

impl Default for GroupCommitSettings {
    /// 64 callbacks a batch, 2 batches in flight: on the benchmark's 16
    /// connections a batch averages well under 64, and a second transaction
    /// in flight keeps the database busy while the first one commits.
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_in_flight: 2,
        }
    }
}

type Reply = oneshot::Sender<Result<CallbackOutcome, WebhookError>>;

struct Job {
    callback: BatchedCallback,
    reply: Reply,
}

impl Job {
    /// What makes two callbacks of one batch touch the same message.
    fn keys(&self) -> (Option<Uuid>, &str) {
        (self.callback.message_id, &self.callback.message_sid)
    }
}

/// The handle requests submit to; cheap to clone. The writer task ends when
/// the last handle is dropped and the queue is empty.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// Starts the writer on the current Tokio runtime.
    pub fn spawn(db: PgPool, settings: GroupCommitSettings) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db, jobs, settings));
        Self { queue }
    }

    /// Writes the callback in the next batch and returns once it is committed.
    pub async fn submit(&self, callback: BatchedCallback) -> Result<CallbackOutcome, WebhookError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { callback, reply })
            .map_err(|_| WebhookError::Unavailable("the status writer has stopped"))?;
        answer
            .await
            .map_err(|_| WebhookError::Unavailable("the status writer dropped the callback"))?
    }
}

/// The writer: takes what has queued (callbacks held back from the batch
/// before first), up to `max_batch`, whenever a slot for a batch is free.
async fn write_batches(
    db: PgPool,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    settings: GroupCommitSettings,
) {
    let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.pop_front() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut batch = Batch::new(first);
        // Held-back callbacks keep their order ahead of newer ones.
        let mut still_held = VecDeque::new();
        while let Some(job) = held.pop_front() {
            if batch.len() >= settings.max_batch {
                still_held.push_back(job);
            } else if let Some(job) = batch.try_add(job) {
                still_held.push_back(job);
            }
        }
        while batch.len() < settings.max_batch {
            let Ok(job) = jobs.try_recv() else { break };
            if let Some(job) = batch.try_add(job) {
                still_held.push_back(job);
            }
        }
        held = still_held;
        let db = db.clone();
        tokio::spawn(async move {
            batch.write(&db).await;
            drop(slot);
        });
    }
}

/// Callbacks for distinct messages, written together.
struct Batch {
    jobs: Vec<Job>,
    ids: HashSet<Uuid>,
    sids: HashSet<String>,
}

impl Batch {
    fn new(first: Job) -> Self {
        let mut batch = Self {
            jobs: Vec::new(),
            ids: HashSet::new(),
            sids: HashSet::new(),
        };
        batch.push(first);
        batch
    }

    fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Adds the job, or hands it back when the batch already holds a callback for its
    /// message: that one waits for the next batch, so that two reports for one
    /// message apply in the order they arrived, as they would one by one.
    fn try_add(&mut self, job: Job) -> Option<Job> {
        let (id, sid) = job.keys();
        if id.is_some_and(|id| self.ids.contains(&id)) || self.sids.contains(sid) {
            return Some(job);
        }
        self.push(job);
        None
    }

    fn push(&mut self, job: Job) {
        let (id, sid) = job.keys();
        if let Some(id) = id {
            self.ids.insert(id);
        }
        self.sids.insert(sid.to_owned());
        self.jobs.push(job);
    }

    /// One transaction for the batch; on failure, one per callback.
    async fn write(self, db: &PgPool) {
        if let [_] = self.jobs.as_slice() {
            let job = self.jobs.into_iter().next().expect("one job");
            let outcome = write_one(db, &job.callback).await;
            let _ = job.reply.send(outcome);
            return;
        }
        let callbacks: Vec<BatchedCallback> =
            self.jobs.iter().map(|j| j.callback.clone()).collect();
        match messages::apply_status_callbacks(db, &callbacks).await {
            Ok(outcomes) if outcomes.len() == self.jobs.len() => {
                for (job, outcome) in self.jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            result => {
                match result {
                    Err(e) => tracing::warn!(error = %e, callbacks = callbacks.len(),
                        "status batch failed; writing its callbacks one by one"),
                    Ok(o) => tracing::error!(
                        outcomes = o.len(),
                        callbacks = callbacks.len(),
                        "status batch answered a different count; writing its callbacks one by one"
                    ),
                }
                for job in self.jobs {
                    let outcome = write_one(db, &job.callback).await;
                    let _ = job.reply.send(outcome);
                }
            }
        }
    }
}

/// One callback, the way it is written without batching: one statement,
/// then its parse notes flagged on the event.
async fn write_one(db: &PgPool, c: &BatchedCallback) -> Result<CallbackOutcome, WebhookError> {
    let event = NewWebhookEvent {
        kind: "status",
        dedupe_key: &c.dedupe_key,
        idempotency_token: c.idempotency_token.as_deref(),
        message_sid: Some(&c.message_sid),
        request_uri: &c.request_uri,
        content_type: &c.content_type,
        raw_body: &c.raw_body,
        params: &c.params,
    };
    let update = CallbackUpdate {
        message_id: c.message_id,
        message_sid: &c.message_sid,
        status: c.status,
        error_code: c.error_code,
        error_message: c.error_message.as_deref(),
    };
    let outcome = messages::apply_status_callback(db, &event, &update).await?;
    if let (Some(id), Some(notes)) = (outcome.event_id, &c.parse_error) {
        webhook_events::flag(db, id, notes).await?;
    }
    Ok(outcome)
}

impl BatchedCallback {
    /// The callback as a batch holds it, owned.
    pub fn from_callback(
        w: &super::VerifiedWebhook,
        cb: &StatusCallback,
        params: serde_json::Value,
        notes: &[String],
    ) -> Self {
        Self {
            dedupe_key: cb.dedupe_key(),
            idempotency_token: w.idempotency_token.clone(),
            request_uri: w.request_uri.clone(),
            content_type: w.content_type.clone(),
            raw_body: w.raw_body.clone(),
            params,
            parse_error: (!notes.is_empty()).then(|| notes.join("; ")),
            message_id: cb.message_id,
            message_sid: cb.message_sid.clone(),
            status: cb.status,
            error_code: cb.error_code,
            error_message: cb.error_message.clone(),
        }
    }
}
