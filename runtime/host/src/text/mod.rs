//! The streaming-text engine: every text a model streams, recognised once, here, in the host,
//! and handed to a guard as decoded text.
//!
//! A model's answer reaches the proxy a token (1-4 characters) per event, in one of several
//! formats, and a value to hide (an address, a phrase, a key) spans several events. The engine
//! finds the text-bearing parts of each event by its content (`formats.rs`), one *channel* per
//! streamed text (each choice's content, each tool call's arguments, reasoning, refusals, in
//! OpenAI Chat, OpenAI Responses, Anthropic Messages, Gemini and Ollama), and, **once per batch**,
//! hands a [`Judge`] the pending text of every channel that changed (what it held plus what
//! arrived, JSON escapes decoded) and every *whole* text (an event that repeats a channel's whole
//! text, a string value outside the channels, a key of JSON in no recognised format). The judge
//! answers each item with how many bytes it releases and the text to release in their place, or
//! a stop; the engine writes the answers
//! back into the events, re-encoding only the JSON strings it changed: every other byte, event
//! name, id and the order are kept.
//!
//! Where a batch carries several deltas of one channel, what the judge releases goes out in the
//! channel's last delta of the batch and the earlier ones go out empty: the batch is one write, so
//! no text comes later for it. Text held when a channel closes is released in an event inserted
//! before its closing event, shaped like the channel's last delta (or in the closing event itself
//! when that is its last delta), and at the end of the stream; never after. Tokens that repeat a
//! channel's text (`logprobs`) go out only while the channel's text goes out unchanged. A stop ends
//! the stream the way its format ends an answer cut short (`endings.rs`), so the providers' SDKs
//! finish cleanly and say why.
//!
//! The guard never sees numbers or structure: only strings, decoded. In a recognised format it
//! sees neither keys nor the values of keys that are structure (`type`, `id`, `model`, `role`,
//! `finish_reason`, ...); in any other JSON (MCP messages, bodies) keys are whole texts too, as
//! a map may be keyed by what a guard looks for.

pub mod contract;
mod endings;
pub mod facts;
mod formats;
mod guard;
mod held;
pub mod samples;

pub(crate) use guard::TextStreamState;
pub use guard::{GuardJudge, TextInterceptor};
pub use sluicegate_guest::text::{Answer, ChannelKind, Item, Refusal, StopReason};

use crate::interceptor::{Fault, TrapKind};
use formats::{Classifier, Found, Role};
use held::{Arrivals, BatchClock};
use sluicegate_guest::EndReason;
use sluicegate_guest::json;
use sluicegate_guest::{BatchView, NewEvent, Replacement, VerdictBuilder};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// What judges a stream's texts: a native transform, or a guest of the text world.
pub trait Judge: Send {
    /// Answers `items`, one answer each, in order, into `answers` (empty when called).
    fn judge(&mut self, items: &[Item], answers: &mut Vec<Answer>) -> Result<(), Fault>;

    /// The most bytes a channel may hold after an answer.
    fn max_held(&self) -> usize;

    /// Bytes without which a whole text passes unchanged (for an address filter, `@`): a whole
    /// text with none of them is not handed over. Empty: every whole text is.
    fn prefilter(&self) -> &[u8] {
        &[]
    }

    /// A request, before its texts: a refusal answers the client instead of sending it on.
    fn admit(&mut self) -> Result<Option<Refusal>, Fault> {
        Ok(None)
    }

    /// The stream ended; `output_tokens`: what the provider reported the answer cost.
    fn finish(&mut self, reason: EndReason, output_tokens: Option<u64>) -> Result<(), Fault> {
        let _ = (reason, output_tokens);
        Ok(())
    }

    /// The stream was cancelled before its end: frees what the judge keeps for it.
    fn close(&mut self) -> Result<(), Fault> {
        Ok(())
    }
}

/// A streamed text of a stream.
#[derive(Debug)]
struct Channel {
    key: Arc<str>,
    kind: ChannelKind,
    /// Its number for the judge.
    id: u32,
    pending: String,
    /// Where held text is released when the channel closes: its last delta event as written.
    template: Option<Template>,
    /// Deltas of this batch.
    pieces: u32,
    /// Closed (its pending text is being released): a delta with its key starts a new channel.
    closed: bool,
    /// This batch: its last delta span, the event that closes it, its item, what was released.
    last_span: Option<usize>,
    closing_at: Option<usize>,
    item: Option<usize>,
    released: String,
    /// This batch's deltas: where each one's text ends in `pending` (the first also carries what
    /// was held before), and then the part of `released` each goes out with.
    segment_ends: Vec<usize>,
    parts: Vec<Range<usize>>,
    /// This batch's text went out as it came: nothing held before or after, nothing changed.
    untouched: bool,
    /// When the text it holds arrived.
    arrivals: Arrivals,
}

/// A release event: the event type (empty: none), and the data around the channel's text.
#[derive(Debug, Clone, Default)]
struct Template {
    event_type: String,
    before: String,
    after: String,
}

/// A text-bearing part of an event of the batch.
#[derive(Debug, Clone, Copy)]
struct Span {
    event: usize,
    /// Where the JSON string's contents (or, for a raw event, all its data) lie in the data.
    start: usize,
    end: usize,
    role: Role,
    /// A delta's or an echo's channel; a whole text's item.
    owner: usize,
    /// A delta's place among its channel's deltas of the batch.
    segment: usize,
}

/// Counters a test or benchmark can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextStats {
    /// Batches after which some channel held text.
    pub held_batches: u64,
    /// The most text one channel held at once, in bytes.
    pub max_held_bytes: usize,
    /// Events inserted to release held text before a channel closed.
    pub release_events: u64,
}

/// One stream's streaming-text state.
#[derive(Default)]
pub struct TextEngine {
    classifier: Classifier,
    /// The parts of the event being read (its buffers reused).
    found: Found,
    /// Buffers of past items, for the next ones.
    spare_texts: Vec<String>,
    /// The buffer a changed event's data is written into before it is copied into the verdict.
    rendered: String,
    channels: Vec<Channel>,
    next_id: u32,
    spans: Vec<Span>,
    items: Vec<Item>,
    answers: Vec<Answer>,
    stopped: bool,
    stats: TextStats,
    /// This batch's time, read when a hold starts or ends.
    clock: BatchClock,
    /// The longest any text released since [`TextEngine::take_released_hold`] had been held.
    released_hold: Option<Duration>,
}

/// An answer that breaks the contract: the judge's fault.
fn broken(why: String) -> Fault {
    Fault::Trap { kind: TrapKind::Other, message: format!("a text answer breaks the contract: {why}") }
}

impl TextEngine {
    /// A stream whose formats are recognised as they come.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client's request body: no format is recognised in it, every key and string is judged.
    pub fn for_requests() -> Self {
        let mut engine = Self::default();
        engine.classifier.requests = true;
        engine
    }

    /// True once a judge stopped the stream.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// What the engine has seen and done so far.
    pub fn stats(&self) -> TextStats {
        self.stats
    }

    /// The most output tokens the provider reported in the stream's usage figures, if it did.
    pub fn output_tokens(&self) -> Option<u64> {
        self.classifier.output_tokens
    }

    /// How long the longest-held text released since the last call had been held back (from
    /// the batch it arrived in to the one that released it); `None` if no held text was released.
    pub fn take_released_hold(&mut self) -> Option<Duration> {
        self.released_hold.take()
    }

    /// The text all channels hold now, in bytes.
    pub fn held_bytes(&self) -> usize {
        self.channels.iter().map(|c| c.pending.len()).sum()
    }

    /// Runs `batch` through `judge` (one call for all its texts); the verdict goes to `out`.
    pub fn process(
        &mut self,
        judge: &mut dyn Judge,
        batch: BatchView<'_>,
        out: &mut VerdictBuilder,
    ) -> Result<(), Fault> {
        if self.stopped {
            out.drop_n(batch.len());
            return Ok(());
        }
        self.start_batch();
        for (at, event) in batch.iter().enumerate() {
            if let Some(data) = event.data() {
                self.read_event(at, data, judge.prefilter());
            }
        }
        self.collect_channel_items();
        let stop = self.call(judge)?;
        self.write(batch, stop, out);
        Ok(())
    }

    /// The stream ends: what the channels still hold is released, in inserted events.
    pub fn finish(&mut self, judge: &mut dyn Judge, out: &mut VerdictBuilder) -> Result<(), Fault> {
        if self.stopped {
            return Ok(());
        }
        self.start_batch();
        for channel in &mut self.channels {
            channel.closing_at = (!channel.pending.is_empty()).then_some(0);
            channel.closed = true;
        }
        self.collect_channel_items();
        let stop = self.call(judge)?;
        for at in 0..self.channels.len() {
            if self.channels[at].closing_at.is_some() {
                self.release_event(at, out);
            }
        }
        if let Some((_, reason)) = stop {
            self.write_ending(reason, out);
        }
        Ok(())
    }

    fn start_batch(&mut self) {
        self.spans.clear();
        self.clock.reset();
        // The items' buffers are kept for the next batch's items.
        self.spare_texts.extend(self.items.drain(..).map(|item| item.text));
        self.channels.retain(|c| !c.closed);
        for channel in &mut self.channels {
            (channel.last_span, channel.closing_at, channel.item) = (None, None, None);
            channel.released.clear();
            channel.segment_ends.clear();
            channel.parts.clear();
            channel.pieces = 0;
            channel.untouched = channel.pending.is_empty();
        }
    }

    /// Finds the texts of one event: deltas join their channel's pending text, whole texts
    /// become items of their own.
    fn read_event(&mut self, at: usize, data: &str, prefilter: &[u8]) {
        let mut found = std::mem::take(&mut self.found);
        self.classifier.classify(data, &mut found);
        for part in &found.parts {
            let raw = &data[part.start..part.end];
            let owner = match part.role {
                Role::Delta(kind) => {
                    let channel = self.channel(&part.key, kind);
                    let c = &mut self.channels[channel];
                    decode_into(raw, false, &mut c.pending);
                    c.segment_ends.push(c.pending.len());
                    c.last_span = Some(self.spans.len());
                    c.pieces += u32::from(!raw.is_empty());
                    channel
                }
                Role::Echo => match self.channels.iter().position(|c| c.key == part.key && !c.closed) {
                    Some(channel) => channel,
                    None => continue,
                },
                Role::Whole(kind) | Role::Key(kind) => {
                    let Some(item) = self.whole_item(raw, false, kind, prefilter) else { continue };
                    item
                }
                Role::Raw => {
                    let Some(item) = self.whole_item(raw, true, ChannelKind::Other, prefilter) else { continue };
                    item
                }
            };
            let segment = match part.role {
                Role::Delta(_) => self.channels[owner].segment_ends.len() - 1,
                _ => 0,
            };
            self.spans.push(Span { event: at, start: part.start, end: part.end, role: part.role, owner, segment });
        }
        for close in &found.closes {
            for channel in self.channels.iter_mut().filter(|c| !c.closed && close.covers(&c.key)) {
                channel.closing_at = Some(at);
                channel.closed = true;
            }
        }
        self.found = found;
    }

    /// A whole text as an item, unless the prefilter shows it passes unchanged.
    fn whole_item(&mut self, raw: &str, is_raw: bool, kind: ChannelKind, prefilter: &[u8]) -> Option<usize> {
        if !prefilter.is_empty() && !raw.bytes().any(|b| prefilter.contains(&b) || b == b'\\') {
            return None;
        }
        let mut text = self.spare_texts.pop().unwrap_or_default();
        text.clear();
        decode_into(raw, is_raw, &mut text);
        if !prefilter.is_empty() && !text.bytes().any(|b| prefilter.contains(&b)) {
            self.spare_texts.push(text);
            return None;
        }
        self.items.push(Item { channel: 0, kind, text, last: true, pieces: 0 });
        Some(self.items.len() - 1)
    }

    /// The open channel `key`, or a new one of `kind`.
    fn channel(&mut self, key: &Arc<str>, kind: ChannelKind) -> usize {
        if let Some(at) = self.channels.iter().position(|c| c.key == *key && !c.closed) {
            return at;
        }
        // Numbered from 1 (0 is a whole text), below 2^31 as the contract keeps every integer.
        self.next_id = self.next_id % 0x7fff_ffff + 1;
        let id = self.next_id;
        self.channels.push(Channel {
            key: key.clone(),
            kind,
            id,
            pending: String::new(),
            template: None,
            pieces: 0,
            closed: false,
            last_span: None,
            closing_at: None,
            item: None,
            released: String::new(),
            segment_ends: Vec::new(),
            parts: Vec::new(),
            untouched: true,
            arrivals: Arrivals::default(),
        });
        self.channels.len() - 1
    }

    /// One item per channel that got text or closes in this batch.
    fn collect_channel_items(&mut self) {
        for channel in &mut self.channels {
            let touched = channel.last_span.is_some() || channel.closing_at.is_some();
            if !touched || (channel.last_span.is_none() && channel.pending.is_empty()) {
                continue;
            }
            channel.item = Some(self.items.len());
            let last = channel.closing_at.is_some();
            let mut text = self.spare_texts.pop().unwrap_or_default();
            text.clear();
            text.push_str(&channel.pending);
            self.items.push(Item { channel: channel.id, kind: channel.kind, text, last, pieces: channel.pieces });
        }
    }

    /// Asks the judge, checks and applies its answers; returns the first stop: the event it
    /// takes effect at (`usize::MAX`: after the batch) and why.
    fn call(&mut self, judge: &mut dyn Judge) -> Result<Option<(usize, StopReason)>, Fault> {
        self.answers.clear();
        if self.items.is_empty() {
            return Ok(None);
        }
        judge.judge(&self.items, &mut self.answers)?;
        if self.answers.len() != self.items.len() {
            return Err(broken(format!("{} answers for {} items", self.answers.len(), self.items.len())));
        }
        let max_held = judge.max_held();
        let mut stop: Option<(usize, StopReason)> = None;
        for at in 0..self.items.len() {
            let item = &self.items[at];
            let (count, reason) = match &self.answers[at] {
                Answer::Release { count, .. } | Answer::Keep { count } => (*count, None),
                Answer::Stop { reason, .. } => (item.text.len(), Some(*reason)),
            };
            let all = item.last;
            if count > item.text.len() || !item.text.is_char_boundary(count) || (all && count != item.text.len()) {
                return Err(broken(format!("released {count} of {} bytes (must all: {all})", item.text.len())));
            }
            if item.text.len() - count > max_held {
                return Err(broken(format!("held {} bytes, over the {max_held} declared", item.text.len() - count)));
            }
            let event = match self.channels.iter().position(|c| c.item == Some(at)) {
                Some(index) => self.take_release(index, at, count),
                // Looked up only for a stop: once per item it made a batch of many whole texts
                // (a large JSON body) cost the square of their number.
                None if reason.is_some() => {
                    self.spans.iter().find(|s| s.owner == at && is_whole(s.role)).map_or(usize::MAX, |s| s.event)
                }
                None => usize::MAX,
            };
            if let Some(reason) = reason
                && stop.is_none_or(|(first, _)| event < first)
            {
                stop = Some((event, reason));
            }
        }
        if self.channels.iter().any(|c| !c.pending.is_empty()) {
            self.stats.held_batches += 1;
        }
        Ok(stop)
    }

    /// Gives channel `index` the answer to its item `at`, which releases `count` bytes; returns
    /// the event a stop in it takes effect at.
    fn take_release(&mut self, index: usize, at: usize, count: usize) -> usize {
        let channel = &mut self.channels[index];
        match &mut self.answers[at] {
            // The buffers trade places: no copy, and the channel's old one is reused.
            Answer::Release { text, .. } | Answer::Stop { text, .. } => std::mem::swap(&mut channel.released, text),
            Answer::Keep { .. } => {
                channel.released.clear();
                channel.released.push_str(&channel.pending[..count]);
            }
        }
        let kept = &channel.pending[..count];
        channel.untouched &= count == channel.pending.len() && channel.released == kept;
        let differs = split_release(kept, &channel.released, &channel.segment_ends, &mut channel.parts);
        channel.pending.drain(..count);
        let waited = channel.arrivals.answered(count, channel.pending.len(), &mut self.clock);
        self.released_hold = self.released_hold.max(waited);
        self.stats.max_held_bytes = self.stats.max_held_bytes.max(channel.pending.len());
        // A stop takes effect at the delta where the text stops going out as it came.
        let delta =
            self.spans.iter().find(|s| s.owner == index && matches!(s.role, Role::Delta(_)) && s.segment == differs);
        delta.map(|s| s.event).or(self.channels[index].closing_at).unwrap_or(usize::MAX)
    }

    /// The verdict for the batch, event by event.
    fn write(&mut self, batch: BatchView<'_>, stop: Option<(usize, StopReason)>, out: &mut VerdictBuilder) {
        let mut next_span = 0;
        for (at, event) in batch.iter().enumerate() {
            let first = next_span;
            while next_span < self.spans.len() && self.spans[next_span].event == at {
                next_span += 1;
            }
            if stop.is_some_and(|(event, _)| at > event) {
                out.drop();
                continue;
            }
            for channel in 0..self.channels.len() {
                let c = &self.channels[channel];
                // Held text of a channel that closes without a delta in this batch.
                if c.closing_at == Some(at) && c.last_span.is_none() {
                    self.release_event(channel, out);
                }
            }
            let stops_here = stop.filter(|(event, _)| *event == at).map(|(_, reason)| reason);
            let whole_stop = stops_here.is_some() && self.spans[first..next_span].iter().any(|s| self.stops(s));
            match event.data() {
                // A match outside the streamed text cannot be cut out of its event: it goes.
                _ if whole_stop => out.drop(),
                Some(data) if next_span > first => {
                    let mut rendered = std::mem::take(&mut self.rendered);
                    match self.render(data, first..next_span, None, &mut rendered) {
                        Some(_) => {
                            self.note_repeated_keys(data, first..next_span, &rendered);
                            out.replace(&Replacement::data(&rendered));
                        }
                        None => out.keep(),
                    }
                    self.rendered = rendered;
                    self.keep_templates(event.event_type(), data, first..next_span);
                }
                _ => out.keep(),
            }
            if let Some(reason) = stops_here {
                self.write_ending(reason, out);
            }
        }
        if let Some((usize::MAX, reason)) = stop {
            self.write_ending(reason, out);
        }
    }

    /// Keys the guard rewrote alike (two addresses masked the same) leave an object with a key
    /// twice, and a client's parser keeps one of its values: said in the log and counted
    /// (`repeated_keys`) rather than lost silently. Checked only when a key changed.
    fn note_repeated_keys(&mut self, data: &str, spans: Range<usize>, rendered: &str) {
        let key_changed =
            self.spans[spans].iter().any(|s| matches!(s.role, Role::Key(_)) && self.changes(data, s, None));
        if key_changed && self.classifier.repeats_a_key(rendered) {
            tracing::warn!("keys rewritten alike now repeat in one JSON object: a client keeps one of their values");
            sluicegate_guest::count::native::add("repeated_keys", 1);
        }
    }

    /// True if whole-text span `s` is one whose answer stops the stream.
    fn stops(&self, s: &Span) -> bool {
        is_whole(s.role) && matches!(self.answers.get(s.owner), Some(Answer::Stop { .. }))
    }

    /// Writes the event's data with its spans (`spans`) rewritten into `new` and returns where
    /// `own`'s text went; `None` when nothing changed. With `own` (a channel), every delta of the event is left empty and
    /// the position of the channel's text is returned: the template of a release event.
    fn render(&self, data: &str, spans: Range<usize>, own: Option<usize>, new: &mut String) -> Option<usize> {
        // Most events of a token stream go out as they came: find that out before copying.
        if own.is_none() && self.spans[spans.clone()].iter().all(|span| !self.changes(data, span, None)) {
            return None;
        }
        new.clear();
        let (mut copied, mut own_at) = (0, 0);
        for span in &self.spans[spans] {
            new.push_str(&data[copied..span.start]);
            match self.text_of(span, own) {
                Some(text) if own.is_some() || self.changes(data, span, Some(text)) => match span.role == Role::Raw {
                    true => new.push_str(&text.replace('\r', "\n")),
                    false => json::encode(text, new),
                },
                _ => new.push_str(&data[span.start..span.end]),
            }
            if own.is_some_and(|c| span.owner == c && matches!(span.role, Role::Delta(_))) {
                own_at = new.len();
            }
            copied = span.end;
        }
        new.push_str(&data[copied..]);
        Some(own_at)
    }

    /// What goes out in place of `span` (`None`: its bytes as they are); with `own` (rendering a
    /// release template), every delta is empty.
    fn text_of(&self, span: &Span, own: Option<usize>) -> Option<&str> {
        match span.role {
            Role::Delta(_) if own.is_some() => Some(""),
            Role::Delta(_) => {
                let channel = &self.channels[span.owner];
                Some(channel.parts.get(span.segment).map_or("", |part| &channel.released[part.clone()]))
            }
            Role::Echo if own.is_none() && self.channels[span.owner].untouched => None,
            Role::Echo => Some(""),
            Role::Whole(_) | Role::Key(_) | Role::Raw => match self.answers.get(span.owner) {
                Some(Answer::Release { text, .. } | Answer::Stop { text, .. }) => Some(text.as_str()),
                Some(Answer::Keep { .. }) | None => None,
            },
        }
    }

    /// True if `span` of `data` goes out changed (given its new text, if known).
    fn changes(&self, data: &str, span: &Span, text: Option<&str>) -> bool {
        match text.or_else(|| self.text_of(span, None)) {
            Some(text) => !same_text(&data[span.start..span.end], text, span.role == Role::Raw),
            None => false,
        }
    }

    /// Remembers, for each channel that still holds text and whose last delta is in this event,
    /// the event around that delta (with every delta emptied): where its held text is released
    /// if it closes in a batch without a delta of its own.
    fn keep_templates(&mut self, event_type: Option<&str>, data: &str, spans: Range<usize>) {
        for s in spans.clone() {
            let channel = self.spans[s].owner;
            let is_last = matches!(self.spans[s].role, Role::Delta(_)) && self.channels[channel].last_span == Some(s);
            if !is_last || self.channels[channel].pending.is_empty() {
                continue;
            }
            // The usual event holds this one delta and nothing else: its bytes around the text,
            // into the buffers of the last template (no allocation once they are big enough).
            let one = (spans.len() == 1).then(|| (&data[..self.spans[s].start], &data[self.spans[s].end..]));
            let mut rendered = String::new();
            let (before, after) = match one {
                Some(parts) => parts,
                None => match self.render(data, spans.clone(), Some(channel), &mut rendered) {
                    Some(at) => rendered.split_at(at),
                    None => continue,
                },
            };
            let template = self.channels[channel].template.get_or_insert_with(Template::default);
            template.event_type.clear();
            template.event_type.push_str(event_type.unwrap_or(""));
            template.before.clear();
            template.before.push_str(before);
            template.after.clear();
            template.after.push_str(after);
        }
    }

    /// Inserts an event that releases what channel `at` was given to release as it closes.
    fn release_event(&mut self, at: usize, out: &mut VerdictBuilder) {
        let channel = &self.channels[at];
        let Some(template) = channel.template.as_ref().filter(|_| !channel.released.is_empty()) else { return };
        let mut data = String::with_capacity(template.before.len() + channel.released.len() + template.after.len());
        data.push_str(&template.before);
        json::encode(&channel.released, &mut data);
        data.push_str(&template.after);
        let event_type = Some(template.event_type.as_str()).filter(|t| !t.is_empty());
        out.insert(&NewEvent { event_type, ..NewEvent::message(&data) });
        self.stats.release_events += 1;
    }

    fn write_ending(&mut self, reason: StopReason, out: &mut VerdictBuilder) {
        self.stopped = true;
        let open: Vec<&str> = self.channels.iter().filter(|c| !c.closed).map(|c| &*c.key).collect();
        endings::write(&self.classifier, reason, &open, out);
        out.end();
    }
}

/// Where a channel's release goes among its deltas of the batch. `kept` is the pending text it
/// released (held text from before first), `text` what goes out in its place. The text they
/// share at the start and at the end stays in the delta it came in; what differs (a mask, a cut)
/// goes, whole, in the delta where the difference starts, and the deltas inside it go out empty.
/// So a guard that changes nothing changes no event, and one that masks a value moves only that
/// value. Each part is a range of `text`; returns the delta where the text first differs (or the
/// last one).
fn split_release(kept: &str, text: &str, segment_ends: &[usize], parts: &mut Vec<Range<usize>>) -> usize {
    let (k, t) = (kept.as_bytes(), text.as_bytes());
    let mut prefix = k.iter().zip(t).take_while(|(a, b)| a == b).count();
    while !kept.is_char_boundary(prefix) || !text.is_char_boundary(prefix) {
        prefix -= 1;
    }
    let mut suffix = k[prefix..].iter().rev().zip(t[prefix..].iter().rev()).take_while(|(a, b)| a == b).count();
    while !kept.is_char_boundary(k.len() - suffix) || !text.is_char_boundary(t.len() - suffix) {
        suffix -= 1;
    }
    let (tail_in_kept, tail_in_text) = (k.len() - suffix, t.len() - suffix);
    // A boundary of the deltas in `kept`, where it falls in `text`.
    let map = |at: usize| {
        let at = at.min(k.len());
        if at <= prefix {
            at
        } else if at >= tail_in_kept {
            at - tail_in_kept + tail_in_text
        } else {
            tail_in_text
        }
    };
    parts.clear();
    let mut start = 0;
    for &end in segment_ends {
        parts.push(map(start)..map(end));
        start = end;
    }
    segment_ends.iter().position(|&end| end > prefix).unwrap_or(segment_ends.len().saturating_sub(1))
}

fn is_whole(role: Role) -> bool {
    matches!(role, Role::Whole(_) | Role::Key(_) | Role::Raw)
}

/// True if the raw span already says `text` (decoded, for a JSON string).
fn same_text(raw: &str, text: &str, is_raw: bool) -> bool {
    if is_raw || !raw.contains('\\') {
        return raw == text;
    }
    let mut decoded = String::with_capacity(raw.len());
    json::decode(raw, &mut decoded);
    decoded == text
}

/// Appends the text of `raw`: a JSON string's contents, decoded; a raw event's data, as it is.
fn decode_into(raw: &str, is_raw: bool, out: &mut String) {
    if is_raw || !raw.contains('\\') {
        out.push_str(raw);
    } else {
        json::decode(raw, out);
    }
}

#[cfg(test)]
mod tests;
