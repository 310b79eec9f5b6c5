//! The admin listener: `/metrics` (Prometheus text format), `/healthz`, `/readyz`, and a status
//! page (`/`, `/status`, backed by `/status.json`). It listens
//! apart from the proxy (on loopback by default) so that metrics are not exposed to clients.

use super::{BoxError, Phase, Proxy, ProxyBody, ProxyHandle, RouteStats};
use crate::chain::LinkStats;
use crate::histogram::Histogram;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// One per-interceptor counter: name, help, and how to read it.
type Counter = (&'static str, &'static str, fn(&LinkStats) -> u64);

const INTERCEPTOR_COUNTERS: [Counter; 12] = [
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
    ("sluicegate_interceptor_failed_open_total", "Batches passed unmodified after a fault.", |s| load(&s.failed_open)),
    ("sluicegate_interceptor_bypassed_total", "Batches that skipped an interceptor whose circuit was open.", |s| {
        load(&s.bypassed)
    }),
    ("sluicegate_interceptor_circuit_opened_total", "Times an interceptor's circuit breaker opened.", |s| {
        load(&s.circuit_opened)
    }),
];

/// One per-interceptor histogram: name, help, and where it is.
type HistogramOf = (&'static str, &'static str, fn(&LinkStats) -> &Histogram);

type RouteCounter = (&'static str, &'static str, &'static str, fn(&RouteStats) -> u64);

const ROUTE_COUNTERS: [RouteCounter; 5] = [
    ("sluicegate_route_active_streams", "gauge", "Event streams being served on a route.", |r| load(&r.active_streams)),
    ("sluicegate_route_streams_total", "counter", "Event streams a route served.", |r| load(&r.streams)),
    ("sluicegate_route_reconnects_total", "counter", "Upstream event streams resumed.", |r| load(&r.reconnects)),
    ("sluicegate_route_failed_reconnects_total", "counter", "Resumption attempts that failed.", |r| {
        load(&r.failed_reconnects)
    }),
    ("sluicegate_route_bytes_out_total", "counter", "Response body bytes sent to clients.", |r| load(&r.bytes_out)),
];

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A label value, escaped for the Prometheus text format.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The metrics, in the Prometheus text exposition format. Interceptors are labelled with their
/// name and their `link` index in config order; routes with their prefix. Counters of
/// interceptors and routes start again from zero when a reload replaces them.
pub fn metrics(proxy: &Proxy) -> String {
    let mut text = String::new();
    header(&mut text, "sluicegate_active_streams", "gauge", "Event streams being served.");
    let _ = writeln!(text, "sluicegate_active_streams {}", proxy.active_streams());
    let links: Vec<String> = proxy
        .links()
        .iter()
        .enumerate()
        .map(|(i, link)| format!("interceptor=\"{}\",link=\"{i}\"", label(link.interceptor().name())))
        .collect();
    for (name, help, read) in INTERCEPTOR_COUNTERS {
        header(&mut text, name, "counter", help);
        for (labels, link) in links.iter().zip(proxy.links()) {
            let _ = writeln!(text, "{name}{{{labels}}} {}", read(link.stats()));
        }
    }
    header(
        &mut text,
        "sluicegate_interceptor_traps_by_kind_total",
        "counter",
        "Traps by why: deadline, memory, stack_overflow, unreachable (a guest's panic), out_of_bounds, panic (native), other_trap.",
    );
    for (labels, link) in links.iter().zip(proxy.links()) {
        for kind in crate::interceptor::TrapKind::ALL {
            let n = link.stats().traps_of(kind);
            let _ =
                writeln!(text, "sluicegate_interceptor_traps_by_kind_total{{{labels},kind=\"{}\"}} {n}", kind.name());
        }
    }
    header(&mut text, "sluicegate_interceptor_circuit_open", "gauge", "1 while an interceptor's circuit is open.");
    for (labels, link) in links.iter().zip(proxy.links()) {
        let _ = writeln!(text, "sluicegate_interceptor_circuit_open{{{labels}}} {}", u8::from(link.circuit_open()));
    }
    let histograms: [HistogramOf; 2] = [
        ("sluicegate_interceptor_batch_events", "Events per batch into an interceptor.", |s| &s.batch_size),
        ("sluicegate_interceptor_call_seconds", "Time of one call into an interceptor.", |s| &s.call_seconds),
    ];
    for (name, help, read) in histograms {
        header(&mut text, name, "histogram", help);
        for (labels, link) in links.iter().zip(proxy.links()) {
            read(link.stats()).write(&mut text, name, labels);
        }
    }
    for (name, kind, help, read) in ROUTE_COUNTERS {
        header(&mut text, name, kind, help);
        for (prefix, stats) in proxy.routes() {
            let _ = writeln!(text, "{name}{{route=\"{}\"}} {}", label(prefix), read(stats));
        }
    }
    header(
        &mut text,
        "sluicegate_bodies_total",
        "counter",
        "Bodies on guarded routes, by direction and outcome (inspected, refused, passed) and its reason.",
    );
    for (prefix, stats) in proxy.routes() {
        for (direction, outcome, reason, n) in stats.bodies.nonzero() {
            let _ = writeln!(
                text,
                "sluicegate_bodies_total{{route=\"{}\",direction=\"{}\",outcome=\"{}\",reason=\"{}\"}} {n}",
                label(prefix),
                direction.name(),
                outcome.name(),
                reason.name()
            );
        }
    }
    write_admission(&mut text, proxy);
    write_upstreams(&mut text, proxy);
    header(&mut text, "sluicegate_guest_streams", "gauge", "Interceptor stream states alive in guests.");
    let _ = writeln!(text, "sluicegate_guest_streams {}", proxy.live_guest_streams());
    let lifecycle = proxy.lifecycle();
    header(&mut text, "sluicegate_reloads_total", "counter", "Configuration reloads, by result.");
    let _ = writeln!(text, "sluicegate_reloads_total{{result=\"ok\"}} {}", load(&lifecycle.reloads));
    let _ = writeln!(text, "sluicegate_reloads_total{{result=\"failed\"}} {}", load(&lifecycle.failed_reloads));
    if let Some(rss) = resident_bytes(std::process::id()) {
        header(&mut text, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        let _ = writeln!(text, "process_resident_memory_bytes {rss}");
    }
    text
}

/// Connections and event streams: open, refused, closed.
fn write_admission(text: &mut String, proxy: &Proxy) {
    use super::admission::{ConnectionEvent, ListenerKind};
    let admission = proxy.lifecycle().admission();
    header(text, "sluicegate_connections", "gauge", "Client connections open.");
    let _ = writeln!(text, "sluicegate_connections {}", admission.open_connections());
    header(text, "sluicegate_connections_total", "counter", "Client connections accepted.");
    let _ = writeln!(text, "sluicegate_connections_total {}", admission.connections_total());
    let mut named = None;
    for event in ConnectionEvent::ALL {
        let (name, reason) = event.metric();
        if named != Some(name) {
            let help = match name {
                "sluicegate_connections_refused_total" => "Client connections refused, by the limit that refused them.",
                _ => "Client connections the proxy closed, by reason.",
            };
            header(text, name, "counter", help);
            named = Some(name);
        }
        let _ = writeln!(text, "{name}{{reason=\"{reason}\"}} {}", admission.connection_events(event));
    }
    header(text, "sluicegate_accept_errors_total", "counter", "Failed accepts (out of descriptors, typically).");
    for listener in [ListenerKind::Proxy, ListenerKind::Admin] {
        let _ = writeln!(
            text,
            "sluicegate_accept_errors_total{{listener=\"{}\"}} {}",
            listener.name(),
            admission.accept_errors(listener)
        );
    }
    header(text, "sluicegate_stream_slots", "gauge", "Event streams holding a slot under the stream limits.");
    let _ = writeln!(text, "sluicegate_stream_slots {}", admission.streams());
    header(text, "sluicegate_streams_refused_total", "counter", "Event streams refused with 503, by route and limit.");
    for (route, limit, n) in admission.refused_streams() {
        let _ = writeln!(text, "sluicegate_streams_refused_total{{route=\"{}\",limit=\"{limit}\"}} {n}", label(&route));
    }
}

/// Per upstream: connections opened, TLS handshakes, failed requests by kind.
fn write_upstreams(text: &mut String, proxy: &Proxy) {
    use super::upstream::UpstreamErrorKind;
    header(text, "sluicegate_upstream_connections_total", "counter", "Connections opened to an upstream.");
    for upstream in proxy.upstreams() {
        let n = load(&upstream.stats().connections);
        let _ = writeln!(text, "sluicegate_upstream_connections_total{{upstream=\"{}\"}} {n}", label(upstream.name()));
    }
    header(text, "sluicegate_upstream_tls_handshakes_total", "counter", "TLS handshakes with an upstream.");
    for upstream in proxy.upstreams() {
        let n = load(&upstream.stats().tls_handshakes);
        let _ =
            writeln!(text, "sluicegate_upstream_tls_handshakes_total{{upstream=\"{}\"}} {n}", label(upstream.name()));
    }
    header(
        text,
        "sluicegate_upstream_errors_total",
        "counter",
        "Upstream requests that failed before a response, by kind.",
    );
    for upstream in proxy.upstreams() {
        for (kind, n) in UpstreamErrorKind::ALL.iter().zip(&upstream.stats().errors) {
            let _ = writeln!(
                text,
                "sluicegate_upstream_errors_total{{upstream=\"{}\",kind=\"{}\"}} {}",
                label(upstream.name()),
                kind.name(),
                load(n)
            );
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
