//! The whole of reading a file: detect its format, split it into records,
//! validate each one, and hand valid rows and rejects to a [`RowSink`].

use serde_json::Value;

use super::columns::{Columns, Row, json_row};
use super::csv::{CsvSplitter, RawRecord, sniff_delimiter};
use super::json::{JsonArraySplitter, NdjsonSplitter, RawElement};
use super::{FileError, MAX_LINE_BYTES, Reject};
use crate::domain::Region;

/// How much of the start of a file is checked for binary content.
const SNIFF_BYTES: usize = 8 * 1024;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The formats a user file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonArray,
    Ndjson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::JsonArray => "json",
            Self::Ndjson => "ndjson",
        }
    }
}

/// What the object's name and content type say about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatHint {
    Csv,
    Json,
    Unknown,
}

impl FormatHint {
    /// From the extension first, then the content type.
    pub fn from_object(name: &str, content_type: Option<&str>) -> Self {
        let extension = name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "csv" | "tsv" | "txt" => return Self::Csv,
            "json" | "ndjson" | "jsonl" => return Self::Json,
            _ => {}
        }
        let mime = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match mime.as_str() {
            "text/csv" | "text/tab-separated-values" | "application/csv" => Self::Csv,
            m if m.contains("json") => Self::Json,
            _ => Self::Unknown,
        }
    }
}

/// Where rows and rejects go.
pub trait RowSink {
    fn row(&mut self, line: u64, row: Row<'_>);
    fn reject(&mut self, reject: Reject);
}

enum State {
    /// Collecting the first bytes to recognise the format.
    Sniffing(Vec<u8>),
    Csv {
        splitter: Box<CsvSplitter>,
        columns: Option<Columns>,
    },
    JsonArray(JsonArraySplitter),
    Ndjson {
        splitter: NdjsonSplitter,
        seen_first: bool,
    },
}

/// Reads a file pushed in chunks; never holds more than one record (plus
/// the first chunk).
pub struct RowReader {
    hint: FormatHint,
    region: Option<Region>,
    state: State,
    format: Option<Format>,
}

impl RowReader {
    pub fn new(hint: FormatHint, region: Option<Region>) -> Self {
        Self {
            hint,
            region,
            state: State::Sniffing(Vec::with_capacity(SNIFF_BYTES)),
            format: None,
        }
    }

    /// The format, once recognised.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Feeds the next chunk of the file.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl RowSink) -> Result<(), FileError> {
        if let State::Sniffing(buf) = &mut self.state {
            buf.extend_from_slice(chunk);
            if !sniff_ready(buf) {
                return Ok(());
            }
            let buf = std::mem::take(buf);
            return self.start(&buf, sink);
        }
        self.push(chunk, sink)
    }

    /// Ends the file.
    pub fn finish(&mut self, sink: &mut impl RowSink) -> Result<(), FileError> {
        if let State::Sniffing(buf) = &mut self.state {
            let buf = std::mem::take(buf);
            self.start(&buf, sink)?;
        }
        let region = self.region;
        match &mut self.state {
            State::Sniffing(_) => unreachable!("started above"),
            State::Csv { splitter, columns } => {
                splitter.feed(&[], &mut |r| csv_record(r, columns, region, sink))?;
                if columns.is_none() {
                    return Err(FileError::new("file is empty: no header row"));
                }
                Ok(())
            }
            State::JsonArray(splitter) => splitter.finish(),
            State::Ndjson {
                splitter,
                seen_first,
            } => {
                splitter.feed(&[], &mut |e| ndjson_line(e, seen_first, region, sink))?;
                if !*seen_first {
                    return Err(FileError::new("file is empty"));
                }
                Ok(())
            }
        }
    }

    fn start(&mut self, head: &[u8], sink: &mut impl RowSink) -> Result<(), FileError> {
        let head = head.strip_prefix(UTF8_BOM).unwrap_or(head);
        check_text(&head[..head.len().min(SNIFF_BYTES)])?;
        let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let format = match (self.hint, first) {
            (_, None) => return Err(FileError::new("file is empty")),
            (FormatHint::Csv, _) => Format::Csv,
            (_, Some(b'[')) => Format::JsonArray,
            (_, Some(b'{')) => Format::Ndjson,
            (FormatHint::Json, Some(other)) => {
                return Err(FileError::new(format!(
                    "not valid JSON: expected '[' (an array of objects) or '{{' (one object per line) at the start, found {:?}",
                    char::from(other)
                )));
            }
            (FormatHint::Unknown, _) => Format::Csv,
        };
        self.format = Some(format);
        self.state = match format {
            Format::Csv => {
                let first_line = head.split(|&b| b == b'\n').next().unwrap_or(head);
                State::Csv {
                    splitter: Box::new(CsvSplitter::new(sniff_delimiter(first_line))),
                    columns: None,
                }
            }
            Format::JsonArray => State::JsonArray(JsonArraySplitter::new()),
            Format::Ndjson => State::Ndjson {
                splitter: NdjsonSplitter::new(),
                seen_first: false,
            },
        };
        self.push(head, sink)
    }

    fn push(&mut self, chunk: &[u8], sink: &mut impl RowSink) -> Result<(), FileError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let region = self.region;
        match &mut self.state {
            State::Sniffing(_) => unreachable!("push is called after start"),
            State::Csv { splitter, columns } => {
                splitter.feed(chunk, &mut |r| csv_record(r, columns, region, sink))
            }
            State::JsonArray(splitter) => {
                splitter.feed(chunk, &mut |e| json_element(e, region, sink))
            }
            State::Ndjson {
                splitter,
                seen_first,
            } => splitter.feed(chunk, &mut |e| ndjson_line(e, seen_first, region, sink)),
        }
    }
}

/// Enough is buffered to recognise the format and, for CSV, read the header
/// line (the first chunk usually holds much more, and all of it is checked).
fn sniff_ready(buf: &[u8]) -> bool {
    buf.len() > MAX_LINE_BYTES || buf.contains(&b'\n')
}

/// Refuses what is clearly not a text file, naming what it looks like.
fn check_text(head: &[u8]) -> Result<(), FileError> {
    if head.starts_with(b"\x1f\x8b") {
        return Err(FileError::new(
            "file is gzip-compressed: upload it uncompressed",
        ));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Err(FileError::new(
            "file is a ZIP archive (an Excel workbook?): export it as CSV",
        ));
    }
    if head.contains(&0) {
        return Err(FileError::new(
            "file is binary, not text (it contains NUL bytes)",
        ));
    }
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return Err(FileError::new("file is UTF-16 text: save it as UTF-8"));
    }
    Ok(())
}

fn csv_record(
    record: RawRecord<'_>,
    columns: &mut Option<Columns>,
    region: Option<Region>,
    sink: &mut impl RowSink,
) -> Result<(), FileError> {
    let Some(cols) = columns else {
        if record.oversized {
            return Err(FileError::new(format!(
                "header line is over {} KiB",
                MAX_LINE_BYTES / 1024
            )));
        }
        let names = utf8_fields(&record.fields).ok_or_else(|| {
            FileError::new("header row is not UTF-8 text: save the file as UTF-8")
        })?;
        *columns = Some(Columns::from_header(&names)?);
        return Ok(());
    };
    if record.oversized {
        sink.reject(Reject::new(record.line, too_long(), record.raw));
        return Ok(());
    }
    let Some(cells) = utf8_fields(&record.fields) else {
        sink.reject(Reject::new(
            record.line,
            "row is not valid UTF-8 text",
            record.raw,
        ));
        return Ok(());
    };
    match cols.row(&cells, region) {
        Ok(row) => sink.row(record.line, row),
        Err(reason) => sink.reject(Reject::new(record.line, reason, record.raw)),
    }
    Ok(())
}

fn utf8_fields<'a>(fields: &[&'a [u8]]) -> Option<Vec<&'a str>> {
    fields.iter().map(|f| std::str::from_utf8(f).ok()).collect()
}

fn too_long() -> String {
    format!("line is over {} KiB", MAX_LINE_BYTES / 1024)
}

fn json_element(
    element: RawElement<'_>,
    region: Option<Region>,
    sink: &mut impl RowSink,
) -> Result<(), FileError> {
    json_object(element, region, sink);
    Ok(())
}

fn ndjson_line(
    element: RawElement<'_>,
    seen_first: &mut bool,
    region: Option<Region>,
    sink: &mut impl RowSink,
) -> Result<(), FileError> {
    if !*seen_first {
        *seen_first = true;
        if !element.raw.starts_with(b"{") {
            return Err(FileError::new(format!(
                "not valid JSON: line {} is not a JSON object",
                element.line
            )));
        }
    }
    json_object(element, region, sink);
    Ok(())
}

fn json_object(element: RawElement<'_>, region: Option<Region>, sink: &mut impl RowSink) {
    if element.oversized {
        sink.reject(Reject::new(element.line, too_long(), element.raw));
        return;
    }
    let value: Value = match serde_json::from_slice(element.raw) {
        Ok(value) => value,
        Err(e) => {
            sink.reject(Reject::new(
                element.line,
                format!("invalid JSON: {}", json_error(&e)),
                element.raw,
            ));
            return;
        }
    };
    let Value::Object(object) = value else {
        sink.reject(Reject::new(element.line, "not a JSON object", element.raw));
        return;
    };
    match json_row(&object, region) {
        Ok(row) => sink.row(element.line, row),
        Err(reason) => sink.reject(Reject::new(element.line, reason, element.raw)),
    }
}

/// serde_json's message without its position, which is relative to the element.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::copy::encode_row;

    #[derive(Default)]
    struct Collect {
        rows: Vec<(u64, String)>,
        rejects: Vec<(u64, String, String)>,
    }

    impl RowSink for Collect {
        fn row(&mut self, line: u64, row: Row<'_>) {
            let mut buf = Vec::new();
            encode_row(line, &row, &mut buf);
            let text = String::from_utf8(buf).unwrap();
            let fields: Vec<&str> = text.trim_end().split('\t').collect();
            self.rows
                .push((line, format!("{} {} {}", fields[1], fields[2], fields[3])));
        }
        fn reject(&mut self, r: Reject) {
            self.rejects.push((r.line, r.reason, r.raw));
        }
    }

    fn read(name: &str, text: &[u8], chunk: usize) -> Result<Collect, FileError> {
        let mut reader = RowReader::new(
            FormatHint::from_object(name, None),
            Some("US".parse().unwrap()),
        );
        let mut sink = Collect::default();
        for part in text.chunks(chunk) {
            reader.feed(part, &mut sink)?;
        }
        reader.finish(&mut sink)?;
        Ok(sink)
    }

    #[test]
    fn csv_with_bom_semicolons_and_bad_rows() {
        let text = "\u{FEFF}phone;first_name;age;timezone\r\n\
                    (415) 555-2671;Ada;36;America/New_York\r\n\
                    +1555;Bob;;\r\n\
                    +14155552672;Cy\r\n\
                    +14155552673;\"Di; \"\"D\"\"\nsecond line\";;\r\n";
        for chunk in [1, 7, 4096] {
            let got = read("users.csv", text.as_bytes(), chunk).unwrap();
            assert_eq!(
                got.rows,
                vec![
                    (2, r#"+14155552671 {"first_name":"Ada","age":36,"timezone":"America/New_York"} \N"#.to_owned()),
                    (5, r#"+14155552673 {"first_name":"Di; \\"D\\"\\nsecond line"} \N"#.to_owned()),
                ],
                "chunk {chunk}"
            );
            assert_eq!(
                got.rejects,
                vec![
                    (
                        3,
                        "invalid phone number \"+1555\": too short".to_owned(),
                        "+1555;Bob;;".to_owned()
                    ),
                    (
                        4,
                        "row has 2 fields, header has 4".to_owned(),
                        "+14155552672;Cy".to_owned()
                    ),
                ]
            );
        }
    }

    #[test]
    fn json_array_and_ndjson() {
        let array = br#"[{"phone_number": "+14155552671", "vip": true},
                         {"phone_number": "+14155552672", "timezone": "Mars/Base"},
                         7, {"phone_number": }]"#;
        let got = read("users.json", array, 5).unwrap();
        assert_eq!(
            got.rows,
            vec![(1, r#"+14155552671 {"vip":true} \N"#.to_owned())]
        );
        let reasons: Vec<(u64, &str)> = got.rejects.iter().map(|r| (r.0, r.1.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                (2, "unknown timezone \"Mars/Base\""),
                (3, "not a JSON object"),
                (3, "invalid JSON: expected value"),
            ]
        );
        let ndjson =
            b"{\"phone\": \"+14155552671\", \"consent\": \"opted_in\"}\n\n{\"phone\": 1}\n";
        let got = read("users.ndjson", ndjson, 3).unwrap();
        assert_eq!(
            got.rows,
            vec![(1, r#"+14155552671 {} opted_in"#.to_owned())]
        );
        assert_eq!(got.rejects[0].0, 3);
        // A .json name holding one object per line is NDJSON.
        assert_eq!(read("users.json", ndjson, 64).unwrap().rows.len(), 1);
    }

    #[test]
    fn unreadable_files_fail_with_one_reason() {
        let reason = |name: &str, text: &[u8]| read(name, text, 100).err().map(|e| e.0);
        assert_eq!(reason("a.csv", b""), Some("file is empty".into()));
        assert_eq!(
            reason("a.csv", b"\xEF\xBB\xBF \n"),
            Some("file is empty".into())
        );
        assert_eq!(
            reason("a.csv", b"name,email\nAda,a@x\n"),
            Some("no phone number column: expected one of phone_number, phone, msisdn, wa_id (header has name, email)".into())
        );
        assert_eq!(
            reason("a.csv", b"phone\x00\x01\x02"),
            Some("file is binary, not text (it contains NUL bytes)".into())
        );
        assert_eq!(
            reason("a.csv", b"\x1f\x8b\x08\x00"),
            Some("file is gzip-compressed: upload it uncompressed".into())
        );
        assert_eq!(
            reason("a.json", b"phone\n+14155552671\n"),
            Some("not valid JSON: expected '[' (an array of objects) or '{' (one object per line) at the start, found 'p'".into())
        );
        assert!(
            reason("a.json", b"[{\"phone\": \"+14155552671\"}")
                .unwrap()
                .contains("never closed")
        );
        assert_eq!(
            reason("a.csv", b"phone\n"),
            None,
            "a header alone is an empty import"
        );
    }

    #[test]
    fn formats_come_from_name_then_content_type() {
        assert_eq!(
            FormatHint::from_object("x/Users.CSV", None),
            FormatHint::Csv
        );
        assert_eq!(FormatHint::from_object("x.jsonl", None), FormatHint::Json);
        assert_eq!(
            FormatHint::from_object("upload", Some("application/x-ndjson; charset=utf-8")),
            FormatHint::Json
        );
        assert_eq!(
            FormatHint::from_object("upload", Some("text/csv")),
            FormatHint::Csv
        );
        assert_eq!(FormatHint::from_object("upload", None), FormatHint::Unknown);
    }
}
