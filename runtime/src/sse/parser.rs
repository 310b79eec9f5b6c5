//! An incremental Server-Sent Events parser that follows the WHATWG event stream rules exactly,
//! over any split of the input into chunks.
//!
//! Unlike a browser's `EventSource`, it keeps what a proxy must forward: comments (servers send
//! them as keep-alives), `retry`, and blocks that carry only an `id` or `retry`.

use super::Event;
use bytes::{Buf, Bytes, BytesMut};
use sluicegate_guest::abi::MAX_WORD;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses an event stream fed in chunks of any size.
///
/// Feed bytes with [`Parser::feed`], then call [`Parser::next`] until it returns `None`; at end
/// of stream call [`Parser::finish`]. A line is processed as soon as its line end has arrived, so
/// an event is available the moment its terminating blank line is read.
///
/// Cost: the input is copied once into the parser's buffer; a field value is a reference-counted
/// slice of that buffer, so an event with one `data:` line allocates nothing of its own. Invalid
/// UTF-8 is replaced (U+FFFD), which copies that line.
#[derive(Debug)]
pub struct Parser {
    /// Input not yet split into lines.
    buf: BytesMut,
    /// Bytes at the front of `buf` already searched for a line end.
    scanned: usize,
    /// No byte has been seen yet: a leading BOM is still possible.
    at_start: bool,
    /// The previous line ended with a CR that was the last byte available: an LF that follows
    /// belongs to the same line end.
    after_cr: bool,
    /// The event being built.
    pending: Pending,
    /// The largest event (its field bytes) or line accepted; see [`Parser::with_limit`].
    limit: usize,
    /// The event being built is over the limit: skip lines until the next blank line.
    skipping: bool,
    oversized: u64,
    discarded: usize,
}

/// The fields of the block being read (the spec's "buffers", but per block: the id and retry of
/// a block are reported with it, and a client that reads the re-encoded stream keeps its own
/// last event id).
#[derive(Debug, Default)]
struct Pending {
    event_type: Option<Bytes>,
    data: Data,
    id: Option<Bytes>,
    retry: Option<u32>,
    size: usize,
}

/// The data buffer: most events have one `data:` line, kept as a slice without copying.
#[derive(Debug, Default)]
enum Data {
    #[default]
    None,
    One(Bytes),
    Many(BytesMut),
}

/// A field whose value is kept.
enum Field {
    Event,
    Data,
    Id,
}

/// What ended a line.
enum LineEnd {
    Found { len: usize, consumed: usize, cr_last: bool },
    Incomplete,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser with the default limit of 1 MiB per event.
    pub fn new() -> Self {
        Self::with_limit(1 << 20)
    }

    /// A parser that accepts events and lines of up to `limit` bytes. A larger event is skipped
    /// up to its terminating blank line and counted (see [`Parser::oversized`]); it never ends
    /// the stream and never makes the buffer grow past about `limit` plus one chunk.
    pub fn with_limit(limit: usize) -> Self {
        Parser {
            buf: BytesMut::new(),
            scanned: 0,
            at_start: true,
            after_cr: false,
            pending: Pending::default(),
            limit: limit.min(MAX_WORD as usize / 2),
            skipping: false,
            oversized: 0,
            discarded: 0,
        }
    }

    /// Appends a chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes fed but not yet consumed as lines.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many events were skipped for being over the limit.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// The next complete event or comment, or `None` until more input arrives.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            if self.at_start && !self.strip_bom() {
                return None;
            }
            if self.after_cr && !self.buf.is_empty() {
                self.after_cr = false;
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
            }
            match self.find_line_end() {
                LineEnd::Incomplete => {
                    if self.buf.len() > self.limit {
                        // A line that never ends: drop what we have and skip to the next
                        // blank line.
                        self.buf.clear();
                        self.scanned = 0;
                        self.start_skipping();
                    }
                    return None;
                }
                LineEnd::Found { len, consumed, cr_last } => {
                    let mut line = self.buf.split_to(consumed);
                    line.truncate(len);
                    self.scanned = 0;
                    self.after_cr = cr_last;
                    if let Some(event) = self.process_line(line) {
                        return Some(event);
                    }
                }
            }
        }
    }

    /// Ends the stream. An event without its terminating blank line is discarded, as the spec
    /// requires, and its size is added to [`Parser::discarded`]; but a `retry` it carried has
    /// already taken effect in a client (the field applies when its line is read), so it is
    /// returned as a retry-only event to forward.
    pub fn finish(&mut self) -> Option<Event> {
        self.discarded += self.buf.len() + self.pending.size;
        let retry = self.pending.retry.filter(|_| !self.skipping);
        self.buf.clear();
        self.scanned = 0;
        self.pending = Pending::default();
        self.skipping = false;
        retry.map(|ms| Event { retry: Some(ms), ..Event::default() })
    }

    /// Bytes of unterminated events discarded by [`Parser::finish`].
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// Handles the BOM at the very start; false while too few bytes have arrived to tell.
    fn strip_bom(&mut self) -> bool {
        let n = self.buf.len().min(BOM.len());
        if self.buf[..n] != BOM[..n] {
            self.at_start = false;
            return true;
        }
        if n < BOM.len() {
            return false;
        }
        self.buf.advance(BOM.len());
        self.at_start = false;
        true
    }

    fn find_line_end(&mut self) -> LineEnd {
        match memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) {
            None => {
                self.scanned = self.buf.len();
                LineEnd::Incomplete
            }
            Some(offset) => {
                let len = self.scanned + offset;
                if self.buf[len] == b'\n' {
                    return LineEnd::Found { len, consumed: len + 1, cr_last: false };
                }
                match self.buf.get(len + 1) {
                    Some(b'\n') => LineEnd::Found { len, consumed: len + 2, cr_last: false },
                    Some(_) => LineEnd::Found { len, consumed: len + 1, cr_last: false },
                    None => LineEnd::Found { len, consumed: len + 1, cr_last: true },
                }
            }
        }
    }

    fn start_skipping(&mut self) {
        if !self.skipping {
            self.skipping = true;
            self.oversized += 1;
        }
        self.pending = Pending::default();
    }

    /// One line, without its line end. Only a value that is kept becomes `Bytes` (each slice of a
    /// shared buffer costs atomic reference counting, which dominates the cost per line).
    fn process_line(&mut self, mut line: BytesMut) -> Option<Event> {
        if line.is_empty() {
            if self.skipping {
                self.skipping = false;
                return None;
            }
            return self.dispatch();
        }
        if self.skipping {
            return None;
        }
        if line[0] == b':' {
            line.advance(1);
            return Some(Event { comment: true, data: Some(utf8(line.freeze())), ..Event::default() });
        }
        let (name_len, value_start) = match memchr::memchr(b':', &line) {
            Some(colon) => (colon, if line.get(colon + 1) == Some(&b' ') { colon + 2 } else { colon + 1 }),
            None => (line.len(), line.len()),
        };
        let value_len = line.len() - value_start;
        self.pending.size += value_len;
        if self.pending.size > self.limit {
            self.start_skipping();
            return None;
        }
        let field = match &line[..name_len] {
            b"event" => Field::Event,
            b"data" => Field::Data,
            b"id" if memchr::memchr(0, &line[value_start..]).is_none() => Field::Id,
            b"retry" => {
                let value = &line[value_start..];
                if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                    let ms = value.iter().fold(0u64, |n, d| (n * 10 + u64::from(d - b'0')).min(u64::from(MAX_WORD)));
                    self.pending.retry = Some(ms as u32);
                }
                return None;
            }
            _ => return None,
        };
        line.advance(value_start);
        let value = utf8(line.freeze());
        match field {
            Field::Event => self.pending.event_type = Some(value),
            Field::Data => self.append_data(value),
            Field::Id => self.pending.id = Some(value),
        }
        None
    }

    fn append_data(&mut self, value: Bytes) {
        self.pending.data = match std::mem::take(&mut self.pending.data) {
            Data::None => Data::One(value),
            Data::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
            Data::Many(mut joined) => {
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
        };
    }

    /// A blank line: emit the block if a client would see any effect of it.
    fn dispatch(&mut self) -> Option<Event> {
        let pending = std::mem::take(&mut self.pending);
        let data = match pending.data {
            Data::None => None,
            Data::One(d) => Some(d),
            Data::Many(d) => Some(d.freeze()),
        };
        if data.is_none() && pending.id.is_none() && pending.retry.is_none() {
            // Nothing fires and nothing changes: `event: x` alone, or a lone blank line.
            return None;
        }
        Some(Event {
            comment: false,
            // Without data the type is cleared and never seen.
            event_type: if data.is_some() { pending.event_type } else { None },
            data,
            id: pending.id,
            retry: pending.retry,
        })
    }
}

/// The value as UTF-8, invalid sequences replaced with U+FFFD. Line ends are ASCII, so decoding
/// line by line gives the same text as decoding the whole stream first.
fn utf8(value: Bytes) -> Bytes {
    match std::str::from_utf8(&value) {
        Ok(_) => value,
        Err(_) => Bytes::from(String::from_utf8_lossy(&value).into_owned()),
    }
}
