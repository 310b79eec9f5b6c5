//! The host's store: counters and values shared by an interceptor's streams and, with a shared
//! backend, by every proxy replica (the WIT's `store` interface, since 0.1.1).
//!
//! An interceptor reaches it through [`Config::store`](crate::Config::store), the same way as a
//! component (where calls go through the WIT import) and as a native interceptor in the proxy's
//! process (where the proxy hands in its own backend), so the native twin of a guest does the
//! same work. Keys are the interceptor's own: the host scopes them.
//!
//! An [`Unavailable`](StoreError::Unavailable) error is also a fault of the interceptor that saw
//! it: the host applies the interceptor's fault policy after the call, whatever the call
//! returned, so an interceptor may simply stop working on the batch.

use std::fmt;
use std::sync::Arc;

/// A value and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: String,
    /// Seconds until the key expires, rounded up; 0 if it never does.
    pub expires_in: u32,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time (a fault of the caller too).
    Unavailable(String),
    /// `increment` on a key whose value is not an integer.
    NotACounter,
    /// A key over [`MAX_KEY_BYTES`] or a value over [`MAX_VALUE_BYTES`].
    TooLarge,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "the store is unavailable: {why}"),
            StoreError::NotACounter => f.write_str("the key does not hold an integer"),
            StoreError::TooLarge => f.write_str("the key or value is too large"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The longest key, in bytes (before the host's scope is added).
pub const MAX_KEY_BYTES: usize = 512;
/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// A store's operations; each is atomic. Implemented by the host's backends (memory, Redis)
/// and, in a component, by the WIT import.
pub trait Backend: Send + Sync {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Adds `by` to the integer under `key` (absent: 0) and returns the new value. A key this
    /// call creates expires `ttl_seconds` later (0: never); an existing key keeps its expiry.
    fn increment(&self, key: &str, by: i64, ttl_seconds: u32) -> Result<i64, StoreError>;

    /// Sets `key` to `value` (expiring `ttl_seconds` later; 0: never) if its value is `expected`
    /// now (`None`: the key is absent). True if it was set.
    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_seconds: u32,
    ) -> Result<bool, StoreError>;
}

/// A handle on the store. The default one has no backend: every call is
/// [`Unavailable`](StoreError::Unavailable) (an interceptor built outside any host, in a unit
/// test, say).
#[derive(Clone, Default)]
pub struct Store(Option<Arc<dyn Backend>>);

impl Store {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Store(Some(backend))
    }

    fn backend(&self) -> Result<&dyn Backend, StoreError> {
        self.0.as_deref().ok_or_else(|| StoreError::Unavailable("no store here".into()))
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.backend()?.get(key)
    }

    /// Adds `by` to the counter under `key` and returns the new value; see [`Backend::increment`].
    pub fn increment(&self, key: &str, by: i64, ttl_seconds: u32) -> Result<i64, StoreError> {
        self.backend()?.increment(key, by, ttl_seconds)
    }

    /// Sets `key` to `value` if it holds `expected`; see [`Backend::compare_and_set`].
    pub fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_seconds: u32,
    ) -> Result<bool, StoreError> {
        self.backend()?.compare_and_set(key, expected, value, ttl_seconds)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Store" } else { "Store(none)" })
    }
}
