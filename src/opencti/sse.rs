//! Server-Sent Events framing: bytes in, [`Frame`]s out. Pure, no network.
//!
//! Owns the SSE wire rules used by the OpenCTI live stream (opencti-protocol.md §2.1, WHATWG
//! "event stream interpretation"): `\n`, `\r\n` and `\r` line ends, `field: value` with one optional
//! space after the colon, multi-line `data:` joined by `\n`, `:` comment lines, `retry:`, frames
//! without `id`. The core is the incremental [`Framer::push`], which accepts bytes split anywhere
//! (a CR at the end of one read and its LF at the start of the next is one line end); [`FrameReader`]
//! wraps it as an iterator over any [`BufRead`].
//!
//! Decisions:
//! - A frame is dispatched at a blank line when the block set any field (`id`, `event`, `data` or
//!   `retry`); comment-only blocks produce nothing. (The WHATWG rule drops data-less blocks; pycti's
//!   client does not, and OpenCTI always sends data, so the difference is moot.)
//! - UTF-8 is decoded lossily per line: one bad byte must not cost the stream position; the JSON
//!   decoder of the event then decides whether the payload is usable.
//! - A line (or a frame's accumulated data) longer than the limit is an error: the caller drops the
//!   connection and reconnects, the framer resets itself.
//! - A partial frame at end of stream is discarded (WHATWG rule; the reconnect resumes from the last
//!   complete frame's id).

use std::fmt;
use std::io::{self, BufRead};

/// Default bound on one line and on one frame's accumulated data: 16 MiB.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

/// One dispatched SSE event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The `id:` of this block, `None` when the block had none (OpenCTI's `connected`).
    pub id: Option<String>,
    /// The `event:` name, `"message"` when the block had none (SSE default).
    pub event: String,
    /// All `data:` lines joined by `\n`.
    pub data: String,
    /// A `retry:` value in milliseconds, when the block carried a valid one.
    pub retry: Option<u64>,
}

/// Why the byte stream could not be framed. Both variants end the current connection (retry).
#[derive(Debug)]
pub enum SseError {
    /// A line or a frame's data exceeded the limit (bytes). The peer is not speaking sane SSE.
    LineTooLong { limit: usize },
    /// Reading the underlying stream failed.
    Io(io::Error),
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong { limit } => {
                write!(f, "SSE line or event larger than {limit} bytes")
            }
            SseError::Io(e) => write!(f, "reading the event stream failed: {e}"),
        }
    }
}

impl std::error::Error for SseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SseError::Io(e) => Some(e),
            SseError::LineTooLong { .. } => None,
        }
    }
}

/// Incremental SSE parser. Feed it bytes with [`Framer::push`]; it keeps partial lines and frames.
#[derive(Debug)]
pub struct Framer {
    max_line: usize,
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a leading `\n` in the next chunk belongs to it.
    skip_lf: bool,
    /// At the very start of the stream a UTF-8 BOM is ignored.
    at_start: bool,
    pending: Pending,
}

/// Fields of the block being read.
#[derive(Debug, Default)]
struct Pending {
    id: Option<String>,
    event: Option<String>,
    data: String,
    has_data: bool,
    retry: Option<u64>,
    touched: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_LINE)
    }
}

impl Framer {
    /// A framer rejecting lines (and frame data) longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Framer {
            max_line,
            line: Vec::new(),
            skip_lf: false,
            at_start: true,
            pending: Pending::default(),
        }
    }

    /// Forget any partial line or frame (after a reconnect or an error).
    pub fn reset(&mut self) {
        self.line.clear();
        self.skip_lf = false;
        self.at_start = true;
        self.pending = Pending::default();
    }

    /// Parse `bytes`, appending completed frames to `out`. On error the framer is reset.
    pub fn push_into(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), SseError> {
        if self.skip_lf && !bytes.is_empty() {
            self.skip_lf = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.extend_line(bytes)?;
                    return Ok(());
                }
                Some(pos) => {
                    self.extend_line(&bytes[..pos])?;
                    let cr = bytes[pos] == b'\r';
                    bytes = &bytes[pos + 1..];
                    if cr {
                        match bytes.first() {
                            Some(b'\n') => bytes = &bytes[1..],
                            Some(_) => {}
                            None => self.skip_lf = true,
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, out)?;
                    // Keep the allocation for the next line.
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Ok(())
    }

    /// Parse `bytes` and return the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, SseError> {
        let mut out = Vec::new();
        self.push_into(bytes, &mut out)?;
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max_line {
            let limit = self.max_line;
            self.reset();
            return Err(SseError::LineTooLong { limit });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, raw: &[u8], out: &mut Vec<Frame>) -> Result<(), SseError> {
        let mut line = raw;
        if self.at_start {
            self.at_start = false;
            if let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        let p = &mut self.pending;
        match name {
            b"data" => {
                if p.data.len() + value.len() + 1 > self.max_line {
                    let limit = self.max_line;
                    self.reset();
                    return Err(SseError::LineTooLong { limit });
                }
                if p.has_data {
                    p.data.push('\n');
                }
                p.data.push_str(&value);
                p.has_data = true;
                p.touched = true;
            }
            b"event" => {
                p.event = Some(value.into_owned());
                p.touched = true;
            }
            // WHATWG: an id containing NUL is ignored.
            b"id" if !value.contains('\0') => {
                p.id = Some(value.into_owned());
                p.touched = true;
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                p.retry = value.parse().ok();
                p.touched = true;
            }
            _ => {} // unknown field: ignored
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Frame>) {
        let p = std::mem::take(&mut self.pending);
        if !p.touched {
            return;
        }
        out.push(Frame {
            id: p.id,
            event: p.event.unwrap_or_else(|| "message".to_owned()),
            data: p.data,
            retry: p.retry,
        });
    }
}

/// Iterator of frames over a [`BufRead`]. Ends (`None`) at end of stream; an error is yielded once
/// and the iterator then ends.
pub struct FrameReader<R> {
    inner: R,
    framer: Framer,
    queue: std::collections::VecDeque<Frame>,
    scratch: Vec<Frame>,
    done: bool,
    error: Option<SseError>,
}

impl<R: BufRead> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, DEFAULT_MAX_LINE)
    }

    pub fn with_limit(inner: R, max_line: usize) -> Self {
        FrameReader {
            inner,
            framer: Framer::new(max_line),
            queue: Default::default(),
            scratch: Vec::new(),
            done: false,
            error: None,
        }
    }
}

impl<R: BufRead> Iterator for FrameReader<R> {
    type Item = Result<Frame, SseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return Some(Ok(f));
            }
            if self.done {
                return self.error.take().map(Err);
            }
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(SseError::Io(e)));
                }
            };
            if buf.is_empty() {
                self.done = true;
                return None;
            }
            let n = buf.len();
            let res = self.framer.push_into(buf, &mut self.scratch);
            self.inner.consume(n);
            self.queue.extend(self.scratch.drain(..));
            if let Err(e) = res {
                // Frames completed before the bad line are still delivered first.
                self.done = true;
                self.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        Framer::default().push(input).unwrap()
    }

    fn f(id: Option<&str>, event: &str, data: &str) -> Frame {
        Frame {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
            retry: None,
        }
    }

    #[test]
    fn line_end_variants_give_the_same_frames() {
        let expected = vec![f(Some("1-0"), "create", "{}"), f(None, "heartbeat", "x")];
        for sep in ["\n", "\r\n", "\r"] {
            let s = format!(
                "id: 1-0{sep}event: create{sep}data: {{}}{sep}{sep}event: heartbeat{sep}data: x{sep}{sep}"
            );
            assert_eq!(frames(s.as_bytes()), expected, "separator {sep:?}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_with_newline() {
        assert_eq!(
            frames(b"data: a\ndata:b\ndata\n\n"),
            vec![f(None, "message", "a\nb\n")]
        );
    }

    #[test]
    fn only_one_space_after_the_colon_is_stripped() {
        assert_eq!(frames(b"data:  two\n\n"), vec![f(None, "message", " two")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        assert_eq!(
            frames(b": hello\n\n:x\nfoo: bar\ndata: d\n\n"),
            vec![f(None, "message", "d")]
        );
    }

    #[test]
    fn retry_is_reported_when_numeric() {
        let got = frames(b"retry: 1500\n\nretry: soon\ndata: x\n\n");
        assert_eq!(got[0].retry, Some(1500));
        assert_eq!(got[1].retry, None);
    }

    #[test]
    fn crlf_split_across_pushes_is_one_line_end() {
        let mut fr = Framer::default();
        assert!(fr.push(b"data: a\r").unwrap().is_empty());
        assert!(fr.push(b"\n").unwrap().is_empty());
        assert_eq!(fr.push(b"\r\n").unwrap(), vec![f(None, "message", "a")]);
    }

    #[test]
    fn bom_at_start_is_ignored() {
        assert_eq!(
            frames(b"\xEF\xBB\xBFdata: a\n\n"),
            vec![f(None, "message", "a")]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            frames(b"data: a\xFFb\n\n"),
            vec![f(None, "message", "a\u{FFFD}b")]
        );
    }

    #[test]
    fn too_long_line_is_an_error_and_framer_recovers() {
        let mut fr = Framer::new(8);
        assert!(matches!(
            fr.push(b"data: 0123456789"),
            Err(SseError::LineTooLong { limit: 8 })
        ));
        assert_eq!(
            fr.push(b"data: ok\n\n").unwrap(),
            vec![f(None, "message", "ok")]
        );
    }

    #[test]
    fn too_much_data_in_one_frame_is_an_error() {
        let mut fr = Framer::new(10);
        assert!(fr.push(b"data: 12345\ndata: 12345\n").is_err());
    }

    #[test]
    fn partial_frame_at_eof_is_discarded() {
        let got: Vec<_> = FrameReader::new(&b"data: a\n\ndata: b\n"[..]).collect();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn reader_with_tiny_buffer_matches_push() {
        let input = b"id: 1\r\nevent: e\r\ndata: x\r\n\r\nid: 2\rdata: y\r\r";
        let r = io::BufReader::with_capacity(1, &input[..]);
        let got: Vec<Frame> = FrameReader::new(r).map(|x| x.unwrap()).collect();
        assert_eq!(got, frames(input));
        assert_eq!(got.len(), 2);
    }
}
