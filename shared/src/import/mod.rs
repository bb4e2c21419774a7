//! User files, from bytes to rows.
//!
//! The pure half ([`reader`], [`csv`], [`json`], [`columns`], [`copy`]) takes
//! a file's bytes chunk by chunk, never holding more than one record, and
//! turns them into validated rows (encoded for `COPY`) and rejects that name
//! their line and the problem. [`run`] is the I/O half: it claims an import,
//! streams the object through the reader into a staging table and merges the
//! staged rows into `users` in one transaction.

pub mod columns;
pub mod copy;
pub mod csv;
pub mod json;
pub mod reader;
pub mod run;

pub use columns::{AttrValue, Row};
pub use reader::{Format, RowReader, RowSink};

/// A record (a CSV line, a JSON element, an NDJSON line) longer than this is rejected.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How much of a rejected record is kept in `import_rejects.raw_line`.
pub const RAW_LINE_KEEP: usize = 1024;

/// A file that cannot be read at all: the import fails with this one reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

impl FileError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// A refused row ([`Reject::new`] truncates what it said).
pub use crate::store::imports::Reject;

impl Reject {
    pub fn new(line: u64, reason: impl Into<String>, raw: &[u8]) -> Self {
        Self {
            line,
            reason: reason.into(),
            raw: truncate_raw(raw),
        }
    }
}

/// The first [`RAW_LINE_KEEP`] bytes of a record as text a person (and
/// PostgreSQL) can read: invalid UTF-8 replaced, NUL shown as U+FFFD.
pub fn truncate_raw(raw: &[u8]) -> String {
    let kept = &raw[..raw.len().min(RAW_LINE_KEEP)];
    let mut text = String::from_utf8_lossy(kept).into_owned();
    if text.contains('\0') {
        text = text.replace('\0', "\u{FFFD}");
    }
    if raw.len() > RAW_LINE_KEEP {
        // The cut may have split a character; lossy decoding already replaced it.
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_lines_are_truncated_and_made_printable() {
        assert_eq!(truncate_raw(b"a,b"), "a,b");
        let long = vec![b'x'; RAW_LINE_KEEP + 10];
        let kept = truncate_raw(&long);
        assert_eq!(kept.chars().count(), RAW_LINE_KEEP + 1);
        assert!(kept.ends_with('…'));
        assert_eq!(truncate_raw(b"a\0\xffb"), "a\u{FFFD}\u{FFFD}b");
    }
}
