//! The epoch ticker: what makes guests' CPU deadlines happen.
//!
//! A store's deadline is a count of the engine's epoch, which only this thread advances, every
//! [`EPOCH_TICK`]. It ticks while guests are being called and for a longest deadline after the
//! last call began (so every call that could still be running reaches its deadline), then sleeps
//! until the next call: a proxy whose guests are not being called does not wake 200 times a
//! second. Every call sets its deadline through [`Ticker::arm`], which wakes a sleeping ticker
//! first. A call costs one relaxed load here while the ticker is awake (one store per tick).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::{Engine, EngineWeak, Store};

/// How often the epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Ticks the ticker goes on for after the longest deadline has run out, for good measure.
const SLACK_TICKS: u64 = 2;

/// How often a sleeping ticker looks whether its engine is gone (it then ends).
const SLEEPER_CHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Ticker {
    /// A call set its deadline since the ticker last looked.
    armed: AtomicBool,
    /// The ticker sleeps, or is about to: the next call wakes it.
    asleep: AtomicBool,
    /// The longest deadline of any interceptor loaded, in ticks.
    longest: AtomicU64,
    thread: OnceLock<Thread>,
}

impl Ticker {
    /// Starts the ticker's thread for `engine`, once; it ends when the engine is dropped.
    pub(super) fn start(self: &Arc<Self>, engine: &Engine) {
        self.thread.get_or_init(|| {
            let (ticker, engine) = (self.clone(), engine.weak());
            let thread = std::thread::Builder::new()
                .name("sluicegate-epoch".into())
                .spawn(move || ticker.run(engine))
                .expect("spawning the epoch thread");
            tracing::info!(
                tick_ms = EPOCH_TICK.as_millis() as u64,
                "epoch ticker started: guests' CPU deadlines are kept"
            );
            thread.thread().clone()
        });
    }

    /// Makes the ticker run for at least `ticks` after each call begins.
    pub(super) fn covers(&self, ticks: u64) {
        self.longest.fetch_max(ticks, SeqCst);
    }

    /// Gives the next call into `store` a deadline `ticks` from now, and wakes the ticker.
    pub(super) fn arm<T>(&self, store: &mut Store<T>, ticks: u64) {
        self.wake();
        store.set_epoch_deadline(ticks);
    }

    /// True while the ticker sleeps (no guest called for longer than the longest deadline).
    pub(super) fn is_asleep(&self) -> bool {
        self.asleep.load(SeqCst)
    }

    fn wake(&self) {
        if self.armed.load(Relaxed) {
            return;
        }
        // With `run`'s two steps, in this order: either the ticker sees this call, or this call
        // sees the ticker asleep and wakes it.
        self.armed.store(true, SeqCst);
        if self.asleep.swap(false, SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    fn run(&self, engine: EngineWeak) {
        let mut idle = 0;
        while let Some(strong) = engine.upgrade() {
            strong.increment_epoch();
            drop(strong);
            std::thread::sleep(EPOCH_TICK);
            if self.armed.swap(false, SeqCst) {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle <= self.longest.load(SeqCst) + SLACK_TICKS {
                continue;
            }
            self.asleep.store(true, SeqCst);
            if self.armed.load(SeqCst) {
                self.asleep.store(false, SeqCst); // a call came meanwhile
                continue;
            }
            tracing::debug!("epoch ticker asleep: no guest called for longer than any deadline");
            while self.asleep.load(SeqCst) {
                std::thread::park_timeout(SLEEPER_CHECK);
                if engine.upgrade().is_none() {
                    return;
                }
            }
            idle = 0;
        }
    }
}
