//! Guardrails over streamed text: the text of LLM token streams as channels that a
//! [`TextTransform`] reads and rewrites as it arrives, holding back only what may still match.
//!
//! A model's answer reaches the proxy one token (1-4 characters) per event, so a value to hide
//! (an e-mail address, a phrase) spans several events, often several batches. [`TextStream`]
//! finds the text-bearing events by their content, with no configuration:
//!
//! | format | text (one channel per) | closes a channel |
//! |---|---|---|
//! | OpenAI Chat Completions | `choices[].delta.content` (choice `index`) | a choice's `finish_reason`; `data: [DONE]` closes all |
//! | OpenAI Responses | `response.output_text.delta` `delta` (`item_id`, `content_index`) | `response.output_text.done`, `.content_part.done`, `.output_item.done`, `response.completed` / `.incomplete` / `.failed` |
//! | Anthropic Messages | `content_block_delta` with a `text_delta` (block `index`) | `content_block_stop`; `message_delta` and `message_stop` close all |
//!
//! For each channel it feeds the transform the text not yet released (what it held plus what
//! just arrived) and rewrites the delta's JSON string with what the transform releases; every
//! other byte of the event, its name, id and position are kept. An event whose text is all held
//! still goes out, with empty text. Held text is released in an event inserted just before the
//! channel's closing event (or in the closing event itself when it carries the channel's last
//! delta) and in [`TextStream::finish`]; never after. The events that repeat the whole text
//! (`response.output_text.done` `text`, `content_part.done` `part.text`, `output_item.done`
//! `item.content[].text`, `response.completed` `response.output[].content[].text`) get the
//! transform applied to that whole text, so a client's final object never holds what its deltas
//! hid. Everything else in an event (other fields of a delta, and every event that is not a
//! delta) goes through the transform as a text of its own, as its raw bytes.
//!
//! When the transform stops the stream ([`Flow::Stop`]), the text before the match goes out, and
//! the stream ends the way its format ends a cut-short answer, so the providers' SDKs finish
//! cleanly and report why: see [`StopReason`].

use crate::json::{self, Doc, Kind};
use crate::{
    BatchView, Config, EndReason, EventRef, Interceptor, NewEvent, Replacement, StreamContext, VerdictBuilder,
};

/// What a transform did with the pending text of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The first `n` bytes of the pending text are released (their transformed text was written
    /// to `out`); the rest is held until more text arrives. `n` must be a character boundary,
    /// and the whole text when `last` was set.
    Continue(usize),
    /// The text written to `out` is released and the stream ends, for this reason.
    Stop(StopReason),
}

/// Why a transform ended a stream, which picks how each format says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A filter refused the rest: Chat `finish_reason: "content_filter"`, Anthropic
    /// `stop_reason: "refusal"`, Responses `incomplete_details.reason: "content_filter"`.
    ContentFilter,
    /// A budget ran out: Chat `"length"`, Anthropic `"max_tokens"`, Responses
    /// `"max_output_tokens"`.
    Length,
}

impl StopReason {
    fn names(self) -> [&'static str; 3] {
        // [chat and other streams, anthropic, responses]
        match self {
            StopReason::ContentFilter => ["content_filter", "refusal", "content_filter"],
            StopReason::Length => ["length", "max_tokens", "max_output_tokens"],
        }
    }
}

/// A streaming transform over the text of one channel.
///
/// The contract, which the property tests of the examples check: for any split of a text into
/// pieces, feeding the pieces and then closing the channel releases, in all, exactly what one
/// call with the whole text and `last = true` releases; and the text held (pending but not
/// released) never exceeds [`TextTransform::max_held`] bytes.
pub trait TextTransform {
    /// State kept per channel between calls; reset when a channel closes.
    type Channel: Default;

    /// The most bytes of text this transform ever holds back.
    fn max_held(&self) -> usize;

    /// True if `text`, taken whole, certainly goes through unchanged (for `redact`: it has no
    /// `@`). A shortcut the layer takes for events outside the streamed text, which are then
    /// kept without being copied; the default, false, is always correct.
    fn passes(&self, text: &str) -> bool {
        let _ = text;
        false
    }

    /// Bytes without which a whole text certainly goes through unchanged (for `redact`: `@`):
    /// the host's streaming-text engine hands over no whole text without one of them. Empty (the
    /// default): every whole text is handed over.
    fn prefilter(&self) -> &[u8] {
        &[]
    }

    /// Looks at `pending` (the text held so far followed by the new text), writes the
    /// transformed text of what it releases to `out` and says how much that is. With `last`
    /// the channel closes: everything must be released.
    fn step(&self, channel: &mut Self::Channel, pending: &str, last: bool, out: &mut String) -> Flow;

    /// A text seen whole rather than streamed: one of the events that repeat a channel's whole
    /// text, or the raw bytes of an event (or of a delta's other fields) outside the streamed
    /// text. The default treats it as a channel of its own that closes at once, which is what a
    /// filter wants; a transform that meters the streamed text (a token budget) passes it on
    /// instead, so that nothing is counted twice.
    fn whole(&self, text: &str, out: &mut String) -> Flow {
        self.step(&mut Self::Channel::default(), text, true, out)
    }
}

/// A transform built from an interceptor's configuration; [`TextInterceptor`] makes it a whole
/// interceptor.
pub trait FromConfig: Sized {
    /// Builds the transform; an error message is shown to the operator.
    fn from_config(config: &Config) -> Result<Self, String>;
}

/// The interceptor that runs transform `T` over every stream's text: one [`TextStream`] per
/// stream, everything else left to the layer. `export!(TextInterceptor<MyTransform>)` (or a type
/// alias of it) is all a guardrail over streamed text needs.
pub struct TextInterceptor<T>(pub T);

impl<T> Interceptor for TextInterceptor<T>
where
    T: TextTransform + FromConfig + Send + Sync + 'static,
    T::Channel: Send,
{
    type Stream = TextStream<T::Channel>;

    fn new(config: &Config) -> Result<Self, String> {
        T::from_config(config).map(TextInterceptor)
    }

    fn open(&self, _context: &StreamContext) -> Self::Stream {
        TextStream::new()
    }

    fn process_batch(&self, stream: &mut Self::Stream, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        stream.process_batch(&self.0, batch, out);
    }

    fn finish(&self, stream: &mut Self::Stream, _reason: EndReason, out: &mut VerdictBuilder) {
        stream.finish(&self.0, out);
    }
}

/// Applies `transform` to a whole text at once; `Some` if it stops the stream.
pub fn apply_whole<T: TextTransform>(transform: &T, text: &str, out: &mut String) -> Option<StopReason> {
    match transform.whole(text, out) {
        Flow::Continue(_) => None,
        Flow::Stop(reason) => Some(reason),
    }
}

/// Feeds a channel's pending text to the transform: what it releases is appended to `released`,
/// what it holds stays pending; `Some` if it stops the stream. A transform that breaks its
/// contract (holds more than it declared, or anything when `last`) has its whole pending text
/// released through it as a whole text instead, so nothing is held without bound.
fn step_channel<T: TextTransform>(
    t: &T,
    channel: &mut Channel<T::Channel>,
    last: bool,
    released: &mut String,
) -> Option<StopReason> {
    let pending = channel.pending.len();
    match t.step(&mut channel.state, &channel.pending, last, released) {
        Flow::Continue(n) if n == pending || !last && pending - n <= t.max_held() => {
            channel.pending.drain(..n);
            None
        }
        Flow::Continue(_) => {
            released.clear();
            // Streamed text still: through `step`, as a channel that closes at once.
            let stop = match t.step(&mut T::Channel::default(), &channel.pending, true, released) {
                Flow::Continue(_) => None,
                Flow::Stop(reason) => Some(reason),
            };
            channel.pending.clear();
            stop
        }
        Flow::Stop(reason) => {
            channel.pending.clear();
            Some(reason)
        }
    }
}

/// The stream formats [`TextStream`] recognises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// No text-bearing event seen yet: each event's data is a text of its own.
    #[default]
    Unknown,
    /// OpenAI Chat Completions chunks (`choices[].delta.content`).
    ChatCompletions,
    /// OpenAI Responses events (`response.output_text.delta`, ...).
    Responses,
    /// Anthropic Messages events (`content_block_delta` with a `text_delta`).
    AnthropicMessages,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// A choice (Chat) or content block (Anthropic) index.
    Index(u64),
    /// A Responses output item id (raw JSON text) and content index.
    Item(String, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Close {
    All,
    Key(Key),
    Item(String),
}

impl Close {
    fn covers(&self, key: &Key) -> bool {
        match (self, key) {
            (Close::All, _) => true,
            (Close::Key(k), key) => k == key,
            (Close::Item(id), Key::Item(item, _)) => id == item,
            (Close::Item(_), Key::Index(_)) => false,
        }
    }
}

/// A release event for a channel: its last delta event as written, with every channel's text cut
/// out when it is used. Kept whole (the buffer is swapped in, not copied) because most templates
/// are replaced by the next delta before any is needed.
#[derive(Debug, Default)]
struct Template {
    event_type: Option<String>,
    data: String,
    /// Where each delta's text lies in `data` (start, end, is this channel's).
    texts: Vec<(usize, usize, bool)>,
}

impl Template {
    /// The release event's data: the template with `text` (encoded) in this channel's place and
    /// no other channel's text.
    fn with_text(&self, text: &str) -> String {
        let mut data = String::with_capacity(self.data.len() + text.len() + 16);
        let mut copied = 0;
        for &(start, end, own) in &self.texts {
            data.push_str(&self.data[copied..start]);
            if own {
                json::encode(text, &mut data);
            }
            copied = end;
        }
        data.push_str(&self.data[copied..]);
        data
    }
}

#[derive(Debug)]
struct Channel<C> {
    key: Key,
    pending: String,
    state: C,
    template: Template,
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// Streamed text of channel `.0`; `.1`: the channel closes with this event.
    Delta(usize, bool),
    /// A whole text that repeats the stream's text.
    Whole,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    role: Role,
}

/// The `response` object of `response.created`, and the spans (relative to it) of its `status`
/// and `incomplete_details` values.
type ResponseTemplate = (String, Option<(usize, usize)>, Option<(usize, usize)>);

/// Counters a test or benchmark can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextStats {
    /// Delta events that went out with some of the channel's text held back.
    pub held_events: u64,
    /// The most text held by one channel at once, in bytes.
    pub max_held_bytes: usize,
    /// Events inserted to release held text before a channel closed.
    pub release_events: u64,
}

/// The per-stream state of the streaming-text layer. Create one per stream in
/// [`crate::Interceptor::open`] and hand it every batch and the end of the stream:
///
/// ```
/// use sluicegate_guest::text::{Flow, TextStream, TextTransform};
/// use sluicegate_guest::{BatchView, Config, EndReason, Interceptor, StreamContext, VerdictBuilder};
///
/// /// Upper-cases all streamed text; holds nothing back.
/// struct Upper;
///
/// impl TextTransform for Upper {
///     type Channel = ();
///     fn max_held(&self) -> usize { 0 }
///     fn step(&self, _: &mut (), pending: &str, _last: bool, out: &mut String) -> Flow {
///         out.push_str(&pending.to_uppercase());
///         Flow::Continue(pending.len())
///     }
/// }
///
/// struct Shout;
///
/// impl Interceptor for Shout {
///     type Stream = TextStream<()>;
///     fn new(_: &Config) -> Result<Self, String> { Ok(Shout) }
///     fn open(&self, _: &StreamContext) -> TextStream<()> { TextStream::new() }
///     fn process_batch(&self, stream: &mut TextStream<()>, batch: BatchView<'_>, out: &mut VerdictBuilder) {
///         stream.process_batch(&Upper, batch, out);
///     }
///     fn finish(&self, stream: &mut TextStream<()>, _: EndReason, out: &mut VerdictBuilder) {
///         stream.finish(&Upper, out);
///     }
/// }
/// ```
#[derive(Debug)]
pub struct TextStream<C> {
    channels: Vec<Channel<C>>,
    format: Format,
    /// Chat: `"id":…,"object":…,"created":…,"model":…,` of the first chunk, for endings.
    chat_meta: Option<String>,
    /// Responses: the `response` object of `response.created`, and the spans of its `status`
    /// and `incomplete_details` values, for `response.incomplete`.
    response_template: Option<ResponseTemplate>,
    sequence: u64,
    /// Anthropic: content blocks started and not stopped; text deltas seen.
    open_blocks: Vec<u64>,
    text_deltas: u64,
    stopped: bool,
    stats: TextStats,
    doc: Doc,
    spans: Vec<Span>,
    closes: Vec<Close>,
    /// Where each delta's text lies in `data` (start, end, channel), for templates.
    placed: Vec<(usize, usize, usize)>,
    data: String,
    decoded: String,
    released: String,
    /// The last delta event's bytes before and after its text, when classifying it found that
    /// one delta and nothing else: the next event with the same bytes around a valid JSON string
    /// is the same kind of event for the same channel, so it needs no parse.
    shape: Option<Shape>,
}

#[derive(Debug)]
struct Shape {
    prefix: String,
    suffix: String,
    span: Role,
    /// The format that event set.
    format: Format,
}

impl<C: Default> Default for TextStream<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Default> TextStream<C> {
    /// A stream whose format is recognised from its first text-bearing event.
    pub fn new() -> Self {
        TextStream {
            channels: Vec::new(),
            format: Format::Unknown,
            chat_meta: None,
            response_template: None,
            sequence: 0,
            open_blocks: Vec::new(),
            text_deltas: 0,
            stopped: false,
            stats: TextStats::default(),
            doc: Doc::default(),
            spans: Vec::new(),
            closes: Vec::new(),
            placed: Vec::new(),
            data: String::new(),
            decoded: String::new(),
            released: String::new(),
            shape: None,
        }
    }

    /// The format recognised so far.
    pub fn format(&self) -> Format {
        self.format
    }

    /// True once a transform stopped the stream.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// What the layer has seen and done so far.
    pub fn stats(&self) -> TextStats {
        self.stats
    }

    /// The text all channels hold right now, in bytes.
    pub fn held_bytes(&self) -> usize {
        self.channels.iter().map(|c| c.pending.len()).sum()
    }

    /// Runs every event of `batch` through `transform`, pushing the verdict's ops to `out`.
    pub fn process_batch<T: TextTransform<Channel = C>>(
        &mut self,
        transform: &T,
        batch: BatchView<'_>,
        out: &mut VerdictBuilder,
    ) {
        for event in batch.iter() {
            if self.stopped {
                return; // the verdict is ended: the rest of the batch is dropped
            }
            self.process_event(transform, event, out);
        }
    }

    /// Releases what every channel still holds (the stream is ending), as inserted events.
    pub fn finish<T: TextTransform<Channel = C>>(&mut self, transform: &T, out: &mut VerdictBuilder) {
        for at in 0..self.channels.len() {
            if self.stopped {
                return;
            }
            if let Some(reason) = self.flush(transform, at, out) {
                self.write_ending(reason, out);
            }
        }
    }

    fn process_event<T: TextTransform<Channel = C>>(&mut self, t: &T, event: EventRef<'_>, out: &mut VerdictBuilder) {
        let Some(data) = event.data() else {
            out.keep();
            return;
        };
        self.spans.clear();
        self.closes.clear();
        if data == "[DONE]" {
            self.format = Format::ChatCompletions;
            self.closes.push(Close::All);
        } else if let Some(span) = self.same_shape(data) {
            self.spans.push(span);
        } else if may_have_text(data) && self.doc.parse(data) {
            self.classify(data);
            self.remember_shape(data);
        }

        if self.spans.is_empty() && self.closes.is_empty() && t.passes(data) {
            out.keep();
            return;
        }

        // Channels that close here without a delta in this event release what they hold first.
        let mut stop = None;
        for c in 0..self.closes.len() {
            for at in 0..self.channels.len() {
                let in_event = self.spans.iter().any(|s| matches!(s.role, Role::Delta(ch, _) if ch == at));
                if !in_event && self.closes[c].covers(&self.channels[at].key) && stop.is_none() {
                    stop = self.flush(t, at, out);
                }
            }
        }
        if let Some(reason) = stop {
            out.drop();
            self.write_ending(reason, out);
            return;
        }

        let (changed, stop) = self.rewrite(t, data);
        for channel in &mut self.channels {
            if self.closes.iter().any(|close| close.covers(&channel.key)) {
                channel.closed = true;
                channel.state = C::default();
            }
        }
        match stop {
            Some((reason, in_delta)) => {
                if in_delta {
                    out.replace(&Replacement::data(&self.data));
                } else {
                    out.drop(); // a match outside the streamed text: the event cannot be cut
                }
                self.write_ending(reason, out);
            }
            None if changed => out.replace(&Replacement::data(&self.data)),
            None => out.keep(),
        }
        self.save_templates(event);
    }

    /// The delta span of `data` if it is the last remembered delta's bytes around another valid
    /// JSON string (which tokenises the same way, so it parses to the same structure).
    fn same_shape(&mut self, data: &str) -> Option<Span> {
        let shape = self.shape.as_ref()?;
        let end = data.len().checked_sub(shape.suffix.len())?;
        let fits = end >= shape.prefix.len() && data.starts_with(&shape.prefix) && data.ends_with(&shape.suffix);
        if !fits || json::string_end(data.as_bytes(), shape.prefix.len()) != Some(end) {
            return None;
        }
        if let Role::Delta(at, _) = shape.span {
            self.channels[at].closed = false;
        }
        // What classifying the event would have done besides finding its span.
        self.format = shape.format;
        self.text_deltas += u64::from(shape.format == Format::AnthropicMessages);
        Some(Span { start: shape.prefix.len(), end, role: shape.span })
    }

    fn remember_shape(&mut self, data: &str) {
        let one_delta = match self.spans[..] {
            [span @ Span { role: Role::Delta(_, false), .. }] => Some(span),
            _ => None,
        };
        // Responses deltas carry a `sequence_number` that changes every event: never the same.
        let Some(span) = one_delta.filter(|_| self.closes.is_empty() && self.format != Format::Responses) else {
            self.shape = None;
            return;
        };
        let shape = self.shape.get_or_insert_with(|| Shape {
            prefix: String::new(),
            suffix: String::new(),
            span: span.role,
            format: self.format,
        });
        shape.prefix.clear();
        shape.prefix.push_str(&data[..span.start]);
        shape.suffix.clear();
        shape.suffix.push_str(&data[span.end..]);
        shape.span = span.role;
        shape.format = self.format;
    }

    /// Finds the text-bearing parts of a JSON event (`self.doc` holds it parsed).
    fn classify(&mut self, data: &str) {
        let doc = core::mem::take(&mut self.doc);
        self.classify_doc(&doc, data);
        self.doc = doc;
    }

    fn classify_doc(&mut self, doc: &Doc, data: &str) {
        let root = 0;
        if doc.node(root).kind != Kind::Object {
            return;
        }
        if let Some(choices) = doc.get(data, root, "choices").filter(|&c| doc.node(c).kind == Kind::Array) {
            self.format = Format::ChatCompletions;
            if self.chat_meta.is_none() {
                let mut meta = String::new();
                for key in ["id", "object", "created", "model"] {
                    if let Some(value) = doc.get(data, root, key) {
                        let node = doc.node(value);
                        let raw = if node.kind == Kind::String {
                            &data[node.start - 1..node.end + 1]
                        } else {
                            &data[node.start..node.end]
                        };
                        meta.push_str(&format!("\"{key}\":{raw},"));
                    }
                }
                self.chat_meta = Some(meta);
            }
            for (position, choice) in doc.items(choices).enumerate() {
                if doc.node(choice).kind != Kind::Object {
                    continue;
                }
                let index = doc.index(data, doc.get(data, choice, "index")).unwrap_or(position as u64);
                let key = Key::Index(index);
                let closes = doc.is(doc.get(data, choice, "finish_reason"), Kind::String);
                let delta = doc.get(data, choice, "delta");
                let content = delta.and_then(|d| doc.get(data, d, "content"));
                if let Some(content) = content.filter(|&c| doc.node(c).kind == Kind::String) {
                    let node = doc.node(content);
                    let channel = self.channel(key.clone());
                    self.spans.push(Span { start: node.start, end: node.end, role: Role::Delta(channel, closes) });
                }
                if closes {
                    self.closes.push(Close::Key(key));
                }
            }
            return;
        }
        let Some(kind) = doc.raw_str(data, doc.get(data, root, "type")) else { return };
        if kind.starts_with("response.") {
            self.format = Format::Responses;
            if let Some(n) = doc.index(data, doc.get(data, root, "sequence_number")) {
                self.sequence = n;
            }
        } else if kind.starts_with("message_") || kind.starts_with("content_block_") || kind == "ping" {
            self.format = Format::AnthropicMessages;
        }
        let index = doc.index(data, doc.get(data, root, "index")).unwrap_or(0);
        let item_id = doc.raw_str(data, doc.get(data, root, "item_id")).unwrap_or("");
        let content_index = doc.index(data, doc.get(data, root, "content_index")).unwrap_or(0);
        let item_key = || Key::Item(item_id.to_string(), content_index);
        match kind {
            "content_block_delta" => {
                let delta = doc.get(data, root, "delta");
                let text_delta = delta.and_then(|d| doc.raw_str(data, doc.get(data, d, "type"))) == Some("text_delta");
                if let Some(text) = delta.filter(|_| text_delta).and_then(|d| doc.get(data, d, "text"))
                    && doc.node(text).kind == Kind::String
                {
                    let node = doc.node(text);
                    self.text_deltas += 1;
                    let channel = self.channel(Key::Index(index));
                    self.spans.push(Span { start: node.start, end: node.end, role: Role::Delta(channel, false) });
                }
            }
            "content_block_start" if !self.open_blocks.contains(&index) => {
                self.open_blocks.push(index);
            }
            "content_block_stop" => {
                self.open_blocks.retain(|&b| b != index);
                self.closes.push(Close::Key(Key::Index(index)));
            }
            "message_delta" | "message_stop" => self.closes.push(Close::All),
            "response.output_text.delta" => {
                if let Some(node) = doc.get(data, root, "delta").map(|d| doc.node(d)).filter(|n| n.kind == Kind::String)
                {
                    // Found by reference: a delta event allocates no key once its channel exists.
                    let known = self
                        .channels
                        .iter()
                        .position(|c| matches!(&c.key, Key::Item(id, n) if id == item_id && *n == content_index));
                    let channel = match known {
                        Some(at) => {
                            self.channels[at].closed = false;
                            at
                        }
                        None => self.channel(item_key()),
                    };
                    self.spans.push(Span { start: node.start, end: node.end, role: Role::Delta(channel, false) });
                }
            }
            "response.output_text.done" => {
                self.closes.push(Close::Key(item_key()));
                self.whole_span(doc, doc.get(data, root, "text"));
            }
            "response.content_part.done" => {
                self.closes.push(Close::Key(item_key()));
                let part = doc.get(data, root, "part");
                self.whole_span(doc, part.and_then(|p| doc.get(data, p, "text")));
            }
            "response.output_item.done" => {
                let item = doc.get(data, root, "item");
                let id = item.and_then(|i| doc.raw_str(data, doc.get(data, i, "id"))).unwrap_or("").to_string();
                self.closes.push(Close::Item(id));
                if let Some(item) = item {
                    self.whole_texts(doc, data, item);
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.closes.push(Close::All);
                if let Some(response) = doc.get(data, root, "response") {
                    for item in doc.get(data, response, "output").into_iter().flat_map(|o| doc.items(o)) {
                        self.whole_texts(doc, data, item);
                    }
                }
            }
            "response.created" => {
                if let Some(response) = doc.get(data, root, "response").filter(|&r| doc.node(r).kind == Kind::Object) {
                    let base = doc.node(response).start;
                    let span = |key| {
                        doc.get(data, response, key).map(|v| {
                            let n = doc.node(v);
                            let quoted = usize::from(n.kind == Kind::String);
                            (n.start - quoted - base, n.end + quoted - base)
                        })
                    };
                    let template = data[base..doc.node(response).end].to_string();
                    self.response_template = Some((template, span("status"), span("incomplete_details")));
                }
            }
            _ => {}
        }
    }

    /// `item.content[].text` of a Responses output item, as whole texts.
    fn whole_texts(&mut self, doc: &Doc, data: &str, item: usize) {
        for part in doc.get(data, item, "content").into_iter().flat_map(|c| doc.items(c)) {
            self.whole_span(doc, doc.get(data, part, "text"));
        }
    }

    fn whole_span(&mut self, doc: &Doc, at: Option<usize>) {
        if let Some(node) = at.map(|a| doc.node(a)).filter(|n| n.kind == Kind::String) {
            self.spans.push(Span { start: node.start, end: node.end, role: Role::Whole });
        }
    }

    fn channel(&mut self, key: Key) -> usize {
        if let Some(at) = self.channels.iter().position(|c| c.key == key) {
            self.channels[at].closed = false;
            return at;
        }
        self.channels.push(Channel {
            key,
            pending: String::new(),
            state: C::default(),
            template: Template::default(),
            closed: false,
        });
        self.channels.len() - 1
    }

    /// Builds the event's new data in `self.data`; says whether it differs from `data`, and
    /// whether (and where) the transform stopped the stream.
    fn rewrite<T: TextTransform<Channel = C>>(&mut self, t: &T, data: &str) -> (bool, Option<(StopReason, bool)>) {
        self.data.clear();
        self.placed.clear();
        let mut stop = None;
        let mut copied = 0;
        for s in 0..self.spans.len() {
            let span = self.spans[s];
            stop = stop.or(self.whole_raw(t, &data[copied..span.start]).map(|r| (r, false)));
            let raw = &data[span.start..span.end];
            self.decoded.clear();
            json::decode(raw, &mut self.decoded);
            self.released.clear();
            let unchanged = match span.role {
                Role::Whole => {
                    stop = stop.or(apply_whole(t, &self.decoded, &mut self.released).map(|r| (r, false)));
                    self.released == self.decoded
                }
                Role::Delta(at, last) => {
                    let channel = &mut self.channels[at];
                    let was_empty = channel.pending.is_empty();
                    channel.pending.push_str(&self.decoded);
                    if let Some(reason) = step_channel(t, channel, last, &mut self.released) {
                        stop = stop.or(Some((reason, true)));
                    }
                    let held = channel.pending.len();
                    if held > 0 {
                        self.stats.held_events += 1;
                        self.stats.max_held_bytes = self.stats.max_held_bytes.max(held);
                    }
                    was_empty && held == 0 && self.released == self.decoded
                }
            };
            let start = self.data.len();
            if unchanged {
                self.data.push_str(raw);
            } else {
                json::encode(&self.released, &mut self.data);
            }
            if let Role::Delta(at, _) = span.role {
                self.placed.push((start, self.data.len(), at));
            }
            copied = span.end;
        }
        stop = stop.or(self.whole_raw(t, &data[copied..]).map(|r| (r, false)));
        (self.data != data, stop)
    }

    /// A part of an event outside the streamed text, through the transform as it is.
    fn whole_raw<T: TextTransform<Channel = C>>(&mut self, t: &T, raw: &str) -> Option<StopReason> {
        apply_whole(t, raw, &mut self.data)
    }

    /// Remembers, for each channel that now holds text, this delta event as written: the shape
    /// of the event that will release the held text. The first such channel takes the event's
    /// buffer (a swap); another one in the same event (rare) gets a copy.
    fn save_templates(&mut self, event: EventRef<'_>) {
        let mut swapped = false;
        for p in 0..self.placed.len() {
            let at = self.placed[p].2;
            if self.channels[at].pending.is_empty() {
                continue;
            }
            let template = &mut self.channels[at].template;
            if template.event_type.as_deref() != event.event_type() {
                template.event_type = event.event_type().map(str::to_string);
            }
            if swapped {
                template.data.clear();
                template.data.push_str(&self.data);
            } else {
                core::mem::swap(&mut template.data, &mut self.data);
                swapped = true;
            }
            template.texts.clear();
            template.texts.extend(self.placed.iter().map(|&(s, e, other)| (s, e, other == at)));
        }
    }

    /// Releases what channel `at` holds (it closes) in an inserted event; resets its state.
    fn flush<T: TextTransform<Channel = C>>(
        &mut self,
        t: &T,
        at: usize,
        out: &mut VerdictBuilder,
    ) -> Option<StopReason> {
        let channel = &mut self.channels[at];
        channel.closed = true;
        if channel.pending.is_empty() {
            channel.state = C::default();
            return None;
        }
        self.released.clear();
        let stop = step_channel(t, channel, true, &mut self.released);
        channel.state = C::default();
        if !self.released.is_empty() {
            let data = channel.template.with_text(&self.released);
            let event_type = channel.template.event_type.as_deref();
            out.insert(&NewEvent { event_type, ..NewEvent::message(&data) });
            self.stats.release_events += 1;
        }
        stop
    }

    /// Ends the stream the way its format ends an answer cut short for `reason`.
    fn write_ending(&mut self, reason: StopReason, out: &mut VerdictBuilder) {
        self.stopped = true;
        let [plain, anthropic, responses] = reason.names();
        match self.format {
            Format::ChatCompletions => {
                let meta = self.chat_meta.as_deref().unwrap_or("");
                let mut open: Vec<u64> = self
                    .channels
                    .iter()
                    .filter_map(|c| match c.key {
                        Key::Index(i) if !c.closed => Some(i),
                        _ => None,
                    })
                    .collect();
                if open.is_empty() && !self.channels.iter().any(|c| matches!(c.key, Key::Index(_))) {
                    open.push(0);
                }
                for index in open {
                    let data = format!(
                        "{{{meta}\"choices\":[{{\"index\":{index},\"delta\":{{}},\"finish_reason\":\"{plain}\"}}]}}"
                    );
                    out.insert(&NewEvent::message(&data));
                }
                out.insert(&NewEvent::message("[DONE]"));
            }
            Format::AnthropicMessages => {
                for index in core::mem::take(&mut self.open_blocks) {
                    let data = format!("{{\"type\":\"content_block_stop\",\"index\":{index}}}");
                    out.insert(&NewEvent::message(&data).with_type("content_block_stop"));
                }
                let data = format!(
                    "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{anthropic}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
                    self.text_deltas
                );
                out.insert(&NewEvent::message(&data).with_type("message_delta"));
                out.insert(&NewEvent::message("{\"type\":\"message_stop\"}").with_type("message_stop"));
            }
            Format::Responses => {
                let details = format!("{{\"reason\":\"{responses}\"}}");
                let response = match &self.response_template {
                    Some((template, status, incomplete)) => {
                        let mut edits: Vec<((usize, usize), &str)> = Vec::new();
                        edits.extend(status.map(|s| (s, "\"incomplete\"")));
                        edits.extend(incomplete.map(|s| (s, details.as_str())));
                        edits.sort_by_key(|e| e.0);
                        let mut text = String::new();
                        let mut copied = 0;
                        for ((start, end), value) in edits {
                            text.push_str(&template[copied..start]);
                            text.push_str(value);
                            copied = end;
                        }
                        text.push_str(&template[copied..]);
                        text
                    }
                    None => format!(
                        "{{\"object\":\"response\",\"status\":\"incomplete\",\"incomplete_details\":{details},\"output\":[]}}"
                    ),
                };
                let data = format!(
                    "{{\"type\":\"response.incomplete\",\"sequence_number\":{},\"response\":{response}}}",
                    self.sequence + 1
                );
                out.insert(&NewEvent::message(&data).with_type("response.incomplete"));
            }
            Format::Unknown => {
                let data = format!(
                    "{{\"error\":{{\"type\":\"{plain}\",\"message\":\"the stream was ended by an interceptor\"}}}}"
                );
                out.insert(&NewEvent::message(&data).with_type("error"));
            }
        }
        out.end();
    }
}

/// False when `data` cannot be a text-bearing event, so the parse can be skipped: every such event
/// has a `"choices"` or `"type"` key, and a key can only decode to one of them without holding it
/// as plain text by way of a backslash escape. (A shortcut only; the result is the same.)
fn may_have_text(data: &str) -> bool {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static TYPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\""));
    static CHOICES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));
    let bytes = data.as_bytes();
    TYPE.find(bytes).is_some() || CHOICES.find(bytes).is_some() || memchr::memchr(b'\\', bytes).is_some()
}
