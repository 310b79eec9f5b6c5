//! The host's store (the WIT's `store` interface): counters and values that an interceptor
//! shares across its streams and, with a shared backend, across proxy replicas.
//!
//! Backends: [`MemoryStore`] (the default: this process only, nothing to install) and
//! [`RedisStore`] (`[store] url = "redis://HOST:PORT"`: every replica pointed at one Redis
//! shares one set of counters). Each interceptor gets a [`ScopedStore`]: its keys are prefixed
//! with its scope, its calls are timed and counted, and a call that finds the store unavailable
//! is noted for the host, which then treats the interceptor's call as a fault (see
//! [`take_unavailable`]). Guest and native interceptors get the same handle, through
//! [`sluicegate_guest::Config::store`].

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use sluicegate_guest::store::{Backend, Entry, MAX_KEY_BYTES, MAX_VALUE_BYTES, StoreError};

use prometheus::{Histogram, HistogramOpts};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A store operation, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `get`.
    Get,
    /// `increment`.
    Increment,
    /// `compare-and-set`.
    CompareAndSet,
}

impl Op {
    /// Every operation, in metric order.
    pub const ALL: [Op; 3] = [Op::Get, Op::Increment, Op::CompareAndSet];

    /// The `op` label.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Increment => "increment",
            Op::CompareAndSet => "compare_and_set",
        }
    }
}

/// How a call ended, for the metrics: `ok` or the error's kind.
const RESULTS: [&str; 4] = ["ok", "unavailable", "not_a_counter", "too_large"];

fn result_index<T>(result: &Result<T, StoreError>) -> usize {
    match result {
        Ok(_) => 0,
        Err(StoreError::Unavailable(_)) => 1,
        Err(StoreError::NotACounter) => 2,
        Err(StoreError::TooLarge) => 3,
    }
}

/// A backend with its counters: what the proxy holds, one per process (kept across reloads while
/// `[store]` stays the same, so a reload does not reset a budget).
pub struct SharedStore {
    backend: Arc<dyn Backend>,
    kind: &'static str,
    stats: StoreStats,
}

/// Counters of a store's calls.
pub struct StoreStats {
    /// Calls by operation and result (`[op][result]`).
    calls: [[AtomicU64; RESULTS.len()]; Op::ALL.len()],
    /// Seconds per call, any operation.
    seconds: Histogram,
    /// Per scope: the sum of successful increments (for a budget: what was charged).
    incremented: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl SharedStore {
    /// The in-process store.
    pub fn memory() -> Arc<Self> {
        Self::over(Arc::new(MemoryStore::default()), "memory")
    }

    /// A store over `backend`, labelled `kind` (`memory`, `redis`) in the metrics.
    pub fn over(backend: Arc<dyn Backend>, kind: &'static str) -> Arc<Self> {
        let seconds = Histogram::with_opts(
            HistogramOpts::new("sluicegate_store_call_seconds", "Time of one store call, by backend.")
                .buckets(vec![1e-6, 5e-6, 2.5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2, 0.1]),
        )
        .expect("a valid name and ascending buckets");
        Arc::new(SharedStore {
            backend,
            kind,
            stats: StoreStats { calls: Default::default(), seconds, incremented: Mutex::default() },
        })
    }

    /// The backend's kind: `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The handle for the interceptor whose keys live under `scope`.
    pub fn scoped(self: &Arc<Self>, scope: &str) -> ScopedStore {
        let incremented =
            self.stats.incremented.lock().expect("store stats").entry(scope.to_string()).or_default().clone();
        ScopedStore { prefix: format!("{scope}/"), shared: self.clone(), incremented }
    }

    /// Calls of `op` that ended with each result (`ok`, `unavailable`, `not_a_counter`,
    /// `too_large`).
    pub fn calls(&self, op: Op) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let row = &self.stats.calls[op as usize];
        RESULTS.iter().zip(row).map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
    }

    /// The call-time histogram.
    pub fn call_seconds(&self) -> &Histogram {
        &self.stats.seconds
    }

    /// Per scope, the sum of successful increments.
    pub fn incremented(&self) -> Vec<(String, u64)> {
        let scopes = self.stats.incremented.lock().expect("store stats");
        scopes.iter().map(|(scope, n)| (scope.clone(), n.load(Ordering::Relaxed))).collect()
    }

    fn record<T>(&self, op: Op, result: &Result<T, StoreError>, started: Instant) {
        self.stats.seconds.observe(started.elapsed().as_secs_f64());
        self.stats.calls[op as usize][result_index(result)].fetch_add(1, Ordering::Relaxed);
        if let Err(StoreError::Unavailable(why)) = result {
            UNAVAILABLE.with(|noted| *noted.borrow_mut() = Some(why.clone()));
        }
    }
}

thread_local! {
    /// Set when a store call on this thread found the store unavailable; the host takes it
    /// after each call into an interceptor (the call and its store calls run on one thread).
    static UNAVAILABLE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forgets an unavailable store noted on this thread (before a call into an interceptor).
pub fn clear_unavailable() {
    UNAVAILABLE.with(|noted| noted.borrow_mut().take());
}

/// Why the store was unavailable to a call made on this thread since [`clear_unavailable`], if
/// it was.
pub fn take_unavailable() -> Option<String> {
    UNAVAILABLE.with(|noted| noted.borrow_mut().take())
}

/// One interceptor's view of the store: its keys, under its scope.
#[derive(Clone)]
pub struct ScopedStore {
    prefix: String,
    shared: Arc<SharedStore>,
    incremented: Arc<AtomicU64>,
}

impl ScopedStore {
    fn key(&self, key: &str) -> Result<String, StoreError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::TooLarge);
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn run<T>(&self, op: Op, call: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call();
        self.shared.record(op, &result, started);
        result
    }
}

impl Backend for ScopedStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.run(Op::Get, || self.shared.backend.get(&self.key(key)?))
    }

    fn increment(&self, key: &str, by: i64, ttl_seconds: u32) -> Result<i64, StoreError> {
        let result = self.run(Op::Increment, || self.shared.backend.increment(&self.key(key)?, by, ttl_seconds));
        if result.is_ok() && by > 0 {
            self.incremented.fetch_add(by as u64, Ordering::Relaxed);
        }
        result
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_seconds: u32,
    ) -> Result<bool, StoreError> {
        self.run(Op::CompareAndSet, || {
            if value.len() > MAX_VALUE_BYTES {
                return Err(StoreError::TooLarge);
            }
            self.shared.backend.compare_and_set(&self.key(key)?, expected, value, ttl_seconds)
        })
    }
}
