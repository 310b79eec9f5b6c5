//! Zero-copy read access to a batch: one byte buffer and a flat index of spans into it.

use crate::abi::*;
use core::fmt;

/// A batch of events as the host hands it over. Every accessor borrows from the batch's buffer.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    index: &'a [u32],
}

impl<'a> BatchView<'a> {
    /// Checks every guarantee of the layout (spans in range, UTF-8, forbidden characters) and
    /// returns the view, or the first problem found.
    pub fn new(bytes: &'a [u8], index: &'a [u32]) -> Result<Self, LayoutError> {
        if !index.len().is_multiple_of(STRIDE) {
            return Err(LayoutError::IndexLength(index.len()));
        }
        for (i, words) in index.chunks_exact(STRIDE).enumerate() {
            check_event(words, bytes, 0).map_err(|problem| LayoutError::Event(i, problem))?;
        }
        Ok(BatchView { bytes, index })
    }

    /// A view over a batch whose layout is already known to be valid.
    ///
    /// # Safety
    /// `BatchView::new(bytes, index)` would succeed. The string accessors rely on it for UTF-8.
    #[allow(unsafe_code)] // the caller's promise, documented above
    pub unsafe fn new_unchecked(bytes: &'a [u8], index: &'a [u32]) -> Self {
        BatchView { bytes, index }
    }

    /// The number of events (including comments and id/retry-only entries).
    pub fn len(&self) -> usize {
        self.index.len() / STRIDE
    }

    /// True if the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The `i`-th event, or none past the end.
    pub fn get(&self, i: usize) -> Option<EventRef<'a>> {
        let words = self.index.get(i * STRIDE..(i + 1) * STRIDE)?;
        Some(EventRef { bytes: self.bytes, words })
    }

    /// Every event, in stream order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'a>> + 'a {
        let bytes = self.bytes;
        self.index.chunks_exact(STRIDE).map(move |words| EventRef { bytes, words })
    }

    /// The raw buffer.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The raw index, `STRIDE` words per event.
    pub fn index(&self) -> &'a [u32] {
        self.index
    }
}

impl fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One event of a batch, borrowed.
#[derive(Clone, Copy)]
pub struct EventRef<'a> {
    bytes: &'a [u8],
    words: &'a [u32],
}

impl<'a> EventRef<'a> {
    /// The `fields` word: which fields are present (see [`crate::abi`]).
    pub fn fields(&self) -> u32 {
        self.words[W_FIELDS]
    }

    /// The raw 8-word description of this event.
    pub fn words(&self) -> &'a [u32] {
        self.words
    }

    #[allow(unsafe_code)] // see the SAFETY comment
    fn span(&self, at: usize) -> &'a str {
        let start = self.words[at] as usize;
        let len = self.words[at + 1] as usize;
        // SAFETY: the view's constructor guarantees that spans are valid UTF-8.
        unsafe { core::str::from_utf8_unchecked(&self.bytes[start..start + len]) }
    }

    fn field(&self, bit: u32, at: usize) -> Option<&'a str> {
        (self.fields() & bit != 0).then(|| self.span(at))
    }

    /// True for a comment line (`:text`); see [`EventRef::comment`].
    pub fn is_comment(&self) -> bool {
        self.fields() & COMMENT != 0
    }

    /// The text after the colon of a comment line (leading space included), or none.
    pub fn comment(&self) -> Option<&'a str> {
        self.is_comment().then(|| self.span(W_DATA))
    }

    /// True when a client would fire this event: it has data and is not a comment.
    pub fn is_message(&self) -> bool {
        self.fields() & (HAS_DATA | COMMENT) == HAS_DATA
    }

    /// The `event:` field, if present.
    pub fn event_type(&self) -> Option<&'a str> {
        self.field(HAS_TYPE, W_TYPE)
    }

    /// The type a client sees: the `event:` field, or `message` when absent or empty.
    pub fn effective_type(&self) -> &'a str {
        match self.event_type() {
            Some(t) if !t.is_empty() => t,
            _ => "message",
        }
    }

    /// The data (the `data:` lines joined with LF), if this is a message.
    pub fn data(&self) -> Option<&'a str> {
        if self.is_comment() { None } else { self.field(HAS_DATA, W_DATA) }
    }

    /// The `id:` field, if present.
    pub fn id(&self) -> Option<&'a str> {
        self.field(HAS_ID, W_ID)
    }

    /// The `retry:` field in milliseconds, if present.
    pub fn retry(&self) -> Option<u32> {
        (self.fields() & HAS_RETRY != 0).then(|| self.words[W_RETRY])
    }
}

impl fmt::Debug for EventRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.comment() {
            return f.debug_tuple("Comment").field(&text).finish();
        }
        f.debug_struct("Event")
            .field("type", &self.event_type())
            .field("data", &self.data())
            .field("id", &self.id())
            .field("retry", &self.retry())
            .finish()
    }
}

/// Why an index entry breaks the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A bit outside the allowed set is set in the `fields` word.
    UnknownBits(u32),
    /// A span reaches past the end of its buffer.
    SpanOutOfRange,
    /// A field is not valid UTF-8.
    InvalidUtf8,
    /// An event type contains CR or LF.
    TypeLineBreak,
    /// An id contains CR, LF or NUL.
    IdForbiddenChar,
    /// Data contains CR (LF is allowed: it separates `data:` lines).
    DataCarriageReturn,
    /// A comment contains CR or LF.
    CommentLineBreak,
    /// A comment also sets event fields.
    CommentWithFields,
    /// A retry value is 2^31 or more.
    RetryTooLarge,
    /// A word that is not a retry value is 2^31 or more.
    WordTooLarge,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Problem::UnknownBits(bits) => return write!(f, "unknown field bits {bits:#x}"),
            Problem::SpanOutOfRange => "a span reaches past the end of the buffer",
            Problem::InvalidUtf8 => "a field is not valid UTF-8",
            Problem::TypeLineBreak => "an event type contains CR or LF",
            Problem::IdForbiddenChar => "an id contains CR, LF or NUL",
            Problem::DataCarriageReturn => "data contains CR",
            Problem::CommentLineBreak => "a comment contains CR or LF",
            Problem::CommentWithFields => "a comment also sets event type, id or retry",
            Problem::RetryTooLarge => "a retry value is 2^31 or more",
            Problem::WordTooLarge => "a word is 2^31 or more",
        };
        f.write_str(text)
    }
}

/// A batch that breaks the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The index length is not a multiple of [`STRIDE`].
    IndexLength(usize),
    /// Entry `.0` breaks the layout.
    Event(usize, Problem),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::IndexLength(n) => {
                write!(f, "index length {n} is not a multiple of {STRIDE}")
            }
            LayoutError::Event(i, p) => write!(f, "event {i}: {p}"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Checks one 8-word event description against `bytes`. `extra_bits` are bits the caller allows
/// besides [`FIELD_BITS`] (the inherit bits, for a `replace`); a field whose bit is clear is not
/// looked at.
pub fn check_event(words: &[u32], bytes: &[u8], extra_bits: u32) -> Result<(), Problem> {
    let fields = words[W_FIELDS];
    if fields & !(FIELD_BITS | extra_bits) != 0 {
        return Err(Problem::UnknownBits(fields & !(FIELD_BITS | extra_bits)));
    }
    if words.iter().any(|&w| w > MAX_WORD) {
        return Err(if words[W_RETRY] > MAX_WORD { Problem::RetryTooLarge } else { Problem::WordTooLarge });
    }
    let span = |at: usize| -> Result<&str, Problem> {
        let start = words[at] as usize;
        let end = start + words[at + 1] as usize;
        let raw = bytes.get(start..end).ok_or(Problem::SpanOutOfRange)?;
        core::str::from_utf8(raw).map_err(|_| Problem::InvalidUtf8)
    };
    if fields & COMMENT != 0 {
        if fields & (HAS_TYPE | HAS_ID | HAS_RETRY) != 0 {
            return Err(Problem::CommentWithFields);
        }
        if span(W_DATA)?.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(Problem::CommentLineBreak);
        }
        return Ok(());
    }
    if fields & HAS_TYPE != 0 && span(W_TYPE)?.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(Problem::TypeLineBreak);
    }
    if fields & HAS_DATA != 0 && span(W_DATA)?.as_bytes().contains(&b'\r') {
        return Err(Problem::DataCarriageReturn);
    }
    if fields & HAS_ID != 0 && span(W_ID)?.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(Problem::IdForbiddenChar);
    }
    Ok(())
}
