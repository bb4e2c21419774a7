//! A triggered campaign's trigger: which event starts a message, which of
//! those events count, how long to wait, how often one person may get it, and
//! which later event calls a waiting message off. The rules are pure;
//! `engine::triggers` applies them to stored events.

use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::EventName;
use crate::segment::Segment;

/// The longest `delay_seconds`: seven days.
pub const MAX_DELAY_SECONDS: i64 = 7 * 24 * 3600;
/// The shortest and longest `period_seconds`.
pub const MIN_PERIOD_SECONDS: i64 = 60;
pub const MAX_PERIOD_SECONDS: i64 = 366 * 24 * 3600;
/// An event that reaches us later than this after it happened starts nothing:
/// "your cart is waiting" a day late is worse than no message.
pub const MAX_LATENESS: Duration = Duration::hours(24);

/// How many messages of one triggered campaign a person may get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PerPerson {
    /// One, ever (the default).
    #[default]
    Once,
    /// At most one per `period_seconds`.
    OncePerPeriod,
    /// One per matching event (an order update for every order).
    EveryEvent,
}

impl PerPerson {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::OncePerPeriod => "once_per_period",
            Self::EveryEvent => "every_event",
        }
    }
}

/// What makes a campaign triggered. Stored as written once [`Trigger::validate`] passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The event name that starts a message (`cart.abandoned`).
    #[schema(
        example = "cart.abandoned",
        pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
    )]
    pub event: String,
    /// Only events whose properties pass this filter count: the segment
    /// grammar with `{"property": "total", "gte": 50}` leaves.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// How long after the event to send, 0 (at once) to 604800 (7 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    pub delay_seconds: i64,
    #[serde(default)]
    pub per_person: PerPerson,
    /// The period of `once_per_period` (60 s to 366 days); absent otherwise.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 31622400)]
    pub period_seconds: Option<i64>,
    /// An event that calls off this person's messages still waiting to be sent
    /// (`order.paid` cancels the `cart.abandoned` reminder).
    #[serde(default)]
    #[schema(example = "order.paid", pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
    pub cancel_event: Option<String>,
}

/// A problem with a trigger, naming the field under `trigger.`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TriggerError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> TriggerError {
    TriggerError {
        field,
        message: message.into(),
    }
}

impl Trigger {
    /// Checks every field; returns the parsed filter.
    pub fn validate(&self) -> Result<Option<Segment>, TriggerError> {
        EventName::parse(&self.event).map_err(|e| bad("trigger.event", e))?;
        let filter = self
            .filter
            .as_ref()
            .map(Segment::parse_event_filter)
            .transpose()
            .map_err(|e| bad("trigger.filter", e.to_string()))?;
        if !(0..=MAX_DELAY_SECONDS).contains(&self.delay_seconds) {
            return Err(bad(
                "trigger.delay_seconds",
                format!("delay_seconds must be between 0 and {MAX_DELAY_SECONDS} (7 days)"),
            ));
        }
        match (self.per_person, self.period_seconds) {
            (PerPerson::OncePerPeriod, None) => {
                return Err(bad(
                    "trigger.period_seconds",
                    "once_per_period needs period_seconds",
                ));
            }
            (PerPerson::OncePerPeriod, Some(p))
                if !(MIN_PERIOD_SECONDS..=MAX_PERIOD_SECONDS).contains(&p) =>
            {
                return Err(bad(
                    "trigger.period_seconds",
                    format!(
                        "period_seconds must be between {MIN_PERIOD_SECONDS} and {MAX_PERIOD_SECONDS}"
                    ),
                ));
            }
            (PerPerson::Once | PerPerson::EveryEvent, Some(_)) => {
                return Err(bad(
                    "trigger.period_seconds",
                    "period_seconds applies to per_person once_per_period only",
                ));
            }
            _ => {}
        }
        if let Some(cancel) = &self.cancel_event {
            EventName::parse(cancel).map_err(|e| bad("trigger.cancel_event", e))?;
            if *cancel == self.event {
                return Err(bad(
                    "trigger.cancel_event",
                    "the cancel event must differ from the event that triggers",
                ));
            }
        }
        Ok(filter)
    }

    pub fn delay(&self) -> Duration {
        Duration::seconds(self.delay_seconds)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(v: Value) -> &'static str {
        let t: Trigger = serde_json::from_value(v).unwrap();
        t.validate().unwrap_err().field
    }

    #[test]
    fn a_full_trigger_reads_and_validates() {
        let t: Trigger = serde_json::from_value(json!({
            "event": "cart.abandoned", "filter": {"property": "total", "gte": 50},
            "delay_seconds": 1800, "per_person": "once_per_period", "period_seconds": 86400,
            "cancel_event": "order.paid"
        }))
        .unwrap();
        let filter = t.validate().unwrap().unwrap();
        assert!(filter.matches_event(&json!({"total": 80})));
        assert_eq!(t.delay(), Duration::minutes(30));
        let minimal: Trigger = serde_json::from_value(json!({"event": "order.shipped"})).unwrap();
        assert_eq!(minimal.per_person, PerPerson::Once);
        assert_eq!(minimal.delay_seconds, 0);
        assert!(minimal.validate().unwrap().is_none());
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field(json!({"event": "a b"})), "trigger.event");
        assert_eq!(
            field(json!({"event": "a", "filter": {"attribute": "x", "eq": 1}})),
            "trigger.filter"
        );
        assert_eq!(
            field(json!({"event": "a", "delay_seconds": -1})),
            "trigger.delay_seconds"
        );
        assert_eq!(
            field(json!({"event": "a", "delay_seconds": MAX_DELAY_SECONDS + 1})),
            "trigger.delay_seconds"
        );
        assert_eq!(
            field(json!({"event": "a", "per_person": "once_per_period"})),
            "trigger.period_seconds"
        );
        assert_eq!(
            field(json!({"event": "a", "per_person": "once_per_period", "period_seconds": 5})),
            "trigger.period_seconds"
        );
        assert_eq!(
            field(json!({"event": "a", "period_seconds": 3600})),
            "trigger.period_seconds"
        );
        assert_eq!(
            field(json!({"event": "a", "cancel_event": "a"})),
            "trigger.cancel_event"
        );
        assert!(serde_json::from_value::<Trigger>(json!({"event": "a", "delay": 3})).is_err());
    }
}
