//! Reload and graceful shutdown, through the real proxy on loopback: live streams keep the chain
//! they started with, new streams get the new one, a failed reload changes nothing, and shutdown
//! drains, then ends streams cleanly.

use bytes::Bytes;
use sluicegate::config::ProxyConfig;
use sluicegate::proxy::{Phase, Proxy, ProxyHandle};
use sluicegate_tests::net::*;
use sluicegate_tests::runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn config(upstream: SocketAddr, chain: &[&str]) -> ProxyConfig {
    ProxyConfig::from_toml(&config_with_chain(upstream, chain, "")).unwrap()
}

async fn start(config: &ProxyConfig) -> (SocketAddr, Arc<ProxyHandle>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = ProxyHandle::new(Arc::new(Proxy::new(config, runtime(), addr).unwrap()));
    let server = tokio::spawn(sluicegate::proxy::serve_handle(listener, handle.clone()));
    (addr, handle, server)
}

async fn send(feed: &Feed, text: &str) {
    feed.send(Ok(Bytes::from(text.to_string()))).await.unwrap();
}

fn data(event: &sluicegate::sse::Event) -> String {
    String::from_utf8_lossy(event.data.as_deref().unwrap_or_default()).into_owned()
}

const PING_THEN_MAIL: &str = "event: ping\ndata: {}\n\ndata: to ada@example.com\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_gives_new_streams_the_new_chain_and_keeps_live_ones_on_theirs() {
    let (upstream, mut streams) = fed_upstream().await;
    let (addr, handle, _server) = start(&config(upstream, &["example:drop"])).await;

    let mut old = EventReader::new(get(&format!("http://{addr}/"), &[]).await);
    let old_feed = streams.recv().await.unwrap();
    send(&old_feed, PING_THEN_MAIL).await;
    assert_eq!(data(&old.next().await.unwrap()), "to ada@example.com", "drop removes the ping");

    let next = handle.current().successor(&config(upstream, &["example:redact"]), runtime(), addr);
    handle.reload(next).unwrap();

    let mut new = EventReader::new(get(&format!("http://{addr}/"), &[]).await);
    let new_feed = streams.recv().await.unwrap();
    send(&new_feed, PING_THEN_MAIL).await;
    assert_eq!(data(&new.next().await.unwrap()), "{}", "the new chain keeps pings");
    assert_eq!(data(&new.next().await.unwrap()), "to [redacted]", "and redacts");

    send(&old_feed, PING_THEN_MAIL).await;
    assert_eq!(data(&old.next().await.unwrap()), "to ada@example.com", "the live stream kept its chain");
    drop((old_feed, new_feed));
    assert!(old.rest().await.is_empty() && new.rest().await.is_empty(), "both streams end normally");
    assert_eq!(handle.current().active_streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_keeps_the_running_configuration() {
    let (upstream, mut streams) = fed_upstream().await;
    let (addr, handle, _server) = start(&config(upstream, &["example:drop"])).await;
    let broken = config(upstream, &["/nonexistent/interceptor.wasm"]);
    let next = handle.current().successor(&broken, runtime(), addr);
    let error = handle.reload(next).unwrap_err();
    assert!(format!("{error:#}").contains("/nonexistent/interceptor.wasm"), "{error:#}");

    let mut reader = EventReader::new(get(&format!("http://{addr}/"), &[]).await);
    let feed = streams.recv().await.unwrap();
    send(&feed, PING_THEN_MAIL).await;
    drop(feed);
    let events = reader.rest().await;
    assert_eq!(events.iter().map(data).collect::<Vec<_>>(), ["to ada@example.com"], "still the old chain");
    let metrics = sluicegate::proxy::admin::metrics(&handle.current());
    assert!(metrics.contains("sluicegate_reloads_total{result=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("sluicegate_reloads_total{result=\"ok\"} 0"), "{metrics}");
}

/// A proxy with `chain`, one live stream through it that has delivered one event, and a
/// shutdown begun with `drain` (awaiting `Draining`). Returns what the test needs to go on.
struct ShuttingDown {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    reader: EventReader,
    feed: Feed,
    lifecycle: Arc<sluicegate::proxy::Lifecycle>,
    phase: tokio::sync::watch::Receiver<Phase>,
    /// The admin listener's address.
    admin: SocketAddr,
    shutdown: tokio::task::JoinHandle<()>,
}

async fn shut_down_with_a_live_stream(chain: &str, drain: Duration) -> ShuttingDown {
    let (upstream, mut streams) = fed_upstream().await;
    let (addr, handle, server) = start(&config(upstream, &[chain])).await;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    tokio::spawn(sluicegate::proxy::admin::serve_admin(admin_listener, handle.clone()));
    assert_eq!(get(&format!("http://{admin}/readyz"), &[]).await.status(), 200);
    let mut reader = EventReader::new(get(&format!("http://{addr}/"), &[]).await);
    let feed = streams.recv().await.unwrap();
    send(&feed, "data: one\n\n").await;
    assert_eq!(data(&reader.next().await.unwrap()), "one");

    let lifecycle = handle.lifecycle();
    let mut phase = lifecycle.watch();
    let shutdown = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.shut_down(drain, Duration::from_secs(10)).await }
    });
    phase.wait_for(|p| *p == Phase::Draining).await.unwrap();
    ShuttingDown { addr, server, reader, feed, lifecycle, phase, admin, shutdown }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_ends_live_streams_cleanly() {
    let mut s = shut_down_with_a_live_stream("example:summary", Duration::from_millis(300)).await;
    s.server.await.unwrap().unwrap(); // the listener is closed
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err(), "no new connections while draining");

    // Draining: the live stream goes on.
    send(&s.feed, "data: two\n\n").await;
    assert_eq!(data(&s.reader.next().await.unwrap()), "two");

    // Then it is ended: the chain finishes with `shutdown` (summary's last event) and the body
    // ends cleanly, although the upstream is still open.
    let rest = s.reader.rest().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].event_type.as_deref(), Some(&b"summary"[..]));
    assert_eq!(data(&rest[0]), "{\"events\":2,\"data_bytes\":6}");
    s.shutdown.await.unwrap();
    assert_eq!(s.lifecycle.active_streams(), 0);
    assert_eq!(*s.phase.borrow(), Phase::Ending);
    // The upstream sees the dropped request when its connection closes, a moment later.
    tokio::time::timeout(Duration::from_secs(10), s.feed.closed()).await.expect("the upstream request was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_early_when_the_last_stream_ends() {
    // A drain time far longer than the test: shutdown must finish because the stream ends.
    let mut s = shut_down_with_a_live_stream("example:passthrough", Duration::from_secs(3600)).await;
    let readyz = get(&format!("http://{}/readyz", s.admin), &[]).await;
    assert_eq!(readyz.status(), 503, "not ready once shutdown has begun");
    assert_eq!(get(&format!("http://{}/healthz", s.admin), &[]).await.status(), 200, "but alive");
    send(&s.feed, "data: two\n\n").await;
    drop(s.feed);
    let rest = s.reader.rest().await;
    assert_eq!(rest.iter().map(data).collect::<Vec<_>>(), ["two"]);
    s.shutdown.await.unwrap();
    assert_eq!(*s.phase.borrow(), Phase::Draining, "streams were never forced to end");
}
