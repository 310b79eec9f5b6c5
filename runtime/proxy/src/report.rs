//! What an event stream's end reports: the route's held-text figure, a warning for events it
//! dropped as oversized, its enforcement record and its spans. Made by the stream itself, or, when
//! a stream dropped mid-call has its chain finished on a blocking thread, there in its place.

use super::accounting::{Direction, EnforcementRecord, Outcome, Reason};
use super::route::RouteStats;
use super::telemetry::{StreamSpans, Waits};
use crate::engine::{Framing, Output, StreamEngine};
use sluicegate_guest::EndReason;
use std::time::Instant;

/// What a stream's report is made of, kept by the stream as it runs (and handed over whole
/// when its end is reported elsewhere).
pub(super) struct StreamFigures {
    pub(super) stream_id: String,
    pub(super) route_prefix: String,
    pub(super) started: Instant,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    /// Its spans for export (`None` while export is off).
    pub(super) spans: Option<Box<StreamSpans>>,
    /// Its waits, for its span.
    pub(super) waits: Waits,
}

impl StreamFigures {
    /// A stream's, from now.
    pub(super) fn new(stream_id: String, route_prefix: String) -> Self {
        StreamFigures {
            stream_id,
            route_prefix,
            started: Instant::now(),
            bytes_in: 0,
            bytes_out: 0,
            spans: None,
            waits: Waits::default(),
        }
    }

    /// The stream ended with `end`, its chain finished with `tail` (`None`: the finish faulted);
    /// returns the tail's bytes, to send. `route` and `max_event_bytes` are the stream's.
    pub(super) fn ended(
        &mut self,
        route: &RouteStats,
        max_event_bytes: usize,
        engine: &StreamEngine,
        end: EndReason,
        tail: Option<Output>,
    ) -> Vec<u8> {
        let skipped = engine.oversized();
        if skipped > 0 {
            tracing::warn!(events = skipped, limit = max_event_bytes, "dropped upstream events over the size limit");
        }
        let tail = match tail {
            Some(tail) => {
                note_held(route, &mut self.waits, tail.released_hold);
                tail.bytes
            }
            None => Vec::new(),
        };
        tracing::debug!(reason = ?end, "event stream ended");
        let end = match end {
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::UpstreamFailed => "upstream_failed",
            EndReason::ClientGone => "client_gone",
            EndReason::EndedByInterceptor => "ended_by_interceptor",
            EndReason::Shutdown => "shutdown",
        };
        self.record(engine, end, Outcome::Inspected, Reason::EventStream);
        tail
    }

    /// Logs the enforcement record and closes the spans.
    pub(super) fn record(&self, engine: &StreamEngine, end: &'static str, outcome: Outcome, reason: Reason) {
        EnforcementRecord {
            stream_id: &self.stream_id,
            route: &self.route_prefix,
            direction: Direction::Response,
            kind: match engine.framing() {
                Framing::EventStream => "event_stream",
                Framing::Lines => "lines",
            },
            outcome,
            reason,
            end: Some(end),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration: self.started.elapsed(),
            interceptors: engine.records(),
        }
        .log();
        if let Some(spans) = &self.spans {
            let bytes = (self.bytes_in, self.bytes_out);
            spans.close(end, outcome == Outcome::Refused, engine.records(), bytes, engine.facts(), &self.waits);
        }
    }
}

/// Counts how long the text a batch released had been held back, if it had been.
pub(super) fn note_held(route: &RouteStats, waits: &mut Waits, held: Option<std::time::Duration>) {
    if let Some(held) = held {
        route.latency.held_text.observe(held.as_secs_f64());
        waits.held_max = waits.held_max.max(Some(held));
    }
}
