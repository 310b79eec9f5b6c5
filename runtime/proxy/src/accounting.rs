//! Every body on a guarded route accounted for: what happened to it (inspected, refused, or
//! passed uninspected by a rule the operator set) and why, counted per route in `/metrics`, and
//! one enforcement record in the log per stream or body that says what every interceptor did.

use crate::chain::LinkRecord;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which way a body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Request, Direction::Response];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// What became of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It went through the chain (which may have rewritten it).
    Inspected,
    /// It was not forwarded; the client got an error in its place.
    Refused,
    /// It was forwarded without the chain, by a rule (see [`Reason`]).
    Passed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Inspected => "inspected",
            Outcome::Refused => "refused",
            Outcome::Passed => "passed",
        }
    }
}

/// Why a body had its outcome. Each reason belongs to one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Inspected: an event stream.
    EventStream,
    /// Inspected: a whole body (JSON or other text).
    Body,
    /// Inspected: line-delimited JSON, line by line.
    Lines,
    /// Refused: an interceptor refused it.
    Interceptor,
    /// Refused: an interceptor faulted under `fail-closed`.
    Fault,
    /// Refused (`on_oversize = "refuse"`) or passed (`"pass"`): over `max_body_bytes`.
    Oversize,
    /// Refused: not valid text in its encoding, so it cannot be given to the chain as text.
    InvalidUtf8,
    /// Refused: in a charset the proxy does not know, or that reads otherwise as UTF-8.
    Charset,
    /// Refused: binary content (neither text nor JSON) without a rule that passes it.
    Binary,
    /// Refused: the bytes held for inspection across the proxy were at `max_buffered_bytes`.
    BufferFull,
    /// Refused: compressed with a coding the proxy cannot decode.
    UnsupportedEncoding,
    /// Refused: the body failed while it was read (or did not decode).
    ReadFailed,
    /// Passed: no body (a GET, a 204, a HEAD response, an empty body).
    Empty,
    /// Passed: binary content whose media type the route's `pass_media_types` lists.
    MediaType,
    /// Passed: the route has no chain for this direction.
    NoChain,
}

impl Reason {
    const ALL: [Reason; 15] = [
        Reason::EventStream,
        Reason::Body,
        Reason::Lines,
        Reason::Interceptor,
        Reason::Fault,
        Reason::Oversize,
        Reason::InvalidUtf8,
        Reason::Charset,
        Reason::Binary,
        Reason::BufferFull,
        Reason::UnsupportedEncoding,
        Reason::ReadFailed,
        Reason::Empty,
        Reason::MediaType,
        Reason::NoChain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::EventStream => "event_stream",
            Reason::Body => "body",
            Reason::Lines => "lines",
            Reason::Interceptor => "interceptor",
            Reason::Fault => "fault",
            Reason::Oversize => "oversize",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::Charset => "charset",
            Reason::Binary => "binary",
            Reason::BufferFull => "buffer_full",
            Reason::UnsupportedEncoding => "unsupported_encoding",
            Reason::ReadFailed => "read_failed",
            Reason::Empty => "empty",
            Reason::MediaType => "media_type",
            Reason::NoChain => "no_chain",
        }
    }
}

/// Outcomes that can have each reason.
const OUTCOMES: [Outcome; 3] = [Outcome::Inspected, Outcome::Refused, Outcome::Passed];

/// One route's body counts, by direction, outcome and reason.
#[derive(Debug, Default)]
pub struct BodyCounts {
    counts: [[[AtomicU64; Reason::ALL.len()]; OUTCOMES.len()]; 2],
}

impl BodyCounts {
    pub fn count(&self, direction: Direction, outcome: Outcome, reason: Reason) {
        self.slot(direction, outcome, reason).fetch_add(1, Ordering::Relaxed);
    }

    fn slot(&self, direction: Direction, outcome: Outcome, reason: Reason) -> &AtomicU64 {
        let d = Direction::ALL.iter().position(|&x| x == direction).unwrap_or(0);
        let o = OUTCOMES.iter().position(|&x| x == outcome).unwrap_or(0);
        let r = Reason::ALL.iter().position(|&x| x == reason).unwrap_or(0);
        &self.counts[d][o][r]
    }

    /// Every count that is not zero.
    pub fn nonzero(&self) -> impl Iterator<Item = (Direction, Outcome, Reason, u64)> + '_ {
        Direction::ALL.into_iter().flat_map(move |d| {
            OUTCOMES.into_iter().flat_map(move |o| {
                Reason::ALL.into_iter().filter_map(move |r| {
                    let n = self.slot(d, o, r).load(Ordering::Relaxed);
                    (n > 0).then_some((d, o, r, n))
                })
            })
        })
    }
}

/// What a phase of a request found out about one of its bodies; the proxy writes it, once, as
/// the request's last phase (an event stream writes its own when it ends).
#[derive(Debug, Clone)]
pub(super) struct BodyRecord {
    pub outcome: Outcome,
    pub reason: Reason,
    /// Bytes received (decoded) and sent on.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// What each interceptor did to it.
    pub interceptors: Vec<LinkRecord>,
    /// An event stream (or JSON lines): counted with the request, logged by the stream at its end.
    pub streamed: bool,
}

impl BodyRecord {
    /// A body that met no interceptor.
    pub(super) fn new(outcome: Outcome, reason: Reason) -> Self {
        BodyRecord { outcome, reason, bytes_in: 0, bytes_out: 0, interceptors: Vec::new(), streamed: false }
    }

    /// With its byte counts.
    pub(super) fn bytes(mut self, bytes_in: u64, bytes_out: u64) -> Self {
        (self.bytes_in, self.bytes_out) = (bytes_in, bytes_out);
        self
    }

    /// With what its interceptors did.
    pub(super) fn interceptors(mut self, records: &[LinkRecord]) -> Self {
        self.interceptors = records.to_vec();
        self
    }
}

/// What happened to one stream or body on a guarded route: logged once, when it ends, as one
/// line (target `sluicegate::enforcement`; with `--log-format json`, one JSON object whose
/// `interceptors` field holds the per-interceptor records as a JSON array).
#[derive(Debug, Clone, Serialize)]
pub(super) struct EnforcementRecord<'a> {
    pub stream_id: &'a str,
    pub route: &'a str,
    pub direction: Direction,
    /// `event_stream` or `body`.
    pub kind: &'static str,
    pub outcome: Outcome,
    pub reason: Reason,
    /// For an event stream, why it ended.
    pub end: Option<&'static str>,
    /// Bytes received (decoded) and sent on.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub interceptors: &'a [LinkRecord],
}

impl EnforcementRecord<'_> {
    /// Writes the record to the log. A pass is a warning when it skipped a chain that was there
    /// to run (an oversize body passed by rule); the rest are info, and empty bodies debug.
    pub(super) fn log(&self) {
        let interceptors = serde_json::to_string(self.interceptors).unwrap_or_default();
        let duration_ms = self.duration.as_secs_f64() * 1000.0;
        macro_rules! record {
            ($level:ident) => {
                tracing::$level!(
                    target: "sluicegate::enforcement",
                    stream_id = self.stream_id,
                    route = self.route,
                    direction = self.direction.name(),
                    kind = self.kind,
                    outcome = self.outcome.name(),
                    reason = self.reason.name(),
                    end = self.end,
                    bytes_in = self.bytes_in,
                    bytes_out = self.bytes_out,
                    duration_ms,
                    interceptors = %interceptors,
                    "enforcement record"
                )
            };
        }
        match (self.outcome, self.reason) {
            (_, Reason::Empty) => record!(debug),
            (Outcome::Passed, Reason::Oversize) => record!(warn),
            _ => record!(info),
        }
    }
}
