//! A campaign's dry run: the sender's own rules ([`decide`], then the
//! frequency cap) applied to everyone in its audience now, without Twilio,
//! without writing anything. What the console shows before a launch.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::CampaignState;
use crate::engine::send::{Decision, SenderSettings, decide};
use crate::segment::Segment;
use crate::store::campaigns::Campaign;
use crate::store::console::{AudienceMember, audience_page};
use crate::store::messages::outbox::ClaimedMessage;
use crate::store::templates::TemplateRecord;
use crate::template::{Rendered, Template};

/// The decision a dry run names for a person the rules would send to.
pub const WOULD_SEND: &str = "would_send";
/// What the sender would record for a person over the frequency cap.
pub const OVER_FREQUENCY_CAP: &str = "skipped_frequency_cap";

/// People read per page: a dry run over a million people holds one page at a time.
const PAGE: i64 = 5_000;

/// A message the rules would send.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub phone_number: String,
    /// Outside the 24-hour window: the content template goes instead of the body.
    pub use_content: bool,
    pub rendered: Rendered,
}

/// One person the rules would not send to, with the reason as the sender would record it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub phone_number: String,
    pub reason: Value,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DryRun {
    /// People in the audience now.
    pub audience: i64,
    /// People by the decision the sender would make now ([`WOULD_SEND`] for a send).
    pub by_decision: BTreeMap<String, i64>,
    /// A few of the messages that would go.
    pub samples: Vec<Sample>,
    /// A few people per decision that is not a send.
    pub examples: BTreeMap<String, Vec<Example>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("the campaign has no segment: a dry run needs an audience")]
    NoAudience,
    #[error("the segment does not parse: {0}")]
    Segment(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs the sender's rules for everyone `segment` matches, as if the campaign
/// were running now. `samples` and `examples` bound what is kept.
pub async fn dry_run(
    db: &PgPool,
    campaign: &Campaign,
    segment: &Value,
    template: &TemplateRecord,
    settings: &SenderSettings,
    now: DateTime<Utc>,
    samples: usize,
) -> Result<DryRun, DryRunError> {
    let segment = Segment::parse(segment).map_err(|e| DryRunError::Segment(e.to_string()))?;
    let compiled = Template::new(
        template.body.as_deref(),
        template.content_sid.as_deref(),
        template.content_variables.as_ref(),
    )
    .map_err(|e| e.to_string());
    let mut run = DryRun::default();
    let mut after: Option<String> = None;
    loop {
        let page = audience_page(
            db,
            &segment,
            campaign.topic.as_deref(),
            after.as_deref(),
            PAGE,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.phone_number.clone());
        for person in &page {
            let claimed = as_claimed(campaign, template, person);
            let outcome = decide(
                &claimed,
                compiled.as_ref().map_err(String::as_str),
                now,
                settings,
            );
            run.count(person, outcome, samples);
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    Ok(run)
}

impl DryRun {
    fn count(&mut self, person: &AudienceMember, decision: Decision, samples: usize) {
        self.audience += 1;
        let sent_last_24h = person.sent_last_24h;
        let (name, reason) = match decision {
            Decision::Send(plan) => match plan.frequency_cap {
                Some(cap) if sent_last_24h >= i64::from(cap) => (
                    OVER_FREQUENCY_CAP,
                    serde_json::json!({"sent_last_24h": sent_last_24h, "cap": cap}),
                ),
                _ => {
                    if self.samples.len() < samples {
                        self.samples.push(Sample {
                            phone_number: person.phone_number.clone(),
                            use_content: plan.use_content,
                            rendered: plan.rendered,
                        });
                    }
                    *self.by_decision.entry(WOULD_SEND.into()).or_default() += 1;
                    return;
                }
            },
            Decision::End {
                decision, reason, ..
            } => (decision, reason),
        };
        *self.by_decision.entry(name.into()).or_default() += 1;
        let examples = self.examples.entry(name.into()).or_default();
        if examples.len() < samples {
            examples.push(Example {
                phone_number: person.phone_number.clone(),
                reason,
            });
        }
    }
}

/// The person as the sender would see them once claimed, for [`decide`].
pub fn as_claimed(c: &Campaign, t: &TemplateRecord, p: &AudienceMember) -> ClaimedMessage {
    let time = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| NaiveTime::parse_from_str(s, "%H:%M").ok())
    };
    ClaimedMessage {
        message_id: Uuid::nil(),
        claim: 0,
        account_holds: 0,
        campaign_id: c.id,
        phone_number: p.phone_number.clone(),
        attempts: 0,
        // As if launched: a draft's dry run shows what running would do.
        campaign_state: match c.state {
            CampaignState::Paused | CampaignState::Cancelled => c.state,
            _ => CampaignState::Running,
        },
        rate_per_second: c.rate_per_second,
        quiet_hours_start: time(&c.quiet_hours_start),
        quiet_hours_end: time(&c.quiet_hours_end),
        default_timezone: c.default_timezone.clone(),
        frequency_cap: c.frequency_cap,
        max_attempts: c.max_attempts,
        topic: c.topic.clone(),
        topic_subscribed: p.topic_subscribed,
        template_id: t.id,
        template_version: t.updated_at,
        body: t.body.clone(),
        content_sid: t.content_sid.clone(),
        content_variables: t.content_variables.clone(),
        consent: Some(p.consent),
        attributes: Some(p.attributes.clone()),
        profile_name: p.profile_name.clone(),
        last_inbound_at: p.last_inbound_at,
        event_properties: None,
    }
}
