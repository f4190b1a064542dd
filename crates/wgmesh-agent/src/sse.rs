//! Server-sent events (the WHATWG HTML "server-sent events" event stream
//! format), parsed incrementally from arbitrary byte chunks, as they come
//! off a `reqwest` body stream.
//!
//! Only what the control stream uses is kept: `event:` and `data:` fields
//! (several `data:` lines are joined with `\n`), a blank line dispatches
//! the event, `:` lines are comments (the server's heartbeats). `id:` and
//! `retry:` are ignored: a reconnect always starts with a full map. Lines
//! end with LF, CRLF or CR, as the format allows. This module does no IO.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when there was none.
    pub event: String,
    pub data: String,
}

/// The largest line accepted: a map of thousands of peers fits; a server
/// (or a middlebox) that never ends a line cannot make the agent grow
/// without bound.
pub const MAX_LINE: usize = 64 << 20;

/// Why the stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    #[error("an event-stream line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("an event-stream line that is not UTF-8")]
    NotUtf8,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// The previous chunk ended on CR: an LF first in the next one
    /// belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    /// Comment lines seen (heartbeats), for liveness.
    comments: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many comment lines (heartbeats) were seen so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Feeds one chunk; appends every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.line.len() + end > MAX_LINE {
                return Err(SseError::LineTooLong);
            }
            self.line.extend_from_slice(&rest[..end]);
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
        }
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if line.is_empty() {
            // Dispatch; an event with no data is dropped, as the format says.
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                out.push(Event {
                    event: event.unwrap_or_else(|| "message".into()),
                    data,
                });
            }
            return Ok(());
        }
        if line[0] == b':' {
            self.comments += 1;
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(text: &[u8], size: usize) -> (Vec<Event>, u64) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in text.chunks(size) {
            p.feed(c, &mut out).unwrap();
        }
        (out, p.comments())
    }

    const STREAM: &[u8] = b": hello\n\nevent: map\ndata: {\"type\":\"full\"}\n\n:\n\
        event: map\r\ndata: {\"a\":\r\ndata: \"\xc3\xa9\"}\r\n\r\n\
        data:no-space\rdata\r\revent: ignored-without-data\n\n";

    #[test]
    fn events_in_every_fragmentation() {
        let want = vec![
            Event {
                event: "map".into(),
                data: "{\"type\":\"full\"}".into(),
            },
            Event {
                event: "map".into(),
                data: "{\"a\":\n\"é\"}".into(),
            },
            Event {
                event: "message".into(),
                data: "no-space\n".into(),
            },
        ];
        for size in 1..=STREAM.len() {
            let (got, comments) = parse_in_chunks(STREAM, size);
            assert_eq!(got, want, "chunks of {size}");
            assert_eq!(comments, 2, "chunks of {size}");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let (got, _) = parse_in_chunks(b"event: map\ndata: {}\n", 3);
        assert!(got.is_empty());
    }

    #[test]
    fn bad_utf8_is_an_error() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        assert_eq!(p.feed(b"data: \xff\n\n", &mut out), Err(SseError::NotUtf8));
    }
}
