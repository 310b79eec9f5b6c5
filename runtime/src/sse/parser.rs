//! An incremental Server-Sent Events parser that follows the WHATWG event stream rules exactly,
//! over any split of the input into chunks.
//!
//! Unlike a browser's `EventSource`, it keeps what a proxy must forward: comments (servers send
//! them as keep-alives), `retry`, and blocks that carry only an `id` or `retry`.

use super::Event;
use crate::batch::{Batch, to_event};
use sluicegate_guest::abi::MAX_WORD;
use std::borrow::Cow;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses an event stream fed in chunks of any size.
///
/// Feed bytes with [`Parser::feed`], then call [`Parser::next_into`] (or [`Parser::next`]) until
/// it has nothing more; at end of stream call [`Parser::finish`]. A line is processed as soon as
/// its line end has arrived, so an event is available the moment its terminating blank line is
/// read.
///
/// Cost: the input is copied once into the parser's buffer, each kept field value once into the
/// block being read, and once more into the [`Batch`] when the block completes. Every buffer is
/// reused, so once warm a stream allocates nothing per event. (An earlier version kept values as
/// reference-counted slices of the input; the atomic counting cost more than these copies.)
/// Invalid UTF-8 is replaced (U+FFFD), which allocates for that field.
#[derive(Debug)]
pub struct Parser {
    /// Input; `buf[pos..]` is not yet split into lines.
    buf: Vec<u8>,
    pos: usize,
    /// Bytes from `pos` on already searched for a line end.
    scanned: usize,
    /// No byte has been seen yet: a leading BOM is still possible.
    at_start: bool,
    /// The previous line ended with a CR that was the last byte available: an LF that follows
    /// belongs to the same line end.
    after_cr: bool,
    block: Block,
    /// Bytes of unterminated blocks dropped by [`Parser::finish`].
    discarded_bytes: usize,
    /// A batch of one, for [`Parser::next`].
    one: Batch,
}

/// The block being read: the fields of its lines so far, and the size limit.
#[derive(Debug)]
struct Block {
    /// The spec's "buffers", but per block: the id and retry of a block are reported with it,
    /// and a client that reads the re-encoded stream keeps its own last event id.
    event_type: Field,
    /// `data:` lines joined with LF.
    data: Field,
    id: Field,
    retry: Option<u32>,
    /// Bytes of field values in this block (what the limit counts).
    size: usize,
    /// The largest block (its field values) or line accepted; see [`Parser::with_limit`].
    limit: usize,
    /// The block is over the limit: skip lines until the next blank line.
    skipping: bool,
    oversized: u64,
}

/// One field's value, its buffer kept from block to block.
#[derive(Debug, Default)]
struct Field {
    present: bool,
    value: Vec<u8>,
}

impl Field {
    fn set(&mut self, value: &[u8]) {
        self.present = true;
        self.value.clear();
        self.value.extend_from_slice(value);
    }

    fn clear(&mut self) {
        self.present = false;
        self.value.clear();
    }

    /// The value as UTF-8, if present.
    fn text(&self) -> Option<Cow<'_, [u8]>> {
        self.present.then(|| utf8(&self.value))
    }
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
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            at_start: true,
            after_cr: false,
            block: Block {
                event_type: Field::default(),
                data: Field::default(),
                id: Field::default(),
                retry: None,
                size: 0,
                limit: limit.min(MAX_WORD as usize / 2),
                skipping: false,
                oversized: 0,
            },
            discarded_bytes: 0,
            one: Batch::new(),
        }
    }

    /// Appends a chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            // What is left is a partial line, or events not taken yet: usually little.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes fed but not yet consumed as lines.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many events were skipped for being over the limit.
    pub fn oversized(&self) -> u64 {
        self.block.oversized
    }

    /// Appends the next complete event or comment to `batch`; false (and nothing appended) until
    /// more input arrives. This is the proxy's path: the fields go straight into the batch.
    pub fn next_into(&mut self, batch: &mut Batch) -> bool {
        loop {
            if self.at_start && !self.strip_bom() {
                return false;
            }
            if self.after_cr && self.pos < self.buf.len() {
                self.after_cr = false;
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
            }
            match self.find_line_end() {
                LineEnd::Incomplete => {
                    if self.buffered() > self.block.limit {
                        // A line that never ends: drop what we have and skip to the next
                        // blank line.
                        self.pos = self.buf.len();
                        self.scanned = 0;
                        self.block.start_skipping();
                    }
                    return false;
                }
                LineEnd::Found { len, consumed, cr_last } => {
                    let line = &self.buf[self.pos..self.pos + len];
                    self.pos += consumed;
                    self.scanned = 0;
                    self.after_cr = cr_last;
                    if self.block.line(line, batch) {
                        return true;
                    }
                }
            }
        }
    }

    /// The next complete event or comment as an owned [`Event`], or `None` until more input
    /// arrives. Copies every field once more than [`Parser::next_into`]; for tests and tools.
    pub fn next(&mut self) -> Option<Event> {
        let mut one = std::mem::take(&mut self.one);
        one.clear();
        let event = self.next_into(&mut one).then(|| to_event(&one.view().get(0).expect("one event appended")));
        self.one = one;
        event
    }

    /// Ends the stream. An event without its terminating blank line is discarded, as the spec
    /// requires, and its size is added to [`Parser::discarded`]; but a `retry` it carried has
    /// already taken effect in a client (the field applies when its line is read), so it is
    /// returned as a retry-only event to forward.
    pub fn finish(&mut self) -> Option<Event> {
        self.discarded_bytes += self.buffered() + self.block.size;
        let retry = self.block.retry.filter(|_| !self.block.skipping);
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        self.block.reset();
        self.block.skipping = false;
        retry.map(|ms| Event { retry: Some(ms), ..Event::default() })
    }

    /// Bytes of unterminated events discarded by [`Parser::finish`].
    pub fn discarded(&self) -> usize {
        self.discarded_bytes
    }

    /// Handles the BOM at the very start; false while too few bytes have arrived to tell.
    fn strip_bom(&mut self) -> bool {
        let rest = &self.buf[self.pos..];
        let n = rest.len().min(BOM.len());
        if rest[..n] != BOM[..n] {
            self.at_start = false;
            return true;
        }
        if n < BOM.len() {
            return false;
        }
        self.pos += BOM.len();
        self.at_start = false;
        true
    }

    /// Finds the end of the line at `pos`: LF, CR LF, or CR (a CR as the last byte available
    /// may yet be followed by an LF that belongs to it).
    fn find_line_end(&mut self) -> LineEnd {
        let rest = &self.buf[self.pos..];
        match memchr::memchr2(b'\n', b'\r', &rest[self.scanned..]) {
            None => {
                self.scanned = rest.len();
                LineEnd::Incomplete
            }
            Some(offset) => {
                let len = self.scanned + offset;
                if rest[len] == b'\n' {
                    return LineEnd::Found { len, consumed: len + 1, cr_last: false };
                }
                match rest.get(len + 1) {
                    Some(b'\n') => LineEnd::Found { len, consumed: len + 2, cr_last: false },
                    Some(_) => LineEnd::Found { len, consumed: len + 1, cr_last: false },
                    None => LineEnd::Found { len, consumed: len + 1, cr_last: true },
                }
            }
        }
    }
}

impl Block {
    fn reset(&mut self) {
        self.event_type.clear();
        self.data.clear();
        self.id.clear();
        self.retry = None;
        self.size = 0;
    }

    fn start_skipping(&mut self) {
        if !self.skipping {
            self.skipping = true;
            self.oversized += 1;
        }
        self.reset();
    }

    /// One line, without its line end. True if it appended an event or comment to `batch`.
    fn line(&mut self, line: &[u8], batch: &mut Batch) -> bool {
        if line.is_empty() {
            if self.skipping {
                self.skipping = false;
                return false;
            }
            return self.dispatch(batch);
        }
        if self.skipping {
            return false;
        }
        if line[0] == b':' {
            batch.push_fields(true, None, Some(&utf8(&line[1..])), None, None);
            return true;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        self.size += value.len();
        if self.size > self.limit {
            self.start_skipping();
            return false;
        }
        match name {
            b"event" => self.event_type.set(value),
            b"data" => {
                if self.data.present {
                    self.data.value.push(b'\n');
                }
                self.data.present = true;
                self.data.value.extend_from_slice(value);
            }
            b"id" if memchr::memchr(0, value).is_none() => self.id.set(value),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |n, d| (n * 10 + u64::from(d - b'0')).min(u64::from(MAX_WORD)));
                self.retry = Some(ms as u32);
            }
            _ => {}
        }
        false
    }

    /// A blank line: append the block if a client would see any effect of it.
    fn dispatch(&mut self, batch: &mut Batch) -> bool {
        let fires = self.data.present || self.id.present || self.retry.is_some();
        if fires {
            // Without data the type is cleared and never seen. Line ends are ASCII, so checking
            // UTF-8 on joined lines gives the same text as decoding the stream line by line.
            let event_type = if self.data.present { self.event_type.text() } else { None };
            batch.push_fields(false, event_type.as_deref(), self.data.text().as_deref(), self.id.text().as_deref(), self.retry);
        }
        // Otherwise nothing fires and nothing changes: `event: x` alone, or a lone blank line.
        self.reset();
        fires
    }
}

/// The value as UTF-8, invalid sequences replaced with U+FFFD.
fn utf8(value: &[u8]) -> Cow<'_, [u8]> {
    // `from_utf8` has a fast path for ASCII; `from_utf8_lossy` decodes byte by byte.
    match std::str::from_utf8(value) {
        Ok(_) => Cow::Borrowed(value),
        Err(_) => Cow::Owned(String::from_utf8_lossy(value).into_owned().into_bytes()),
    }
}
