//! Guards over the text a model streams, on the `text-interceptor` world.
//!
//! The host owns the wire formats: its streaming-text engine finds the text-bearing parts of
//! every event (OpenAI Chat and Responses, Anthropic, Gemini, Ollama, MCP messages, JSON bodies),
//! decodes them, and hands a guard, once per batch, the pending text of every channel that
//! changed and every whole text ([`Item`]s). The guard answers each with an [`Answer`]: how many
//! bytes it releases and the text that goes out in their place, or a stop. Nothing here parses a
//! format.
//!
//! Two ways to write one:
//! - a [`TextTransform`] (one channel's pending text at a time, `step` and optionally `whole`)
//!   wrapped in [`PerChannel`], which keeps one state per channel: a masking or filtering guard in
//!   a few lines;
//! - a [`TextGuard`] directly, which sees a batch's items together and keeps per-stream state (a
//!   budget that charges the store once per batch).
//!
//! Either is exported with `export_text!` and runs natively (`native:NAME`) on the host's engine.

use crate::{Config, EndReason, StreamContext};
use std::collections::HashMap;

/// What kind of text an item carries. Mirrors `kind` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// The answer's text.
    Content,
    /// The arguments of a tool call: a JSON text streamed in pieces, or, where a format gives them
    /// as an object, each of its keys and strings whole.
    ToolArguments,
    /// Reasoning (thinking, a reasoning summary).
    Reasoning,
    /// A refusal's text.
    Refusal,
    /// Any other text: a string value outside the channels, a key (any key of JSON in no
    /// recognised format, a key outside a format's schema), an event that is not JSON.
    Other,
}

/// Why a guard ended a stream, which picks how each format says so. Mirrors `stop-reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A filter refused the rest: Chat `finish_reason: "content_filter"`, Anthropic
    /// `stop_reason: "refusal"`, Responses `incomplete_details.reason: "content_filter"`, Gemini
    /// `SAFETY`; other streams get an `event: error`.
    ContentFilter,
    /// A budget ran out: Chat `"length"`, Anthropic `"max_tokens"`, Responses
    /// `"max_output_tokens"`, Gemini `MAX_TOKENS`.
    Length,
}

/// One text to judge. Mirrors `item` in the WIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The channel (from 1; the same number later in the stream is the same channel); 0 for a
    /// whole text.
    pub channel: u32,
    /// What the text is.
    pub kind: ChannelKind,
    /// For a channel, the text held back before followed by what arrived; for a whole text, all
    /// of it. Decoded: no JSON escapes.
    pub text: String,
    /// The channel closes with this item, or it is a whole text: all of it must be released.
    pub last: bool,
    /// How many deltas brought this batch's new text (a model sends about a token per delta); 0
    /// for a whole text.
    pub pieces: u32,
}

impl Item {
    /// True for a text seen whole rather than streamed.
    pub fn is_whole(&self) -> bool {
        self.channel == 0
    }
}

/// The answer to one item. Mirrors `answer` in the WIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The first `count` bytes of the item's text go out as `text`; the rest stays pending.
    Release {
        /// Bytes released: a character boundary; all of them when the item is `last`.
        count: usize,
        /// What goes out in their place.
        text: String,
    },
    /// The first `count` bytes go out as they are: [`Answer::Release`] with the same text,
    /// cheaper (nothing is copied back).
    Keep {
        /// Bytes released: a character boundary; all of them when the item is `last`.
        count: usize,
    },
    /// `text` goes out, then the stream ends.
    Stop {
        /// What goes out before the end.
        text: String,
        /// Why it ends.
        reason: StopReason,
    },
}

/// A request refused before it is sent on (request chains only). Mirrors `refusal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status, 400 to 599.
    pub status: u16,
    /// The error's `type`.
    pub error_type: String,
    /// The error's `message`.
    pub message: String,
    /// Sent as `Retry-After` when not 0.
    pub retry_after_seconds: u32,
}

/// A guard over a stream's texts: the text world's contract in Rust.
pub trait TextGuard: Sized + Send + Sync + 'static {
    /// The state kept for one stream.
    type Stream: Send;

    /// Builds the guard from its configuration; an error is shown to the operator.
    fn new(config: &Config) -> Result<Self, String>;

    /// The most bytes a channel may hold back after an answer.
    fn max_held(&self) -> usize;

    /// Bytes without which a whole text certainly goes through unchanged (for an address filter,
    /// `@`): whole texts without any of them are not handed over. Empty (the default): all are.
    fn prefilter(&self) -> &[u8] {
        &[]
    }

    /// Starts a stream.
    fn open(&self, context: &StreamContext) -> Self::Stream;

    /// A request (context status 0), before its texts: a refusal answers the client instead.
    fn admit(&self, stream: &mut Self::Stream) -> Option<Refusal> {
        let _ = stream;
        None
    }

    /// Answers `items` into `answers`, one each, in order.
    fn process(&self, stream: &mut Self::Stream, items: &[Item], answers: &mut Vec<Answer>);

    /// The stream ended; `output_tokens` is what the provider reported the answer cost, if it did.
    fn finish(&self, stream: &mut Self::Stream, reason: EndReason, output_tokens: Option<u64>) {
        let _ = (stream, reason, output_tokens);
    }
}

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

/// A streaming transform over the text of one channel.
///
/// The contract (which `sluicegate check` tests over random splits): for any split of a text into
/// pieces, feeding the pieces and then closing the channel releases, in all, exactly what one call
/// with the whole text and `last = true` releases; and the text held (pending but not released)
/// never exceeds [`TextTransform::max_held`] bytes.
pub trait TextTransform {
    /// State kept per channel between calls; reset when a channel closes.
    type Channel: Default;

    /// The most bytes of text this transform ever holds back.
    fn max_held(&self) -> usize;

    /// Bytes without which a whole text certainly goes through unchanged (see
    /// [`TextGuard::prefilter`]).
    fn prefilter(&self) -> &[u8] {
        &[]
    }

    /// Looks at `pending` (the text held so far followed by the new text), writes the
    /// transformed text of what it releases to `out` and says how much that is. With `last`
    /// the channel closes: everything must be released.
    fn step(&self, channel: &mut Self::Channel, pending: &str, last: bool, out: &mut String) -> Flow;

    /// A text seen whole rather than streamed. The default treats it as a channel of its own
    /// that closes at once, which is what a filter wants.
    fn whole(&self, text: &str, out: &mut String) -> Flow {
        self.step(&mut Self::Channel::default(), text, true, out)
    }
}

/// A transform built from an interceptor's configuration.
pub trait FromConfig: Sized {
    /// Builds the transform; an error message is shown to the operator.
    fn from_config(config: &Config) -> Result<Self, String>;
}

/// A [`TextTransform`] as a [`TextGuard`]: one transform state per channel, each item answered by
/// `step` (or `whole`).
pub struct PerChannel<T>(pub T);

impl<T> PerChannel<T> {
    /// The transform inside.
    pub fn transform(&self) -> &T {
        &self.0
    }
}

impl<T> TextGuard for PerChannel<T>
where
    T: TextTransform + FromConfig + Send + Sync + 'static,
    T::Channel: Send,
{
    type Stream = Channels<T::Channel>;

    fn new(config: &Config) -> Result<Self, String> {
        T::from_config(config).map(PerChannel)
    }

    fn max_held(&self) -> usize {
        self.0.max_held()
    }

    fn prefilter(&self) -> &[u8] {
        self.0.prefilter()
    }

    fn open(&self, _context: &StreamContext) -> Self::Stream {
        Channels { states: HashMap::new(), scratch: String::new() }
    }

    fn process(&self, channels: &mut Self::Stream, items: &[Item], answers: &mut Vec<Answer>) {
        for item in items {
            answers.push(answer(&self.0, channels, item));
        }
    }
}

/// A stream's channel states for [`PerChannel`], by channel number, and a buffer for answers.
pub struct Channels<C> {
    states: HashMap<u32, C>,
    scratch: String,
}

/// One item through a transform.
pub fn answer<T: TextTransform>(transform: &T, channels: &mut Channels<T::Channel>, item: &Item) -> Answer {
    let text = &mut channels.scratch;
    text.clear();
    let flow = if item.is_whole() {
        transform.whole(&item.text, text)
    } else {
        let channel = channels.states.entry(item.channel).or_default();
        let flow = transform.step(channel, &item.text, item.last, text);
        if item.last {
            channels.states.remove(&item.channel);
        }
        flow
    };
    match flow {
        // Text released as it came is not copied (the usual answer of a filter).
        Flow::Continue(count) if item.text.get(..count) == Some(text.as_str()) => Answer::Keep { count },
        Flow::Continue(count) => Answer::Release { count, text: text.clone() },
        Flow::Stop(reason) => Answer::Stop { text: text.clone(), reason },
    }
}
