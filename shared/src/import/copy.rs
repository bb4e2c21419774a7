//! Valid rows in PostgreSQL's `COPY … from stdin` text format, for the
//! staging table `(position, phone_number, attributes, consent, topics)`.
//!
//! The attributes are written as JSON text straight into the COPY buffer
//! (JSON escaping and COPY escaping fused), so no JSON value is built for a
//! CSV row.

use std::io::Write;

use super::columns::{AttrValue, Row};

/// The staging table's columns, in the order [`encode_row`] writes them.
pub const COLUMNS: &str = "position, phone_number, attributes, consent, topics";

/// Appends one row, the `position`th of its file, as a COPY text line.
pub fn encode_row(position: u64, row: &Row<'_>, buf: &mut Vec<u8>) {
    let _ = write!(buf, "{position}\t");
    buf.extend_from_slice(row.phone.as_str().as_bytes());
    buf.extend_from_slice(b"\t{");
    for (i, (name, value)) in row.attributes.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        json_string(name, buf);
        buf.push(b':');
        match value {
            AttrValue::Text(text) => json_string(text, buf),
            AttrValue::Literal(literal) => buf.extend_from_slice(literal.as_bytes()),
            AttrValue::Json(value) => {
                let start = buf.len();
                serde_json::to_writer(&mut *buf, value).expect("a JSON value serializes");
                double_backslashes(buf, start);
            }
        }
    }
    buf.extend_from_slice(b"}\t");
    match row.consent {
        Some(consent) => buf.extend_from_slice(consent.as_str().as_bytes()),
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.push(b'\t');
    if row.topics.is_empty() {
        buf.extend_from_slice(b"\\N");
    } else {
        // Topic names are plain (letters, digits, `_.-`): nothing to escape.
        buf.push(b'{');
        for (i, (topic, subscribed)) in row.topics.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            let _ = write!(buf, "\"{}\":{subscribed}", topic.as_str());
        }
        buf.push(b'}');
    }
    buf.push(b'\n');
}

/// A JSON string literal, COPY-escaped: every backslash JSON needs is doubled
/// for COPY, and control characters never appear raw.
fn json_string(s: &str, buf: &mut Vec<u8>) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\\\"",
            b'\\' => b"\\\\\\\\",
            b'\n' => b"\\\\n",
            b'\r' => b"\\\\r",
            b'\t' => b"\\\\t",
            0..0x20 | 0x7f => {
                buf.extend_from_slice(&bytes[run..i]);
                let _ = write!(buf, "\\\\u{b:04x}");
                run = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[run..i]);
        buf.extend_from_slice(escape);
        run = i + 1;
    }
    buf.extend_from_slice(&bytes[run..]);
    buf.push(b'"');
}

/// COPY-escapes JSON text written from `start`: serde_json escapes control
/// characters, so only its backslashes need doubling.
fn double_backslashes(buf: &mut Vec<u8>, start: usize) {
    let count = buf[start..].iter().filter(|&&b| b == b'\\').count();
    if count == 0 {
        return;
    }
    let old_len = buf.len();
    buf.resize(old_len + count, 0);
    let mut write = buf.len();
    for read in (start..old_len).rev() {
        let b = buf[read];
        write -= 1;
        buf[write] = b;
        if b == b'\\' {
            write -= 1;
            buf[write] = b'\\';
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::domain::{Consent, PhoneNumber};

    /// What COPY's text format reads back from a field.
    fn unescape_copy(field: &str) -> String {
        let mut out = String::new();
        let mut chars = field.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn rows_encode_to_copy_text_whose_attributes_are_json() {
        let nested = serde_json::json!({"q": "say \"hi\"\\now", "n": [1, 2]});
        let row = Row {
            phone: PhoneNumber::parse("+14155552671", None).unwrap(),
            consent: Some(Consent::OptedIn),
            topics: vec![(crate::domain::Topic::parse("promotions").unwrap(), false)],
            attributes: vec![
                (
                    "name",
                    AttrValue::Text(Cow::Borrowed("Ada \"A\"\tL\\\n\u{1}é")),
                ),
                ("age", AttrValue::Literal("42")),
                ("we\"ird", AttrValue::Json(&nested)),
            ],
        };
        let mut buf = Vec::new();
        encode_row(7, &row, &mut buf);
        let line = String::from_utf8(buf).unwrap();
        assert!(
            line.ends_with("\topted_in\t{\"promotions\":false}\n"),
            "{line}"
        );
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert_eq!(&fields[..2], &["7", "+14155552671"]);
        let attributes: serde_json::Value =
            serde_json::from_str(&unescape_copy(fields[2])).unwrap();
        assert_eq!(
            attributes,
            serde_json::json!({"name": "Ada \"A\"\tL\\\n\u{1}é", "age": 42, "we\"ird": nested})
        );

        let bare = Row {
            phone: PhoneNumber::parse("+14155552671", None).unwrap(),
            consent: None,
            topics: vec![],
            attributes: vec![],
        };
        let mut buf = Vec::new();
        encode_row(1, &bare, &mut buf);
        assert_eq!(buf, b"1\t+14155552671\t{}\t\\N\t\\N\n");
    }
}
