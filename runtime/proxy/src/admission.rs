//! Admission: how many client connections and event streams the proxy takes at once, and the
//! counters of what it turned away or closed. Kept in the [`Lifecycle`](super::Lifecycle), so the
//! counts hold across reloads (a reload that lowers a limit applies it to new requests at once).
//!
//! An event stream holds a slot from the moment it is known to be one until its body ends: a
//! request that accepts `text/event-stream` takes its slot before it is forwarded (so a refused
//! one never reaches the upstream, and an MCP tool call is not run only to be thrown away), and
//! gives it back if the answer is not a stream; a response that turns out to be a stream without
//! the request saying so (LLM APIs) takes its slot when its head arrives.
//!
//! Bodies held for inspection (read whole before a chain judges them, and until the client has
//! taken what the chain left) draw on one budget of bytes for the whole process,
//! `limits.max_buffered_bytes`: clients that send, or never read, large bodies cannot grow the
//! proxy's memory past it. A body that does not fit is refused with 503 and `Retry-After`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Which limit turned a stream away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamLimit {
    /// `limits.max_streams`, for the whole proxy.
    Proxy,
    /// The route's `max_streams`.
    Route,
}

/// Why a connection was refused or closed (in [`ConnectionEvent::ALL`]'s order, which indexes
/// the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Over `limits.max_connections`: its requests were answered 503.
    RefusedMaxConnections,
    /// Accepted with too few file descriptors left: closed at once, to keep the rest for the
    /// admin listener and for upstream connections.
    RefusedDescriptors,
    /// No complete request head in time (`header_read_timeout_ms`).
    HeaderTimeout,
    /// No open stream for `client_idle_timeout_ms`.
    IdleTimeout,
    /// The TLS handshake failed.
    TlsHandshake,
}

impl ConnectionEvent {
    pub const ALL: [ConnectionEvent; 5] = [
        ConnectionEvent::RefusedMaxConnections,
        ConnectionEvent::RefusedDescriptors,
        ConnectionEvent::HeaderTimeout,
        ConnectionEvent::IdleTimeout,
        ConnectionEvent::TlsHandshake,
    ];

    /// The metric and its `reason` label.
    pub fn metric(self) -> (&'static str, &'static str) {
        match self {
            ConnectionEvent::RefusedMaxConnections => ("sluicegate_connections_refused_total", "max_connections"),
            ConnectionEvent::RefusedDescriptors => ("sluicegate_connections_refused_total", "descriptors"),
            ConnectionEvent::HeaderTimeout => ("sluicegate_connections_closed_total", "header_timeout"),
            ConnectionEvent::IdleTimeout => ("sluicegate_connections_closed_total", "idle_timeout"),
            ConnectionEvent::TlsHandshake => ("sluicegate_connections_closed_total", "tls_handshake"),
        }
    }
}

/// Which listener an accept error happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Proxy,
    Admin,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Proxy => "proxy",
            ListenerKind::Admin => "admin",
        }
    }
}

/// Workers whose accepted connections are counted one by one.
pub(crate) const COUNTED_WORKERS: usize = 32; // (`Default` is derived for arrays up to 32)

/// Counts and limits that outlive a configuration.
#[derive(Debug, Default)]
pub struct Admission {
    /// Event streams holding a slot.
    streams: Arc<AtomicUsize>,
    /// The same per route prefix.
    route_streams: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Streams turned away, per route prefix and limit.
    refused_streams: Mutex<HashMap<(String, &'static str), u64>>,
    /// Client connections open now, and accepted in all.
    pub(crate) connections: AtomicUsize,
    pub(crate) connections_total: AtomicU64,
    /// Connections accepted by each per-core worker (the last slot takes any beyond it).
    worker_connections: [AtomicU64; COUNTED_WORKERS],
    connection_events: [AtomicU64; ConnectionEvent::ALL.len()],
    accept_errors: [AtomicU64; 2],
    /// Bytes of bodies held for inspection now, and bodies refused for the budget.
    buffered: Arc<AtomicUsize>,
    buffer_refusals: AtomicU64,
}

impl Admission {
    /// The slot counter of route `prefix` (the same one for every configuration).
    pub(crate) fn route_counter(&self, prefix: &str) -> Arc<AtomicUsize> {
        let mut routes = self.route_streams.lock().unwrap_or_else(|p| p.into_inner());
        routes.entry(prefix.to_string()).or_default().clone()
    }

    /// A slot for one event stream on `route` (whose counter came from [`Self::route_counter`]),
    /// or the limit that is full. A limit of 0 is no limit.
    pub(crate) fn stream_slot(
        &self,
        max_streams: usize,
        route: &Arc<AtomicUsize>,
        route_max: usize,
        prefix: &str,
    ) -> Result<StreamSlot, StreamLimit> {
        let take = |counter: &Arc<AtomicUsize>, max: usize| {
            let before = counter.fetch_add(1, Ordering::AcqRel);
            if max > 0 && before >= max {
                counter.fetch_sub(1, Ordering::AcqRel);
                return false;
            }
            true
        };
        if !take(&self.streams, max_streams) {
            self.count_refused(prefix, StreamLimit::Proxy);
            return Err(StreamLimit::Proxy);
        }
        if !take(route, route_max) {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            self.count_refused(prefix, StreamLimit::Route);
            return Err(StreamLimit::Route);
        }
        Ok(StreamSlot { counters: [self.streams.clone(), route.clone()] })
    }

    fn count_refused(&self, prefix: &str, limit: StreamLimit) {
        let limit = match limit {
            StreamLimit::Proxy => "proxy",
            StreamLimit::Route => "route",
        };
        let mut refused = self.refused_streams.lock().unwrap_or_else(|p| p.into_inner());
        *refused.entry((prefix.to_string(), limit)).or_default() += 1;
    }

    /// An empty reservation of the buffer budget, which may hold up to `limit` bytes across the
    /// process (0: no limit).
    pub(crate) fn buffer(&self, limit: usize) -> BufferReservation {
        BufferReservation { held: self.buffered.clone(), limit, bytes: 0 }
    }

    /// Counts a body refused for the buffer budget.
    pub(crate) fn count_buffer_refusal(&self) {
        self.buffer_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes held for inspection now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Bodies refused because the buffer budget was spent.
    pub fn buffer_refusals(&self) -> u64 {
        self.buffer_refusals.load(Ordering::Relaxed)
    }

    /// Event streams holding a slot now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Streams refused so far: (route prefix, limit, count), sorted.
    pub fn refused_streams(&self) -> Vec<(String, &'static str, u64)> {
        let refused = self.refused_streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = refused.iter().map(|((route, limit), n)| (route.clone(), *limit, *n)).collect();
        all.sort();
        all
    }

    pub(crate) fn count(&self, event: ConnectionEvent) {
        self.connection_events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How often `event` happened.
    pub fn connection_events(&self, event: ConnectionEvent) -> u64 {
        self.connection_events[event as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn count_accept_error(&self, listener: ListenerKind) {
        self.accept_errors[listener as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn accept_errors(&self, listener: ListenerKind) -> u64 {
        self.accept_errors[listener as usize].load(Ordering::Relaxed)
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn connections_total(&self) -> u64 {
        self.connections_total.load(Ordering::Relaxed)
    }

    /// Counts a connection accepted by worker `worker`.
    pub(crate) fn count_worker_connection(&self, worker: usize) {
        self.worker_connections[worker.min(COUNTED_WORKERS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted by worker `worker` (see `workers`).
    pub fn worker_connections(&self, worker: usize) -> u64 {
        self.worker_connections.get(worker).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// One event stream's slot (proxy-wide and on its route), given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    counters: [Arc<AtomicUsize>; 2],
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        for counter in &self.counters {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Bytes of one body held against the buffer budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct BufferReservation {
    held: Arc<AtomicUsize>,
    limit: usize,
    bytes: usize,
}

impl BufferReservation {
    /// Takes `more` bytes; false (and nothing taken) if the budget cannot spare them.
    pub(crate) fn grow(&mut self, more: usize) -> bool {
        let taken = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            let after = held.checked_add(more)?;
            (self.limit == 0 || after <= self.limit).then_some(after)
        });
        if taken.is_ok() {
            self.bytes += more;
        }
        taken.is_ok()
    }

    /// Holds exactly `bytes` from now on (what is kept of a body once a chain has judged it),
    /// taken whether the budget has room or not: the bytes exist already.
    pub(crate) fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.held.fetch_add(bytes - self.bytes, Ordering::AcqRel);
        } else {
            self.held.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
        }
        self.bytes = bytes;
    }
}

impl Drop for BufferReservation {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_budget_is_shared_and_given_back() {
        let admission = Admission::default();
        let mut first = admission.buffer(100);
        let mut second = admission.buffer(100);
        assert!(first.grow(60) && !second.grow(50), "60 + 50 is over 100");
        assert!(second.grow(40));
        assert_eq!(admission.buffered_bytes(), 100);
        first.set(10);
        assert_eq!(admission.buffered_bytes(), 50);
        drop(first);
        drop(second);
        assert_eq!(admission.buffered_bytes(), 0);
        assert!(admission.buffer(0).grow(usize::MAX / 2), "0 is no limit");
    }
}
