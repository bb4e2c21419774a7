//! The sender's decision for one message, in DESIGN §5's order: claim →
//! campaign state → consent → 24-hour window → quiet hours → frequency cap →
//! render → rate limit → Twilio. Every branch ends the claim with a decision.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Consent, ConsentSource, PhoneNumber, QuietHours};
use crate::ratelimit::{Decision, Limit, Limiter};
use crate::store::outbox::{self, Claimed, Ending};
use crate::store::users::{self, ConsentChange};
use crate::template::{RenderError, Template, user_context};
use crate::twilio::errors::OPTED_OUT;
use crate::twilio::{Outbound, SendError, TwilioClient};

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
    /// After a send that may have reached Twilio, the retry waits at least
    /// this long so that a status callback can show it was accepted.
    pub ambiguous_grace: Duration,
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
            ambiguous_grace: Duration::from_secs(120),
            default_frequency_cap: None,
        }
    }
}

/// What the sender needs, shared by every request.
pub struct Sender {
    pub db: PgPool,
    pub twilio: TwilioClient,
    pub limiter: Limiter,
    pub settings: SenderSettings,
    templates: RwLock<HashMap<(Uuid, DateTime<Utc>), Arc<Template>>>,
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

impl Sender {
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

    fn template(&self, c: &Claimed) -> Result<Arc<Template>, String> {
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

    async fn end(
        &self,
        c: &Claimed,
        ending: Ending,
        decision: &'static str,
        reason: Value,
    ) -> Result<Handled, SendFailure> {
        outbox::finish(&self.db, c.message_id, &ending, decision, &reason, None).await?;
        tracing::info!(message_id = %c.message_id, decision, "message decided");
        Ok(Handled::Decided(decision))
    }

    /// Handles one send task.
    #[tracing::instrument(skip_all, fields(%message_id))]
    pub async fn handle(&self, message_id: Uuid) -> Result<Handled, SendFailure> {
        let Some(c) = outbox::claim(&self.db, message_id).await? else {
            tracing::info!("message not claimable (duplicate delivery or already handled)");
            return Ok(Handled::NotClaimed);
        };
        let now = Utc::now();

        match c.campaign_state.as_str() {
            "cancelled" => {
                return self
                    .end(
                        &c,
                        Ending::Skipped,
                        "cancelled",
                        json!({"campaign": "cancelled"}),
                    )
                    .await;
            }
            "paused" => {
                let until = now + chrono::Duration::seconds(60);
                return self
                    .end(
                        &c,
                        Ending::Deferred { until },
                        "deferred_paused",
                        json!({"until": until}),
                    )
                    .await;
            }
            _ => {}
        }

        if c.consent.as_deref() != Some(Consent::OptedIn.as_str()) {
            let consent = c.consent.as_deref().unwrap_or("no such user");
            return self
                .end(
                    &c,
                    Ending::Skipped,
                    "skipped_no_consent",
                    json!({"consent": consent}),
                )
                .await;
        }

        let template = match self.template(&c) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .end(
                        &c,
                        Ending::Skipped,
                        "skipped_render",
                        json!({"template_error": e}),
                    )
                    .await;
            }
        };
        let in_window = c
            .last_inbound_at
            .is_some_and(|t| t > now - chrono::Duration::hours(24));
        let use_content = !in_window || c.body.is_none();
        if use_content && !template.is_content_template() {
            return self
                .end(
                    &c,
                    Ending::Skipped,
                    "needs_template_outside_window",
                    json!({"last_inbound_at": c.last_inbound_at, "reason": "outside the 24-hour window the template needs a content_sid"}),
                )
                .await;
        }

        if let Some(q) = quiet_hours(c.quiet_hours_start, c.quiet_hours_end) {
            let tz = self.timezone(&c);
            if let Some(until) = q.defer_until(now, tz) {
                return self
                    .end(
                        &c,
                        Ending::Deferred { until },
                        "deferred_quiet_hours",
                        json!({"timezone": tz.name(), "until": until}),
                    )
                    .await;
            }
        }

        if let Some(cap) = c.frequency_cap.or(self.settings.default_frequency_cap) {
            let sent = outbox::sent_in_last_day(&self.db, &c.phone_number).await?;
            if sent >= i64::from(cap) {
                return self
                    .end(
                        &c,
                        Ending::Skipped,
                        "skipped_frequency_cap",
                        json!({"sent_last_24h": sent, "cap": cap}),
                    )
                    .await;
            }
        }

        let ctx = user_context(
            &c.phone_number,
            c.attributes.as_ref().unwrap_or(&Value::Null),
            c.profile_name.as_deref(),
        );
        let rendered = match template.render(&ctx) {
            Ok(r) => r,
            Err(RenderError::MissingVariables(vars)) => {
                return self
                    .end(
                        &c,
                        Ending::Skipped,
                        "skipped_render",
                        json!({"missing_variables": vars}),
                    )
                    .await;
            }
            Err(e) => {
                return self
                    .end(
                        &c,
                        Ending::Skipped,
                        "skipped_render",
                        json!({"error": e.to_string()}),
                    )
                    .await;
            }
        };

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
        loop {
            match self.limiter.acquire(&limits).await {
                Ok(Decision::Granted) => break,
                Ok(Decision::Wait(d)) if d <= self.settings.max_wait => tokio::time::sleep(d).await,
                Ok(Decision::Wait(d)) => {
                    let until = Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
                    return self
                        .end(
                            &c,
                            Ending::Deferred { until },
                            "deferred_rate_limit",
                            json!({"wait_ms": d.as_millis() as u64}),
                        )
                        .await;
                }
                Err(e) => {
                    // Never send unlimited: give the claim back and let Pub/Sub retry.
                    outbox::finish(
                        &self.db,
                        c.message_id,
                        &Ending::Released,
                        "released",
                        &json!({"reason": e.to_string()}),
                        None,
                    )
                    .await?;
                    return Err(SendFailure::Unavailable(e.to_string()));
                }
            }
        }

        let to = PhoneNumber::from_trusted(c.phone_number.clone());
        let (body, content_sid, content_variables) = if use_content {
            (
                None,
                rendered.content_sid.as_deref(),
                rendered.content_variables.as_deref(),
            )
        } else {
            (rendered.body.as_deref(), None, None)
        };
        let outbound = Outbound {
            message_id: c.message_id,
            to: &to,
            body,
            content_sid,
            content_variables,
        };
        let stored = (&rendered.body, &rendered.content_variables);
        match self.twilio.send(&outbound).await {
            Ok(accepted) => {
                let reason = json!({"sid": accepted.sid, "twilio_status": accepted.status});
                let ending = Ending::Sent {
                    sid: accepted.sid,
                    twilio_status: accepted.status,
                };
                outbox::finish(
                    &self.db,
                    c.message_id,
                    &ending,
                    "sent",
                    &reason,
                    Some(stored),
                )
                .await?;
                tracing::info!(decision = "sent", "message decided");
                Ok(Handled::Decided("sent"))
            }
            Err(SendError::Transient {
                code,
                message,
                ambiguous,
            }) if c.attempts < c.max_attempts => {
                let mut wait = backoff(
                    c.attempts,
                    self.settings.retry_base,
                    self.settings.retry_cap,
                );
                if ambiguous {
                    wait = wait.max(self.settings.ambiguous_grace);
                }
                let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                let reason = json!({"code": code, "error": message, "attempt": c.attempts, "ambiguous": ambiguous, "until": until});
                self.end(&c, Ending::Deferred { until }, "retry", reason)
                    .await
            }
            Err(SendError::Transient { code, message, .. }) => {
                let reason = json!({"code": code, "error": message, "attempts": c.attempts, "reason": "attempts exhausted"});
                let ending = Ending::Failed { code, message };
                self.end(&c, ending, "failed", reason).await
            }
            Err(SendError::Permanent { code, message }) => {
                let reason = json!({"code": code, "error": message});
                let mut tx = self.db.begin().await?;
                outbox::finish(
                    &mut *tx,
                    c.message_id,
                    &Ending::Failed { code, message },
                    "failed",
                    &reason,
                    Some(stored),
                )
                .await?;
                if code == Some(OPTED_OUT) {
                    let change = ConsentChange {
                        to: Consent::OptedOut,
                        source: ConsentSource::Twilio,
                        webhook_event_id: None,
                        import_id: None,
                        detail: Some("Twilio error 21610 on send: recipient unsubscribed"),
                    };
                    users::set_consent(&mut *tx, &c.phone_number, change).await?;
                }
                tx.commit().await?;
                tracing::info!(decision = "failed", ?code, "message decided");
                Ok(Handled::Decided("failed"))
            }
        }
    }

    fn timezone(&self, c: &Claimed) -> Tz {
        c.attributes
            .as_ref()
            .and_then(|a| a.get("timezone"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Tz>().ok())
            .or_else(|| c.default_timezone.parse::<Tz>().ok())
            .unwrap_or(self.settings.default_timezone)
    }
}

fn quiet_hours(start: Option<NaiveTime>, end: Option<NaiveTime>) -> Option<QuietHours> {
    QuietHours::new(start?, end?)
}

/// Full jitter: a uniform wait in `[0, min(cap, base · 2^attempt)]`.
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.clamp(0, 20) as u32));
    let ceiling = exp.min(cap).as_millis() as u64;
    Duration::from_millis(rand::random_range(0..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let (base, cap) = (Duration::from_secs(2), Duration::from_secs(600));
        for _ in 0..200 {
            assert!(backoff(1, base, cap) <= Duration::from_secs(4));
            assert!(backoff(3, base, cap) <= Duration::from_secs(16));
            assert!(backoff(30, base, cap) <= cap);
        }
        // Full jitter spreads retries over the whole range.
        let samples: Vec<_> = (0..200).map(|_| backoff(8, base, cap)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_secs(100)));
        assert!(samples.iter().any(|d| *d > Duration::from_secs(300)));
    }
}
