//! Streaming JSON: the elements of a top-level array, and NDJSON lines, each
//! handed over as raw bytes with the line it starts on. Each element is then
//! parsed on its own, so a file of any size is read one element at a time.

use super::{FileError, MAX_LINE_BYTES};

/// One element or line as the splitters hand it over.
#[derive(Debug)]
pub struct RawElement<'a> {
    pub line: u64,
    /// The element's bytes, trimmed (at most [`MAX_LINE_BYTES`] + 1).
    pub raw: &'a [u8],
    pub oversized: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// Between elements, or before the first.
    Between,
    /// Inside an element.
    Element,
    /// After the closing `]`.
    Done,
}

/// Splits a JSON array (`[{…}, {…}]`) fed in chunks into its elements.
pub struct JsonArraySplitter {
    state: ArrayState,
    depth: u32,
    in_string: bool,
    escaped: bool,
    buf: Vec<u8>,
    len: usize,
    line: u64,
    start_line: u64,
}

impl Default for JsonArraySplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonArraySplitter {
    pub fn new() -> Self {
        Self {
            state: ArrayState::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            buf: Vec::with_capacity(1024),
            len: 0,
            line: 1,
            start_line: 1,
        }
    }

    /// Feeds the next chunk; `emit` gets every element it completes.
    /// Broken structure (no array, text after it) is a [`FileError`].
    pub fn feed<E: From<FileError>>(
        &mut self,
        input: &[u8],
        emit: &mut impl FnMut(RawElement<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        for &b in input {
            match self.state {
                ArrayState::Start => match b {
                    b'[' => self.state = ArrayState::Between,
                    b if b.is_ascii_whitespace() => {}
                    other => {
                        return Err(FileError::new(format!(
                            "not a JSON array: expected '[' at the start, found {:?}",
                            char::from(other)
                        ))
                        .into());
                    }
                },
                ArrayState::Between => match b {
                    b']' => self.state = ArrayState::Done,
                    b',' => {}
                    b if b.is_ascii_whitespace() => {}
                    _ => {
                        self.state = ArrayState::Element;
                        self.start_line = self.line;
                        self.element_byte(b, emit)?;
                    }
                },
                ArrayState::Element => self.element_byte(b, emit)?,
                ArrayState::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(FileError::new(format!(
                            "not valid JSON: unexpected text after the closing ']' on line {}",
                            self.line
                        ))
                        .into());
                    }
                }
            }
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(())
    }

    /// Ends the input: the array must have been closed.
    pub fn finish(&self) -> Result<(), FileError> {
        match self.state {
            ArrayState::Done => Ok(()),
            ArrayState::Start => Err(FileError::new("file is empty")),
            ArrayState::Between | ArrayState::Element => Err(FileError::new(
                "not valid JSON: the array is never closed (is the file truncated?)",
            )),
        }
    }

    fn element_byte<E>(
        &mut self,
        b: u8,
        emit: &mut impl FnMut(RawElement<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            self.push(b);
        } else if self.depth == 0 && (b == b',' || b == b']') {
            self.emit_element(emit)?;
            self.state = if b == b']' {
                ArrayState::Done
            } else {
                ArrayState::Between
            };
        } else {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            self.push(b);
        }
        Ok(())
    }

    fn push(&mut self, b: u8) {
        self.len += 1;
        if self.buf.len() <= MAX_LINE_BYTES {
            self.buf.push(b);
        }
    }

    fn emit_element<E>(
        &mut self,
        emit: &mut impl FnMut(RawElement<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let result = emit(RawElement {
            line: self.start_line,
            raw: self.buf.trim_ascii(),
            oversized: self.len > MAX_LINE_BYTES,
        });
        self.buf.clear();
        self.len = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        result
    }
}

/// Splits newline-delimited JSON fed in chunks into its non-blank lines.
#[derive(Default)]
pub struct NdjsonSplitter {
    buf: Vec<u8>,
    len: usize,
    line: u64,
}

impl NdjsonSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk; an empty chunk means end of input.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        emit: &mut impl FnMut(RawElement<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if input.is_empty() {
            return self.emit_line(emit);
        }
        while let Some(nl) = memchr::memchr(b'\n', input) {
            self.append(&input[..nl]);
            self.emit_line(emit)?;
            input = &input[nl + 1..];
        }
        self.append(input);
        Ok(())
    }

    fn append(&mut self, part: &[u8]) {
        self.len += part.len();
        let room = (MAX_LINE_BYTES + 1).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn emit_line<E>(
        &mut self,
        emit: &mut impl FnMut(RawElement<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.line += 1;
        let raw = self.buf.trim_ascii();
        let result = if raw.is_empty() {
            Ok(())
        } else {
            emit(RawElement {
                line: self.line,
                raw,
                oversized: self.len > MAX_LINE_BYTES,
            })
        };
        self.buf.clear();
        self.len = 0;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(chunks: &[&[u8]]) -> Result<Vec<(u64, String)>, FileError> {
        let mut splitter = JsonArraySplitter::new();
        let mut out = Vec::new();
        let mut emit = |e: RawElement<'_>| -> Result<(), FileError> {
            out.push((e.line, String::from_utf8_lossy(e.raw).into_owned()));
            Ok(())
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut emit)?;
        }
        splitter.finish()?;
        Ok(out)
    }

    #[test]
    fn splits_array_elements_with_their_lines() {
        let text = b"[\n {\"phone\": \"+1\", \"tags\": [\"a,]\", {\"x\": 1}]},\n {\"s\": \"\\\"}\"}\n, 42]";
        let whole = array(&[text]).unwrap();
        assert_eq!(
            whole,
            vec![
                (
                    2,
                    "{\"phone\": \"+1\", \"tags\": [\"a,]\", {\"x\": 1}]}".to_owned()
                ),
                (3, "{\"s\": \"\\\"}\"}".to_owned()),
                (4, "42".to_owned()),
            ]
        );
        let bytewise: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(array(&bytewise).unwrap(), whole);
        assert_eq!(array(&[b" [ ] "]).unwrap(), vec![]);
    }

    #[test]
    fn broken_arrays_are_file_errors() {
        assert_eq!(
            array(&[b"{\"a\": 1}"]).unwrap_err().0,
            "not a JSON array: expected '[' at the start, found '{'"
        );
        assert!(
            array(&[b"[{\"a\": 1},"])
                .unwrap_err()
                .0
                .contains("never closed")
        );
        assert!(
            array(&[b"[] x"])
                .unwrap_err()
                .0
                .contains("after the closing")
        );
        assert_eq!(array(&[b"  "]).unwrap_err().0, "file is empty");
    }

    #[test]
    fn ndjson_lines_skip_blanks_and_flag_long_lines() {
        let mut splitter = NdjsonSplitter::new();
        let mut out = Vec::new();
        let mut emit = |e: RawElement<'_>| -> Result<(), ()> {
            out.push((e.line, e.raw.len(), e.oversized));
            Ok(())
        };
        let long = vec![b'x'; MAX_LINE_BYTES + 5];
        splitter.feed(b"{\"a\":1}\r\n\n", &mut emit).unwrap();
        splitter.feed(&long, &mut emit).unwrap();
        splitter.feed(b"\n{}", &mut emit).unwrap();
        splitter.feed(b"", &mut emit).unwrap();
        assert_eq!(
            out,
            vec![(1, 7, false), (3, MAX_LINE_BYTES + 1, true), (4, 2, false)]
        );
    }
}
