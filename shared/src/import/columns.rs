//! What a record means: the phone number column, consent, timezone and the
//! attributes, validated into a [`Row`] or refused with a reason a person
//! understands.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::FileError;
use crate::domain::{Consent, PhoneNumber, Region, Topic};

/// The names a phone number column goes by, in order of preference.
pub const PHONE_COLUMNS: [&str; 4] = ["phone_number", "phone", "msisdn", "wa_id"];
pub const CONSENT_COLUMN: &str = "consent";
pub const TIMEZONE_COLUMN: &str = "timezone";
/// `topic.<name>` columns subscribe (`subscribed`, `yes`, `true`, `on`, `1`)
/// or unsubscribe (`unsubscribed`, `no`, `false`, `off`, `0`) per topic.
pub const TOPIC_PREFIX: &str = "topic.";

/// A valid row, ready to stage.
#[derive(Debug, PartialEq)]
pub struct Row<'a> {
    pub phone: PhoneNumber,
    pub consent: Option<Consent>,
    /// Topic subscriptions the row sets (`topic.<name>` columns).
    pub topics: Vec<(Topic, bool)>,
    /// Attribute names and values, in the file's order; absent values are left out.
    pub attributes: Vec<(&'a str, AttrValue<'a>)>,
}

/// One attribute value.
#[derive(Debug, PartialEq)]
pub enum AttrValue<'a> {
    /// A JSON string.
    Text(Cow<'a, str>),
    /// A cell that is a JSON number or boolean literal, written as is.
    Literal(&'a str),
    /// A value from a JSON file, kept as the file typed it.
    Json(&'a Value),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Phone,
    Consent,
    Timezone,
    Topic(Topic),
    Attribute,
}

/// A CSV header, read once: which column is what.
#[derive(Debug, Clone)]
pub struct Columns {
    names: Vec<String>,
    roles: Vec<Role>,
    /// The phone column is `msisdn` or `wa_id`: international numbers written without `+`.
    international: bool,
}

impl Columns {
    /// Reads a header row. A header without a phone number column, with a
    /// nameless or repeated column, cannot be imported at all.
    pub fn from_header(fields: &[&str]) -> Result<Self, FileError> {
        let names: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(FileError::new(format!(
                    "header column {} has no name",
                    i + 1
                )));
            }
            if name.contains('\0') {
                return Err(FileError::new(format!(
                    "header column {} contains a NUL character",
                    i + 1
                )));
            }
            if names[..i].iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return Err(FileError::new(format!("header has column {name:?} twice")));
            }
        }
        let phone = PHONE_COLUMNS
            .iter()
            .find_map(|alias| names.iter().position(|n| n.eq_ignore_ascii_case(alias)))
            .ok_or_else(|| {
                FileError::new(format!(
                    "no phone number column: expected one of {} (header has {})",
                    PHONE_COLUMNS.join(", "),
                    names.join(", ")
                ))
            })?;
        let roles = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Ok(if i == phone {
                    Role::Phone
                } else if name.eq_ignore_ascii_case(CONSENT_COLUMN) {
                    Role::Consent
                } else if name.eq_ignore_ascii_case(TIMEZONE_COLUMN) {
                    Role::Timezone
                } else if let Some(topic) = topic_column(name) {
                    Role::Topic(
                        topic
                            .map_err(|e| FileError::new(format!("header column {name:?}: {e}")))?,
                    )
                } else {
                    Role::Attribute
                })
            })
            .collect::<Result<_, FileError>>()?;
        Ok(Self {
            international: without_plus(&names[phone]),
            names,
            roles,
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Validates one CSV record against the header.
    pub fn row<'a>(&'a self, cells: &[&'a str], region: Option<Region>) -> Result<Row<'a>, String> {
        if cells.len() != self.names.len() {
            return Err(format!(
                "row has {} fields, header has {}",
                cells.len(),
                self.names.len()
            ));
        }
        let mut phone = None;
        let mut consent = None;
        let mut topics = vec![];
        let mut attributes = Vec::with_capacity(cells.len());
        for ((name, role), cell) in self.names.iter().zip(&self.roles).zip(cells) {
            if cell.contains('\0') {
                return Err(format!("column {name:?} contains a NUL character"));
            }
            let value = cell.trim();
            match role {
                Role::Phone => phone = Some(parse_phone(value, self.international, region)?),
                Role::Consent => consent = parse_consent(value)?,
                Role::Topic(topic) => {
                    if let Some(subscribed) = parse_subscription(name, value)? {
                        topics.push((topic.clone(), subscribed));
                    }
                }
                Role::Timezone => {
                    if let Some(tz) = parse_timezone(value)? {
                        attributes.push((name.as_str(), AttrValue::Text(Cow::Borrowed(tz))));
                    }
                }
                Role::Attribute => {
                    if let Some(v) = typed_cell(cell) {
                        attributes.push((name.as_str(), v));
                    }
                }
            }
        }
        Ok(Row {
            phone: phone.expect("the header has a phone column"),
            consent,
            topics,
            attributes,
        })
    }
}

/// Validates one JSON object (an array element or an NDJSON line).
pub fn json_row(object: &Map<String, Value>, region: Option<Region>) -> Result<Row<'_>, String> {
    let phone_key = PHONE_COLUMNS
        .iter()
        .find_map(|alias| object.keys().find(|k| k.trim().eq_ignore_ascii_case(alias)))
        .ok_or_else(|| {
            format!(
                "no phone number: expected one of the keys {}",
                PHONE_COLUMNS.join(", ")
            )
        })?;
    let mut phone = None;
    let mut consent = None;
    let mut topics = vec![];
    let mut attributes = Vec::with_capacity(object.len());
    for (key, value) in object {
        if key == phone_key {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                _ => return Err(format!("{key:?} must be a string, not {}", kind(value))),
            };
            phone = Some(parse_phone(&text, without_plus(key), region)?);
            continue;
        }
        let name = key.trim();
        if matches!(value, Value::Null) || matches!(value, Value::String(s) if s.trim().is_empty())
        {
            continue;
        }
        if key.contains('\0') || crate::store::has_nul(value) {
            return Err(format!("{key:?} contains a NUL character"));
        }
        if name.eq_ignore_ascii_case(CONSENT_COLUMN) {
            let Value::String(s) = value else {
                return Err(format!(
                    "consent must be the text opted_in or opted_out, not {}",
                    kind(value)
                ));
            };
            consent = parse_consent(s.trim())?;
        } else if let Some(topic) = topic_column(name) {
            let topic = topic.map_err(|e| format!("{name:?}: {e}"))?;
            let text = match value {
                Value::Bool(b) => b.to_string(),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(format!(
                        "{name:?} must be subscribed or unsubscribed, not {}",
                        kind(value)
                    ));
                }
            };
            if let Some(subscribed) = parse_subscription(name, text.trim())? {
                topics.push((topic, subscribed));
            }
        } else if name.eq_ignore_ascii_case(TIMEZONE_COLUMN) {
            let Value::String(s) = value else {
                return Err(format!(
                    "timezone must be an IANA name such as \"Europe/Paris\", not {}",
                    kind(value)
                ));
            };
            if let Some(tz) = parse_timezone(s.trim())? {
                attributes.push((TIMEZONE_COLUMN, AttrValue::Text(Cow::Borrowed(tz))));
            }
        } else {
            attributes.push((name, AttrValue::Json(value)));
        }
    }
    Ok(Row {
        phone: phone.expect("the phone key was found"),
        consent,
        topics,
        attributes,
    })
}

/// `msisdn` and `wa_id` are international numbers by definition, written without `+`.
fn without_plus(column: &str) -> bool {
    let column = column.trim();
    column.eq_ignore_ascii_case("msisdn") || column.eq_ignore_ascii_case("wa_id")
}

fn parse_phone(
    value: &str,
    international: bool,
    region: Option<Region>,
) -> Result<PhoneNumber, String> {
    let parsed = if international && !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
    {
        PhoneNumber::parse(&format!("+{value}"), None)
    } else {
        PhoneNumber::parse(value, region)
    };
    let phone = parsed.map_err(|e| e.to_string())?;
    // What `users` accepts (users_phone_number_e164); a valid number always
    // fits, and a row that would not must not fail the whole merge.
    let digits = phone.as_str().len() - 1;
    if !(7..=15).contains(&digits) {
        return Err(format!(
            "phone number {value:?} has {digits} digits; E.164 allows 7 to 15"
        ));
    }
    Ok(phone)
}

/// `topic.<name>`: the topic, or why its name is not one.
fn topic_column(name: &str) -> Option<Result<Topic, String>> {
    let prefix = name.get(..TOPIC_PREFIX.len())?;
    prefix
        .eq_ignore_ascii_case(TOPIC_PREFIX)
        .then(|| Topic::parse(&name[TOPIC_PREFIX.len()..]))
}

fn parse_subscription(column: &str, value: &str) -> Result<Option<bool>, String> {
    match value.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "subscribed" | "yes" | "true" | "on" | "1" => Ok(Some(true)),
        "unsubscribed" | "no" | "false" | "off" | "0" => Ok(Some(false)),
        _ => Err(format!(
            "{column} is {value:?}: expected subscribed or unsubscribed"
        )),
    }
}

fn parse_consent(value: &str) -> Result<Option<Consent>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<Consent>() {
        Ok(c @ (Consent::OptedIn | Consent::OptedOut)) => Ok(Some(c)),
        _ => Err(format!(
            "unknown consent {value:?}: expected opted_in or opted_out"
        )),
    }
}

/// A valid IANA timezone name, in its canonical spelling.
fn parse_timezone(value: &str) -> Result<Option<&'static str>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse::<chrono_tz::Tz>()
        .or_else(|_| chrono_tz::Tz::from_str_insensitive(value))
        .map(|tz| Some(tz.name()))
        .map_err(|_| format!("unknown timezone {value:?}"))
}

/// A CSV cell as an attribute: empty is absent; JSON numbers and booleans
/// are typed; anything else (dates, codes with leading zeros) stays text.
pub fn typed_cell(cell: &str) -> Option<AttrValue<'_>> {
    let value = cell.trim();
    if value.is_empty() {
        return None;
    }
    if value.eq_ignore_ascii_case("true") {
        return Some(AttrValue::Literal("true"));
    }
    if value.eq_ignore_ascii_case("false") {
        return Some(AttrValue::Literal("false"));
    }
    if is_plain_number(value) {
        return Some(AttrValue::Literal(value));
    }
    Some(AttrValue::Text(Cow::Borrowed(value)))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`: a number as people write it, without the
/// leading zeros of codes or the exponents of product numbers.
fn is_plain_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s).as_bytes();
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let int_ok = match int {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => int.iter().all(u8::is_ascii_digit),
    };
    int_ok && frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Option<Region> {
        Some("US".parse().unwrap())
    }

    #[test]
    fn header_needs_one_phone_column_and_unique_names() {
        let cols = Columns::from_header(&["Name", " MSISDN ", "consent", "wa_id"]).unwrap();
        assert_eq!(cols.roles[1], Role::Phone);
        assert_eq!(cols.roles[3], Role::Attribute);
        let preferred = Columns::from_header(&["wa_id", "phone_number"]).unwrap();
        assert_eq!(preferred.roles, vec![Role::Attribute, Role::Phone]);
        assert_eq!(
            Columns::from_header(&["name", "email"]).unwrap_err().0,
            "no phone number column: expected one of phone_number, phone, msisdn, wa_id (header has name, email)"
        );
        assert_eq!(
            Columns::from_header(&["phone", "Age", "age"])
                .unwrap_err()
                .0,
            "header has column \"age\" twice"
        );
        assert_eq!(
            Columns::from_header(&["phone", ""]).unwrap_err().0,
            "header column 2 has no name"
        );
    }

    #[test]
    fn cells_are_typed() {
        assert_eq!(typed_cell(" 42 "), Some(AttrValue::Literal("42")));
        assert_eq!(typed_cell("-3.5"), Some(AttrValue::Literal("-3.5")));
        assert_eq!(typed_cell("TRUE"), Some(AttrValue::Literal("true")));
        assert_eq!(typed_cell(""), None);
        assert_eq!(typed_cell("   "), None);
        for text in [
            "02134",
            "1e5",
            "2024-01-31",
            "1.",
            ".5",
            "+33",
            "12abc",
            "-",
        ] {
            assert_eq!(
                typed_cell(text),
                Some(AttrValue::Text(Cow::Borrowed(text))),
                "{text}"
            );
        }
    }

    #[test]
    fn csv_rows_are_validated_with_reasons() {
        let cols = Columns::from_header(&["phone", "name", "consent", "timezone"]).unwrap();
        let row = cols
            .row(&["(415) 555-2671", "Ada", "opted_in", "europe/paris"], us())
            .unwrap();
        assert_eq!(row.phone.as_str(), "+14155552671");
        assert_eq!(row.consent, Some(Consent::OptedIn));
        assert_eq!(
            row.attributes,
            vec![
                ("name", AttrValue::Text(Cow::Borrowed("Ada"))),
                ("timezone", AttrValue::Text(Cow::Borrowed("Europe/Paris"))),
            ]
        );
        let reason = |cells: &[&str]| cols.row(cells, us()).unwrap_err();
        assert_eq!(
            reason(&["+1555", "", "", ""]),
            "invalid phone number \"+1555\": too short"
        );
        assert_eq!(
            reason(&["whatsapp:+14155552671", "", "", "Mars/Base"]),
            "unknown timezone \"Mars/Base\""
        );
        assert_eq!(
            reason(&["+14155552671", "", "maybe", ""]),
            "unknown consent \"maybe\": expected opted_in or opted_out"
        );
        assert_eq!(reason(&["+14155552671"]), "row has 1 fields, header has 4");
        assert_eq!(reason(&["", "Ada", "", ""]), "phone number is empty");
        assert_eq!(
            reason(&["+14155552671", "a\0b", "", ""]),
            "column \"name\" contains a NUL character"
        );
    }

    #[test]
    fn json_rows_keep_their_types() {
        let object: Map<String, Value> = serde_json::from_str(
            r#"{"wa_id": 14155552671, "age": 42, "tags": ["a"], "note": null, "empty": "", "Consent": "opted_out"}"#,
        )
        .unwrap();
        let row = json_row(&object, None).unwrap();
        assert_eq!(row.phone.as_str(), "+14155552671");
        assert_eq!(row.consent, Some(Consent::OptedOut));
        let names: Vec<&str> = row.attributes.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, vec!["age", "tags"]);

        let nul_key: Map<String, Value> =
            serde_json::from_str(r#"{"phone": "+14155552671", "a\u0000b": 1}"#).unwrap();
        assert_eq!(
            json_row(&nul_key, None).unwrap_err(),
            "\"a\\0b\" contains a NUL character"
        );
        let no_phone: Map<String, Value> = serde_json::from_str(r#"{"name": "Ada"}"#).unwrap();
        assert!(
            json_row(&no_phone, None)
                .unwrap_err()
                .starts_with("no phone number")
        );
        let bad_tz: Map<String, Value> =
            serde_json::from_str(r#"{"phone": "+14155552671", "timezone": 3}"#).unwrap();
        assert!(
            json_row(&bad_tz, None)
                .unwrap_err()
                .starts_with("timezone must be")
        );
    }

    #[test]
    fn topic_columns_subscribe_and_unsubscribe() {
        let cols =
            Columns::from_header(&["phone", "topic.promotions", "Topic.order-updates"]).unwrap();
        let row = cols
            .row(&["+14155552671", "unsubscribed", "yes"], None)
            .unwrap();
        let topic = |t: &str| Topic::parse(t).unwrap();
        assert_eq!(
            row.topics,
            vec![(topic("promotions"), false), (topic("order-updates"), true)]
        );
        assert!(row.attributes.is_empty());
        let blank = cols.row(&["+14155552671", "", ""], None).unwrap();
        assert!(blank.topics.is_empty());
        let err = cols.row(&["+14155552671", "maybe", ""], None).unwrap_err();
        assert!(err.contains("expected subscribed or unsubscribed"), "{err}");
        assert!(Columns::from_header(&["phone", "topic.Bad Name"]).is_err());
        let object = serde_json::json!({"phone": "+14155552671", "topic.promotions": false});
        let row = json_row(object.as_object().unwrap(), None).unwrap();
        assert_eq!(row.topics, vec![(topic("promotions"), false)]);
    }
}
