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
//!
//! Off the I/O threads is not off the machine: a tenant whose many streams all call a slow guest
//! would keep a blocking thread busy per instance of it, and with as many busy threads as cores
//! the operating system shares every core between them and the threads that serve sockets
//! (measured with `loadtest isolation --slow-streams 10`: a neighbour's p99 at 5.9-14.1x its p99
//! alone, 0.7-1.5x with the lanes). So slow calls share a few lanes ([`SlowCalls`], `[threads]
//! slow_calls`, by default half the cores): a call waits for a free lane without holding a
//! thread, and a slow tenant's streams queue behind each other rather than in front of everyone
//! else.

use crate::engine::StreamEngine;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The lanes that calls into slow chains share, process-wide: at most [`SlowCalls::lanes`] run
/// at once, each on a blocking thread; the rest wait, in order, holding no thread.
#[derive(Clone)]
pub(crate) struct SlowCalls {
    permits: Arc<Semaphore>,
    counts: Arc<SlowCallCounts>,
}

#[derive(Default)]
struct SlowCallCounts {
    lanes: usize,
    made: AtomicU64,
    queued: AtomicU64,
    waiting: AtomicUsize,
}

/// Counts a call as waiting for a lane while it does (a stream dropped meanwhile stops waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SlowCalls {
    /// `lanes` lanes; 0: half the cores this process may run on, at least one.
    pub(crate) fn new(lanes: usize) -> Self {
        let lanes = match lanes {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        let counts = SlowCallCounts { lanes, ..SlowCallCounts::default() };
        SlowCalls { permits: Arc::new(Semaphore::new(lanes)), counts: Arc::new(counts) }
    }

    /// How many slow calls may run at once.
    pub(crate) fn lanes(&self) -> usize {
        self.counts.lanes
    }

    /// Slow calls running now.
    pub(crate) fn running(&self) -> usize {
        self.counts.lanes - self.permits.available_permits()
    }

    /// Slow calls waiting for a lane now.
    pub(crate) fn waiting(&self) -> usize {
        self.counts.waiting.load(Ordering::Relaxed)
    }

    /// Slow calls made since the start, and how many calls had to wait for a lane (a call given
    /// up while it waited counts only there).
    pub(crate) fn made_and_queued(&self) -> (u64, u64) {
        (self.counts.made.load(Ordering::Relaxed), self.counts.queued.load(Ordering::Relaxed))
    }

    /// A lane: at once if one is free, else in turn.
    async fn lane(&self) -> OwnedSemaphorePermit {
        let lane = match self.permits.clone().try_acquire_owned() {
            Ok(lane) => lane,
            Err(_) => {
                self.counts.queued.fetch_add(1, Ordering::Relaxed);
                self.counts.waiting.fetch_add(1, Ordering::Relaxed);
                let _waiting = Waiting(&self.counts.waiting);
                self.permits.clone().acquire_owned().await.expect("the lanes are never closed")
            }
        };
        self.counts.made.fetch_add(1, Ordering::Relaxed);
        lane
    }

    /// Runs `work` in a lane, on a blocking thread, and waits for it without holding this one.
    /// The lane goes with the work, so a caller that stops waiting does not free it early. A
    /// panic in `work` resumes here, as it would have on this thread.
    pub(crate) async fn run<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> R {
        let lane = self.lane().await;
        let in_lane = move || {
            let _lane = lane;
            work()
        };
        match tokio::task::spawn_blocking(in_lane).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Runs `work` in a lane on a blocking thread, not waited for. Should the runtime shut down
    /// first, `work` is dropped unrun. Outside a runtime (no thread to hand it to) it runs here.
    fn detach(&self, work: impl FnOnce() + Send + 'static) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return work() };
        let lanes = self.clone();
        drop(runtime.spawn(async move {
            let lane = lanes.lane().await;
            drop(tokio::task::spawn_blocking(move || {
                let _lane = lane;
                work()
            }));
        }));
    }
}

/// A stream's engine, which a slow chain's call takes to a blocking thread. The lock is never
/// contended on the fast path (one task owns the stream); it is held across a slow call, and a
/// stream dropped meanwhile (its client gone) does not wait for it: its chain is finished, and
/// its end reported, on a blocking thread once the call is over ([`SharedEngine::call_detached`]).
pub(crate) struct SharedEngine {
    engine: Arc<Mutex<StreamEngine>>,
    slow_calls: SlowCalls,
}

impl SharedEngine {
    pub(crate) fn new(engine: StreamEngine, slow_calls: SlowCalls) -> Self {
        SharedEngine { engine: Arc::new(Mutex::new(engine)), slow_calls }
    }

    /// The engine, for what does not call the chain.
    pub(crate) fn get(&self) -> MutexGuard<'_, StreamEngine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
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
        let engine = self.engine.clone();
        self.slow_calls.run(move || work(&mut engine.lock().unwrap_or_else(PoisonError::into_inner))).await
    }

    /// The engine, unless a call on a blocking thread holds it (a slow call still under way).
    pub(crate) fn try_get(&self) -> Option<MutexGuard<'_, StreamEngine>> {
        match self.engine.try_lock() {
            Ok(engine) => Some(engine),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Calls the chain in a slow call's lane and does not wait (for a stream being dropped,
    /// which cannot): `work` reports what it has to. Should the runtime shut down before the call
    /// is made, the chain frees its state when the engine is dropped, without its `finish`.
    /// Outside a runtime (no thread to hand it to) the call is made here.
    pub(crate) fn call_detached(&self, work: impl FnOnce(&mut StreamEngine) + Send + 'static) {
        let engine = self.engine.clone();
        self.slow_calls.detach(move || work(&mut engine.lock().unwrap_or_else(PoisonError::into_inner)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Calls `lanes.run` with work that says it started (its number) and then waits to be let go.
    fn held_call(
        lanes: &SlowCalls,
        n: usize,
        started: &mpsc::Sender<usize>,
    ) -> (mpsc::Sender<()>, tokio::task::JoinHandle<usize>) {
        let (release, released) = mpsc::channel::<()>();
        let (lanes, started) = (lanes.clone(), started.clone());
        let call = tokio::spawn(async move {
            lanes
                .run(move || {
                    started.send(n).unwrap();
                    released.recv().unwrap();
                    n
                })
                .await
        });
        (release, call)
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_as_many_slow_calls_run_as_there_are_lanes_and_the_rest_wait_in_turn() {
        let lanes = SlowCalls::new(2);
        let (started, starts) = mpsc::channel();
        let calls: Vec<_> = (0..4).map(|n| held_call(&lanes, n, &started)).collect();
        let mut running = vec![starts.recv().unwrap(), starts.recv().unwrap()];
        until(|| lanes.waiting() == 2).await;
        assert_eq!(lanes.running(), 2);
        assert!(starts.try_recv().is_err(), "a third call ran beside two lanes' worth");
        // Each call let go frees its lane for one that waited.
        for _ in 0..2 {
            let n = running.remove(0);
            calls[n].0.send(()).unwrap();
            running.push(starts.recv().unwrap());
            assert!(starts.try_recv().is_err());
        }
        for n in running {
            calls[n].0.send(()).unwrap();
        }
        for (n, (_, call)) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), n);
        }
        assert_eq!((lanes.running(), lanes.waiting()), (0, 0));
        assert_eq!(lanes.made_and_queued(), (4, 2));
    }

    /// A stream dropped while its call waits for a lane leaves the queue; one dropped while its
    /// call runs does not free the lane before the call is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_given_up_leaves_the_queue_and_a_running_one_keeps_its_lane() {
        let lanes = SlowCalls::new(1);
        let (started, starts) = mpsc::channel();
        let (release, first) = held_call(&lanes, 0, &started);
        assert_eq!(starts.recv().unwrap(), 0);
        let (_, second) = held_call(&lanes, 1, &started);
        until(|| lanes.waiting() == 1).await;
        second.abort();
        until(|| lanes.waiting() == 0).await;
        first.abort(); // the work goes on, in its lane
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(lanes.running(), 1);
        let (release_third, third) = held_call(&lanes, 2, &started);
        until(|| lanes.waiting() == 1).await;
        release.send(()).unwrap();
        assert_eq!(starts.recv().unwrap(), 2, "the lane passed on once the first call was over");
        assert_eq!(lanes.running(), 1);
        release_third.send(()).unwrap();
        assert_eq!(third.await.unwrap(), 2);
        assert_eq!(lanes.made_and_queued(), (2, 2), "the call given up was not made");
    }

    #[test]
    fn by_default_half_the_cores_are_lanes_and_at_least_one() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(SlowCalls::new(0).lanes(), (cores / 2).max(1));
        assert_eq!(SlowCalls::new(3).lanes(), 3);
    }
}
