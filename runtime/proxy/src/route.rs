//! Routes: a path prefix with its upstream, what it changes in requests, its chains and its rules
//! for bodies; and the table that picks a request's route from its canonical path.

use super::ProxyError;
use super::accounting::BodyCounts;
use super::body::AnyBody;
use super::error::ErrorKind;
use super::headers::HeaderChanges;
use super::inspect::BodyRules;
use super::path::NormalPath;
use super::upstream::Upstream;
use crate::chain::Chain;
use http_body_util::BodyExt as _;
use prometheus::{Histogram, HistogramOpts};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A route: a path prefix, its upstream, what it changes in requests, its chains and what its
/// chains inspect.
pub(super) struct Route {
    /// The prefix as configured (the route's name in metrics and logs).
    pub prefix: String,
    /// The prefix in canonical spelling without a trailing `/`: what paths are matched against.
    pub matcher: String,
    pub upstream: Arc<Upstream>,
    pub strip_prefix: bool,
    /// Set on and removed from every request (after the upstream's own changes).
    pub headers: HeaderChanges,
    /// Event streams on this route holding a slot (shared across reloads), and the limit.
    pub stream_slots: Arc<AtomicUsize>,
    pub max_streams: usize,
    /// Event streams and response bodies.
    pub chain: Chain,
    /// Request bodies.
    pub request_chain: Chain,
    pub rules: BodyRules,
    pub stats: Arc<RouteStats>,
}

/// Counters of one route: its event streams (those that pass through its chain) and the bytes
/// of every response it forwards.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Event streams on the route now.
    pub active_streams: AtomicU64,
    /// Event streams it has served.
    pub streams: AtomicU64,
    /// Upstream resumptions that succeeded, and attempts that failed.
    pub reconnects: AtomicU64,
    /// Resumption attempts that failed.
    pub failed_reconnects: AtomicU64,
    /// Streams whose resumption was given up for the cap on reconnects per minute.
    pub reconnects_capped: AtomicU64,
    /// Bytes of response bodies sent to clients: encoded events, and the bodies of responses
    /// that pass through untouched.
    pub bytes_out: AtomicU64,
    /// Every body of a guarded route, by direction, outcome and reason.
    pub bodies: BodyCounts,
    /// How long its event streams' clients wait: what a guardrail adds to the first token and
    /// between tokens.
    pub latency: StreamLatency,
}

/// Latency histograms of a route's event streams (in `/metrics` per route). Each observation is
/// a few atomic additions, once per batch written.
#[derive(Debug)]
pub struct StreamLatency {
    /// From the request's arrival to the first bytes of events handed to the client.
    pub first_event: Histogram,
    /// Between successive writes of events to the client (at batch 1, between events).
    pub between_events: Histogram,
    /// From the arrival of a batch's first input to its write: parsing, batching, the chain
    /// (guest calls included) and encoding.
    pub chain_delay: Histogram,
    /// How long text a guard held back (where a match could still begin) waited for its release:
    /// from the batch it arrived in to the one that let it go, once per batch that released held
    /// text (the longest wait in it).
    pub held_text: Histogram,
}

impl Default for StreamLatency {
    fn default() -> Self {
        const WAITS: &[f64] =
            &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        const WORK: &[f64] = &[
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            1.0,
        ];
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("a valid histogram")
        };
        StreamLatency {
            first_event: histogram(
                "sluicegate_route_time_to_first_event_seconds",
                "From an event stream's request to its first events written to the client.",
                WAITS,
            ),
            between_events: histogram(
                "sluicegate_route_time_between_events_seconds",
                "Between successive writes of events to an event stream's client.",
                WAITS,
            ),
            chain_delay: histogram(
                "sluicegate_route_chain_delay_seconds",
                "From a batch's first input arriving from the upstream to its write to the client.",
                WORK,
            ),
            held_text: histogram(
                "sluicegate_route_held_text_seconds",
                "How long text a guard held back at a possible match waited for its release.",
                WAITS,
            ),
        }
    }
}

impl RouteStats {
    /// Counts a stream on the route, and as active until the guard is dropped.
    pub(super) fn stream_started(stats: &Arc<Self>) -> RouteStream {
        stats.streams.fetch_add(1, Ordering::Relaxed);
        stats.active_streams.fetch_add(1, Ordering::Relaxed);
        RouteStream(stats.clone())
    }
}

/// One active stream on a route; see [`RouteStats::stream_started`].
pub(super) struct RouteStream(Arc<RouteStats>);

impl Drop for RouteStream {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Route {
    /// `body`, with its bytes counted as sent on this route.
    pub(super) fn counted(&self, body: AnyBody) -> AnyBody {
        let stats = self.stats.clone();
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                stats.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed_unsync()
    }

    /// True if the route has a chain in either direction: then every body on it is accounted for.
    pub(super) fn guarded(&self) -> bool {
        !self.chain.is_empty() || !self.request_chain.is_empty()
    }

    /// True if canonical `path` is under this route's prefix (at a `/` boundary).
    fn matches(&self, path: &str) -> bool {
        under(&self.matcher, path)
    }

    /// The path sent upstream for canonical `path`: without the prefix if the route strips it.
    pub(super) fn upstream_path(&self, path: &str) -> String {
        match path.strip_prefix(&self.matcher) {
            Some(rest) if self.strip_prefix && !self.matcher.is_empty() => match rest.starts_with('/') {
                true => rest.to_string(),
                false => format!("/{rest}"),
            },
            _ => path.to_string(),
        }
    }
}

/// True if `path` is `prefix` or below it (`prefix` without a trailing `/`; empty is the root).
fn under(prefix: &str, path: &str) -> bool {
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The routes of a configuration, longest prefix first.
#[derive(Default)]
pub(super) struct Routes(Vec<Route>);

impl Routes {
    /// The table of `routes` (in any order).
    pub(super) fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.matcher.len()));
        Routes(routes)
    }

    /// The route of a canonical path: the longest prefix it is under, or none. A path whose `..`
    /// segments took it out of the route it was written under is refused: `/api/../admin` is
    /// `/admin` to the upstream, but reads as `/api` to whoever wrote the rules for `/api`.
    pub(super) fn route_for(&self, path: &NormalPath) -> Result<Option<&Route>, ProxyError> {
        let route = self.0.iter().find(|r| r.matches(&path.path));
        if let Some(written) = &path.before_dot_segments {
            let written_under = self.0.iter().find(|r| r.matches(written));
            if written_under.map(|r| &r.matcher) != route.map(|r| &r.matcher) {
                return Err(ErrorKind::ClimbsOutOfRoute(written.clone()).into());
            }
        }
        Ok(route)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalise;
    use crate::upstream::{UpstreamBase, UpstreamSettings};
    use std::time::Duration;

    fn route(prefix: &str, strip_prefix: bool) -> Route {
        let settings = UpstreamSettings {
            base: UpstreamBase::parse("http://127.0.0.1:9").unwrap(),
            ca: None,
            identity: None,
            http2_only: false,
            connect_timeout: Duration::from_secs(1),
            header_timeout: None,
            headers: HeaderChanges::default(),
        };
        Route {
            prefix: prefix.to_string(),
            matcher: normalise(prefix).unwrap().path.trim_end_matches('/').to_string(),
            upstream: Arc::new(Upstream::new(settings, 1).unwrap()),
            strip_prefix,
            headers: HeaderChanges::default(),
            stream_slots: Arc::default(),
            max_streams: 0,
            chain: Chain::default(),
            request_chain: Chain::default(),
            rules: BodyRules::default(),
            stats: Arc::default(),
        }
    }

    fn table() -> Routes {
        Routes::new(vec![route("/", false), route("/api/", true), route("/api/admin", false), route("/mcp", false)])
    }

    fn routed(table: &Routes, raw: &str) -> Result<Option<String>, String> {
        let normal = normalise(raw).map_err(|e| e.to_string())?;
        table.route_for(&normal).map(|r| r.map(|r| r.prefix.clone())).map_err(|e| e.to_string())
    }

    #[test]
    fn the_longest_prefix_at_a_segment_boundary_wins() {
        let table = table();
        assert_eq!(routed(&table, "/mcp").unwrap().as_deref(), Some("/mcp"));
        assert_eq!(routed(&table, "/mcp/x").unwrap().as_deref(), Some("/mcp"));
        assert_eq!(routed(&table, "/mcpx").unwrap().as_deref(), Some("/"));
        assert_eq!(routed(&table, "/api/admin/users").unwrap().as_deref(), Some("/api/admin"));
        assert_eq!(routed(&table, "/api/other").unwrap().as_deref(), Some("/api/"));
        assert_eq!(routed(&table, "/%6dcp").unwrap().as_deref(), Some("/mcp"), "spelled otherwise");
        assert_eq!(routed(&table, "//api//admin").unwrap().as_deref(), Some("/api/admin"));
    }

    #[test]
    fn dot_segments_may_not_leave_the_route_they_were_written_under() {
        let table = table();
        assert_eq!(routed(&table, "/api/x/../y").unwrap().as_deref(), Some("/api/"), "inside the route");
        assert!(routed(&table, "/api/../mcp").unwrap_err().contains("climbs out"));
        assert!(routed(&table, "/api/admin/../x").unwrap_err().contains("climbs out"), "to a shorter prefix");
        assert!(routed(&table, "/api/x/../admin").unwrap_err().contains("climbs out"), "into a longer one");
        assert!(routed(&table, "/../etc").is_err());
    }

    proptest::proptest! {
        /// However a path is spelled (any character percent-encoded, `.` and `x/..` segments,
        /// repeated slashes), the route it gets is the route of its canonical spelling; the one
        /// other answer is a refusal, when its `..` segments cross out of a route.
        #[test]
        fn a_request_gets_the_route_its_canonical_path_gets(
            segments in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("api".to_string()),
                    proptest::strategy::Just("admin".to_string()),
                    proptest::strategy::Just("mcp".to_string()),
                    crate::path::tests::segment(),
                ],
                0..5,
            ),
            choices in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
        ) {
            let table = table();
            let canonical = format!("/{}", segments.join("/"));
            let spelled = crate::path::tests::respell(&segments, &choices);
            match routed(&table, &spelled) {
                Ok(route) => proptest::prop_assert_eq!(Ok(route), routed(&table, &canonical), "{}", spelled),
                Err(refused) => proptest::prop_assert!(refused.contains("climbs out"), "{}: {}", spelled, refused),
            }
        }
    }

    #[test]
    fn stripping_a_prefix_keeps_the_rest_of_the_canonical_path() {
        let api = route("/api/", true);
        assert_eq!(api.upstream_path("/api/v1/chat"), "/v1/chat");
        assert_eq!(api.upstream_path("/api"), "/");
        assert_eq!(route("/api", false).upstream_path("/api/v1"), "/api/v1");
        assert_eq!(route("/", true).upstream_path("/x"), "/x");
    }
}
