//! Building a verdict: the ops that turn a batch into the output events.

use crate::abi::*;

/// A new event to insert, or the fields of a replacement. Borrowed strings; nothing is copied
/// until it is written into a [`VerdictBuilder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewEvent<'a> {
    /// The `event:` field (none: a message).
    pub event_type: Option<&'a str>,
    /// The data (none: an event without data, which a client does not fire).
    pub data: Option<&'a str>,
    /// The `id:` field.
    pub id: Option<&'a str>,
    /// The `retry:` field, in milliseconds.
    pub retry: Option<u32>,
    /// A comment line; its text is `data`, and no other field may be set.
    pub comment: bool,
}

impl<'a> NewEvent<'a> {
    /// A message event with this data (an unnamed event, which clients see as `message`).
    pub fn message(data: &'a str) -> Self {
        NewEvent { data: Some(data), ..Default::default() }
    }

    /// A comment line `:text`. Clients ignore it; servers send them as keep-alives.
    pub fn comment(text: &'a str) -> Self {
        NewEvent { data: Some(text), comment: true, ..Default::default() }
    }

    /// Sets the event type (the `event:` field).
    pub fn with_type(mut self, event_type: &'a str) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Sets the id (the `id:` field).
    pub fn with_id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the reconnection time in milliseconds (the `retry:` field); must be below 2^31.
    pub fn with_retry(mut self, retry: u32) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// One field of a replacement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Field<T> {
    /// Keep the original event's value (or its absence).
    #[default]
    Inherit,
    /// Use this value.
    Set(T),
    /// Leave the field out.
    Remove,
}

/// How to rewrite one event: each field inherited, set or removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replacement<'a> {
    /// The `event:` field.
    pub event_type: Field<&'a str>,
    /// The data.
    pub data: Field<&'a str>,
    /// The `id:` field.
    pub id: Field<&'a str>,
    /// The `retry:` field, in milliseconds.
    pub retry: Field<u32>,
}

impl<'a> Replacement<'a> {
    /// Keep type, id and retry; replace the data.
    pub fn data(data: &'a str) -> Self {
        Replacement { data: Field::Set(data), ..Default::default() }
    }
}

/// Collects the ops of a verdict. Reuse one builder across batches with [`VerdictBuilder::clear`]
/// to avoid allocating.
///
/// Runs of `keep` and of `drop` are merged, so keeping a whole batch costs two words.
#[derive(Debug, Default, Clone)]
pub struct VerdictBuilder {
    ops: Vec<u32>,
    bytes: Vec<u8>,
    /// Position in `ops` of the last keep/drop op, while it is the last op.
    open_run: Option<usize>,
    consumed: usize,
    ended: bool,
    /// Bytes to reserve when the first event is written (see [`VerdictBuilder::expect_bytes`]).
    bytes_hint: usize,
}

impl VerdictBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes.clear();
        self.open_run = None;
        self.consumed = 0;
        self.ended = false;
    }

    /// Says how many bytes the verdict may write (a batch's own size, say), so that a verdict
    /// that rewrites many events grows its buffer once instead of doubling. Nothing is reserved
    /// until an event is written, so a verdict that only keeps and drops costs nothing more.
    pub fn expect_bytes(&mut self, bytes: usize) {
        self.bytes_hint = bytes;
    }

    /// How many input events the ops so far consume.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// True once [`VerdictBuilder::end`] was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn run(&mut self, op: u32, count: usize) {
        if count == 0 {
            return;
        }
        self.consumed += count;
        if let Some(at) = self.open_run
            && self.ops[at] == op
        {
            self.ops[at + 1] += count as u32;
            return;
        }
        self.open_run = Some(self.ops.len());
        self.ops.extend_from_slice(&[op, count as u32]);
    }

    /// Forwards the next input event unchanged.
    pub fn keep(&mut self) {
        self.run(OP_KEEP, 1);
    }

    /// Forwards the next `count` input events unchanged.
    pub fn keep_n(&mut self, count: usize) {
        self.run(OP_KEEP, count);
    }

    /// Drops the next input event. An id or retry it carried is still forwarded, on its own.
    #[allow(clippy::should_implement_trait, reason = "`drop` is the verdict op's name in the WIT contract")]
    pub fn drop(&mut self) {
        self.run(OP_DROP, 1);
    }

    /// Drops the next `count` input events.
    pub fn drop_n(&mut self, count: usize) {
        self.run(OP_DROP, count);
    }

    fn span(&mut self, value: Option<&str>) -> (u32, u32) {
        match value {
            Some(s) => {
                let start = self.bytes.len() as u32;
                self.bytes.extend_from_slice(s.as_bytes());
                (start, s.len() as u32)
            }
            None => (0, 0),
        }
    }

    fn describe(
        &mut self,
        op: u32,
        mut fields: u32,
        t: Option<&str>,
        d: Option<&str>,
        i: Option<&str>,
        r: Option<u32>,
    ) {
        self.open_run = None;
        if self.bytes.capacity() == 0 {
            self.bytes.reserve(self.bytes_hint);
        }
        fields |= if t.is_some() { HAS_TYPE } else { 0 }
            | if d.is_some() { HAS_DATA } else { 0 }
            | if i.is_some() { HAS_ID } else { 0 }
            | if r.is_some() { HAS_RETRY } else { 0 };
        let (ts, tl) = self.span(t);
        let (ds, dl) = self.span(d);
        let (is, il) = self.span(i);
        self.ops.extend_from_slice(&[op, fields, ts, tl, ds, dl, is, il, r.unwrap_or(0)]);
    }

    /// Emits a new event at this point, consuming no input event.
    pub fn insert(&mut self, event: &NewEvent<'_>) {
        let comment = if event.comment { COMMENT } else { 0 };
        self.describe(OP_INSERT, comment, event.event_type, event.data, event.id, event.retry);
    }

    /// Consumes the next input event and emits it rewritten as `with` says.
    pub fn replace(&mut self, with: &Replacement<'_>) {
        self.consumed += 1;
        fn split<T>(field: Field<T>, inherit: u32) -> (u32, Option<T>) {
            match field {
                Field::Inherit => (inherit, None),
                Field::Set(v) => (0, Some(v)),
                Field::Remove => (0, None),
            }
        }
        let (a, t) = split(with.event_type, INHERIT_TYPE);
        let (b, d) = split(with.data, INHERIT_DATA);
        let (c, i) = split(with.id, INHERIT_ID);
        let (e, r) = split(with.retry, INHERIT_RETRY);
        self.describe(OP_REPLACE, a | b | c | e, t, d, i, r);
    }

    /// Consumes the next input event and emits `event` in its place; nothing is inherited.
    pub fn replace_with(&mut self, event: &NewEvent<'_>) {
        self.consumed += 1;
        let comment = if event.comment { COMMENT } else { 0 };
        self.describe(OP_REPLACE, comment, event.event_type, event.data, event.id, event.retry);
    }

    /// Ends the stream after this verdict's output. Input events not yet consumed are dropped by
    /// [`VerdictBuilder::complete`].
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Accounts for the input events the ops have not mentioned: kept, or dropped if the stream
    /// was ended; then appends the end op if asked for. A verdict that keeps everything becomes
    /// the empty verdict. The SDK calls this after
    /// [`crate::Interceptor::process_batch`], so interceptors only mention what they change.
    pub fn complete(&mut self, batch_len: usize) {
        let rest = batch_len.saturating_sub(self.consumed);
        if self.ended {
            self.drop_n(rest);
            self.ops.push(OP_END);
            self.open_run = None;
        } else {
            self.keep_n(rest);
            if self.ops.len() == 2 && self.ops[0] == OP_KEEP {
                // Everything kept: the empty verdict says so without allocating.
                self.ops.clear();
                self.open_run = None;
            }
        }
    }

    /// The op words.
    pub fn ops(&self) -> &[u32] {
        &self.ops
    }

    /// The bytes the ops' spans point into.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the ops and bytes, leaving the builder empty.
    pub fn take(&mut self) -> (Vec<u32>, Vec<u8>) {
        let parts = (core::mem::take(&mut self.ops), core::mem::take(&mut self.bytes));
        self.clear();
        parts
    }
}
