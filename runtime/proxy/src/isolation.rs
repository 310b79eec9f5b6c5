//! Keeping one tenant's slow interceptor from stalling every other stream.
//!
//! Chains run inside the client connection's task (the stream runs in its response body), on
//! the threads that also serve every socket. A call into an interceptor cannot yield, so a guest
//! that spends 40 ms of CPU on a batch (legal: the deadline is 100 ms by default) holds its
//! thread for 40 ms, and every stream served by that thread waits (measured: another route's p99
//! delivery went from ~1 ms to ~41 ms).
//!
//! So a chain that has been slow lately (a call of [`SLOW_CALL`](crate::chain::SLOW_CALL) or
//! more; the mark decays by an eighth per call, and is held for a hundred times a slow call's
//! length whatever calls follow) is not called on the I/O thread: the call goes
//! to tokio's blocking threads and the stream awaits it, so the thread serves its other streams
//! meanwhile ([`Placement::OffThread`]), on per-core workers and in the shared pool alike. (The
//! shared pool used to hand the worker's duties over with `block_in_place` instead: measured with
//! `loadtest isolation`, a neighbour's p99 was 6-9x its p99 alone that way, 1.1-1.2x off-thread.)
//!
//! Fast chains, the common case, are called directly and pay nothing (one atomic load per link
//! per batch). An interceptor starts out marked slow (see `chain::LinkStats::recent_call_nanos`),
//! so its first calls after a start or a reload leave the I/O thread until it has shown it is
//! fast. What is left: a chain that turns slow after its mark has decayed holds its thread for
//! that one call (and, held slow after it, not again for a hundred times its length). Guests
//! that yield at epoch ticks would bound that too, but every call would pay for it
//! (docs/design.md). A stream dropped when its client goes away finishes a slow chain on a
//! blocking thread as well, without waiting ([`SharedEngine::call_detached`]).

use crate::engine::StreamEngine;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Where a call into a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On this thread, now: the chain is fast (or no runtime is running).
    Here,
    /// On one of the runtime's blocking threads, awaited.
    OffThread,
}

impl Placement {
    /// Where a chain that is `slow` or not runs.
    pub(crate) fn of(slow: bool) -> Self {
        if slow && tokio::runtime::Handle::try_current().is_ok() { Placement::OffThread } else { Placement::Here }
    }
}

/// Runs `work` on a blocking thread and waits for it without holding this one. A panic in
/// `work` resumes here, as it would have on this thread.
pub(crate) async fn off_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A stream's engine, which a slow chain's call takes to a blocking thread. The lock is never
/// contended on the fast path (one task owns the stream); it is held across a slow call, and a
/// stream dropped meanwhile (its client gone) does not wait for it: its chain is finished, and
/// its end reported, on a blocking thread once the call is over ([`SharedEngine::call_detached`]).
pub(crate) struct SharedEngine(Arc<Mutex<StreamEngine>>);

impl SharedEngine {
    pub(crate) fn new(engine: StreamEngine) -> Self {
        SharedEngine(Arc::new(Mutex::new(engine)))
    }

    /// The engine, for what does not call the chain.
    pub(crate) fn get(&self) -> MutexGuard<'_, StreamEngine> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls the chain through `work`, placed by whether the chain has been slow lately.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut StreamEngine) -> R + Send + 'static,
    ) -> R {
        {
            // One lock for the check and a fast call; released before the await below.
            let mut engine = self.get();
            if Placement::of(engine.is_slow()) == Placement::Here {
                return work(&mut engine);
            }
        }
        let engine = self.0.clone();
        off_thread(move || work(&mut engine.lock().unwrap_or_else(PoisonError::into_inner))).await
    }

    /// The engine, unless a call on a blocking thread holds it (a slow call still under way).
    pub(crate) fn try_get(&self) -> Option<MutexGuard<'_, StreamEngine>> {
        match self.0.try_lock() {
            Ok(engine) => Some(engine),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Calls the chain on a blocking thread and does not wait (for a stream being dropped, which
    /// cannot): `work` reports what it has to. Should the runtime shut down before the call is
    /// made, the chain frees its state when the engine is dropped, without its `finish`. Outside
    /// a runtime (no thread to hand it to) the call is made here.
    pub(crate) fn call_detached(&self, work: impl FnOnce(&mut StreamEngine) + Send + 'static) {
        let engine = self.0.clone();
        let call = move || work(&mut engine.lock().unwrap_or_else(PoisonError::into_inner));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(call)),
            Err(_) => call(),
        }
    }
}
