//! Writing events back out. Output always uses LF line ends.
//!
//! An event whose every line is one the encoder writes (the parser checks this; most servers
//! write events so, in whatever field order and line ends) and that the chain kept carries its
//! wire form in the batch, the encoder's bytes for it: [`write_batch`] copies those instead of
//! encoding it again. The output is the same bytes either way.

use super::Event;
use crate::batch::Batch;
use sluicegate_guest::{BatchView, EventRef};

/// Appends one block to `out`.
///
/// Whatever the field content, the output cannot hold more blocks than the one described:
/// data is split into one `data:` line per line (at CR, LF or CRLF); a comment is split into one
/// comment line per line; an event type containing CR or LF, or an id containing CR, LF or NUL,
/// is not written (the parser and the verdict checks never let such a value through, so this is
/// a last line of defence, not a path taken in practice).
pub fn encode(
    out: &mut Vec<u8>,
    comment: bool,
    event_type: Option<&[u8]>,
    data: Option<&[u8]>,
    id: Option<&[u8]>,
    retry: Option<u32>,
) {
    if comment {
        for line in lines(data.unwrap_or_default()) {
            out.push(b':');
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
        return;
    }
    if let Some(t) = event_type.filter(|t| !t.iter().any(|&b| b == b'\r' || b == b'\n')) {
        field(out, b"event", t);
    }
    if let Some(data) = data {
        for line in lines(data) {
            field(out, b"data", line);
        }
    }
    if let Some(id) = id.filter(|id| !id.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)) {
        field(out, b"id", id);
    }
    if let Some(ms) = retry {
        out.extend_from_slice(b"retry: ");
        out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends a parsed [`Event`].
pub fn encode_event(out: &mut Vec<u8>, e: &Event) {
    encode(out, e.comment, e.event_type.as_deref(), e.data.as_deref(), e.id.as_deref(), e.retry);
}

/// Appends one event of a batch.
pub fn encode_ref(out: &mut Vec<u8>, e: &EventRef<'_>) {
    if let Some(text) = e.comment() {
        return encode(out, true, None, Some(text.as_bytes()), None, None);
    }
    encode(
        out,
        false,
        e.event_type().map(str::as_bytes),
        e.data().map(str::as_bytes),
        e.id().map(str::as_bytes),
        e.retry(),
    );
}

/// Appends every event of a batch, each encoded from its fields.
pub fn encode_batch(out: &mut Vec<u8>, batch: BatchView<'_>) {
    for e in batch.iter() {
        encode_ref(out, &e);
    }
}

/// Appends every event of a batch: the bytes of one write to the client. An event with its wire
/// form is copied; the others are encoded. Wire forms of events appended one after another lie
/// back to back in the batch, so a run of them (a whole batch the chain kept) is one copy.
pub fn write_batch(out: &mut Vec<u8>, batch: &Batch) {
    let mut run = 0..0;
    for i in 0..batch.len() {
        match batch.wire_range(i) {
            Some(wire) if wire.start == run.end => run.end = wire.end,
            Some(wire) => out.extend_from_slice(&batch.bytes()[std::mem::replace(&mut run, wire)]),
            None => {
                out.extend_from_slice(&batch.bytes()[std::mem::replace(&mut run, 0..0)]);
                encode_ref(out, &batch.view().get(i).expect("i < len"));
            }
        }
    }
    out.extend_from_slice(&batch.bytes()[run]);
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    if value.is_empty() {
        out.extend_from_slice(b":\n");
        return;
    }
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits at CRLF, CR or LF; always yields at least one (possibly empty) line.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr2(b'\n', b'\r', text) {
            None => {
                rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i] == b'\r' && text.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    })
}
