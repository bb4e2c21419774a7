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

/// The input, trimmed, without a `whatsapp:` prefix (any case).
pub fn without_whatsapp_prefix(input: &str) -> &str {
    let trimmed = input.trim();
    trimmed
        .get(..WHATSAPP_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(WHATSAPP_PREFIX))
        .map_or(trimmed, |_| &trimmed[WHATSAPP_PREFIX.len()..])
}

impl PhoneNumber {
    /// Parses a number as Twilio, an analyst's file or an operator writes it:
    /// E.164 with or without the `whatsapp:` prefix, or a national number read
    /// with `default_region`.
    pub fn parse(input: &str, default_region: Option<Region>) -> Result<Self, PhoneError> {
        let raw = without_whatsapp_prefix(input).trim();
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
        if !validity::is_valid(&parsed) {
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

    /// The E.164 shape alone (`+` and 7 to 15 digits, `whatsapp:` allowed),
    /// for a sender Twilio already routed to us whose number the bundled
    /// metadata does not know (a new range): its STOP must still count.
    pub fn parse_shape(input: &str) -> Option<Self> {
        let raw = without_whatsapp_prefix(input);
        let digits = raw.strip_prefix('+')?;
        let shaped = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        shaped.then(|| PhoneNumber(raw.to_owned()))
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

    /// The digits of the number without its country calling code (the
    /// national significant number): what any written form of it contains.
    pub fn national_digits(&self) -> String {
        phonenumber::parse(None, &self.0)
            .map(|p| p.national().value().to_string())
            .unwrap_or_else(|_| self.0.trim_start_matches('+').to_owned())
    }

    /// A regular expression (PostgreSQL's flavour) that finds the number as
    /// people write it: its national digits, optionally after its country
    /// code or a trunk `0`, with up to three separators (spaces, dashes, dots,
    /// parentheses, `+`, or their `%XX` URL encodings) between any two
    /// digits, and no digit right before or after. `+14155552671`,
    /// `whatsapp:+1…`, `%2B1…`, `(415) 555-2671`, `0044 20 7946 0958` match;
    /// a longer number that contains the digits does not.
    pub fn written_pattern(&self) -> String {
        let national = self.national_digits();
        let country = self
            .0
            .trim_start_matches('+')
            .strip_suffix(national.as_str())
            .unwrap_or("")
            .to_owned();
        let sep = "(?:[^0-9a-zA-Z]|%[0-9a-fA-F]{2}){0,3}";
        let spaced = |digits: &str| {
            digits
                .chars()
                .map(String::from)
                .collect::<Vec<_>>()
                .join(sep)
        };
        let prefix = if country.is_empty() {
            "0?".to_owned()
        } else {
            format!("(?:(?:00)?{}{sep}|0)?", spaced(&country))
        };
        format!("(?:^|[^0-9]){prefix}{}(?:[^0-9]|$)", spaced(&national))
    }

    /// The number with its middle hidden, for logs: `+1415*****23`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// libphonenumber's validity rule, as `phonenumber::is_valid` applies it, with
/// the metadata's patterns compiled once per thread.
///
/// The crate's own regex cache hashes a pattern's whole text (some are kilobytes)
/// under one process-wide lock on every match; that made validation most of an
/// import's CPU time and serialised it across threads. The rule is the same:
/// the number's region (by leading digits, or by type match when a calling
/// code has several regions), then the general pattern and at least one type
/// pattern. `same_verdict_as_phonenumber` checks both agree.
mod validity {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
    use regex::{Regex, RegexBuilder};
    use regex_cache::CachedRegex;

    /// Keys are addresses of patterns in the static metadata database.
    #[derive(Default)]
    struct AddressHasher(u64);

    impl Hasher for AddressHasher {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
        }
        fn write_usize(&mut self, n: usize) {
            self.0 = (n as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    type Compiled = HashMap<usize, Option<Regex>, BuildHasherDefault<AddressHasher>>;

    thread_local! {
        static COMPILED: RefCell<Compiled> = RefCell::new(Compiled::default());
    }

    pub fn is_valid(number: &phonenumber::PhoneNumber) -> bool {
        let code = number.country().code();
        let national = number.national().to_string();
        metadata_for(code, &national).is_some_and(|meta| has_type(meta, &national))
    }

    /// The metadata the number is validated against (`validator::source_for`).
    fn metadata_for(code: u16, national: &str) -> Option<&'static Metadata> {
        let regions = DATABASE.region(&code)?;
        if let [only] = regions[..] {
            if only == "001" {
                return DATABASE.by_code(&code)?.into_iter().next();
            }
            only.parse::<phonenumber::country::Id>().ok()?;
            return DATABASE.by_id(only);
        }
        regions.into_iter().find_map(|region| {
            let meta = DATABASE.by_id(region)?;
            let found = match meta.leading_digits() {
                Some(pattern) => starts_with_match(pattern, national),
                None => has_type(meta, national),
            };
            found.then_some(meta)
        })
    }

    /// `validator::number_type(meta, value) != Type::Unknown`.
    fn has_type(meta: &Metadata, value: &str) -> bool {
        let d = meta.descriptors();
        matches(d.general(), value)
            && [
                d.premium_rate(),
                d.toll_free(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
                d.fixed_line(),
                d.mobile(),
            ]
            .into_iter()
            .flatten()
            .any(|desc| matches(desc, value))
    }

    /// `Descriptor::is_match`.
    fn matches(desc: &Descriptor, value: &str) -> bool {
        let lengths = desc.possible_length();
        (lengths.is_empty() || lengths.contains(&(value.len() as u16)))
            && starts_with_match(desc.national_number(), value)
    }

    /// A match starting at 0, as `pattern.find(value).start() == 0`.
    fn starts_with_match(pattern: &CachedRegex, value: &str) -> bool {
        let key = std::ptr::from_ref(pattern) as usize;
        COMPILED.with(|compiled| {
            let mut compiled = compiled.borrow_mut();
            let regex = compiled.entry(key).or_insert_with(|| {
                // The metadata's patterns are written for extended mode, as the crate compiles them.
                RegexBuilder::new(&format!("^(?:{}\n)", pattern.as_str()))
                    .ignore_whitespace(true)
                    .build()
                    .ok()
            });
            match regex {
                Some(regex) => regex.is_match(value),
                None => pattern.find(value).is_some_and(|m| m.start() == 0),
            }
        })
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

    /// Every example number of every region, and numbers one digit shorter,
    /// longer or changed, get the same verdict as `phonenumber::is_valid`.
    #[test]
    fn same_verdict_as_phonenumber() {
        use phonenumber::metadata::DATABASE;
        let mut checked = 0;
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let examples = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.voip(),
                d.uan(),
            ]
            .into_iter()
            .flatten()
            .filter_map(|desc| desc.example());
            for example in examples {
                let mut variants = vec![
                    example.to_owned(),
                    format!("{example}7"),
                    example[..example.len() - 1].to_owned(),
                ];
                for (i, digit) in ["1", "5", "9"].iter().enumerate() {
                    let at = i.min(example.len() - 1);
                    variants.push(format!("{}{digit}{}", &example[..at], &example[at + 1..]));
                }
                for national in variants {
                    let text = format!("+{}{national}", meta.country_code());
                    let Ok(parsed) = phonenumber::parse(None, &text) else {
                        continue;
                    };
                    assert_eq!(
                        validity::is_valid(&parsed),
                        phonenumber::is_valid(&parsed),
                        "{text} ({})",
                        meta.id()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "only {checked} numbers checked");
    }

    #[test]
    fn unknown_region_is_refused() {
        assert!("XX".parse::<Region>().is_err());
        assert!("us".parse::<Region>().is_ok());
    }

    #[test]
    fn the_written_pattern_finds_the_number_in_any_form() {
        let re = |p: &PhoneNumber| regex::Regex::new(&p.written_pattern()).unwrap();
        let us = PhoneNumber::parse("+14155552671", None).unwrap();
        let r = re(&us);
        for text in [
            "+14155552671",
            "whatsapp:+14155552671",
            "%2B14155552671",
            "14155552671",
            "4155552671",
            "(415) 555-2671",
            "415.555.2671",
            "+1 415-555-2671",
            "(415)%20555-2671",
            "call 415 555 2671 now",
            "The 'To' number whatsapp:+14155552671 is not valid",
            "001 415 555 2671",
        ] {
            assert!(r.is_match(text), "{text}");
        }
        for text in ["441555526710", "24155552671", "+14155552672", "4155552"] {
            assert!(!r.is_match(text), "{text}");
        }
        let uk = PhoneNumber::parse("+442079460958", None).unwrap();
        let r = re(&uk);
        for text in [
            "+44 20 7946 0958",
            "020 7946 0958",
            "0044 20 7946 0958",
            "442079460958",
        ] {
            assert!(r.is_match(text), "{text}");
        }
    }
}
