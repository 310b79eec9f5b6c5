//! The admin listener: `/metrics` (Prometheus text format), `/healthz`, `/readyz`, and a status
//! page (`/`, `/status`, backed by `/status.json`). It listens
//! apart from the proxy (on loopback by default) so that metrics are not exposed to clients.

use super::{BoxError, Phase, Proxy, ProxyBody, ProxyHandle, RouteStats};
use crate::chain::{Link, LinkStats};
use crate::config::ThreadModel;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use prometheus::core::{Collector as _, Metric as _};
use prometheus::proto::MetricType::{self, COUNTER, GAUGE, HISTOGRAM};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// One per-interceptor counter: name, help, and how to read it.
type InterceptorCounter = (&'static str, &'static str, fn(&LinkStats) -> u64);

const INTERCEPTOR_COUNTERS: [InterceptorCounter; 14] = [
    ("sluicegate_interceptor_batches_total", "Batches an interceptor processed.", |s| load(&s.batches)),
    ("sluicegate_interceptor_events_in_total", "Events into an interceptor.", |s| load(&s.events_in)),
    ("sluicegate_interceptor_events_out_total", "Events out of an interceptor.", |s| load(&s.events_out)),
    ("sluicegate_interceptor_events_dropped_total", "Events an interceptor dropped.", |s| load(&s.dropped)),
    ("sluicegate_interceptor_events_modified_total", "Events an interceptor replaced.", |s| load(&s.modified)),
    ("sluicegate_interceptor_events_injected_total", "Events an interceptor inserted.", |s| load(&s.injected)),
    ("sluicegate_interceptor_traps_total", "Traps (panic, deadline, memory, stack).", |s| s.traps()),
    ("sluicegate_interceptor_invalid_verdicts_total", "Verdicts refused by the host's checks.", |s| {
        load(&s.invalid_verdicts)
    }),
    ("sluicegate_interceptor_unavailable_total", "Calls that found no usable instance.", |s| load(&s.unavailable)),
    ("sluicegate_interceptor_store_faults_total", "Calls that found the host's store unavailable.", |s| {
        load(&s.store_faults)
    }),
    ("sluicegate_interceptor_streams_ended_total", "Streams an interceptor's verdict ended (its cut-offs).", |s| {
        load(&s.streams_ended)
    }),
    ("sluicegate_interceptor_failed_open_total", "Batches passed unmodified after a fault.", |s| load(&s.failed_open)),
    ("sluicegate_interceptor_bypassed_total", "Batches that skipped an interceptor whose circuit was open.", |s| {
        load(&s.bypassed)
    }),
    ("sluicegate_interceptor_circuit_opened_total", "Times an interceptor's circuit breaker opened.", |s| {
        load(&s.circuit_opened)
    }),
];

type RouteCounter = (&'static str, MetricType, &'static str, fn(&RouteStats) -> u64);

const ROUTE_COUNTERS: [RouteCounter; 6] = [
    ("sluicegate_route_active_streams", GAUGE, "Event streams being served on a route.", |r| load(&r.active_streams)),
    ("sluicegate_route_streams_total", COUNTER, "Event streams a route served.", |r| load(&r.streams)),
    ("sluicegate_route_reconnects_total", COUNTER, "Upstream event streams resumed.", |r| load(&r.reconnects)),
    ("sluicegate_route_failed_reconnects_total", COUNTER, "Resumption attempts that failed.", |r| {
        load(&r.failed_reconnects)
    }),
    ("sluicegate_route_reconnects_capped_total", COUNTER, "Streams ended for reconnecting too often.", |r| {
        load(&r.reconnects_capped)
    }),
    ("sluicegate_route_bytes_out_total", COUNTER, "Response body bytes sent to clients.", |r| load(&r.bytes_out)),
];

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The metric families of one scrape, read from the proxy's own counters (plain atomics, which
/// the status page and the tests read too) when `/metrics` is asked for. The prometheus crate's
/// encoder writes them out: the 0.0.4 text format, label escaping, cumulative histogram lines.
#[derive(Default)]
struct Scrape(Vec<MetricFamily>);

impl Scrape {
    /// Starts family `name`; the samples added next belong to it.
    fn family(&mut self, name: &str, kind: MetricType, help: &str) -> &mut Self {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        self.0.push(family);
        self
    }

    /// A sample of the current family, a counter or a gauge as the family is.
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        let mut metric = Metric::from_label(label_pairs(labels));
        self.push(|family| {
            if family.get_field_type() == GAUGE {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(value as f64);
                metric.set_gauge(gauge);
            } else {
                let mut counter = proto::Counter::default();
                counter.set_value(value as f64);
                metric.set_counter(counter);
            }
            metric
        })
    }

    /// One link's `histogram`, with `labels`, in a family named and described as it is.
    fn histogram(&mut self, labels: &[(&str, &str)], histogram: &prometheus::Histogram) -> &mut Self {
        let desc = histogram.desc()[0];
        if self.0.last().is_none_or(|family| family.name() != desc.fq_name) {
            self.family(&desc.fq_name, HISTOGRAM, &desc.help);
        }
        let mut metric = histogram.metric();
        metric.set_label(label_pairs(labels));
        self.push(|_| metric)
    }

    /// The families; those without samples are left out, as client libraries do.
    fn finish(mut self) -> Vec<MetricFamily> {
        self.0.retain(|family| !family.get_metric().is_empty());
        self.0
    }

    fn push(&mut self, metric: impl FnOnce(&MetricFamily) -> Metric) -> &mut Self {
        let family = self.0.last_mut().expect("a sample follows its family");
        let metric = metric(family);
        family.mut_metric().push(metric);
        self
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

/// The metrics, in the Prometheus text exposition format. Interceptors are labelled with their
/// name and their `link` index in config order; routes with their prefix. Counters of
/// interceptors and routes start again from zero when a reload replaces them.
pub fn metrics(proxy: &Proxy) -> String {
    encode(&families(proxy))
}

/// The metric families of `/metrics` (the families without samples left out), also what is
/// pushed over OTLP.
pub fn families(proxy: &Proxy) -> Vec<MetricFamily> {
    let mut scrape = Scrape::default();
    scrape
        .family("sluicegate_active_streams", GAUGE, "Event streams being served.")
        .sample(&[], proxy.active_streams() as u64);
    write_interceptors(&mut scrape, proxy);
    write_routes(&mut scrape, proxy);
    write_store(&mut scrape, proxy);
    write_admission(&mut scrape, proxy);
    write_slow_calls(&mut scrape, proxy);
    write_upstreams(&mut scrape, proxy);
    write_telemetry(&mut scrape);
    scrape
        .family("sluicegate_guest_streams", GAUGE, "Interceptor stream states alive in guests.")
        .sample(&[], proxy.live_guest_streams() as u64);
    let lifecycle = proxy.lifecycle();
    scrape
        .family("sluicegate_reloads_total", COUNTER, "Configuration reloads, by result.")
        .sample(&[("result", "ok")], load(&lifecycle.reloads))
        .sample(&[("result", "failed")], load(&lifecycle.failed_reloads));
    if let Some(rss) = resident_bytes(std::process::id()) {
        scrape.family("process_resident_memory_bytes", GAUGE, "Resident memory size in bytes.").sample(&[], rss);
    }
    scrape.finish()
}

/// The text format of `families`.
fn encode(families: &[MetricFamily]) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(families, &mut text) {
        tracing::error!("rendering /metrics: {e}");
    }
    text
}

/// What OpenTelemetry export sent and lost (all zero while export is off).
fn write_telemetry(scrape: &mut Scrape) {
    let counts = super::telemetry::counts();
    let families = [
        ("sluicegate_telemetry_spans_exported_total", "Spans the collector accepted.", counts.spans_exported),
        (
            "sluicegate_telemetry_spans_dropped_total",
            "Spans dropped because the export queue was full.",
            counts.spans_dropped,
        ),
        (
            "sluicegate_telemetry_exports_failed_total",
            "Exports to the collector that failed or timed out.",
            counts.exports_failed,
        ),
        ("sluicegate_telemetry_spans_lost_total", "Spans in exports that failed.", counts.spans_lost),
        (
            "sluicegate_telemetry_metric_pushes_total",
            "Pushes of the metrics the collector accepted.",
            counts.metric_pushes,
        ),
        (
            "sluicegate_telemetry_metric_pushes_failed_total",
            "Pushes of the metrics that failed or timed out.",
            counts.metric_pushes_failed,
        ),
    ];
    for (name, help, value) in families {
        scrape.family(name, COUNTER, help).sample(&[], value);
    }
}

/// Every interceptor's counters, traps by kind, circuit state and histograms.
fn write_interceptors(scrape: &mut Scrape, proxy: &Proxy) {
    // Each link's labels: its interceptor's name and its index in config order.
    let indices: Vec<String> = (0..proxy.links().len()).map(|i| i.to_string()).collect();
    let links: Vec<([(&str, &str); 2], &Link)> = proxy
        .links()
        .iter()
        .zip(&indices)
        .map(|(link, i)| ([("interceptor", link.interceptor().name()), ("link", i.as_str())], link))
        .collect();
    for (name, help, read) in INTERCEPTOR_COUNTERS {
        scrape.family(name, COUNTER, help);
        for (labels, link) in &links {
            scrape.sample(labels, read(link.stats()));
        }
    }
    scrape.family(
        "sluicegate_interceptor_traps_by_kind_total",
        COUNTER,
        "Traps by why: deadline, memory, stack_overflow, unreachable (a guest's panic), out_of_bounds, panic (native), other_trap.",
    );
    for ([interceptor, index], link) in &links {
        for kind in crate::interceptor::TrapKind::ALL {
            scrape.sample(&[*interceptor, *index, ("kind", kind.name())], link.stats().traps_of(kind));
        }
    }
    scrape.family(
        "sluicegate_interceptor_counted_total",
        COUNTER,
        "What an interceptor counted, by name (a detector's matches masked, dropped or stopped).",
    );
    for ([interceptor, index], link) in &links {
        for (name, n) in link.stats().counted.snapshot() {
            scrape.sample(&[*interceptor, *index, ("name", &name)], n);
        }
    }
    scrape.family("sluicegate_interceptor_circuit_open", GAUGE, "1 while an interceptor's circuit is open.");
    for (labels, link) in &links {
        scrape.sample(labels, u64::from(link.circuit_open()));
    }
    for (labels, link) in &links {
        scrape.histogram(labels, &link.stats().batch_size);
    }
    for (labels, link) in &links {
        scrape.histogram(labels, &link.stats().call_seconds);
    }
}

/// Every route's counters, its streams' latency histograms, and its bodies by direction,
/// outcome and reason.
fn write_routes(scrape: &mut Scrape, proxy: &Proxy) {
    for (name, kind, help, read) in ROUTE_COUNTERS {
        scrape.family(name, kind, help);
        for (prefix, stats) in proxy.routes() {
            scrape.sample(&[("route", prefix)], read(stats));
        }
    }
    let histograms: [fn(&RouteStats) -> &prometheus::Histogram; 4] = [
        |r| &r.latency.first_event,
        |r| &r.latency.between_events,
        |r| &r.latency.chain_delay,
        |r| &r.latency.held_text,
    ];
    for histogram in histograms {
        for (prefix, stats) in proxy.routes() {
            scrape.histogram(&[("route", prefix)], histogram(stats));
        }
    }
    scrape.family(
        "sluicegate_bodies_total",
        COUNTER,
        "Bodies on guarded routes, by direction and outcome (inspected, refused, passed) and its reason.",
    );
    for (prefix, stats) in proxy.routes() {
        for (direction, outcome, reason, n) in stats.bodies.nonzero() {
            let labels = [
                ("route", prefix),
                ("direction", direction.name()),
                ("outcome", outcome.name()),
                ("reason", reason.name()),
            ];
            scrape.sample(&labels, n);
        }
    }
}

/// The interceptors' store: calls by backend, operation and result; their time; what was
/// added to counters, per scope (for a budget: the tokens charged).
fn write_store(scrape: &mut Scrape, proxy: &Proxy) {
    let store = proxy.store();
    let backend = ("backend", store.kind());
    scrape.family("sluicegate_store_calls_total", COUNTER, "Store calls by backend, operation and result.");
    for op in crate::store::Op::ALL {
        for (result, n) in store.calls(op) {
            scrape.sample(&[backend, ("op", op.name()), ("result", result)], n);
        }
    }
    scrape.histogram(&[backend], store.call_seconds());
    scrape.family(
        "sluicegate_store_incremented_total",
        COUNTER,
        "The sum of successful positive increments, by scope (a token budget's charges).",
    );
    for (scope, n) in store.incremented() {
        scrape.sample(&[("scope", &scope)], n);
    }
}

/// Calls into slow chains, made off the I/O threads in a few lanes (see `isolation`): a slow
/// tenant's calls waiting for a lane show here.
fn write_slow_calls(scrape: &mut Scrape, proxy: &Proxy) {
    let slow_calls = proxy.lifecycle().slow_calls();
    let (made, queued) = slow_calls.made_and_queued();
    scrape
        .family("sluicegate_slow_call_lanes", GAUGE, "Calls into slow chains that may run at once.")
        .sample(&[], slow_calls.lanes() as u64);
    scrape
        .family("sluicegate_slow_calls_running", GAUGE, "Calls into slow chains running now.")
        .sample(&[], slow_calls.running() as u64);
    scrape
        .family("sluicegate_slow_calls_waiting", GAUGE, "Calls into slow chains waiting for a lane now.")
        .sample(&[], slow_calls.waiting() as u64);
    scrape
        .family("sluicegate_slow_calls_total", COUNTER, "Calls into slow chains, made off the I/O threads.")
        .sample(&[], made);
    scrape
        .family(
            "sluicegate_slow_calls_queued_total",
            COUNTER,
            "Calls into slow chains that waited for a lane (given up or not).",
        )
        .sample(&[], queued);
}

/// Connections and event streams: open, refused, closed.
fn write_admission(scrape: &mut Scrape, proxy: &Proxy) {
    use super::admission::{ConnectionEvent, ListenerKind};
    let admission = proxy.lifecycle().admission();
    scrape
        .family("sluicegate_connections", GAUGE, "Client connections open.")
        .sample(&[], admission.open_connections() as u64);
    scrape
        .family("sluicegate_connections_total", COUNTER, "Client connections accepted.")
        .sample(&[], admission.connections_total());
    scrape
        .family("sluicegate_buffered_bytes", GAUGE, "Bytes of bodies held for inspection now.")
        .sample(&[], admission.buffered_bytes() as u64);
    scrape
        .family(
            "sluicegate_buffer_refusals_total",
            COUNTER,
            "Bodies refused (503) because the bytes held for inspection were at limits.max_buffered_bytes.",
        )
        .sample(&[], admission.buffer_refusals());
    let mut named = None;
    for event in ConnectionEvent::ALL {
        let (name, reason) = event.metric();
        if named != Some(name) {
            let help = match name {
                "sluicegate_connections_refused_total" => "Client connections refused, by the limit that refused them.",
                _ => "Client connections the proxy closed, by reason.",
            };
            scrape.family(name, COUNTER, help);
            named = Some(name);
        }
        scrape.sample(&[("reason", reason)], admission.connection_events(event));
    }
    if let Some(threads) = proxy.lifecycle().running_threads().filter(|t| t.model == ThreadModel::PerCore) {
        scrape.family(
            "sluicegate_worker_connections_total",
            COUNTER,
            "Client connections accepted, by per-core worker.",
        );
        for worker in 0..threads.count.min(super::admission::COUNTED_WORKERS) {
            scrape.sample(&[("worker", &worker.to_string())], admission.worker_connections(worker));
        }
    }
    scrape.family("sluicegate_accept_errors_total", COUNTER, "Failed accepts (out of descriptors, typically).");
    for listener in [ListenerKind::Proxy, ListenerKind::Admin] {
        scrape.sample(&[("listener", listener.name())], admission.accept_errors(listener));
    }
    scrape
        .family("sluicegate_stream_slots", GAUGE, "Event streams holding a slot under the stream limits.")
        .sample(&[], admission.streams() as u64);
    scrape.family("sluicegate_streams_refused_total", COUNTER, "Event streams refused with 503, by route and limit.");
    for (route, limit, n) in admission.refused_streams() {
        scrape.sample(&[("route", &route), ("limit", limit)], n);
    }
}

/// Per upstream: connections opened, TLS handshakes, failed requests by kind.
fn write_upstreams(scrape: &mut Scrape, proxy: &Proxy) {
    use super::upstream::UpstreamErrorKind;
    scrape.family("sluicegate_upstream_connections_total", COUNTER, "Connections opened to an upstream.");
    for upstream in proxy.upstreams() {
        scrape.sample(&[("upstream", upstream.name())], load(&upstream.stats().connections));
    }
    scrape.family("sluicegate_upstream_tls_handshakes_total", COUNTER, "TLS handshakes with an upstream.");
    for upstream in proxy.upstreams() {
        scrape.sample(&[("upstream", upstream.name())], load(&upstream.stats().tls_handshakes));
    }
    scrape.family(
        "sluicegate_upstream_errors_total",
        COUNTER,
        "Upstream requests that failed before a response, by kind.",
    );
    for upstream in proxy.upstreams() {
        for (kind, n) in UpstreamErrorKind::ALL.iter().zip(&upstream.stats().errors) {
            scrape.sample(&[("upstream", upstream.name()), ("kind", kind.name())], load(n));
        }
    }
}

/// What the status page shows, as JSON: the interceptors with their counters, the routes.
pub fn status_json(proxy: &Proxy) -> String {
    use serde_json::json;
    let interceptors: Vec<serde_json::Value> = proxy
        .links()
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let s = link.stats();
            json!({
                "link": i,
                "name": link.interceptor().name(),
                "world": link.interceptor().world().to_string(),
                "circuit_open": link.circuit_open(),
                "batches": load(&s.batches),
                "events_in": load(&s.events_in),
                "events_out": load(&s.events_out),
                "dropped": load(&s.dropped),
                "modified": load(&s.modified),
                "injected": load(&s.injected),
                "faults": s.faults(),
                "counted": serde_json::Map::from_iter(
                    s.counted.snapshot().into_iter().map(|(name, n)| (name, serde_json::Value::from(n)))
                ),
            })
        })
        .collect();
    let routes: Vec<serde_json::Value> = proxy
        .routes_with_upstreams()
        .map(|(prefix, upstream, r)| {
            json!({
                "prefix": prefix,
                "upstream": upstream,
                "active_streams": load(&r.active_streams),
                "streams": load(&r.streams),
                "reconnects": load(&r.reconnects),
                "bytes_out": load(&r.bytes_out),
            })
        })
        .collect();
    json!({
        "active_streams": proxy.active_streams(),
        "phase": format!("{:?}", proxy.lifecycle().phase()),
        "reloads": load(&proxy.lifecycle().reloads),
        "interceptors": interceptors,
        "routes": routes,
    })
    .to_string()
}

/// The status page: a static document that renders `/status.json` and refreshes it every second.
const STATUS_PAGE: &str = include_str!("status.html");

/// The resident memory of process `pid`, in bytes, from `/proc` (Linux).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok())?;
    Some(kib * 1024)
}

fn respond(proxy: &Proxy, path: &str) -> Response<ProxyBody> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics(proxy)),
        "/" | "/status" => (StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
        "/status.json" => (StatusCode::OK, "application/json", status_json(proxy)),
        // Everything is loaded before the proxy listens, so a running proxy is also ready.
        "/healthz" => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_string()),
        // Not ready once shutting down, so that load balancers stop sending new clients.
        "/readyz" if proxy.lifecycle().phase() == Phase::Running => {
            (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_string())
        }
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "shutting down\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /status, /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(BoxError::from).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// Serves the admin endpoints on `listener` until the task is dropped. A failed accept (out of
/// file descriptors) is logged, counted and retried; it never ends the listener.
pub async fn serve_admin(listener: TcpListener, handle: Arc<ProxyHandle>) -> anyhow::Result<()> {
    super::listener::serve_admin_connections(listener, handle, respond).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_empty_families_left_out() {
        let mut scrape = Scrape::default();
        scrape.family("m_total", COUNTER, "A counter.").sample(&[("path", "C:\\a \"b\"\nc")], 3);
        scrape.family("empty", GAUGE, "No samples.");
        assert_eq!(
            encode(&scrape.finish()),
            "# HELP m_total A counter.\n# TYPE m_total counter\nm_total{path=\"C:\\\\a \\\"b\\\"\\nc\"} 3\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_labelled_per_link() {
        let stats = LinkStats::default();
        for n in [1.0, 3.0, 300.0] {
            stats.batch_size.observe(n);
        }
        let mut scrape = Scrape::default();
        scrape
            .histogram(&[("link", "0")], &stats.batch_size)
            .histogram(&[("link", "1")], &LinkStats::default().batch_size);
        let text = encode(&scrape.finish());
        assert_eq!(text.matches("# TYPE sluicegate_interceptor_batch_events histogram").count(), 1, "{text}");
        for line in [
            "sluicegate_interceptor_batch_events_bucket{link=\"0\",le=\"1\"} 1",
            "sluicegate_interceptor_batch_events_bucket{link=\"0\",le=\"4\"} 2",
            "sluicegate_interceptor_batch_events_bucket{link=\"0\",le=\"256\"} 2",
            "sluicegate_interceptor_batch_events_bucket{link=\"0\",le=\"+Inf\"} 3",
            "sluicegate_interceptor_batch_events_sum{link=\"0\"} 304",
            "sluicegate_interceptor_batch_events_count{link=\"1\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
