//! The host's view of an interceptor, whatever runs it (a component or native code).

use crate::batch::Batch;
use crate::verdict::{Applied, VerdictError};
use sluicegate_guest::{EndReason, StreamContext};
use std::fmt;

/// An interceptor ready to serve streams: a loaded component, or a native one.
pub trait Interceptor: Send + Sync {
    /// The name shown in logs and errors (e.g. `example:redact`).
    fn name(&self) -> &str;

    /// Which contract the interceptor implements.
    fn world(&self) -> World;

    /// Starts a stream.
    fn open(&self, context: &StreamContext) -> Result<Box<dyn InterceptorStream>, Fault>;

    /// Streams opened and not yet dropped (to check that nothing leaks).
    fn live_streams(&self) -> usize {
        0
    }
}

/// One interceptor's state for one stream.
pub trait InterceptorStream: Send {
    /// Runs the interceptor over `input`. On success the output is in `output`, or, when the
    /// result says `unchanged`, it is `input` itself.
    fn process(&mut self, input: &Batch, output: &mut Batch) -> Result<Applied, Fault>;

    /// Ends the stream; events to send before closing are written to `output`.
    fn finish(&mut self, reason: EndReason, output: &mut Batch) -> Result<Applied, Fault>;

    /// How long the longest-held text its last call released had been held back (a text
    /// interceptor holds text where a match could begin); `None` if it released none it held.
    fn released_hold(&mut self) -> Option<std::time::Duration> {
        None
    }

    /// Frees the stream's state without finishing it: the stream was cancelled (its client went
    /// away before the end, or an interceptor before this one failed it). Nothing is sent.
    fn close(&mut self) -> Result<(), Fault> {
        Ok(())
    }
}

/// The contract an interceptor implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `sluicegate:interceptor/batch-interceptor`: one call per batch, per-stream state.
    Batch,
    /// `sluicegate:interceptor/event-interceptor`: one call per event, run through the shim.
    Event,
    /// `sluicegate:interceptor/text-interceptor`: decoded text from the host's streaming-text
    /// engine, one call per batch.
    Text,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Batch => "sluicegate:interceptor/batch-interceptor",
            World::Event => "sluicegate:interceptor/event-interceptor",
            World::Text => "sluicegate:interceptor/text-interceptor",
        })
    }
}

/// Something an interceptor did wrong. The proxy applies the interceptor's fault policy; the
/// batch in question is never forwarded as the interceptor left it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guest trapped: `kind` says why (its deadline, its memory limit, a panic, ...), the
    /// message is wasmtime's (with the guest's backtrace when it has one).
    #[error("trapped ({kind}): {message}")]
    Trap {
        /// Why it trapped.
        kind: TrapKind,
        /// wasmtime's message, with the guest's backtrace when it has one.
        message: String,
    },
    /// The verdict breaks the contract.
    #[error("invalid verdict: {0}")]
    InvalidVerdict(#[from] VerdictError),
    /// The interceptor cannot be used (its instance could not be created, or it failed earlier
    /// and was discarded along with this stream's state).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The interceptor called the host's store and could not reach it (Redis down, or too slow):
    /// whatever the call returned, it is a fault, so a guardrail that relies on the store cannot
    /// be passed by making the store unreachable.
    #[error("the store is unavailable: {0}")]
    Store(String),
    /// The interceptor's circuit breaker is open after repeated faults.
    #[error("out of service: its circuit breaker is open after repeated faults")]
    CircuitOpen,
}

/// Why a guest trapped, read from wasmtime's trap code (or the host's limit error) rather than
/// from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapKind {
    /// The call ran past its deadline (the epoch interrupt).
    Deadline,
    /// The guest tried to grow its memory or a table past its limit.
    Memory,
    /// The guest's stack overflowed.
    StackOverflow,
    /// An `unreachable` instruction: how a guest's panic or abort ends (Rust, C, Python).
    Unreachable,
    /// An access out of the bounds of its memory or a table, or misaligned.
    OutOfBounds,
    /// A native interceptor panicked.
    Panic,
    /// Any other trap (an integer overflow or division by zero, a bad indirect call, ...).
    Other,
}

impl TrapKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [TrapKind; 7] = [
        TrapKind::Deadline,
        TrapKind::Memory,
        TrapKind::StackOverflow,
        TrapKind::Unreachable,
        TrapKind::OutOfBounds,
        TrapKind::Panic,
        TrapKind::Other,
    ];

    /// The name used in logs and as the `kind` label.
    pub fn name(self) -> &'static str {
        match self {
            TrapKind::Deadline => "deadline",
            TrapKind::Memory => "memory",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::Unreachable => "unreachable",
            TrapKind::OutOfBounds => "out_of_bounds",
            TrapKind::Panic => "panic",
            TrapKind::Other => "other_trap",
        }
    }

    /// Its index in [`TrapKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
