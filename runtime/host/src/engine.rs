//! One event stream's steps, without I/O: parse what arrives (an event stream, or JSON lines:
//! [`Framing`]), group complete events into batches, run each batch through the chain, remember ids (to skip what an upstream replays after
//! a resumption), encode what the chain leaves. The proxy drives it from sockets
//! (`proxy::events`), `sluicegate run` from standard input (the binary's `cli::pipeline`), and the benches
//! directly, so that what the benches measure is what the proxy runs.
//!
//! The driver feeds bytes ([`StreamEngine::feed`]), then takes batches until none is ready
//! ([`StreamEngine::next_batch`]), each encoded in one buffer that is written as one chunk; at
//! the end of the input it says how ([`StreamEngine::end_input`], [`StreamEngine::abandon_partial`])
//! and finishes the chain ([`StreamEngine::finish`]).

use crate::batch::Batch;
use crate::chain::{ChainFault, ChainStream, LinkRecord};
use crate::config::BatchConfig;
use crate::lines::{self, LineParser};
use crate::sse::{self, Event, Parser};
use crate::text::facts::{FactReader, Facts};
use bytes::Bytes;
use sluicegate_guest::EndReason;
use std::collections::VecDeque;

/// Caps on one batch. A batch is the complete events available at one moment, up to these.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// The most events in one batch.
    pub max_events: usize,
    /// The most field bytes in one batch (one larger event still makes a batch of its own).
    pub max_bytes: usize,
}

impl BatchLimits {
    /// Whether `batch` can take another event: under the event cap, and under the byte cap
    /// unless it is empty (a single event larger than `max_bytes` still makes a batch).
    pub fn admits(&self, batch: &Batch) -> bool {
        batch.len() < self.max_events && (batch.is_empty() || batch.byte_len() < self.max_bytes)
    }
}

/// `[batch]`'s defaults.
impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits::from(&BatchConfig::default())
    }
}

impl From<&BatchConfig> for BatchLimits {
    fn from(batch: &BatchConfig) -> Self {
        BatchLimits { max_events: batch.max_events, max_bytes: batch.max_bytes }
    }
}

/// How a stream's bytes are framed into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Server-Sent Events.
    #[default]
    EventStream,
    /// Line-delimited JSON (NDJSON, JSON Lines): a line per event.
    Lines,
}

/// The parser of a [`Framing`]. (One per stream, made once and never moved: the size of the
/// event-stream parser's variant costs nothing.)
#[allow(clippy::large_enum_variant)]
enum Decoder {
    EventStream(Parser),
    Lines(LineParser),
}

/// Ids remembered per stream to skip events an upstream replays after a resumption.
const RECENT_IDS: usize = 32;

/// The last [`RECENT_IDS`] ids forwarded, oldest first. Slots are reused, so remembering an id
/// allocates nothing once the ring is full.
#[derive(Default)]
struct RecentIds {
    ids: VecDeque<Vec<u8>>,
}

impl RecentIds {
    fn push(&mut self, id: &[u8]) {
        let mut slot = if self.ids.len() == RECENT_IDS { self.ids.pop_front().unwrap_or_default() } else { Vec::new() };
        slot.clear();
        slot.extend_from_slice(id);
        self.ids.push_back(slot);
    }

    fn contains(&self, id: &[u8]) -> bool {
        self.ids.iter().any(|seen| seen == id)
    }

    fn newest(&self) -> Option<&[u8]> {
        self.ids.back().map(Vec::as_slice)
    }
}

/// One batch through the chain, encoded.
#[derive(Debug)]
pub struct Output {
    /// The encoding of what the chain left (empty if it dropped every event).
    pub bytes: Vec<u8>,
    /// Events that went in, and came out.
    pub events_in: usize,
    /// Events that came out.
    pub events_out: usize,
    /// The chain ended the stream with this batch.
    pub ended: bool,
    /// The batch stopped at its limits, so complete events may be left: ask for the next batch.
    /// (Otherwise the parser holds no complete event, and asking again would find none.)
    pub more: bool,
    /// How long the longest-held text this batch released had been held back by a link (from
    /// the batch it arrived in to this one); `None` if it released no held text.
    pub released_hold: Option<std::time::Duration>,
}

/// Totals of one stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Events fed to the chain.
    pub events_in: u64,
    /// Events that came out of it.
    pub events_out: u64,
    /// Batches through the chain.
    pub batches: u64,
    /// Events skipped as replays after a resumption.
    pub replayed: u64,
}

/// One event stream through one chain.
pub struct StreamEngine {
    decoder: Decoder,
    batch: Batch,
    chain: ChainStream,
    limits: BatchLimits,
    recent_ids: RecentIds,
    /// True after a resumption until the first event that was not forwarded before.
    skipping_replay: bool,
    /// The upstream's last `retry`.
    retry_ms: Option<u32>,
    /// What the parser still held as complete when the input ended: the last batch's last event.
    tail: Option<Event>,
    stats: EngineStats,
    /// The GenAI facts of the stream's events, read only when asked for (telemetry).
    facts: Option<Box<FactReader>>,
}

impl StreamEngine {
    /// An engine for an event stream through `chain`; events larger than `max_event_bytes` are
    /// dropped by the parser.
    pub fn new(chain: ChainStream, limits: BatchLimits, max_event_bytes: usize) -> Self {
        Self::with_framing(chain, limits, max_event_bytes, Framing::EventStream)
    }

    /// An engine for a stream framed as `framing`.
    pub fn with_framing(chain: ChainStream, limits: BatchLimits, max_event_bytes: usize, framing: Framing) -> Self {
        StreamEngine {
            decoder: match framing {
                Framing::EventStream => Decoder::EventStream(Parser::with_limit(max_event_bytes)),
                Framing::Lines => Decoder::Lines(LineParser::with_limit(max_event_bytes)),
            },
            batch: Batch::new(),
            chain,
            limits,
            recent_ids: RecentIds::default(),
            skipping_replay: false,
            retry_ms: None,
            tail: None,
            stats: EngineStats::default(),
            facts: None,
        }
    }

    /// Reads the GenAI facts of the events from now on (see [`Facts`]); off unless asked for, as
    /// it searches every event's bytes.
    pub fn read_facts(&mut self) {
        self.facts.get_or_insert_default();
    }

    /// The GenAI facts read so far, if [`StreamEngine::read_facts`] was asked for.
    pub fn facts(&self) -> Option<&Facts> {
        self.facts.as_deref().map(FactReader::facts)
    }

    /// Bytes as they arrived.
    pub fn feed(&mut self, bytes: Bytes) {
        match &mut self.decoder {
            Decoder::EventStream(parser) => parser.feed_bytes(bytes),
            Decoder::Lines(parser) => parser.feed(&bytes),
        }
    }

    /// Bytes read into a buffer of the caller's (copied once, into the parser).
    pub fn feed_slice(&mut self, bytes: &[u8]) {
        match &mut self.decoder {
            Decoder::EventStream(parser) => parser.feed(bytes),
            Decoder::Lines(parser) => parser.feed(bytes),
        }
    }

    /// Bytes fed and not yet taken into a batch.
    pub fn buffered(&self) -> usize {
        match &self.decoder {
            Decoder::EventStream(parser) => parser.buffered(),
            Decoder::Lines(parser) => parser.buffered(),
        }
    }

    /// True if the chain has been slow lately (see [`ChainStream::is_slow`]).
    pub fn is_slow(&self) -> bool {
        self.chain.is_slow()
    }

    /// The next batch of complete events (up to the limits, replays skipped) through the chain,
    /// encoded; `None` when no complete event is left.
    pub fn next_batch(&mut self) -> Result<Option<Output>, ChainFault> {
        self.batch.clear();
        let drained = self.fill();
        if drained && let Some(event) = self.tail.take() {
            self.batch.push(&event); // checked again: one event, at the end
        }
        if self.batch.is_empty() {
            return Ok(None);
        }
        let events_in = self.batch.len();
        let ended = self.chain.process(&mut self.batch)?;
        self.stats.batches += 1;
        self.stats.events_in += events_in as u64;
        Ok(Some(self.encode(events_in, ended, !drained)))
    }

    /// Moves complete events from the parser into the batch, up to the limits; skips events
    /// replayed after a resumption. Returns true when the parser has no complete event left.
    fn fill(&mut self) -> bool {
        while self.limits.admits(&self.batch) {
            let mark = self.batch.mark();
            let parsed = match &mut self.decoder {
                Decoder::EventStream(parser) => parser.next_into(&mut self.batch),
                Decoder::Lines(parser) => parser.next_into(&mut self.batch),
            };
            if !parsed {
                return true;
            }
            let event = self.batch.view().get(self.batch.len() - 1).expect("an event was appended");
            if let Some(id) = event.id() {
                if self.skipping_replay && self.recent_ids.contains(id.as_bytes()) {
                    tracing::debug!(id, "skipped an event replayed after resumption");
                    self.stats.replayed += 1;
                    self.batch.rewind(mark);
                    continue;
                }
                self.skipping_replay = false;
                self.recent_ids.push(id.as_bytes());
            }
            if let Some(ms) = event.retry() {
                self.retry_ms = Some(ms);
            }
            if let (Some(reader), Some(data)) = (&mut self.facts, event.data()) {
                reader.observe(data);
            }
        }
        false
    }

    /// The batch, encoded in one allocation sized to fit (handed on without a copy). Field names,
    /// separators and line ends add ~21 bytes to a typical event (`event: `, `data: `, `id: `);
    /// an estimate under that would make every batch grow the buffer once, copying it.
    fn encode(&mut self, events_in: usize, ended: bool, more: bool) -> Output {
        let mut bytes = Vec::with_capacity(self.batch.byte_len() + 32 * self.batch.len());
        match self.decoder {
            Decoder::EventStream(_) => sse::write_batch(&mut bytes, &self.batch),
            Decoder::Lines(_) => lines::encode_batch(&mut bytes, self.batch.view()),
        }
        let events_out = self.batch.len();
        self.stats.events_out += events_out as u64;
        Output { bytes, events_in, events_out, ended, more, released_hold: self.chain.take_released_hold() }
    }

    /// The input ended normally: an event without its terminating blank line is discarded, as
    /// the spec says (returns its bytes; a last line without its line end is a line); what the
    /// parser still holds as complete goes out with the next batches.
    pub fn end_input(&mut self) -> usize {
        match &mut self.decoder {
            Decoder::EventStream(parser) => {
                self.tail = parser.finish();
                parser.discarded()
            }
            Decoder::Lines(parser) => {
                self.tail = parser.finish();
                parser.discarded()
            }
        }
    }

    /// The input failed and will be resumed: a partial event is dropped (the upstream sends it
    /// again), and events the upstream replays are skipped until a new one arrives.
    pub fn abandon_partial(&mut self) {
        match &mut self.decoder {
            Decoder::EventStream(parser) => drop(parser.finish()),
            Decoder::Lines(parser) => parser.abandon(),
        }
    }

    /// How the stream is framed.
    pub fn framing(&self) -> Framing {
        match self.decoder {
            Decoder::EventStream(_) => Framing::EventStream,
            Decoder::Lines(_) => Framing::Lines,
        }
    }

    /// A resumed input begins: skip what was already forwarded.
    pub fn resumed(&mut self) {
        self.skipping_replay = true;
    }

    /// The chain's last words for a stream that ends for `reason`, encoded.
    pub fn finish(&mut self, reason: EndReason) -> Result<Output, ChainFault> {
        self.batch = self.chain.finish(reason)?;
        Ok(self.encode(0, true, false))
    }

    /// The newest id forwarded: where a resumption starts.
    pub fn last_id(&self) -> Option<&[u8]> {
        self.recent_ids.newest()
    }

    /// The upstream's last `retry`, in milliseconds.
    pub fn retry_ms(&self) -> Option<u32> {
        self.retry_ms
    }

    /// Events the parser dropped for being over the size limit.
    pub fn oversized(&self) -> u64 {
        match &self.decoder {
            Decoder::EventStream(parser) => parser.oversized(),
            Decoder::Lines(parser) => parser.oversized(),
        }
    }

    /// What each interceptor did to this stream.
    pub fn records(&self) -> &[LinkRecord] {
        self.chain.records()
    }

    /// The stream's totals so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;

    fn engine(max_events: usize) -> StreamEngine {
        let chain = Chain::new(Vec::new()).open(&sluicegate_guest::StreamContext::default()).unwrap();
        StreamEngine::new(
            chain,
            BatchLimits { max_events, ..BatchLimits::default() },
            crate::sse::DEFAULT_MAX_EVENT_BYTES,
        )
    }

    fn text(out: &Output) -> &str {
        std::str::from_utf8(&out.bytes).unwrap()
    }

    #[test]
    fn batches_hold_the_complete_events_up_to_the_limit() {
        let mut engine = engine(2);
        engine.feed(Bytes::from_static(b"data: a\n\ndata: b\n\ndata: c\n\ndata: partial"));
        let first = engine.next_batch().unwrap().unwrap();
        assert_eq!((first.events_in, text(&first)), (2, "data: a\n\ndata: b\n\n"));
        assert!(first.more, "stopped at the limit: another batch may follow");
        let second = engine.next_batch().unwrap().unwrap();
        assert_eq!(text(&second), "data: c\n\n");
        assert!(!second.more, "drained: the caller need not ask again");
        assert!(engine.next_batch().unwrap().is_none(), "the partial event waits for its blank line");
        assert_eq!(engine.end_input(), "data: partial".len(), "and is discarded at the end, as the spec says");
        assert!(engine.next_batch().unwrap().is_none());
        assert_eq!(engine.stats(), EngineStats { events_in: 3, events_out: 3, batches: 2, replayed: 0 });
    }

    #[test]
    fn json_lines_are_events_and_go_out_as_lines() {
        let chain = Chain::new(Vec::new()).open(&sluicegate_guest::StreamContext::default()).unwrap();
        let mut engine = StreamEngine::with_framing(chain, BatchLimits::default(), 1024, Framing::Lines);
        engine.feed(Bytes::from_static(b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\""));
        let out = engine.next_batch().unwrap().unwrap();
        assert_eq!((out.events_in, text(&out)), (2, "{\"a\":1}\n{\"b\":2}\n"));
        engine.feed(Bytes::from_static(b":3}"));
        assert!(engine.next_batch().unwrap().is_none(), "the last line waits for its end or the stream's");
        assert_eq!(engine.end_input(), 0);
        assert_eq!(text(&engine.next_batch().unwrap().unwrap()), "{\"c\":3}\n");
    }

    #[test]
    fn after_a_resumption_replayed_ids_are_skipped_until_a_new_one() {
        let mut engine = engine(16);
        engine.feed(Bytes::from_static(b"id: 1\ndata: a\n\nid: 2\ndata: b\nretry: 50\n\nid: 3\ndata: half"));
        engine.next_batch().unwrap().unwrap();
        engine.abandon_partial();
        assert_eq!((engine.last_id(), engine.retry_ms()), (Some(&b"2"[..]), Some(50)));
        engine.resumed();
        engine
            .feed(Bytes::from_static(b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\nid: 1\ndata: new a\n\n"));
        let out = engine.next_batch().unwrap().unwrap();
        assert_eq!(
            text(&out),
            "data: c\nid: 3\n\ndata: new a\nid: 1\n\n",
            "an id seen before is new once the replay is over"
        );
        assert_eq!(engine.stats().replayed, 2);
    }
}
