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
}

/// The contract an interceptor implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `sluicegate:interceptor/batch-interceptor`: one call per batch, per-stream state.
    Batch,
    /// `sluicegate:interceptor/event-interceptor`: one call per event, run through the shim.
    Event,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Batch => "sluicegate:interceptor/batch-interceptor",
            World::Event => "sluicegate:interceptor/event-interceptor",
        })
    }
}

/// Something an interceptor did wrong. The proxy applies the interceptor's fault policy; the
/// batch in question is never forwarded as the interceptor left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The guest trapped (a panic, `unreachable`, out-of-bounds access, stack overflow, a
    /// resource limit, or its deadline).
    Trap(String),
    /// The verdict breaks the contract.
    InvalidVerdict(VerdictError),
    /// The interceptor cannot be used (its instance could not be created, or it failed earlier
    /// and was discarded along with this stream's state).
    Unavailable(String),
    /// The interceptor's circuit breaker is open after repeated faults.
    CircuitOpen,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Trap(msg) => write!(f, "trapped: {msg}"),
            Fault::InvalidVerdict(e) => write!(f, "invalid verdict: {e}"),
            Fault::Unavailable(msg) => write!(f, "unavailable: {msg}"),
            Fault::CircuitOpen => write!(f, "out of service: its circuit breaker is open after repeated faults"),
        }
    }
}

impl std::error::Error for Fault {}

impl From<VerdictError> for Fault {
    fn from(e: VerdictError) -> Self {
        Fault::InvalidVerdict(e)
    }
}
