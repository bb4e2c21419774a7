//! Streaming CSV records with their line numbers and raw bytes.
//!
//! Built on `csv-core` (the engine of the `csv` crate) rather than `csv`'s
//! reader because a reject must quote the record exactly as the file had it:
//! driving the push parser ourselves tells which input bytes made each
//! record, with quoted fields and embedded newlines handled by `csv-core`.

use super::MAX_LINE_BYTES;

/// The delimiters a header is sniffed for, in order of preference on a tie.
const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// The delimiter a header line uses: whichever of `,` `;` and tab appears
/// most often outside quotes (a single-column file gets `,`).
pub fn sniff_delimiter(header_line: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in header_line {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|d| *d == b) {
            counts[i] += 1;
        }
    }
    let best = (0..3).rev().max_by_key(|i| counts[*i]).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        DELIMITERS[best]
    }
}

/// One record as the splitter hands it over.
#[derive(Debug)]
pub struct RawRecord<'a> {
    /// The line the record starts on (1-based).
    pub line: u64,
    /// The record's bytes without its line terminator (at most [`MAX_LINE_BYTES`] + 1).
    pub raw: &'a [u8],
    /// The unquoted fields; empty when `oversized`.
    pub fields: Vec<&'a [u8]>,
    /// The record is longer than [`MAX_LINE_BYTES`].
    pub oversized: bool,
}

/// Splits CSV bytes fed in chunks into records.
pub struct CsvSplitter {
    parser: csv_core::Reader,
    out: Vec<u8>,
    nout: usize,
    ends: Vec<usize>,
    nend: usize,
    raw: Vec<u8>,
    /// Bytes of the current record seen so far (past its leading blank lines).
    record_len: usize,
    started: bool,
    /// `\n` seen before the current record's first byte.
    lines_before: u64,
    /// `\n` seen inside the current record.
    lines_inside: u64,
}

impl CsvSplitter {
    pub fn new(delimiter: u8) -> Self {
        Self {
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            out: vec![0; 4096],
            nout: 0,
            ends: vec![0; 64],
            nend: 0,
            raw: Vec::with_capacity(1024),
            record_len: 0,
            started: false,
            lines_before: 0,
            lines_inside: 0,
        }
    }

    /// Feeds the next chunk; `emit` gets every record it completes.
    /// An empty chunk means end of input and flushes the last record.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        emit: &mut impl FnMut(RawRecord<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at_end = input.is_empty();
        loop {
            let (result, nin, nout, nend) = self.parser.read_record(
                input,
                &mut self.out[self.nout..],
                &mut self.ends[self.nend..],
            );
            self.take(&input[..nin]);
            input = &input[nin..];
            self.nout += nout;
            self.nend += nend;
            use csv_core::ReadRecordResult as R;
            match result {
                R::InputEmpty => {
                    if !at_end {
                        return Ok(());
                    }
                }
                R::OutputFull => {
                    if self.oversized() {
                        self.nout = 0;
                    } else {
                        let len = self.out.len();
                        self.out.resize(len * 2, 0);
                    }
                }
                R::OutputEndsFull => {
                    if self.oversized() {
                        self.nend = 0;
                    } else {
                        let len = self.ends.len();
                        self.ends.resize(len * 2, 0);
                    }
                }
                R::Record => {
                    let emitted = self.emit(emit);
                    self.reset();
                    emitted?;
                }
                R::End => return Ok(()),
            }
        }
    }

    fn oversized(&self) -> bool {
        self.record_len > MAX_LINE_BYTES
    }

    /// Records consumed input: keeps the record's raw bytes (up to the limit)
    /// and counts lines, skipping the blank lines `csv-core` skips.
    fn take(&mut self, mut consumed: &[u8]) {
        if !self.started {
            match consumed.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                None => {
                    self.lines_before += count_lines(consumed);
                    return;
                }
                Some(start) => {
                    self.lines_before += count_lines(&consumed[..start]);
                    consumed = &consumed[start..];
                    self.started = true;
                }
            }
        }
        self.record_len += consumed.len();
        self.lines_inside += count_lines(consumed);
        let room = (MAX_LINE_BYTES + 1).saturating_sub(self.raw.len());
        self.raw
            .extend_from_slice(&consumed[..consumed.len().min(room)]);
    }

    fn emit<E>(&self, emit: &mut impl FnMut(RawRecord<'_>) -> Result<(), E>) -> Result<(), E> {
        let mut raw = &self.raw[..];
        while let [rest @ .., b'\r' | b'\n'] = raw {
            raw = rest;
        }
        let oversized = self.oversized();
        let fields = if oversized {
            Vec::new()
        } else {
            let mut start = 0;
            self.ends[..self.nend]
                .iter()
                .map(|&end| {
                    let field = &self.out[start..end];
                    start = end;
                    field
                })
                .collect()
        };
        emit(RawRecord {
            line: self.lines_before + 1,
            raw,
            fields,
            oversized,
        })
    }

    fn reset(&mut self) {
        self.lines_before += self.lines_inside;
        self.lines_inside = 0;
        self.raw.clear();
        self.record_len = 0;
        self.started = false;
        self.nout = 0;
        self.nend = 0;
        if self.out.len() > 64 * 1024 {
            self.out.truncate(4096);
            self.out.shrink_to(4096);
        }
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Owned {
        line: u64,
        raw: String,
        fields: Vec<String>,
        oversized: bool,
    }

    fn split(delimiter: u8, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut splitter = CsvSplitter::new(delimiter);
        let mut out = Vec::new();
        let mut emit = |r: RawRecord<'_>| -> Result<(), ()> {
            out.push(Owned {
                line: r.line,
                raw: String::from_utf8_lossy(r.raw).into_owned(),
                fields: r
                    .fields
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
                oversized: r.oversized,
            });
            Ok(())
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut emit).unwrap();
        }
        splitter.feed(&[], &mut emit).unwrap();
        out
    }

    #[test]
    fn sniffs_the_delimiter_outside_quotes() {
        assert_eq!(sniff_delimiter(b"phone,name,age"), b',');
        assert_eq!(sniff_delimiter(b"phone;name;\"a,b,c,d\""), b';');
        assert_eq!(sniff_delimiter(b"phone\tname"), b'\t');
        assert_eq!(sniff_delimiter(b"phone"), b',');
    }

    #[test]
    fn records_carry_their_line_and_raw_text() {
        let records = split(b',', &[b"a,b\n1,\"x\ny\"\r\n\n\n2,z\n3"]);
        let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![1, 2, 6, 7]);
        assert_eq!(records[1].raw, "1,\"x\ny\"");
        assert_eq!(records[1].fields, vec!["1", "x\ny"]);
        assert_eq!(records[2].fields, vec!["2", "z"]);
        assert_eq!(records[3].fields, vec!["3"]);
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let text = b"phone;name\r\n+1;\"Ada \"\"the\"\" first\"\r\n+2;Bob\r\n";
        let whole = split(b';', &[text]);
        let bytewise: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(split(b';', &bytewise), whole);
        assert_eq!(whole[1].fields, vec!["+1", "Ada \"the\" first"]);
        assert_eq!(whole[2].line, 3);
    }

    #[test]
    fn long_records_are_flagged_and_bounded() {
        let mut text = b"a,b\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 100));
        text.extend_from_slice(b",y\nnext,row\n");
        let records = split(b',', &text.chunks(4000).collect::<Vec<_>>());
        assert_eq!(records.len(), 3);
        assert!(records[1].oversized);
        assert!(records[1].fields.is_empty());
        assert_eq!(records[1].raw.len(), MAX_LINE_BYTES + 1);
        assert_eq!(records[2].line, 3);
        assert_eq!(records[2].fields, vec!["next", "row"]);
    }
}
