//! E.164 phone numbers, the key of every user.

use std::fmt;
use std::str::FromStr;

use phonenumber::Mode;
use phonenumber::country;

/// The region used to read national numbers (`0612…`, `(415) 555…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(country::Id);

impl FromStr for Region {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<country::Id>()
            .map(Region)
            .map_err(|_| {
                format!("unknown region {s:?}: expected an ISO 3166-1 alpha-2 code such as US")
            })
    }
}

/// A phone number that is valid and in E.164 form (`+` then digits).
///
/// Built only by [`PhoneNumber::parse`]; `Debug` masks the number so that it
/// never reaches a log by accident. `as_str` gives the full number for storage.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

/// Why a phone number was refused, in words a person understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("invalid phone number {0:?}: too short")]
    TooShort(String),
    #[error("invalid phone number {0:?}: too long")]
    TooLong(String),
    #[error("invalid phone number {0:?}: unknown country calling code")]
    UnknownCountryCode(String),
    #[error("invalid phone number {0:?}: not a phone number")]
    NotANumber(String),
    #[error("invalid phone number {0:?}: not a valid number for its region")]
    Invalid(String),
}

const WHATSAPP_PREFIX: &str = "whatsapp:";

impl PhoneNumber {
    /// Parses a number as Twilio, an analyst's file or an operator writes it:
    /// E.164 with or without the `whatsapp:` prefix, or a national number read
    /// with `default_region`.
    pub fn parse(input: &str, default_region: Option<Region>) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        let raw = trimmed
            .get(..WHATSAPP_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(WHATSAPP_PREFIX))
            .map_or(trimmed, |_| &trimmed[WHATSAPP_PREFIX.len()..])
            .trim();
        if raw.is_empty() {
            return Err(PhoneError::Empty);
        }
        // A number with 00 instead of + and no region still means international.
        let parsed = phonenumber::parse(default_region.map(|r| r.0), raw).map_err(|e| {
            use phonenumber::ParseError as P;
            match e {
                P::TooShortNsn | P::TooShortAfterIdd => PhoneError::TooShort(raw.to_owned()),
                P::TooLong => PhoneError::TooLong(raw.to_owned()),
                P::InvalidCountryCode => PhoneError::UnknownCountryCode(raw.to_owned()),
                _ => PhoneError::NotANumber(raw.to_owned()),
            }
        })?;
        if !phonenumber::is_valid(&parsed) {
            // No region has subscriber numbers this short or long; anything
            // between is a number its region does not issue.
            let national_digits = parsed.national().value().to_string().len();
            return Err(match national_digits {
                0..=5 => PhoneError::TooShort(raw.to_owned()),
                15.. => PhoneError::TooLong(raw.to_owned()),
                _ => PhoneError::Invalid(raw.to_owned()),
            });
        }
        Ok(PhoneNumber(parsed.format().mode(Mode::E164).to_string()))
    }

    /// Trusts a value that was stored as E.164 by this code (a database row).
    pub fn from_trusted(e164: String) -> Self {
        debug_assert!(e164.starts_with('+'), "not E.164: {e164}");
        PhoneNumber(e164)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number in the form WhatsApp addresses on Twilio use.
    pub fn whatsapp_address(&self) -> String {
        format!("{WHATSAPP_PREFIX}{}", self.0)
    }

    /// The number with its middle hidden, for logs: `+1415*****23`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Hides the middle of a phone number, keeping the country code area and the last two digits.
pub fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let keep_start = 5.min(chars.len() - 2);
    let mut out: String = chars[..keep_start].iter().collect();
    out.extend(std::iter::repeat_n('*', chars.len() - keep_start - 2));
    out.extend(&chars[chars.len() - 2..]);
    out
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Option<Region> {
        Some("US".parse().unwrap())
    }

    #[test]
    fn accepts_e164_and_the_whatsapp_prefix() {
        let plain = PhoneNumber::parse("+14155552671", None).unwrap();
        let wa = PhoneNumber::parse("whatsapp:+14155552671", None).unwrap();
        let upper = PhoneNumber::parse(" WhatsApp:+14155552671 ", None).unwrap();
        assert_eq!(plain.as_str(), "+14155552671");
        assert_eq!(plain, wa);
        assert_eq!(plain, upper);
        assert_eq!(wa.whatsapp_address(), "whatsapp:+14155552671");
    }

    #[test]
    fn reads_national_numbers_with_the_default_region() {
        let n = PhoneNumber::parse("(415) 555-2671", us()).unwrap();
        assert_eq!(n.as_str(), "+14155552671");
        let de = PhoneNumber::parse("030 901820", Some("de".parse().unwrap())).unwrap();
        assert_eq!(de.as_str(), "+4930901820");
    }

    #[test]
    fn national_number_without_region_is_refused() {
        assert!(PhoneNumber::parse("4155552671", None).is_err());
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(PhoneNumber::parse("", None), Err(PhoneError::Empty));
        assert_eq!(
            PhoneNumber::parse("whatsapp:", None),
            Err(PhoneError::Empty)
        );
        let short = PhoneNumber::parse("+1555", None).unwrap_err();
        assert_eq!(
            short.to_string(),
            "invalid phone number \"+1555\": too short"
        );
        let invalid = PhoneNumber::parse("+11234567890", None).unwrap_err();
        assert!(matches!(invalid, PhoneError::Invalid(_)), "{invalid:?}");
        assert!(PhoneNumber::parse("hello", None).is_err());
        assert!(PhoneNumber::parse("+99912345678", None).is_err());
    }

    #[test]
    fn debug_and_display_mask_the_number() {
        let n = PhoneNumber::parse("+14155552671", None).unwrap();
        assert_eq!(n.to_string(), "+1415*****71");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+1415*****71)");
        assert_eq!(mask("+123"), "****");
    }

    #[test]
    fn unknown_region_is_refused() {
        assert!("XX".parse::<Region>().is_err());
        assert!("us".parse::<Region>().is_ok());
    }
}
