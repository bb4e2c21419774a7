//! Events → triggered campaigns' messages (docs/events.md). In the
//! transaction that stores the events, [`fire`] matches each new event against
//! the running triggered campaigns of its name (filter on the properties,
//! audience segment, lateness, the cancel event seen first, the per-person
//! rule) and creates `pending` messages due `delay` after the event; the
//! campaign's cancel events call off waiting ones. After the commit,
//! [`dispatch_due`] hands the messages due at once to the sender. Everything
//! after that is the ordinary sender: consent, topic, 24-hour window, quiet
//! hours, frequency cap, rate limit, reconciliation and the decision log.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::gcp::{SendTask, TaskPublisher};
use crate::segment::Segment;
use crate::store::events::NewEvent;
use crate::store::messages::dispatch;
use crate::store::triggers::{self as store, Cancel, Created, Match, NotStarted};
use crate::trigger::MAX_LATENESS;

/// An event as stored, with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub phone_number: String,
    pub name: String,
    pub properties: Value,
    pub occurred_at: DateTime<Utc>,
}

impl StoredEvent {
    pub fn new(e: &NewEvent, id: i64) -> Self {
        Self {
            id,
            phone_number: e.phone_number.as_str().to_owned(),
            name: e.name.as_str().to_owned(),
            properties: e.properties.clone(),
            occurred_at: e.occurred_at,
        }
    }
}

/// What [`fire`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fired {
    pub created: Vec<Created>,
    /// Waiting messages a cancel event called off.
    pub cancelled: u64,
    /// Matching events that started nothing (each with a decision saying why).
    pub not_started: usize,
}

/// Matches `events` (new, stored in the caller's transaction) against the
/// running triggered campaigns. See the module documentation.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn fire(
    db: &mut PgConnection,
    events: &[StoredEvent],
    now: DateTime<Utc>,
) -> Result<Fired, sqlx::Error> {
    if events.is_empty() {
        return Ok(Fired::default());
    }
    let names: Vec<String> = events
        .iter()
        .map(|e| e.name.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let campaigns = store::listening(db, &names).await?;
    if campaigns.is_empty() {
        return Ok(Fired::default());
    }
    let mut matches = vec![];
    let mut cancels = vec![];
    let mut not_started = vec![];
    for c in &campaigns {
        let trigger = &c.trigger.0;
        // The API validated both when the campaign was written; one that no
        // longer parses is left for an operator, loudly.
        let filter = match trigger.validate() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(campaign = %c.id, error = %e, "trigger does not validate; events ignored");
                continue;
            }
        };
        let audience = match c.segment.as_ref().map(Segment::parse).transpose() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(campaign = %c.id, error = %e, "audience segment does not parse; events ignored");
                continue;
            }
        };
        if let Some(cancel) = &trigger.cancel_event {
            cancels.extend(events.iter().filter(|e| &e.name == cancel).map(|e| Cancel {
                campaign_id: c.id,
                event_id: e.id,
                phone_number: e.phone_number.clone(),
                occurred_at: e.occurred_at,
            }));
        }
        let mut passing = vec![];
        for e in events.iter().filter(|e| e.name == trigger.event) {
            let skip = |decision, reason: Value| NotStarted {
                campaign_id: c.id,
                phone_number: e.phone_number.clone(),
                decision,
                reason: with_event(reason, e),
            };
            if e.occurred_at + MAX_LATENESS < now {
                not_started.push(skip(
                    "trigger_too_late",
                    json!({"occurred_at": e.occurred_at, "max_lateness_hours": MAX_LATENESS.num_hours()}),
                ));
            } else if filter
                .as_ref()
                .is_some_and(|f| !f.matches_event(&e.properties))
            {
                not_started.push(skip("trigger_filtered", json!({"filter": trigger.filter})));
            } else {
                passing.push(e);
            }
        }
        if let (Some(segment), false) = (&audience, passing.is_empty()) {
            let phones: Vec<String> = passing.iter().map(|e| e.phone_number.clone()).collect();
            let inside: HashSet<String> = store::in_audience(db, segment, &phones)
                .await?
                .into_iter()
                .collect();
            passing.retain(|e| {
                let keep = inside.contains(&e.phone_number);
                if !keep {
                    not_started.push(NotStarted {
                        campaign_id: c.id,
                        phone_number: e.phone_number.clone(),
                        decision: "trigger_not_in_audience",
                        reason: with_event(json!({}), e),
                    });
                }
                keep
            });
        }
        matches.extend(passing.into_iter().map(|e| Match {
            campaign_id: c.id,
            event_id: e.id,
            phone_number: e.phone_number.clone(),
            occurred_at: e.occurred_at,
            send_at: (e.occurred_at + trigger.delay()).max(now),
        }));
    }

    // A cancel event that happened at or after the trigger, but reached us first.
    if !matches.is_empty() {
        let gone: HashSet<(Uuid, i64)> = store::already_cancelled(db, &matches)
            .await?
            .into_iter()
            .collect();
        matches.retain(|m| {
            let keep = !gone.contains(&(m.campaign_id, m.event_id));
            if !keep {
                not_started.push(NotStarted {
                    campaign_id: m.campaign_id,
                    phone_number: m.phone_number.clone(),
                    decision: "trigger_cancelled_already",
                    reason: json!({"event_id": m.event_id}),
                });
            }
            keep
        });
    }
    let created = store::create_messages(db, &matches).await?;
    let made: HashSet<(Uuid, i64)> = created
        .iter()
        .map(|c| (c.campaign_id, c.event_id))
        .collect();
    let rules: HashMap<Uuid, &'static str> = campaigns
        .iter()
        .map(|c| (c.id, c.trigger.0.per_person.as_str()))
        .collect();
    not_started.extend(
        matches
            .iter()
            .filter(|m| !made.contains(&(m.campaign_id, m.event_id)))
            .map(|m| NotStarted {
                campaign_id: m.campaign_id,
                phone_number: m.phone_number.clone(),
                decision: "trigger_limited",
                reason: json!({"event_id": m.event_id, "per_person": rules.get(&m.campaign_id)}),
            }),
    );
    store::log_not_started(db, &not_started).await?;
    let cancelled = store::cancel_waiting(db, &cancels).await?;
    Ok(Fired {
        created,
        cancelled,
        not_started: not_started.len(),
    })
}

fn with_event(mut reason: Value, e: &StoredEvent) -> Value {
    if let Value::Object(m) = &mut reason {
        m.insert("event_id".into(), e.id.into());
    }
    reason
}

/// After the commit: queues the created messages that are due now and
/// publishes their tasks. A failed publish puts them back to `pending`, for
/// the fan-out's next tick (as do the delayed ones, when they fall due).
/// Returns how many tasks were published.
pub async fn dispatch_due<P: TaskPublisher>(
    db: &PgPool,
    publisher: &P,
    created: &[Created],
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let due: Vec<Uuid> = created
        .iter()
        .filter(|c| c.send_at <= now)
        .map(|c| c.id)
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    let queued = dispatch::queue_now(db, &due).await?;
    let tasks: Vec<SendTask> = queued
        .iter()
        .map(|&message_id| SendTask { message_id })
        .collect();
    if let Err(e) = publisher.publish(&tasks).await {
        tracing::error!(error = %e, tasks = tasks.len(), "publishing triggered send tasks failed; the fan-out will dispatch them");
        dispatch::release(db, &queued).await?;
        return Ok(0);
    }
    Ok(tasks.len())
}
