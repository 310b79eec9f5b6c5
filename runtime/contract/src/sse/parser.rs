//! An incremental Server-Sent Events parser that follows the WHATWG event stream rules exactly,
//! over any split of the input into chunks.
//!
//! Unlike a browser's `EventSource`, it keeps what a proxy must forward: comments (servers send
//! them as keep-alives), `retry`, and blocks that carry only an `id` or `retry`.

use super::Event;
use crate::batch::{Batch, to_event};
use bytes::Bytes;
use sluicegate_guest::abi::MAX_WORD;
use std::borrow::Cow;
use std::collections::VecDeque;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses an event stream fed in chunks of any size.
///
/// Feed bytes with [`Parser::feed_bytes`] (or [`Parser::feed`]), then call [`Parser::next_into`]
/// (or [`Parser::next`]) until it has nothing more; at end of stream call [`Parser::finish`]. A
/// line is processed as soon as its line end has arrived, so an event is available the moment its
/// terminating blank line is read.
///
/// Cost: a field value is copied once, into the [`Batch`], when its event completes. A chunk fed
/// as [`Bytes`] is parsed where it lies; only what is left when its complete lines run out (a
/// partial line, the values of a half-read event) is copied into the parser's own buffer, and the
/// chunk is let go. Buffers are reused, so once warm a stream allocates nothing per event. (An earlier version kept values
/// as reference-counted slices of the input; the atomic counting cost more than copying.)
/// Invalid UTF-8 is replaced (U+FFFD), which allocates for that field.
#[derive(Debug)]
pub struct Parser {
    /// The input is `shared` if set, else `owned`; `input[pos..]` is not yet split into lines.
    owned: Vec<u8>,
    /// A chunk fed as `Bytes` while nothing else was buffered: parsed without a copy.
    shared: Option<Bytes>,
    /// Chunks fed as `Bytes` while the input still held bytes, in order, and their length. Each
    /// becomes the input once what is before it has run out of lines; only the bytes that finish
    /// a partial line before it are copied (see [`Parser::join`]).
    queued: VecDeque<Bytes>,
    queued_len: usize,
    pos: usize,
    /// Bytes from `pos` on already searched for a line end.
    scanned: usize,
    /// `input[..valid]` is known to be UTF-8: values inside it need no check of their own.
    valid: usize,
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
    /// Whether the block's lines are still in the input and each one the encoder would write.
    wire: Wire,
    /// While [`Wire::At`]: each field line's span in the input, without its line end, by field
    /// (`event`, `data`, `id`, `retry`; see [`Block::field_bit`]).
    lines: [(usize, usize); 4],
}

/// Whether the block being read can go out without being encoded: every line so far is one the
/// encoder would write (`event`, one `data`, `id`, `retry`, each at most once, `name: value` or
/// `name:` when empty) and still in the input. Then the batch gets the encoder's form of the
/// block as spans of the input: its own bytes when its lines came in the encoder's order, each
/// ended by a lone LF (one copy), else its lines put in that order, each ended by LF (a copy per
/// line: what MCP servers that send `id` first, or CRLF, cost). An event the chain keeps is then
/// copied out instead of encoded; the output is the same bytes either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// No line of the block yet.
    Empty,
    /// The block began at this input offset; `seen` has a bit per field read (see
    /// [`Block::field_bit`]); `as_written` while the lines so far are the encoder's bytes (its
    /// order, lone LFs).
    At { start: usize, seen: u8, as_written: bool },
    /// Not in the encoder's form, or its bytes have left the input.
    Lost,
}

/// One field's value: where it lies in the input, or (once the input it lay in is about to be
/// replaced, or a second `data:` line joins it) a copy in a buffer kept from block to block.
#[derive(Debug)]
struct Field {
    present: bool,
    span: Option<(usize, usize)>,
    copy: Vec<u8>,
    /// Everything in `copy` came from checked input: it is UTF-8 already.
    copy_checked: bool,
}

impl Default for Field {
    fn default() -> Self {
        Field { present: false, span: None, copy: Vec::new(), copy_checked: true }
    }
}

impl Field {
    fn set(&mut self, span: (usize, usize)) {
        self.present = true;
        self.span = Some(span);
        self.copy.clear();
        self.copy_checked = true;
    }

    /// Appends a line to the value, joined with LF (for `data:`).
    fn append(&mut self, input: Input<'_>, span: (usize, usize)) {
        if !self.present {
            return self.set(span);
        }
        self.settle(input);
        self.copy.push(b'\n');
        self.copy.extend_from_slice(&input.bytes[span.0..span.1]);
        self.copy_checked &= span.1 <= input.valid;
    }

    /// Copies the value out of `input`, which is about to change.
    fn settle(&mut self, input: Input<'_>) {
        if let Some((start, end)) = self.span.take() {
            self.copy.clear();
            self.copy.extend_from_slice(&input.bytes[start..end]);
            self.copy_checked = end <= input.valid;
        }
    }

    fn clear(&mut self) {
        self.present = false;
        self.span = None;
        self.copy.clear();
        self.copy_checked = true;
    }

    /// The value as UTF-8, if present.
    fn text<'a>(&'a self, input: Input<'a>) -> Option<Cow<'a, [u8]>> {
        self.present.then(|| match self.span {
            Some(span) => input.text(span),
            None if self.copy_checked => Cow::Borrowed(&self.copy[..]),
            None => utf8(&self.copy),
        })
    }
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

/// The default limit on one event or line: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

impl Parser {
    /// A parser with the default limit, [`DEFAULT_MAX_EVENT_BYTES`] per event.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that accepts events and lines of up to `limit` bytes, counted as received (a
    /// value with invalid UTF-8 can come out up to three times longer, each bad byte replaced by
    /// U+FFFD). A larger event is skipped up to its terminating blank line and counted (see
    /// [`Parser::oversized`]); it never ends the stream and never makes the buffer grow past
    /// about `limit` plus one chunk.
    pub fn with_limit(limit: usize) -> Self {
        Parser {
            owned: Vec::new(),
            shared: None,
            queued: VecDeque::new(),
            queued_len: 0,
            pos: 0,
            scanned: 0,
            valid: 0,
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
                wire: Wire::Empty,
                lines: [(0, 0); 4],
            },
            discarded_bytes: 0,
            one: Batch::new(),
        }
    }

    /// Appends a chunk of the stream, copying it.
    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.queued.is_empty() {
            return self.feed_bytes(Bytes::copy_from_slice(chunk)); // after the queued ones
        }
        self.own_input();
        self.owned.extend_from_slice(chunk);
    }

    /// Appends a chunk of the stream, to be parsed where it lies: at once if nothing else is
    /// buffered, else once the input before it runs out of lines.
    pub fn feed_bytes(&mut self, chunk: Bytes) {
        if self.buffered() > 0 {
            self.queued_len += chunk.len();
            self.queued.push_back(chunk);
            return;
        }
        self.parse_in_place(chunk);
    }

    /// Makes `chunk` the input; nothing of the previous input is left to parse.
    fn parse_in_place(&mut self, chunk: Bytes) {
        self.own_input(); // copies out the values of a half-read block; leaves no input
        self.shared = Some(chunk);
        self.scanned = 0;
        self.valid = 0;
    }

    /// Makes `chunk` the input after the current one, which has no complete line left. A partial
    /// line (an upstream's write split by the network) is finished by copying `chunk` up to its
    /// first line break; the rest of `chunk` is queued again, to be parsed where it lies.
    fn join(&mut self, chunk: Bytes) {
        if self.input_len() == self.pos {
            return self.parse_in_place(chunk);
        }
        self.own_input();
        match first_line_break(&chunk) {
            Some(at) if at + 1 < chunk.len() => {
                self.owned.extend_from_slice(&chunk[..=at]);
                let rest = chunk.slice(at + 1..);
                self.queued_len += rest.len();
                self.queued.push_front(rest);
            }
            _ => self.owned.extend_from_slice(&chunk),
        }
    }

    fn input_len(&self) -> usize {
        self.shared.as_deref().unwrap_or(&self.owned).len()
    }

    /// Moves the unconsumed input to the front of the parser's own buffer, ready to be appended
    /// to; values of the block being read are copied out first.
    fn own_input(&mut self) {
        let input = self.shared.as_deref().unwrap_or(&self.owned);
        self.block.settle(Input { bytes: input, valid: self.valid });
        match self.shared.take() {
            Some(chunk) => {
                self.owned.clear();
                self.owned.extend_from_slice(&chunk[self.pos..]);
            }
            None => {
                self.owned.drain(..self.pos);
            }
        }
        // `pos` is at a line start, so what stays of the checked prefix is still whole UTF-8.
        self.valid = self.valid.saturating_sub(self.pos);
        self.pos = 0;
    }

    /// Bytes fed but not yet consumed as lines.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.input_len() - self.pos + self.queued_len
    }

    /// How many events were skipped for being over the limit.
    pub fn oversized(&self) -> u64 {
        self.block.oversized
    }

    /// Appends the next complete event or comment to `batch`; false (and nothing appended) until
    /// more input arrives. This is the proxy's path: the fields go straight into the batch.
    #[inline]
    pub fn next_into(&mut self, batch: &mut Batch) -> bool {
        loop {
            if self.parse_into(batch) {
                return true;
            }
            let Some(chunk) = self.queued.pop_front() else { break };
            self.queued_len -= chunk.len();
            self.join(chunk);
        }
        // Out of complete lines. Keep no hold on a shared chunk (it may be a slice of a much
        // larger read buffer, and a stream can stay idle for hours): copy what is left of it (a
        // partial line, and the values of a half-read block) and let it go.
        if self.shared.is_some() {
            self.own_input();
        }
        false
    }

    fn parse_into(&mut self, batch: &mut Batch) -> bool {
        let input = self.shared.as_deref().unwrap_or(&self.owned);
        // One UTF-8 check over the new input instead of one per field. It stops at the first
        // invalid or incomplete sequence; fields from there on are checked one by one (and a
        // check that starts at a bad byte ends at once, so this is never repeated work).
        if self.valid < input.len() {
            self.valid += match simdutf8::compat::from_utf8(&input[self.valid..]) {
                Ok(text) => text.len(),
                Err(e) => e.valid_up_to(),
            };
        }
        let checked = Input { bytes: input, valid: self.valid };
        loop {
            let rest = &input[self.pos..];
            if self.at_start {
                let n = rest.len().min(BOM.len());
                if rest[..n] != BOM[..n] {
                    self.at_start = false;
                } else if n < BOM.len() {
                    return false; // too few bytes to tell
                } else {
                    self.pos += BOM.len();
                    self.at_start = false;
                    continue;
                }
            }
            if self.after_cr && !rest.is_empty() {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    self.pos += 1;
                    continue;
                }
            }
            match find_line_end(rest, self.scanned) {
                None => {
                    self.scanned = rest.len();
                    if rest.len() > self.block.limit {
                        // A line that never ends: drop what we have and skip to the next
                        // blank line.
                        self.pos = input.len();
                        self.scanned = 0;
                        self.block.start_skipping();
                    }
                    return false;
                }
                Some((len, consumed, cr_last)) => {
                    let start = self.pos;
                    self.pos += consumed;
                    self.scanned = 0;
                    self.after_cr = cr_last;
                    let lf = consumed == len + 1 && rest[len] == b'\n';
                    if self.block.line(checked, (start, start + len), lf, batch) {
                        return true;
                    }
                }
            }
        }
    }

    /// The next complete event or comment as an owned [`Event`], or `None` until more input
    /// arrives. Copies every field once more than [`Parser::next_into`]; for tests and tools.
    // Not `Iterator`: `None` means "not yet", and more input can follow it.
    #[allow(clippy::should_implement_trait)]
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
        self.owned.clear();
        self.shared = None;
        self.queued.clear();
        self.queued_len = 0;
        self.pos = 0;
        self.scanned = 0;
        self.valid = 0;
        self.block.reset();
        self.block.skipping = false;
        retry.map(|ms| Event { retry: Some(ms), ..Event::default() })
    }

    /// Bytes of unterminated events discarded by [`Parser::finish`].
    pub fn discarded(&self) -> usize {
        self.discarded_bytes
    }
}

/// The end of the line at the start of `rest` (searched from `scanned` on): its length, the bytes
/// it consumes with its line end (LF, CR LF or CR), and whether it ended with a CR that was the
/// last byte available (an LF that follows belongs to it). `None` if no line end has arrived.
fn find_line_end(rest: &[u8], scanned: usize) -> Option<(usize, usize, bool)> {
    let len = scanned + first_line_break(&rest[scanned..])?;
    if rest[len] == b'\n' {
        return Some((len, len + 1, false));
    }
    Some(match rest.get(len + 1) {
        Some(b'\n') => (len, len + 2, false),
        Some(_) => (len, len + 1, false),
        None => (len, len + 1, true),
    })
}

/// The offset of the first LF or CR in `bytes`. An event's lines are short (tens of bytes), and
/// at that length a call to `memchr2` costs more in its dispatch and set-up than in its search
/// (a quarter of the parser's time in the codec bench); so the first 256 bytes are searched by
/// this loop, inlined into the parser, 16 bytes per step with SSE2 (which every x86-64 processor
/// has), and only a longer line goes on to `memchr2`, which is faster over long runs.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)] // see the SAFETY comment
fn first_line_break(bytes: &[u8]) -> Option<usize> {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    let (head, rest) = bytes.split_at(bytes.len().min(256));
    let mut chunks = head.chunks_exact(16);
    // SAFETY: SSE2 is part of the x86-64 baseline, so these instructions exist on every
    // processor this code runs on; each `loadu` reads the 16 bytes of one chunk, unaligned.
    unsafe {
        let (lf, cr) = (_mm_set1_epi8(b'\n' as i8), _mm_set1_epi8(b'\r' as i8));
        for (n, chunk) in chunks.by_ref().enumerate() {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let hits = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)));
            if hits != 0 {
                return Some(n * 16 + hits.trailing_zeros() as usize);
            }
        }
    }
    let tail = chunks.remainder(); // bytes only when `rest` is empty
    if let Some(at) = tail.iter().position(|&b| b == b'\n' || b == b'\r') {
        return Some(head.len() - tail.len() + at);
    }
    memchr::memchr2(b'\n', b'\r', rest).map(|at| head.len() + at)
}

/// The offset of the first LF or CR in `bytes`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn first_line_break(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', bytes)
}

impl Block {
    fn reset(&mut self) {
        self.event_type.clear();
        self.data.clear();
        self.id.clear();
        self.retry = None;
        self.size = 0;
        self.wire = Wire::Empty;
    }

    /// Copies the values that lie in `input` out of it.
    fn settle(&mut self, input: Input<'_>) {
        self.event_type.settle(input);
        self.data.settle(input);
        self.id.settle(input);
        if self.wire != Wire::Empty {
            self.wire = Wire::Lost; // its first bytes are about to leave the input
        }
    }

    /// A field's bit in [`Wire::At`], in the encoder's order (0: not a field it writes).
    fn field_bit(name: &[u8]) -> u8 {
        match name {
            b"event" => 1,
            b"data" => 2,
            b"id" => 4,
            b"retry" => 8,
            _ => 0,
        }
    }

    /// Notes the field line `span` for [`Wire`]: `canonical` if it is written as the encoder
    /// would, `lf` if it ended with a lone LF.
    fn note_wire(&mut self, name: &[u8], span: (usize, usize), canonical: bool, lf: bool) {
        let bit = if canonical { Self::field_bit(name) } else { 0 };
        self.wire = match self.wire {
            _ if bit == 0 => Wire::Lost,
            Wire::Empty => Wire::At { start: span.0, seen: bit, as_written: lf },
            // Bits rise in the encoder's order: one above every bit seen comes after them.
            Wire::At { start, seen, as_written } if seen & bit == 0 => {
                Wire::At { start, seen: seen | bit, as_written: as_written && lf && bit > seen }
            }
            _ => Wire::Lost,
        };
        if bit != 0 {
            self.lines[bit.trailing_zeros() as usize] = span;
        }
    }

    fn start_skipping(&mut self) {
        if !self.skipping {
            self.skipping = true;
            self.oversized += 1;
        }
        self.reset();
    }

    /// The line `input[start..end]`, without its line end (`lf`: a lone LF). True if it
    /// appended an event or comment to `batch`.
    fn line(&mut self, input: Input<'_>, (start, end): (usize, usize), lf: bool, batch: &mut Batch) -> bool {
        let line = &input.bytes[start..end];
        if line.is_empty() {
            if self.skipping {
                self.skipping = false;
                return false;
            }
            return self.dispatch(input, start, lf, batch);
        }
        if self.skipping {
            return false;
        }
        if line[0] == b':' {
            if self.wire != Wire::Empty {
                self.wire = Wire::Lost; // the block's bytes now hold a comment sent on its own
            }
            batch.push_fields(true, None, Some(&input.text((start + 1, end))), None, None);
            return true;
        }
        // Field names are short: a byte loop finds their colon sooner than a call to `memchr`.
        let colon = match line.iter().take(16).position(|&b| b == b':') {
            None if line.len() > 16 => memchr::memchr(b':', &line[16..]).map(|at| at + 16),
            found => found,
        };
        let (name_len, value_start) = match colon {
            Some(colon) => (colon, if line.get(colon + 1) == Some(&b' ') { colon + 2 } else { colon + 1 }),
            None => (line.len(), line.len()),
        };
        let (name, value) = (&line[..name_len], &line[value_start..]);
        let span = (start + value_start, end);
        self.size += value.len();
        if self.size > self.limit {
            self.start_skipping();
            return false;
        }
        // As the encoder writes it: `name: value`, or `name:` when the value is empty.
        let mut canonical = colon.is_some() && (value_start == name_len + 2) != value.is_empty();
        match name {
            b"event" => self.event_type.set(span),
            b"data" => self.data.append(input, span),
            b"id" if memchr::memchr(0, value).is_none() => self.id.set(span),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |n, d| (n * 10 + u64::from(d - b'0')).min(u64::from(MAX_WORD)));
                self.retry = Some(ms as u32);
                canonical &= itoa::Buffer::new().format(ms).as_bytes() == value;
            }
            _ => canonical = false,
        }
        self.note_wire(name, (start, end), canonical, lf);
        false
    }

    /// A blank line (at input offset `blank`; `lf` if it ended with a lone LF): append the block
    /// if a client would see any effect of it.
    fn dispatch(&mut self, input: Input<'_>, blank: usize, lf: bool, batch: &mut Batch) -> bool {
        let fires = self.data.present || self.id.present || self.retry.is_some();
        if fires && !self.push_wire(input, blank, lf, batch) {
            // Without data the type is cleared and never seen. Line ends are ASCII, so checking
            // UTF-8 on joined lines gives the same text as decoding the stream line by line.
            let event_type = if self.data.present { self.event_type.text(input) } else { None };
            let (data, id) = (self.data.text(input), self.id.text(input));
            batch.push_fields(false, event_type.as_deref(), data.as_deref(), id.as_deref(), self.retry);
        }
        // Otherwise nothing fires and nothing changes: `event: x` alone, or a lone blank line.
        self.reset();
        fires
    }

    /// Appends the block in the encoder's form from its lines in the input, if they are all
    /// checked UTF-8 and each one the encoder writes (see [`Wire`]); false if it must be
    /// appended field by field.
    fn push_wire(&self, input: Input<'_>, blank: usize, lf: bool, batch: &mut Batch) -> bool {
        let Wire::At { start, seen, as_written } = self.wire else { return false };
        // A type without data is not written by the encoder.
        if blank > input.valid || (self.event_type.present && !self.data.present) {
            return false;
        }
        if as_written && lf {
            let value = |field: &Field| field.span.map(|(a, b)| (a - start, b - a));
            let (t, d, i) = (value(&self.event_type), value(&self.data), value(&self.id));
            batch.push_wire(&input.bytes[start..blank + 1], t, d, i, self.retry);
        } else {
            // Where each value starts in its line: the parser's own span, so no field name's
            // length is written down twice (a retry's value is not a span of the batch).
            let line = |n: usize, value: Option<(usize, usize)>| {
                let (from, to) = self.lines[n];
                (seen & (1 << n) != 0).then(|| (&input.bytes[from..to], value.map_or(to, |v| v.0) - from))
            };
            let (t, d, i) = (self.event_type.span, self.data.span, self.id.span);
            batch.push_lines([line(0, t), line(1, d), line(2, i), line(3, None)], self.retry);
        }
        true
    }
}

/// The input being parsed, and how much of it is known to be UTF-8.
#[derive(Clone, Copy)]
struct Input<'a> {
    bytes: &'a [u8],
    valid: usize,
}

impl<'a> Input<'a> {
    /// `bytes[start..end]` as UTF-8. Spans start and end next to ASCII bytes (line ends, `:`),
    /// so one inside the checked prefix is whole UTF-8 by itself.
    fn text(self, (start, end): (usize, usize)) -> Cow<'a, [u8]> {
        let value = &self.bytes[start..end];
        if end <= self.valid { Cow::Borrowed(value) } else { utf8(value) }
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

#[cfg(test)]
mod tests {
    use super::first_line_break;

    /// The 16-byte steps, the byte-by-byte tail and the search past 256 bytes find the first
    /// break wherever it lies: every length to well past 256, every position, LF or CR, a second
    /// break after it.
    #[test]
    fn the_first_line_break_is_found_at_every_offset() {
        for len in 0..=300 {
            let clean = vec![b'a'; len];
            assert_eq!(first_line_break(&clean), None, "no break in {len} bytes");
            for at in 0..len {
                for (first, second) in [(b'\n', b'\r'), (b'\r', b'\n')] {
                    let mut bytes = clean.clone();
                    bytes[at] = first;
                    if let Some(later) = bytes.get_mut(at + 1 + (len - at) / 2) {
                        *later = second;
                    }
                    assert_eq!(first_line_break(&bytes), Some(at), "{first} at {at} of {len}");
                }
            }
        }
    }
}
