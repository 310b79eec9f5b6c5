//! An owned batch in the wire layout of `wit/interceptor.wit`: the unit that moves through a
//! chain of interceptors. Its small accessors are `#[inline]`: the engine and the host, which call
//! them per event, are other crates.

use crate::event::Event;
use sluicegate_guest::abi::*;
use sluicegate_guest::{BatchView, EventRef};

/// A batch of events: one byte buffer and a flat index, reused from batch to batch.
///
/// Every way of filling a batch keeps the layout's guarantees (spans in range, UTF-8, no line
/// breaks in types and ids), so [`Batch::view`] needs no check.
///
/// Besides the layout a guest sees, each event may carry its **wire form**: exactly what the
/// encoder would write for it, taken from the lines it arrived in when each is one the encoder
/// writes (the parser checks this; see `sse::Parser`). Its fields then lie inside those bytes,
/// and an event the chain keeps is written out by copying them instead of encoding it again.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    bytes: Vec<u8>,
    index: Vec<u32>,
    /// Per event, where its wire form lies in `bytes` (start, length); length 0 if it has none
    /// (a wire form always ends with a line end, so it is never empty).
    wire: Vec<[u32; 2]>,
}

/// Batches are equal when their events are: where the bytes lie, and whether an event carries
/// its wire form, does not matter.
impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &EventRef<'_>, b: &EventRef<'_>| {
            a.comment() == b.comment()
                && a.event_type() == b.event_type()
                && a.data() == b.data()
                && a.id() == b.id()
                && a.retry() == b.retry()
        };
        self.len() == other.len() && self.view().iter().zip(other.view().iter()).all(|(a, b)| same(&a, &b))
    }
}

impl Eq for Batch {}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the batch, keeping its allocations.
    #[inline]
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.index.clear();
        self.wire.clear();
    }

    /// The number of events.
    #[inline]
    pub fn len(&self) -> usize {
        self.index.len() / STRIDE
    }

    /// True if the batch holds no event.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of field content held.
    #[inline]
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The field bytes of every event, back to back (the WIT `batch.bytes`).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The index: eight words per event (the WIT `batch.index`).
    #[inline]
    pub fn index(&self) -> &[u32] {
        &self.index
    }

    /// Borrowed access to the events.
    #[allow(unsafe_code)] // see the SAFETY comment
    #[inline]
    pub fn view(&self) -> BatchView<'_> {
        // SAFETY: every method that fills a batch maintains the layout.
        unsafe { BatchView::new_unchecked(&self.bytes, &self.index) }
    }

    fn span(&mut self, value: Option<&[u8]>) -> (u32, u32) {
        match value {
            Some(v) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(v);
                (start as u32, v.len() as u32)
            }
            None => (0, 0),
        }
    }

    /// Where the batch ends now, to [`Batch::rewind`] to.
    #[inline]
    pub fn mark(&self) -> Mark {
        Mark { bytes: self.bytes.len(), index: self.index.len() }
    }

    /// Removes every event appended since `mark` was taken.
    #[inline]
    pub fn rewind(&mut self, mark: Mark) {
        self.bytes.truncate(mark.bytes);
        self.index.truncate(mark.index);
        self.wire.truncate(mark.index / STRIDE);
    }

    /// Event `i`'s wire form, if it carries one: the bytes to write for it unchanged.
    #[inline]
    pub fn wire(&self, i: usize) -> Option<&[u8]> {
        self.wire_range(i).map(|range| &self.bytes[range])
    }

    /// Where event `i`'s wire form lies in [`Batch::bytes`], if it carries one.
    #[inline]
    pub fn wire_range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let [start, len] = *self.wire.get(i)?;
        (len > 0).then_some(start as usize..(start + len) as usize)
    }

    /// Appends an event from its wire form: `wire` is copied once, and the fields are the spans
    /// of it given (start, length, relative to `wire`). The caller guarantees what the layout
    /// requires of the fields (UTF-8, no line break in the type, none nor NUL in the id), and
    /// that `wire` is exactly the encoder's output for them.
    pub(crate) fn push_wire(
        &mut self,
        wire: &[u8],
        t: Option<(usize, usize)>,
        d: Option<(usize, usize)>,
        i: Option<(usize, usize)>,
        r: Option<u32>,
    ) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(wire);
        let at = |span: Option<(usize, usize)>| span.map_or((0, 0), |(s, l)| ((base + s) as u32, l as u32));
        let ((ts, tl), (ds, dl), (is, il)) = (at(t), at(d), at(i));
        let fields = if t.is_some() { HAS_TYPE } else { 0 }
            | if d.is_some() { HAS_DATA } else { 0 }
            | if i.is_some() { HAS_ID } else { 0 }
            | if r.is_some() { HAS_RETRY } else { 0 };
        debug_assert!(self.bytes.len() <= MAX_WORD as usize, "batch buffer over 2^31 bytes");
        self.index.extend_from_slice(&[fields, ts, tl, ds, dl, is, il, r.unwrap_or(0)]);
        self.wire.push([base as u32, wire.len() as u32]);
    }

    /// Appends an event in the encoder's form from its field lines, given in the encoder's order
    /// (`event`, `data`, `id`, `retry`), each `name: value` (or `name:` when empty) without its
    /// line end and with where its value starts in it: each is copied and ended with LF, then the
    /// blank line, and the fields are spans of the result, which becomes the event's wire form.
    /// The caller guarantees what [`Batch::push_wire`] requires of the fields, and that `retry`
    /// is what its line says.
    pub(crate) fn push_lines(&mut self, lines: [Option<(&[u8], usize)>; 4], retry: Option<u32>) {
        let base = self.bytes.len();
        let mut value = [(0, 0); 3];
        for (n, (line, at)) in lines.iter().enumerate().filter_map(|(n, line)| line.map(|l| (n, l))) {
            if n < 3 {
                value[n] = ((self.bytes.len() + at) as u32, (line.len() - at) as u32);
            }
            self.bytes.extend_from_slice(line);
            self.bytes.push(b'\n');
        }
        self.bytes.push(b'\n');
        let fields = if lines[0].is_some() { HAS_TYPE } else { 0 }
            | if lines[1].is_some() { HAS_DATA } else { 0 }
            | if lines[2].is_some() { HAS_ID } else { 0 }
            | if retry.is_some() { HAS_RETRY } else { 0 };
        debug_assert!(self.bytes.len() <= MAX_WORD as usize, "batch buffer over 2^31 bytes");
        let [(ts, tl), (ds, dl), (is, il)] = value;
        self.index.extend_from_slice(&[fields, ts, tl, ds, dl, is, il, retry.unwrap_or(0)]);
        self.wire.push([base as u32, (self.bytes.len() - base) as u32]);
    }

    /// Appends a copy of `from`'s event `i`, with its wire form if it has one.
    pub fn push_from(&mut self, from: &Batch, i: usize) {
        let Some(wire) = from.wire(i) else {
            if let Some(e) = from.view().get(i) {
                self.push_ref(&e);
            }
            return;
        };
        let words = &from.index[i * STRIDE..(i + 1) * STRIDE];
        let start = from.wire[i][0];
        let span = |flag: u32, at: u32, len: u32| (words[0] & flag != 0).then(|| ((at - start) as usize, len as usize));
        let (t, d, id) =
            (span(HAS_TYPE, words[1], words[2]), span(HAS_DATA, words[3], words[4]), span(HAS_ID, words[5], words[6]));
        self.push_wire(wire, t, d, id, (words[0] & HAS_RETRY != 0).then_some(words[7]));
    }

    /// Appends fields that already meet the layout's guarantees.
    pub(crate) fn push_fields(
        &mut self,
        comment: bool,
        t: Option<&[u8]>,
        d: Option<&[u8]>,
        i: Option<&[u8]>,
        r: Option<u32>,
    ) {
        let fields = if comment { COMMENT } else { 0 }
            | if t.is_some() { HAS_TYPE } else { 0 }
            | if d.is_some() && !comment { HAS_DATA } else { 0 }
            | if i.is_some() { HAS_ID } else { 0 }
            | if r.is_some() { HAS_RETRY } else { 0 };
        let (ts, tl) = self.span(t);
        let (ds, dl) = self.span(d);
        let (is, il) = self.span(i);
        debug_assert!(self.bytes.len() <= MAX_WORD as usize, "batch buffer over 2^31 bytes");
        self.index.extend_from_slice(&[fields, ts, tl, ds, dl, is, il, r.unwrap_or(0)]);
        self.wire.push([0, 0]);
    }

    /// Appends a parsed event. The parser guarantees the field rules; an event built by hand that
    /// breaks them (a type with a line break, an id with NUL) loses that field, as the encoder
    /// would drop it.
    pub fn push(&mut self, e: &Event) {
        fn clean<'a>(v: &'a Option<bytes::Bytes>, bad: &[u8]) -> Option<&'a [u8]> {
            v.as_deref().filter(|v| !v.iter().any(|b| bad.contains(b)) && std::str::from_utf8(v).is_ok())
        }
        if e.comment {
            let text = clean(&e.data, b"\r\n").unwrap_or_default();
            return self.push_fields(true, None, Some(text), None, None);
        }
        let retry = e.retry.map(|r| r.min(MAX_WORD));
        self.push_fields(false, clean(&e.event_type, b"\r\n"), clean(&e.data, b"\r"), clean(&e.id, b"\r\n\0"), retry);
    }

    /// Appends a message event with this data, which must have no CR (the layout's rule for
    /// data); `text` being a `str` makes it UTF-8.
    pub fn push_data(&mut self, text: &str) {
        debug_assert!(!text.contains('\r'), "data with a CR");
        self.push_fields(false, None, Some(text.as_bytes()), None, None);
    }

    /// Appends a copy of another batch's event.
    #[inline]
    pub fn push_ref(&mut self, e: &EventRef<'_>) {
        match e.comment() {
            Some(text) => self.push_fields(true, None, Some(text.as_bytes()), None, None),
            None => self.push_fields(
                false,
                e.event_type().map(str::as_bytes),
                e.data().map(str::as_bytes),
                e.id().map(str::as_bytes),
                e.retry(),
            ),
        }
    }

    /// Appends a copy of every event of `view`.
    pub fn extend_from(&mut self, view: BatchView<'_>) {
        for e in view.iter() {
            self.push_ref(&e);
        }
    }

    /// The events, as owned [`Event`]s (for tests and tools; copies every field).
    pub fn to_events(&self) -> Vec<Event> {
        self.view().iter().map(|e| to_event(&e)).collect()
    }
}

/// A position in a [`Batch`]; see [`Batch::mark`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    bytes: usize,
    index: usize,
}

/// An owned copy of a batch event.
pub fn to_event(e: &EventRef<'_>) -> Event {
    let own = |s: Option<&str>| s.map(|s| bytes::Bytes::copy_from_slice(s.as_bytes()));
    match e.comment() {
        Some(text) => Event::comment(bytes::Bytes::copy_from_slice(text.as_bytes())),
        None => Event {
            comment: false,
            event_type: own(e.event_type()),
            data: own(e.data()),
            id: own(e.id()),
            retry: e.retry(),
        },
    }
}

impl FromIterator<Event> for Batch {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Self {
        let mut batch = Batch::new();
        for e in iter {
            batch.push(&e);
        }
        batch
    }
}
