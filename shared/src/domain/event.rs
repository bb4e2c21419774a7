//! Events: what a person did, as another system (or our inbound webhook)
//! reports it (`order.shipped`, `cart.abandoned`, `message.received`).

use std::fmt;

/// An event's name: a letter or digit, then letters, digits, `_`, `.`, `:`
/// or `-`, at most 100 in all (the `events_name_valid` check).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventName(String);

impl EventName {
    pub const PATTERN: &'static str = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$";

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        if first_ok && rest_ok && s.len() <= 100 {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not an event name: a letter or digit, then letters, digits, '_', '.', ':' or '-', at most 100"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an event reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// `POST /v1/events`.
    Api,
    /// The `events` Pub/Sub topic.
    PubSub,
    /// A WhatsApp message a person sent us (`message.received`).
    Inbound,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::PubSub => "pubsub",
            Self::Inbound => "inbound",
        }
    }
}

/// The name inbound WhatsApp messages are recorded under.
pub const MESSAGE_RECEIVED: &str = "message.received";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        for ok in [
            "order.shipped",
            "cart:abandoned",
            "A1",
            "x",
            &"a".repeat(100),
        ] {
            assert!(EventName::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".order",
            "order shipped",
            "ordér",
            "a/b",
            &"a".repeat(101),
        ] {
            assert!(EventName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pattern_is_the_parser() {
        let re = regex::Regex::new(EventName::PATTERN).unwrap();
        for s in [
            "order.shipped",
            "",
            ".x",
            "a b",
            "x:y-z_1",
            &"b".repeat(101),
            "é",
        ] {
            assert_eq!(re.is_match(s), EventName::parse(s).is_ok(), "{s:?}");
        }
    }
}
