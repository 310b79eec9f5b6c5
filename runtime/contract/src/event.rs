//! The owned form of one event-stream block, shared by the codec (which parses into it and
//! encodes from it) and the batch (which copies it in and out). It sits below both, so neither
//! depends on the other for it.

use bytes::Bytes;

/// One parsed block of an event stream: an event, a comment line, or a block that only sets the
/// id and/or the reconnection time.
///
/// Fields are valid UTF-8. From the parser: a type has no CR or LF; an id has no CR, LF or NUL;
/// data (its `data:` lines joined with LF) has no CR; a comment's text (in `data`) has neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// A comment line (`:text`); its text, after the colon, is in `data`.
    pub comment: bool,
    /// The `event:` field.
    pub event_type: Option<Bytes>,
    /// The data; `None` when the block had no `data:` line (a client fires nothing for it).
    pub data: Option<Bytes>,
    /// The `id:` field of this block.
    pub id: Option<Bytes>,
    /// The `retry:` field, in milliseconds (clamped below 2^31).
    pub retry: Option<u32>,
}

impl Event {
    /// A message event with this data.
    pub fn message(data: impl Into<Bytes>) -> Self {
        Event { data: Some(data.into()), ..Default::default() }
    }

    /// A comment line with this text.
    pub fn comment(text: impl Into<Bytes>) -> Self {
        Event { comment: true, data: Some(text.into()), ..Default::default() }
    }

    /// Sets the event type.
    pub fn with_type(mut self, t: impl Into<Bytes>) -> Self {
        self.event_type = Some(t.into());
        self
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<Bytes>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the retry time.
    pub fn with_retry(mut self, ms: u32) -> Self {
        self.retry = Some(ms);
        self
    }
}
