//! The sender: claim → [`decide`] (pure, DESIGN §5's order: campaign state →
//! consent → topic → 24-hour window → quiet hours → render) → act (frequency cap →
//! rate limit → Twilio → record). Every branch ends the claim with a decision,
//! and a send whose outcome is unknown is never sent again before
//! reconciliation has asked Twilio (DESIGN §3.4, docs/sending.md).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{CampaignState, Consent, ConsentSource, PhoneNumber, QuietHours};
use crate::ratelimit::{Decision as Rate, Limit, Limiter};
use crate::store::campaigns;
use crate::store::messages::outbox::{self, ClaimedMessage, Ending, Finish};
use crate::store::users::{self, ConsentChange};
use crate::template::{RenderError, Rendered, Template, user_context};
use crate::twilio::errors::{Reaction, meaning};
use crate::twilio::{Accepted, Outbound, SendError, TwilioClient};

#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// When neither the user nor the campaign names a valid timezone.
    pub default_timezone: Tz,
    /// The per-sender-number limit (WhatsApp's default throughput is 80/s).
    pub sender_rate_per_second: f64,
    /// A rate-limit wait up to this long is slept; a longer one defers.
    pub max_wait: Duration,
    /// Retry backoff: full jitter over `base · 2^attempt`, capped.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long a claim holds before reconciliation looks at it: longer than
    /// the longest rate-limit wait plus Twilio's timeout.
    pub claim_lease: Duration,
    /// After a send whose outcome is unknown, reconciliation waits this long
    /// (for a status callback to settle it) before asking Twilio.
    pub unknown_grace: Duration,
    /// An account-level refusal defers the message `base · 2^holds`, capped by `retry_cap`.
    pub account_hold_base: Duration,
    /// Consecutive account-level refusals that pause the campaign.
    pub account_holds_to_pause: i32,
    /// A message of a paused campaign is looked at again after this.
    pub paused_recheck: Duration,
    /// Applies to campaigns without their own cap.
    pub default_frequency_cap: Option<i32>,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            default_timezone: Tz::UTC,
            sender_rate_per_second: 80.0,
            max_wait: Duration::from_secs(1),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(600),
            claim_lease: Duration::from_secs(120),
            unknown_grace: Duration::from_secs(60),
            account_hold_base: Duration::from_secs(30),
            account_holds_to_pause: 3,
            paused_recheck: Duration::from_secs(60),
            default_frequency_cap: None,
        }
    }
}

/// What the sender does with a claimed message, chosen without I/O.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// End the claim without calling Twilio.
    End {
        ending: Ending,
        decision: &'static str,
        reason: Value,
    },
    /// Send it, once the frequency cap and the rate limit allow.
    Send(Box<Planned>),
}

/// A message cleared to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub frequency_cap: Option<i32>,
    /// Outside the 24-hour window (or with no body): the content template.
    pub use_content: bool,
    pub rendered: Rendered,
}

fn end(ending: Ending, decision: &'static str, reason: Value) -> Decision {
    Decision::End {
        ending,
        decision,
        reason,
    }
}

/// The sender's choice for a claimed message, in DESIGN §5's order. Pure: the
/// frequency cap, the rate limit and Twilio come after, in [`SendEngine::handle`].
pub fn decide(
    c: &ClaimedMessage,
    template: Result<&Template, &str>,
    now: DateTime<Utc>,
    settings: &SenderSettings,
) -> Decision {
    match c.campaign_state {
        CampaignState::Cancelled => {
            return end(
                Ending::Skipped,
                "cancelled",
                json!({"campaign": "cancelled"}),
            );
        }
        CampaignState::Paused => {
            let until =
                now + chrono::Duration::from_std(settings.paused_recheck).unwrap_or_default();
            return end(
                Ending::Deferred { until },
                "deferred_paused",
                json!({"until": until}),
            );
        }
        _ => {}
    }
    if c.consent != Some(Consent::OptedIn) {
        let consent = c.consent.map_or("no such user", Consent::as_str);
        return end(
            Ending::Skipped,
            "skipped_no_consent",
            json!({"consent": consent}),
        );
    }
    if let (Some(topic), false) = (&c.topic, c.topic_subscribed) {
        return end(
            Ending::Skipped,
            "skipped_topic_unsubscribed",
            json!({"topic": topic}),
        );
    }
    let template = match template {
        Ok(t) => t,
        Err(e) => {
            return end(
                Ending::Skipped,
                "skipped_render",
                json!({"template_error": e}),
            );
        }
    };
    let in_window = c
        .last_inbound_at
        .is_some_and(|t| t > now - chrono::Duration::hours(24));
    let use_content = !in_window || c.body.is_none();
    if use_content && !template.is_content_template() {
        return end(
            Ending::Skipped,
            "needs_template_outside_window",
            json!({"last_inbound_at": c.last_inbound_at, "reason": "outside the 24-hour window the template needs a content_sid"}),
        );
    }
    if let Some(q) = quiet_hours(c.quiet_hours_start, c.quiet_hours_end) {
        let tz = timezone(c, settings.default_timezone);
        if let Some(until) = q.defer_until(now, tz) {
            return end(
                Ending::Deferred { until },
                "deferred_quiet_hours",
                json!({"timezone": tz.name(), "until": until}),
            );
        }
    }
    let mut ctx = user_context(
        &c.phone_number,
        c.attributes.as_ref().unwrap_or(&Value::Null),
        c.profile_name.as_deref(),
    );
    if let (Some(props), Value::Object(m)) = (&c.event_properties, &mut ctx) {
        m.insert("event".into(), props.clone());
    }
    match template.render(&ctx) {
        Ok(rendered) => Decision::Send(Box::new(Planned {
            frequency_cap: c.frequency_cap.or(settings.default_frequency_cap),
            use_content,
            rendered,
        })),
        Err(RenderError::MissingVariables(vars)) => end(
            Ending::Skipped,
            "skipped_render",
            json!({"missing_variables": vars}),
        ),
        Err(e) => end(
            Ending::Skipped,
            "skipped_render",
            json!({"error": e.to_string()}),
        ),
    }
}

fn timezone(c: &ClaimedMessage, default: Tz) -> Tz {
    c.attributes
        .as_ref()
        .and_then(|a| a.get("timezone"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Tz>().ok())
        .or_else(|| c.default_timezone.parse::<Tz>().ok())
        .unwrap_or(default)
}

fn quiet_hours(start: Option<NaiveTime>, end: Option<NaiveTime>) -> Option<QuietHours> {
    QuietHours::new(start?, end?)
}

/// Compiled templates by id and version (`updated_at`).
type TemplateCache = HashMap<(Uuid, DateTime<Utc>), Arc<Template>>;

/// What the sender needs, shared by every request.
pub struct SendEngine {
    pub db: PgPool,
    pub twilio: TwilioClient,
    pub limiter: Limiter,
    pub settings: SenderSettings,
    templates: RwLock<TemplateCache>,
}

/// How one push was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The claim ended with this decision.
    Decided(&'static str),
    /// Another delivery has (or had) the message: nothing to do.
    NotClaimed,
}

#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// Infrastructure is away; the push should be retried (the claim was given back).
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl SendEngine {
    pub fn new(
        db: PgPool,
        twilio: TwilioClient,
        limiter: Limiter,
        settings: SenderSettings,
    ) -> Self {
        Self {
            db,
            twilio,
            limiter,
            settings,
            templates: RwLock::default(),
        }
    }

    fn template(&self, c: &ClaimedMessage) -> Result<Arc<Template>, String> {
        let key = (c.template_id, c.template_version);
        if let Some(t) = self.templates.read().expect("template cache").get(&key) {
            return Ok(t.clone());
        }
        let t = Arc::new(
            Template::new(
                c.body.as_deref(),
                c.content_sid.as_deref(),
                c.content_variables.as_ref(),
            )
            .map_err(|e| e.to_string())?,
        );
        let mut cache = self.templates.write().expect("template cache");
        cache.retain(|(id, _), _| *id != c.template_id);
        cache.insert(key, t.clone());
        Ok(t)
    }

    async fn end(&self, c: &ClaimedMessage, f: Finish<'static>) -> Result<Handled, SendFailure> {
        if !outbox::finish(&self.db, c.message_id, c.claim, &f).await? {
            // The lease ran out and reconciliation (or a newer claim) has it now.
            tracing::warn!(message_id = %c.message_id, decision = f.decision, "claim overtaken; its end was not written");
            return Ok(Handled::NotClaimed);
        }
        tracing::info!(message_id = %c.message_id, decision = f.decision, "message decided");
        Ok(Handled::Decided(f.decision))
    }

    /// Handles one send task.
    #[tracing::instrument(skip_all, fields(%message_id))]
    pub async fn handle(&self, message_id: Uuid) -> Result<Handled, SendFailure> {
        let lease = self.settings.claim_lease.as_secs_f64();
        let Some(c) = outbox::claim(&self.db, message_id, lease).await? else {
            tracing::info!("message not claimable (duplicate delivery or already handled)");
            return Ok(Handled::NotClaimed);
        };
        let template = self.template(&c);
        let template = template.as_deref().map_err(String::as_str);
        match decide(&c, template, Utc::now(), &self.settings) {
            Decision::End {
                ending,
                decision,
                reason,
            } => {
                self.end(&c, Finish::without_send(ending, decision, reason))
                    .await
            }
            Decision::Send(plan) => {
                match self.clear_to_send(&c, &plan).await {
                    Ok(None) => {}
                    Ok(Some(handled)) => return Ok(handled),
                    Err(e) => {
                        // Nothing went to Twilio: give the claim back for the redelivery.
                        self.give_back(&c, &e).await;
                        return Err(e);
                    }
                }
                let to = PhoneNumber::from_trusted(c.phone_number.clone());
                let result = self.twilio.send(&outbound(&c, &plan, &to)).await;
                // From here a failure to record leaves the claim to its lease:
                // Twilio may hold the message, so only reconciliation may decide.
                self.record(&c, &plan, result).await
            }
        }
    }

    /// The frequency cap and the rate limit: `Some` when they ended the claim.
    async fn clear_to_send(
        &self,
        c: &ClaimedMessage,
        plan: &Planned,
    ) -> Result<Option<Handled>, SendFailure> {
        if let Some(cap) = plan.frequency_cap {
            let counted = outbox::reserve_frequency_cap(
                &self.db,
                c.message_id,
                c.claim,
                &c.phone_number,
                cap,
            )
            .await?;
            if let Err(sent) = counted {
                let reason = json!({"sent_last_24h": sent, "cap": cap});
                let f = Finish::without_send(Ending::Skipped, "skipped_frequency_cap", reason);
                return self.end(c, f).await.map(Some);
            }
        }
        let limits = [
            Limit {
                key: format!("campaign:{}", c.campaign_id),
                per_second: f64::from(c.rate_per_second),
                burst: 1,
            },
            Limit {
                key: self.twilio.sender().limit_key(),
                per_second: self.settings.sender_rate_per_second,
                burst: 1,
            },
        ];
        // Waits add up to at most `max_wait`, so the claim's lease always outlasts them.
        let mut waited = Duration::ZERO;
        loop {
            match self.limiter.acquire(&limits).await {
                Ok(Rate::Granted) => return Ok(None),
                Ok(Rate::Wait(d)) if waited + d <= self.settings.max_wait => {
                    waited += d;
                    tokio::time::sleep(d).await
                }
                Ok(Rate::Wait(d)) => {
                    let until = Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
                    let reason = json!({"wait_ms": d.as_millis() as u64});
                    let f = Finish::without_send(
                        Ending::Deferred { until },
                        "deferred_rate_limit",
                        reason,
                    );
                    return self.end(c, f).await.map(Some);
                }
                // Never send unlimited: give the claim back and let Pub/Sub retry.
                Err(e) => return Err(SendFailure::Unavailable(e.to_string())),
            }
        }
    }

    /// Gives the claim back (`queued`) after a failure before Twilio; if even
    /// that fails, the lease runs out and reconciliation finds nothing sent.
    async fn give_back(&self, c: &ClaimedMessage, cause: &SendFailure) {
        let f = Finish::without_send(
            Ending::Released,
            "released",
            json!({"reason": cause.to_string()}),
        );
        if let Err(e) = outbox::finish(&self.db, c.message_id, c.claim, &f).await {
            tracing::warn!(error = %e, "claim not given back; its lease will end it");
        }
    }

    /// Records what Twilio answered, as the error table says ([`Reaction`]).
    async fn record(
        &self,
        c: &ClaimedMessage,
        plan: &Planned,
        result: Result<Accepted, SendError>,
    ) -> Result<Handled, SendFailure> {
        // What went to Twilio, as it went: the body, or the content variables.
        let rendered = Some(if plan.use_content {
            (None, plan.rendered.content_variables.clone())
        } else {
            (plan.rendered.body.clone(), None)
        });
        let sent = |ending: Ending, decision: &'static str, reason: Value| Finish {
            ending,
            decision,
            reason,
            rendered: rendered.clone(),
            attempted: true,
        };
        let now = Utc::now();
        let error = match result {
            Ok(accepted) => {
                let reason = json!({"sid": accepted.sid, "twilio_status": accepted.status});
                let reconcile_at = accepted.sid.is_none().then(|| {
                    now + chrono::Duration::from_std(self.settings.unknown_grace)
                        .unwrap_or_default()
                });
                let ending = Ending::Sent {
                    sid: accepted.sid,
                    twilio_status: accepted.status,
                    reconcile_at,
                };
                let handled = self.end(c, sent(ending, "sent", reason)).await?;
                if c.account_holds > 0 {
                    campaigns::clear_account_holds(&self.db, c.campaign_id).await?;
                }
                return Ok(handled);
            }
            Err(e) => e,
        };
        let (code, message) = (error.code(), error.message().to_owned());
        let attempt = c.attempts + 1;
        match error.reaction() {
            Reaction::Retry if attempt < c.max_attempts => {
                let wait = backoff(attempt, self.settings.retry_base, self.settings.retry_cap);
                let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
                let reason =
                    json!({"code": code, "error": message, "attempt": attempt, "until": until});
                self.end(c, sent(Ending::Deferred { until }, "retry", reason))
                    .await
            }
            Reaction::Retry => {
                let reason = json!({"code": code, "error": message, "attempts": attempt, "reason": "attempts exhausted"});
                let ending = Ending::Failed { code, message };
                self.end(c, sent(ending, "failed", reason)).await
            }
            Reaction::Reconcile => {
                let reconcile_at = now
                    + chrono::Duration::from_std(self.settings.unknown_grace).unwrap_or_default();
                let reason = json!({"code": code, "error": message, "attempt": attempt, "reconcile_at": reconcile_at,
                                    "reason": "Twilio may hold the message: never sent again before reconciliation"});
                let ending = Ending::Unknown { reconcile_at };
                self.end(c, sent(ending, "outcome_unknown", reason)).await
            }
            Reaction::FailMessage => {
                let reason = json!({"code": code, "error": message, "meaning": code.and_then(meaning).map(|m| m.meaning)});
                self.end(c, sent(Ending::Failed { code, message }, "failed", reason))
                    .await
            }
            Reaction::OptOut => {
                let reason = json!({"code": code, "error": message});
                let mut tx = self.db.begin().await?;
                let f = sent(Ending::Failed { code, message }, "failed", reason);
                outbox::finish(&mut *tx, c.message_id, c.claim, &f).await?;
                let change = ConsentChange {
                    to: Consent::OptedOut,
                    source: ConsentSource::Twilio,
                    webhook_event_id: None,
                    import_id: None,
                    detail: Some("Twilio error 21610 on send: recipient unsubscribed"),
                };
                users::set_consent(&mut *tx, &c.phone_number, change).await?;
                tx.commit().await?;
                tracing::info!(decision = "failed", ?code, "message decided");
                Ok(Handled::Decided("failed"))
            }
            Reaction::HoldAccount => self.hold_account(c, code, message).await,
        }
    }

    /// The account cannot send: the message waits (no attempt used), and
    /// repeated refusals pause the campaign.
    async fn hold_account(
        &self,
        c: &ClaimedMessage,
        code: Option<i32>,
        message: String,
    ) -> Result<Handled, SendFailure> {
        let holds = c.account_holds + 1;
        let wait = self
            .settings
            .account_hold_base
            .saturating_mul(2u32.saturating_pow(c.account_holds.clamp(0, 16) as u32))
            .min(self.settings.retry_cap);
        let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let cause = code.and_then(meaning).map(|m| m.meaning);
        let reason = json!({"code": code, "error": message, "cause": cause, "account_holds": holds, "until": until});
        let handled = self
            .end(
                c,
                Finish::without_send(
                    Ending::Deferred { until },
                    "deferred_account_hold",
                    reason.clone(),
                ),
            )
            .await?;
        if handled == Handled::NotClaimed {
            return Ok(handled);
        }
        let pause_at = self.settings.account_holds_to_pause;
        if campaigns::note_account_hold(&self.db, c.campaign_id, pause_at, &reason).await? {
            tracing::error!(
                campaign_id = %c.campaign_id,
                code,
                cause = cause.unwrap_or(message.as_str()),
                "Twilio refuses the account: campaign paused after {pause_at} account-level errors; resume it once the account is fixed"
            );
        }
        Ok(handled)
    }
}

fn outbound<'a>(c: &'a ClaimedMessage, plan: &'a Planned, to: &'a PhoneNumber) -> Outbound<'a> {
    let r = &plan.rendered;
    let (body, content_sid, content_variables) = if plan.use_content {
        (
            None,
            r.content_sid.as_deref(),
            r.content_variables.as_deref(),
        )
    } else {
        (r.body.as_deref(), None, None)
    };
    Outbound {
        message_id: c.message_id,
        to,
        body,
        content_sid,
        content_variables,
    }
}

/// Full jitter: a uniform wait in `[0, min(cap, base · 2^attempt)]`.
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.clamp(0, 20) as u32));
    let ceiling = exp.min(cap).as_millis() as u64;
    Duration::from_millis(rand::random_range(0..=ceiling))
}

#[cfg(test)]
mod tests;
