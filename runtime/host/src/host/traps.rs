//! A guest's resource limits, and telling its traps apart.
//!
//! wasmtime's own `StoreLimits` reports a memory or table grown past its limit as an untyped
//! error, so a deadline, a panic and a memory limit would all look alike to the proxy but for
//! their messages. [`GuestLimits`] enforces the same limits with a typed error, and [`fault_of`]
//! reads a failed call's trap code or that error.

use crate::interceptor::{Fault, TrapKind};
use std::fmt;
use wasmtime::{ResourceLimiter, Trap};

/// The limits of one store: linear memory bytes, table elements, instances. Growing past a
/// limit traps (with [`LimitExceeded`]) instead of letting the guest see a failed grow: every
/// guest toolchain turns that into an abort anyway, and the trap says why.
pub(super) struct GuestLimits {
    pub(super) memory_bytes: usize,
    pub(super) table_elements: usize,
    pub(super) instances: usize,
}

/// A guest tried to grow a memory or a table past its limit.
#[derive(Debug)]
pub(super) struct LimitExceeded {
    what: &'static str,
    desired: usize,
    limit: usize,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the guest tried to grow its {} to {} (the limit is {})", self.what, self.desired, self.limit)
    }
}

impl std::error::Error for LimitExceeded {}

fn check(what: &'static str, desired: usize, limit: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
    if desired > limit {
        return Err(wasmtime::Error::new(LimitExceeded { what, desired, limit }));
    }
    Ok(maximum.is_none_or(|max| desired <= max))
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        check("linear memory (bytes)", desired, self.memory_bytes, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("the host could not grow the guest's memory"))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        check("table (elements)", desired, self.table_elements, maximum)
    }

    fn instances(&self) -> usize {
        self.instances
    }
}

/// A failed call as a fault: its kind, and wasmtime's message with the guest's backtrace.
pub(super) fn fault_of(error: &wasmtime::Error) -> Fault {
    let kind = kind_of(error);
    let message = match kind {
        // Say which setting to change: the trap alone says only "interrupt".
        TrapKind::Deadline => format!(
            "the call ran past its CPU deadline (`call_deadline_ms`: `[limits]` for every \
             interceptor, or on this one's `[[route.interceptor]]` table; or smaller batches: \
             `[batch] max_events`, `--max-batch-events` for `run`): {error:#}"
        ),
        _ => format!("{error:#}"),
    };
    Fault::Trap { kind, message }
}

/// Why a call failed: the trap code wasmtime attached to the error, or the limit it hit.
fn kind_of(error: &wasmtime::Error) -> TrapKind {
    if error.downcast_ref::<LimitExceeded>().is_some() {
        return TrapKind::Memory;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapKind::Deadline,
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
        Some(Trap::MemoryOutOfBounds | Trap::HeapMisaligned | Trap::TableOutOfBounds) => TrapKind::OutOfBounds,
        Some(Trap::AllocationTooLarge) => TrapKind::Memory,
        _ => TrapKind::Other,
    }
}
