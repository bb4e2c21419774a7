//! Reconciliation with Twilio's Messages API (DESIGN §3.4, docs/sending.md):
//! what the sender could not know, Twilio tells.
//!
//! - A message still `sending` past its claim's lease, or whose send had an
//!   unknown outcome, is looked up among the newest messages to its number:
//!   one match is adopted (SID and status); several, the earliest is adopted and
//!   the others recorded; none, once the request can no longer be in flight,
//!   lets it be sent again — once.
//! - An accepted send whose answer named no SID is looked up the same way.
//! - A `sent` message whose final status never came is fetched by SID and the
//!   answer applied exactly like a status callback.
//!
//! Every answer is stored raw (`webhook_events.kind = 'reconcile'`) and every
//! reconciled message gets a decision.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::domain::{MessageStatus, PhoneNumber};
use crate::store::messages::outbox;
use crate::store::messages::reconcile::{self, Settlement, Unsettled};
use crate::store::webhook_events::NewWebhookEvent;
use crate::twilio::errors::{Reaction, reaction};
use crate::twilio::{LookupError, TwilioClient, TwilioMessage};
use crate::webhooks::status::{self, StatusCallback};

#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// Since its claim, how long a send can still be on its way to Twilio
    /// (longer than the sender's Twilio timeout plus its rate-limit wait).
    /// Only after it does "not in Twilio's list" mean "never sent".
    pub in_flight_for: Duration,
    /// A sent message without its final status for this long is fetched by SID.
    pub final_after: Duration,
    /// A message Twilio could not be asked about is looked at again after this.
    pub recheck: Duration,
    /// Messages per pass.
    pub batch: i64,
    /// Twilio's clock against ours, in matching creation times.
    pub clock_skew: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            in_flight_for: Duration::from_secs(120),
            final_after: Duration::from_secs(3600),
            recheck: Duration::from_secs(60),
            batch: 500,
            clock_skew: Duration::from_secs(10),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    pub looked_up: usize,
    pub found: usize,
    pub resent: usize,
    pub failed: usize,
    /// Accepted sends whose SID Twilio's list never showed (they stay `sent`).
    pub sid_not_found: usize,
    /// Not found yet, but the send may still be on its way.
    pub waiting: usize,
    pub lookup_failures: usize,
    pub fetched: usize,
    pub advanced: usize,
}

/// The candidates among Twilio's newest messages to the number that can be
/// this send, earliest first: created no earlier than the claim (less the
/// clock skew), not held by another message of ours, and with the same body
/// when the message was sent as a body (the sender stores the body only then).
pub fn candidates<'a>(
    m: &Unsettled,
    listed: &'a [TwilioMessage],
    held_elsewhere: &HashSet<String>,
    clock_skew: Duration,
) -> Vec<&'a TwilioMessage> {
    let since = m
        .sending_at
        .map(|t| t - chrono::Duration::from_std(clock_skew).unwrap_or_default());
    let mut found: Vec<&TwilioMessage> = listed
        .iter()
        .filter(|t| !held_elsewhere.contains(&t.sid))
        .filter(|t| match (since, t.created_at()) {
            (Some(since), Some(created)) => created >= since,
            _ => true,
        })
        .filter(|t| match (&m.body, &t.body) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        })
        .collect();
    found.sort_by_key(|t| (t.created_at(), t.sid.clone()));
    found
}

/// The status a found message takes: at least `sent` (Twilio has it), further
/// when Twilio says so, or its failure.
pub fn adopted_status(twilio_status: &str) -> MessageStatus {
    match twilio_status.parse::<MessageStatus>() {
        Ok(s) if s.is_failure() => s,
        Ok(s) if s.rank() > MessageStatus::Sent.rank() => s,
        _ => MessageStatus::Sent,
    }
}

/// What to conclude when nothing matched.
fn not_found(m: &Unsettled, now: DateTime<Utc>, in_flight_for: Duration) -> Option<Settlement> {
    let claimed = m.sending_at.unwrap_or(now);
    if now < claimed + chrono::Duration::from_std(in_flight_for).unwrap_or_default() {
        return None;
    }
    Some(if !m.is_sending() {
        Settlement::SidNotFound
    } else if m.resends == 0 {
        Settlement::Resend
    } else {
        Settlement::NotFound
    })
}

/// One pass: look up what is due, then fetch sent messages whose final status is late.
#[tracing::instrument(skip_all)]
pub async fn reconcile(
    db: &PgPool,
    twilio: &TwilioClient,
    settings: &ReconcileSettings,
) -> Result<ReconcileReport, sqlx::Error> {
    let mut report = ReconcileReport::default();
    let due = reconcile::take_due(db, settings.batch, settings.recheck.as_secs_f64()).await?;
    for m in &due {
        report.looked_up += 1;
        match look_up(db, twilio, settings, m).await? {
            Looked::Settled(Settlement::Found { .. }) => report.found += 1,
            Looked::Settled(Settlement::Resend) => report.resent += 1,
            Looked::Settled(Settlement::NotFound) => report.failed += 1,
            Looked::Settled(Settlement::SidNotFound) => report.sid_not_found += 1,
            Looked::Waiting => report.waiting += 1,
            Looked::Unanswered => report.lookup_failures += 1,
        }
    }
    let late =
        reconcile::take_unsettled_sent(db, settings.final_after.as_secs_f64(), settings.batch)
            .await?;
    for (id, sid) in late {
        report.fetched += 1;
        match fetch(db, twilio, id, &sid).await? {
            Some(true) => report.advanced += 1,
            Some(false) => {}
            None => report.lookup_failures += 1,
        }
    }
    if report != ReconcileReport::default() {
        tracing::info!(?report, "reconciliation pass");
    }
    Ok(report)
}

enum Looked {
    Settled(Settlement),
    Waiting,
    Unanswered,
}

async fn look_up(
    db: &PgPool,
    twilio: &TwilioClient,
    settings: &ReconcileSettings,
    m: &Unsettled,
) -> Result<Looked, sqlx::Error> {
    let to = PhoneNumber::from_trusted(m.phone_number.clone());
    let listed = match twilio.list_messages_to(&to).await {
        Ok(l) => l,
        Err(e) => {
            log_lookup_failure(&e);
            return Ok(Looked::Unanswered);
        }
    };
    let (messages, raw): (Vec<TwilioMessage>, Vec<Value>) = listed.into_iter().unzip();
    let sids: Vec<String> = messages.iter().map(|t| t.sid.clone()).collect();
    let held: HashSet<String> = reconcile::sids_in_use(db, &sids)
        .await?
        .into_iter()
        .collect();
    let found = candidates(m, &messages, &held, settings.clock_skew);
    let settlement = match found.first() {
        Some(first) => Settlement::Found {
            sid: first.sid.clone(),
            status: adopted_status(&first.status),
            error_code: first.error_code,
            error_message: first.error_message.clone(),
            created_at: first.created_at(),
        },
        None => match not_found(m, Utc::now(), settings.in_flight_for) {
            Some(s) => s,
            None => return Ok(Looked::Waiting),
        },
    };
    let others: Vec<&str> = found.iter().skip(1).map(|t| t.sid.as_str()).collect();
    if !others.is_empty() {
        tracing::error!(message_id = %m.id, sids = ?others, "Twilio holds this message more than once; the earliest is adopted");
    }
    let reason = json!({
        "outcome_unknown": m.outcome_unknown,
        "claim": m.claims,
        "listed": messages.len(),
        "matched": found.iter().map(|t| &t.sid).collect::<Vec<_>>(),
        "also_held_by_twilio": others,
        "twilio_status": found.first().map(|t| &t.status),
    });
    let raw_body = Value::Array(raw).to_string();
    let dedupe_key = format!("list:{}:{}:{}", m.id, m.claims, settlement.decision());
    let params = json!({"message_id": m.id, "decision": settlement.decision()});
    let event = NewWebhookEvent {
        kind: "reconcile",
        dedupe_key: &dedupe_key,
        idempotency_token: None,
        message_sid: found.first().map(|t| t.sid.as_str()),
        request_uri: "/2010-04-01/Accounts/{AccountSid}/Messages.json?To={To}",
        content_type: "application/json",
        raw_body: &raw_body,
        params: &params,
    };
    match reconcile::settle(db, m, &settlement, &event, &reason).await {
        Ok(_) => Ok(Looked::Settled(settlement)),
        // Another message took the SID meanwhile: looked at again later.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            tracing::warn!(message_id = %m.id, error = %e, "matched SID already held; reconciled again later");
            Ok(Looked::Unanswered)
        }
        Err(e) => Err(e),
    }
}

/// Fetches one sent message by SID and applies Twilio's answer like a status
/// callback. `Some(advanced)`, or `None` when Twilio did not answer.
async fn fetch(
    db: &PgPool,
    twilio: &TwilioClient,
    id: uuid::Uuid,
    sid: &str,
) -> Result<Option<bool>, sqlx::Error> {
    let (message, raw) = match twilio.fetch_message(sid).await {
        Ok(found) => found,
        Err(e) => {
            log_lookup_failure(&e);
            reconcile::fetch_again(db, id).await?;
            return Ok(None);
        }
    };
    let cb = StatusCallback {
        message_id: Some(id),
        message_sid: message.sid.clone(),
        raw_status: message.status.clone(),
        status: message.status.parse().ok(),
        error_code: message.error_code,
        error_message: message.error_message.clone(),
        to: message.to.clone(),
    };
    let dedupe_key = format!("fetch:{}", cb.dedupe_key());
    let raw_body = raw.to_string();
    let event = NewWebhookEvent {
        kind: "reconcile",
        dedupe_key: &dedupe_key,
        idempotency_token: None,
        message_sid: Some(sid),
        request_uri: "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json",
        content_type: "application/json",
        raw_body: &raw_body,
        params: &raw,
    };
    let outcome = match status::apply(db, &event, &cb).await {
        Ok(o) => o,
        Err(crate::webhooks::WebhookError::Database(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "fetched message not applied");
            return Ok(None);
        }
    };
    let reason =
        json!({"sid": sid, "twilio_status": message.status, "advanced": outcome.callback.advanced});
    outbox::note(db, id, "reconciled_status", &reason).await?;
    Ok(Some(outcome.callback.advanced))
}

fn log_lookup_failure(e: &LookupError) {
    let account = e
        .http_status
        .is_some_and(|s| reaction(s, e.code) == Reaction::HoldAccount);
    if account {
        tracing::error!(error = %e, "Twilio refuses the account's Messages API reads; reconciliation waits");
    } else {
        tracing::warn!(error = %e, "Twilio lookup failed; tried again later");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn unsettled(body: Option<&str>, sending_at: &str) -> Unsettled {
        Unsettled {
            id: Uuid::nil(),
            campaign_id: Uuid::nil(),
            phone_number: "+14155552671".into(),
            claims: 1,
            status: MessageStatus::Sending,
            sending_at: Some(sending_at.parse().unwrap()),
            body: body.map(str::to_owned),
            resends: 0,
            outcome_unknown: true,
        }
    }

    fn listed(sid: &str, body: &str, created: &str) -> TwilioMessage {
        TwilioMessage {
            sid: sid.into(),
            status: "delivered".into(),
            to: Some("whatsapp:+14155552671".into()),
            from: None,
            body: Some(body.into()),
            date_created: Some(created.into()),
            error_code: None,
            error_message: None,
        }
    }

    #[test]
    fn matches_by_body_and_time_earliest_first() {
        let m = unsettled(Some("Hi Ada"), "2026-11-30T10:00:00Z");
        let list = vec![
            listed("SM3", "Hi Ada", "Mon, 30 Nov 2026 10:00:09 +0000"),
            listed("SM2", "Hi Ada", "Mon, 30 Nov 2026 10:00:03 +0000"),
            listed(
                "SMother",
                "Your order shipped",
                "Mon, 30 Nov 2026 10:00:01 +0000",
            ),
            listed("SMold", "Hi Ada", "Mon, 30 Nov 2026 09:00:00 +0000"),
        ];
        let found = candidates(&m, &list, &HashSet::new(), Duration::from_secs(10));
        let sids: Vec<_> = found.iter().map(|t| t.sid.as_str()).collect();
        assert_eq!(sids, ["SM2", "SM3"]);
    }

    #[test]
    fn a_sid_another_message_holds_is_not_a_match() {
        let m = unsettled(None, "2026-11-30T10:00:00Z");
        let list = vec![listed("SMtaken", "x", "Mon, 30 Nov 2026 10:00:01 +0000")];
        let held = HashSet::from(["SMtaken".to_owned()]);
        assert!(candidates(&m, &list, &held, Duration::from_secs(10)).is_empty());
        // Without a body of ours, time alone decides.
        assert_eq!(
            candidates(&m, &list, &HashSet::new(), Duration::from_secs(10)).len(),
            1
        );
    }

    #[test]
    fn not_found_waits_while_the_send_may_be_in_flight_then_resends_once() {
        let mut m = unsettled(None, "2026-11-30T10:00:00Z");
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let window = Duration::from_secs(120);
        assert_eq!(not_found(&m, at("2026-11-30T10:01:00Z"), window), None);
        assert_eq!(
            not_found(&m, at("2026-11-30T10:02:01Z"), window),
            Some(Settlement::Resend)
        );
        m.resends = 1;
        assert_eq!(
            not_found(&m, at("2026-11-30T10:02:01Z"), window),
            Some(Settlement::NotFound)
        );
        m.status = MessageStatus::Sent;
        assert_eq!(
            not_found(&m, at("2026-11-30T10:02:01Z"), window),
            Some(Settlement::SidNotFound)
        );
    }

    #[test]
    fn a_found_message_is_at_least_sent() {
        assert_eq!(adopted_status("queued"), MessageStatus::Sent);
        assert_eq!(adopted_status("accepted"), MessageStatus::Sent);
        assert_eq!(adopted_status("delivered"), MessageStatus::Delivered);
        assert_eq!(adopted_status("read"), MessageStatus::Read);
        assert_eq!(adopted_status("undelivered"), MessageStatus::Undelivered);
        assert_eq!(adopted_status("nonsense"), MessageStatus::Sent);
    }
}
