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
    Keyword,
    Import,
    Api,
    /// Twilio reported error 21610: the recipient has replied STOP on Twilio's side.
    Twilio,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::Import => "import",
            Self::Api => "api",
            Self::Twilio => "twilio",
        }
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

    /// The consent that an inbound body asks for, if it is a keyword.
    /// Case, surrounding and repeated white space do not matter.
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

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
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
}
