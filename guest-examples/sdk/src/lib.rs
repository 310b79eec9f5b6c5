//! Write sluicegate interceptors in Rust.
//!
//! Implement [`Interceptor`] and, for a WebAssembly component, call `export!` once:
//!
//! ```
//! use sluicegate_guest::{BatchView, Config, Interceptor, StreamContext, VerdictBuilder};
//!
//! pub struct DropPings;
//!
//! impl Interceptor for DropPings {
//!     type Stream = ();
//!     fn new(_config: &Config) -> Result<Self, String> { Ok(DropPings) }
//!     fn open(&self, _context: &StreamContext) {}
//!     fn process_batch(&self, _: &mut (), batch: BatchView<'_>, out: &mut VerdictBuilder) {
//!         for event in batch.iter() {
//!             if event.effective_type() == "ping" { out.drop() } else { out.keep() }
//!         }
//!     }
//! }
//!
//! // Only a WebAssembly build exports it; natively the same type runs as `native:NAME`.
//! #[cfg(target_arch = "wasm32")]
//! sluicegate_guest::export!(DropPings);
//! ```
//!
//! Built with `cargo build --target wasm32-wasip2`, this is a component of the
//! `sluicegate:interceptor/batch-interceptor` world. The same type also runs natively inside the
//! proxy (`native:NAME`), which is how guest and native are compared on the same work.

pub mod abi;
mod batch;
pub mod count;
pub mod json;
pub mod store;
pub mod text;
mod verdict;

pub use batch::{BatchView, EventRef, LayoutError, Problem, check_event};
pub use count::count;
pub use store::{Store, StoreError};
pub use verdict::{Field, NewEvent, Replacement, VerdictBuilder};

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// An interceptor: created once per instance from its configuration, it opens one
/// [`Interceptor::Stream`] per event stream and answers each batch of that stream.
///
/// The lifecycle, in order, for every stream:
/// 1. [`Interceptor::open`] when the upstream's event stream starts;
/// 2. [`Interceptor::process_batch`] for every batch, in stream order;
/// 3. [`Interceptor::finish`] once when the stream ends, whatever the reason.
pub trait Interceptor: Sized + Send + Sync + 'static {
    /// The state kept for one stream. Dropped after `finish`.
    type Stream: Send;

    /// Builds the interceptor from its configuration. An error makes the interceptor unusable;
    /// the message is shown to the operator.
    fn new(config: &Config) -> Result<Self, String>;

    /// Starts a stream.
    fn open(&self, context: &StreamContext) -> Self::Stream;

    /// Decides the fate of every event of `batch` by pushing ops to `out`. Events that the ops do
    /// not mention are kept (or dropped after [`VerdictBuilder::end`]).
    fn process_batch(&self, stream: &mut Self::Stream, batch: BatchView<'_>, out: &mut VerdictBuilder);

    /// Ends a stream. Events inserted into `out` are sent before the stream closes (unless the
    /// client is gone). The default does nothing.
    fn finish(&self, stream: &mut Self::Stream, reason: EndReason, out: &mut VerdictBuilder) {
        let _ = (stream, reason, out);
    }
}

/// What the proxy knows about a stream when it starts. Mirrors `stream-context` in the WIT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamContext {
    /// The proxy's id for this stream, also in its log lines and enforcement record.
    pub stream_id: String,
    /// The client's request method (`GET`, `POST`, ...).
    pub method: String,
    /// The client's request path, without the query.
    pub path: String,
    /// The query string, without the `?` (empty if none).
    pub query: String,
    /// The client's request headers, names in lower case, in the order received.
    pub request_headers: Vec<(String, String)>,
    /// The upstream's response status; 0 in a request chain, where there is no response yet.
    pub status: u16,
    /// The upstream's response headers, names in lower case (empty in a request chain).
    pub response_headers: Vec<(String, String)>,
}

impl StreamContext {
    /// The first request header named `name` (lower case), if any.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first response header named `name` (lower case), if any.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a stream ended. Mirrors `end-reason` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The upstream ended the stream normally.
    UpstreamClosed,
    /// The upstream failed and could not be resumed.
    UpstreamFailed,
    /// The client went away; what `finish` adds is not delivered.
    ClientGone,
    /// An interceptor of the chain ended the stream.
    EndedByInterceptor,
    /// The proxy is shutting down and its drain time is over.
    Shutdown,
}

/// An interceptor's configuration: the key/value table given to it in the proxy's config, and
/// the host's [`Store`] (compared by entries only).
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
    store: Store,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Config {}

impl Config {
    /// A configuration from key/value pairs; later duplicates of a key win.
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut entries: Vec<(String, String)> = entries.into_iter().collect();
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        Config { entries, store: Store::default() }
    }

    /// The same configuration with the host's store.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// The host's store: counters and values shared across streams and replicas.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.entries[i].1.as_str())
    }

    /// Every pair, sorted by key.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}
