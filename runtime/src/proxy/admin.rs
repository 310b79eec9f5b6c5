//! The admin listener: `/metrics` (Prometheus text format), `/healthz` and `/readyz`. It listens
//! apart from the proxy (on loopback by default) so that metrics are not exposed to clients.

use super::{BoxError, Phase, Proxy, ProxyBody, ProxyHandle};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// The metrics, in the Prometheus text exposition format.
pub fn metrics(proxy: &Proxy) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP sluicegate_active_streams Event streams being served.\n# TYPE sluicegate_active_streams gauge"
    );
    let _ = writeln!(text, "sluicegate_active_streams {}", proxy.active_streams());
    let counters: [(&str, &str, fn(&crate::chain::LinkStats) -> u64); 7] = [
        ("sluicegate_interceptor_batches_total", "Batches an interceptor processed.", |s| {
            s.batches.load(Ordering::Relaxed)
        }),
        ("sluicegate_interceptor_traps_total", "Traps (panic, deadline, memory, stack).", |s| {
            s.traps.load(Ordering::Relaxed)
        }),
        ("sluicegate_interceptor_invalid_verdicts_total", "Verdicts refused by the host's checks.", |s| {
            s.invalid_verdicts.load(Ordering::Relaxed)
        }),
        ("sluicegate_interceptor_unavailable_total", "Calls that found no usable instance.", |s| {
            s.unavailable.load(Ordering::Relaxed)
        }),
        ("sluicegate_interceptor_failed_open_total", "Batches passed unmodified after a fault.", |s| {
            s.failed_open.load(Ordering::Relaxed)
        }),
        ("sluicegate_interceptor_bypassed_total", "Batches that skipped an interceptor whose circuit was open.", |s| {
            s.bypassed.load(Ordering::Relaxed)
        }),
        ("sluicegate_interceptor_circuit_opened_total", "Times an interceptor's circuit breaker opened.", |s| {
            s.circuit_opened.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
        for (position, link) in proxy.links().iter().enumerate() {
            let label = link.interceptor().name().replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(text, "{name}{{interceptor=\"{label}\",link=\"{position}\"}} {}", read(link.stats()));
        }
    }
    let _ = writeln!(
        text,
        "# HELP sluicegate_guest_streams Interceptor stream states alive in guests.\n# TYPE sluicegate_guest_streams gauge"
    );
    let _ = writeln!(text, "sluicegate_guest_streams {}", proxy.live_guest_streams());
    let lifecycle = proxy.lifecycle();
    let _ = writeln!(
        text,
        "# HELP sluicegate_reloads_total Configuration reloads, by result.\n# TYPE sluicegate_reloads_total counter"
    );
    let _ = writeln!(text, "sluicegate_reloads_total{{result=\"ok\"}} {}", lifecycle.reloads.load(Ordering::Relaxed));
    let _ = writeln!(
        text,
        "sluicegate_reloads_total{{result=\"failed\"}} {}",
        lifecycle.failed_reloads.load(Ordering::Relaxed)
    );
    if let Some(rss) = resident_bytes(std::process::id()) {
        let _ = writeln!(
            text,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge"
        );
        let _ = writeln!(text, "process_resident_memory_bytes {rss}");
    }
    text
}

/// The resident memory of process `pid`, in bytes, from `/proc` (Linux).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok())?;
    Some(kib * 1024)
}

fn respond(proxy: &Proxy, path: &str) -> Response<ProxyBody> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics(proxy)),
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
            "not found: try /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(BoxError::from).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, handle: Arc<ProxyHandle>) -> anyhow::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let response = respond(&handle.current(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
