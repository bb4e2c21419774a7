//! Consent to receive WhatsApp messages, and the keywords that change it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    Unknown,
    OptedIn,
    OptedOut,
}

impl Consent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::OptedIn => "opted_in",
            Self::OptedOut => "opted_out",
        }
    }
}

impl fmt::Display for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unknown" => Ok(Self::Unknown),
            "opted_in" => Ok(Self::OptedIn),
            "opted_out" => Ok(Self::OptedOut),
            other => Err(format!(
                "unknown consent {other:?}: expected unknown, opted_in or opted_out"
            )),
        }
    }
}

/// What changed a user's consent; stored in `consent_events.source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentSource {
    /// The person wrote a keyword (STOP, START, …).
    Keyword,
    /// The person tapped a quick-reply button whose payload is a keyword.
    Button,
    Import,
    Api,
    /// Twilio reported error 21610: the recipient has replied STOP on Twilio's side.
    Twilio,
}

impl Serialize for ConsentSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ConsentSource {
    pub const ALL: [ConsentSource; 5] = [
        Self::Keyword,
        Self::Button,
        Self::Import,
        Self::Api,
        Self::Twilio,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::Button => "button",
            Self::Import => "import",
            Self::Api => "api",
            Self::Twilio => "twilio",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The person themselves acted (a keyword, a button, a STOP Twilio saw).
    pub fn is_the_persons(self) -> bool {
        matches!(self, Self::Keyword | Self::Button | Self::Twilio)
    }

    /// The sources that are the person's own, as stored: what SQL binds to
    /// apply [`precedence`] set-based.
    pub fn the_persons() -> Vec<String> {
        Self::ALL
            .into_iter()
            .filter(|s| s.is_the_persons())
            .map(|s| s.as_str().to_owned())
            .collect()
    }
}

/// A topic people subscribe to or not (`promotions`, `order-updates`):
/// lower case letters, digits, `_`, `.`, `-`, at most 64, starting with a
/// letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Topic(String);

impl Topic {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a topic: lower case letters, digits, '_', '.', '-', at most 64"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A quick-reply payload that changes a topic: `topic:<name>:off` or
    /// `topic:<name>:on` (case and white space around it do not matter).
    pub fn from_payload(payload: &str) -> Option<(Topic, bool)> {
        let p = payload.trim().to_ascii_lowercase();
        let rest = p.strip_prefix("topic:")?;
        let (name, state) = rest.rsplit_once(':')?;
        let subscribed = match state {
            "on" => true,
            "off" => false,
            _ => return None,
        };
        Some((Topic::parse(name).ok()?, subscribed))
    }
}

/// A consent change the precedence rules refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the person opted out themselves ({by_the_person}); only they can opt back in")]
pub struct ConsentRefused {
    /// How the person opted out.
    pub by_the_person: &'static str,
}

/// Whether `by` may set consent `to` for a person whose consent is `current`,
/// last set by `current_source`. An opt-out that came from the person is
/// undone only by the person; anyone may opt a person out; imports and the
/// API may opt in people whose consent is unknown or was set by an import or
/// the API (DESIGN invariant 8, docs/consent.md).
pub fn precedence(
    current: Consent,
    current_source: Option<ConsentSource>,
    to: Consent,
    by: ConsentSource,
) -> Result<(), ConsentRefused> {
    match current_source {
        Some(s)
            if current == Consent::OptedOut
                && to != Consent::OptedOut
                && s.is_the_persons()
                && !by.is_the_persons() =>
        {
            Err(ConsentRefused {
                by_the_person: s.as_str(),
            })
        }
        _ => Ok(()),
    }
}

/// The words that opt a user out or in when they are the whole inbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentKeywords {
    opt_out: Vec<String>,
    opt_in: Vec<String>,
}

/// Twilio's default opt-out keywords.
pub const DEFAULT_OPT_OUT: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
/// Twilio's default opt-in keywords.
pub const DEFAULT_OPT_IN: [&str; 3] = ["START", "YES", "UNSTOP"];

impl Default for ConsentKeywords {
    fn default() -> Self {
        Self::new(DEFAULT_OPT_OUT, DEFAULT_OPT_IN)
    }
}

impl ConsentKeywords {
    pub fn new<S: AsRef<str>>(
        opt_out: impl IntoIterator<Item = S>,
        opt_in: impl IntoIterator<Item = S>,
    ) -> Self {
        let norm = |it: &mut dyn Iterator<Item = S>| {
            it.map(|s| normalize(s.as_ref()))
                .filter(|s| !s.is_empty())
                .collect()
        };
        Self {
            opt_out: norm(&mut opt_out.into_iter()),
            opt_in: norm(&mut opt_in.into_iter()),
        }
    }

    /// The consent that an inbound body asks for, if it is a keyword. Case,
    /// white space, punctuation and emoji around the keyword do not matter
    /// (`Stop.`, `STOP!`, `stop 🛑`); a sentence that merely contains the word
    /// is not a keyword.
    pub fn classify(&self, body: &str) -> Option<Consent> {
        let word = normalize(body);
        if self.opt_out.contains(&word) {
            Some(Consent::OptedOut)
        } else if self.opt_in.contains(&word) {
            Some(Consent::OptedIn)
        } else {
            None
        }
    }
}

/// Upper case, single spaces, and nothing but letters and digits at either
/// end: what people add around a keyword (punctuation, emoji, white space).
fn normalize(s: &str) -> String {
    let trimmed = s.trim_matches(|c: char| !c.is_alphanumeric());
    trimmed
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// Compares with the stored name (`status == "sent"`), as rows and tests read.
impl PartialEq<&str> for Consent {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_keyword_is_recognised() {
        let k = ConsentKeywords::default();
        for w in DEFAULT_OPT_OUT {
            assert_eq!(k.classify(w), Some(Consent::OptedOut), "{w}");
            assert_eq!(
                k.classify(&format!("  {}\n", w.to_lowercase())),
                Some(Consent::OptedOut)
            );
        }
        for w in DEFAULT_OPT_IN {
            assert_eq!(k.classify(w), Some(Consent::OptedIn), "{w}");
            assert_eq!(
                k.classify(&format!("\t{}  ", w.to_lowercase())),
                Some(Consent::OptedIn)
            );
        }
    }

    #[test]
    fn a_keyword_inside_a_sentence_is_not_a_keyword() {
        let k = ConsentKeywords::default();
        assert_eq!(k.classify("please stop sending"), None);
        assert_eq!(k.classify("yes please"), None);
        assert_eq!(k.classify(""), None);
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let k = ConsentKeywords::new(["baja", "para ya"], ["alta"]);
        assert_eq!(k.classify("BAJA"), Some(Consent::OptedOut));
        assert_eq!(k.classify("Para   ya"), Some(Consent::OptedOut));
        assert_eq!(k.classify("alta"), Some(Consent::OptedIn));
        assert_eq!(k.classify("stop"), None);
    }

    #[test]
    fn consent_parses_its_names() {
        assert_eq!("Opted_In".parse::<Consent>(), Ok(Consent::OptedIn));
        assert!("maybe".parse::<Consent>().is_err());
    }

    #[test]
    fn keywords_as_people_type_them() {
        let k = ConsentKeywords::default();
        for w in [
            "Stop.",
            "STOP!",
            "stop 🛑",
            "🛑 stop",
            "  «Stop»  ",
            "stop!!!",
            "Start 🙂",
            "¡start!",
        ] {
            assert!(k.classify(w).is_some(), "{w}");
        }
        assert_eq!(k.classify("Stop."), Some(Consent::OptedOut));
        assert_eq!(k.classify("Start 🙂"), Some(Consent::OptedIn));
        // Still only the bare keyword: a sentence around it is not one.
        assert_eq!(k.classify("Stop, please!"), None);
        assert_eq!(k.classify("don't stop"), None);
        assert_eq!(k.classify("🛑"), None);
    }

    #[test]
    fn the_persons_opt_out_is_undone_only_by_the_person() {
        use ConsentSource::*;
        let out = Consent::OptedOut;
        for person in [Keyword, Button, Twilio] {
            for other in [Import, Api] {
                assert!(precedence(out, Some(person), Consent::OptedIn, other).is_err());
                assert!(precedence(out, Some(person), Consent::Unknown, other).is_err());
                // Opting out again is always allowed.
                assert_eq!(
                    precedence(out, Some(person), Consent::OptedOut, other),
                    Ok(())
                );
            }
            for person_again in [Keyword, Button] {
                assert_eq!(
                    precedence(out, Some(person), Consent::OptedIn, person_again),
                    Ok(())
                );
            }
        }
        // An import's or the API's own opt-out they may undo; unknown they may set.
        for by in [Import, Api] {
            assert_eq!(precedence(out, Some(Import), Consent::OptedIn, by), Ok(()));
            assert_eq!(precedence(out, Some(Api), Consent::OptedIn, by), Ok(()));
            assert_eq!(
                precedence(Consent::Unknown, None, Consent::OptedIn, by),
                Ok(())
            );
            assert_eq!(
                precedence(Consent::OptedIn, Some(Keyword), Consent::OptedOut, by),
                Ok(())
            );
        }
        assert_eq!(
            ConsentSource::the_persons(),
            ["keyword", "button", "twilio"]
        );
    }

    #[test]
    fn topics_and_their_payloads() {
        assert!(Topic::parse("order-updates").is_ok());
        assert!(Topic::parse("Promotions").is_err());
        assert!(Topic::parse("").is_err());
        assert!(Topic::parse(&"a".repeat(65)).is_err());
        assert_eq!(
            Topic::from_payload(" TOPIC:promotions:OFF "),
            Some((Topic::parse("promotions").unwrap(), false))
        );
        assert_eq!(Topic::from_payload("topic:promotions:maybe"), None);
        assert_eq!(Topic::from_payload("STOP"), None);
    }
}
