//! The proxy over real sockets on loopback: forwarding, event streams through chains, batching,
//! Host/Origin checks, resumption, backpressure and cleanup.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use sluicegate::sse::Event;
use sluicegate_tests::net::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Waits for `condition`, polling; fails the test after 10 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn data(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| !e.comment)
        .filter_map(|e| e.data.as_ref())
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_requests_and_passes_other_responses_untouched() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let upstream = start_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            seen_tx.send((parts, body)).unwrap();
            let mut response = full(404, "application/json", "{\"error\":\"session expired\"}");
            response.headers_mut().insert("mcp-session-id", "s-1".parse().unwrap());
            response.headers_mut().insert("connection", "x-hop".parse().unwrap());
            response.headers_mut().insert("x-hop", "1".parse().unwrap());
            response
        }
    })
    .await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:redact"], "")).await;
    let request = http::Request::post(format!("http://{proxy}/mcp/x?a=1&b=two"))
        .header("host", format!("127.0.0.1:{}", proxy.port()))
        .header("mcp-session-id", "s-1")
        .header("mcp-protocol-version", "2025-06-18")
        .header("accept", "application/json, text/event-stream")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .body(http_body_util::Full::new(Bytes::from_static(b"{\"jsonrpc\":\"2.0\"}")))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["mcp-session-id"], "s-1");
    assert!(!response.headers().contains_key("x-hop"), "hop-by-hop fields named in Connection are removed");
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "{\"error\":\"session expired\"}");

    let (parts, body) = seen_rx.recv().await.unwrap();
    assert_eq!(parts.method, http::Method::POST);
    assert_eq!(parts.uri.path_and_query().unwrap().as_str(), "/mcp/x?a=1&b=two");
    assert_eq!(parts.headers["host"], upstream.to_string());
    assert_eq!(parts.headers["mcp-session-id"], "s-1");
    assert_eq!(parts.headers["mcp-protocol-version"], "2025-06-18");
    assert_eq!(parts.headers["accept-encoding"], "identity", "an event stream may come back: ask for identity");
    assert!(!parts.headers.contains_key("x-private") && !parts.headers.contains_key("connection"));
    assert_eq!(body, "{\"jsonrpc\":\"2.0\"}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_event_stream_responses_are_streamed_not_buffered() {
    let (chunks_tx, chunks_rx) = mpsc::channel(1);
    let chunks_rx = Arc::new(Mutex::new(Some(chunks_rx)));
    let upstream = start_upstream(move |_| {
        let chunks_rx = chunks_rx.clone();
        async move {
            let (tx, response) = streamed("application/octet-stream");
            let mut rx: mpsc::Receiver<Bytes> = chunks_rx.lock().await.take().unwrap();
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    tx.send(Ok(chunk)).await.unwrap();
                }
            });
            response
        }
    })
    .await;
    // Binary content passes a guarded route only by the route's rule; then it streams.
    let config = config_with_chain(upstream, &["example:passthrough"], "")
        .replace("prefix = \"/\"\n", "prefix = \"/\"\npass_media_types = [\"application/octet-stream\"]\n");
    let (proxy, _) = start_proxy(&config).await;
    let response = tokio::spawn(async move { get(&format!("http://{proxy}/file"), &[]).await });
    // The first chunk arrives while the upstream has not finished: nothing waits for the end
    // (the proxy reads the first bytes to tell what the body is, then passes them on).
    chunks_tx.send(Bytes::from_static(b"\x89PNG\r\n\x1a\n")).await.unwrap();
    let mut body = response.await.unwrap().into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, &b"\x89PNG\r\n\x1a\n"[..]);
    chunks_tx.send(Bytes::from_static(b"\0\0\0\rIHDR")).await.unwrap();
    drop(chunks_tx);
    assert_eq!(body.collect().await.unwrap().to_bytes(), &b"\0\0\0\rIHDR"[..]);
}

/// The body sender of the latest response of `event_streams_go_through_the_route_chain...`.
static FEED: Mutex<Option<mpsc::Sender<Result<Bytes, std::io::Error>>>> = Mutex::const_new(None);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_go_through_the_route_chain_one_chunk_per_batch() {
    let upstream = start_upstream(|_| async {
        let (tx, response) = streamed("text/event-stream; charset=utf-8");
        FEED.lock().await.replace(tx);
        response
    })
    .await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[[route]]\nprefix = \"/redacted\"\n[[route.interceptor]]\nspec = \"example:redact\"\n[[route.interceptor]]\nspec = \"native:drop\"\n"
    );
    let (proxy, _) = start_proxy(&config).await;

    // A route with a chain: a burst written at once arrives as one chunk, transformed.
    let response = get(&format!("http://{proxy}/redacted/stream"), &[]).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(!response.headers().contains_key("content-length"));
    let tx = FEED.lock().await.take().unwrap();
    let mut reader = EventReader::new(response);
    tx.send(Ok(Bytes::from_static(
        b"event: ping\r\ndata: {}\r\n\r\ndata: mail bob@example.com\r\n\r\n: ka\r\n\r\nid: 3\r\ndata: x\r\n\r\n",
    )))
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(reader.next().await.unwrap());
    }
    assert_eq!(got, vec![Event::message("mail [redacted]"), Event::comment(" ka"), Event::message("x").with_id("3")]);
    assert_eq!(reader.chunks, 1, "one upstream write, one batch, one chunk");
    drop(tx);
    assert_eq!(reader.rest().await, vec![]);

    // A path outside every route is forwarded without interceptors (bytes as they were).
    let response = get(&format!("http://{proxy}/plain"), &[]).await;
    let tx = FEED.lock().await.take().unwrap();
    tx.send(Ok(Bytes::from_static(b"data: bob@example.com\r\n\r\n"))).await.unwrap();
    drop(tx);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "data: bob@example.com\r\n\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_is_not_held_for_more_events() {
    // The upstream sends one event and waits until the client has seen it before sending more:
    // if the proxy held events to fill a batch, this would never finish.
    let (seen_tx, seen_rx) = mpsc::channel::<()>(1);
    let seen_rx = Arc::new(Mutex::new(seen_rx));
    let upstream = start_upstream(move |_| {
        let seen_rx = seen_rx.clone();
        async move {
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                let mut seen = seen_rx.lock().await;
                for i in 0..5 {
                    tx.send(Ok(Bytes::from(format!("id: {i}\ndata: {i}\n\n")))).await.unwrap();
                    seen.recv().await.unwrap();
                }
            });
            response
        }
    })
    .await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], "")).await;
    let mut reader = EventReader::new(get(&format!("http://{proxy}/s"), &[]).await);
    for i in 0..5 {
        let event =
            tokio::time::timeout(Duration::from_secs(10), reader.next()).await.expect("event held back").unwrap();
        assert_eq!(event, Event::message(i.to_string()).with_id(i.to_string()));
        seen_tx.send(()).await.unwrap();
    }
    assert_eq!(reader.rest().await, vec![]);
}

/// One upstream read holding more events than a batch may: every event goes out at once, a chunk
/// per batch, with the upstream still open and silent (none waits for more input to arrive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_larger_than_a_batch_goes_out_whole_batch_by_batch() {
    let upstream = start_upstream(|_| async {
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            let five: String = (0..5).map(|i| format!("id: {i}\ndata: {i}\n\n")).collect();
            tx.send(Ok(Bytes::from(five))).await.unwrap();
            tx.closed().await; // open and silent until the proxy lets go
        });
        response
    })
    .await;
    let config = config_with_chain(upstream, &["example:passthrough"], "[batch]\nmax_events = 2");
    let (proxy, _) = start_proxy(&config).await;
    let mut reader = EventReader::new(get(&format!("http://{proxy}/s"), &[]).await);
    for i in 0..5 {
        let event =
            tokio::time::timeout(Duration::from_secs(10), reader.next()).await.expect("event held back").unwrap();
        assert_eq!(event, Event::message(i.to_string()).with_id(i.to_string()));
    }
    assert_eq!(reader.chunks, 3, "batches of 2, 2 and 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_origin_are_checked_on_loopback() {
    let upstream = start_upstream(|_| async { full(200, "text/plain", "ok") }).await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &[], "")).await;
    let url = format!("http://{proxy}/");
    assert_eq!(get(&url, &[]).await.status(), StatusCode::OK);
    assert_eq!(get(&url, &[("host", "localhost:9")]).await.status(), StatusCode::OK);
    assert_eq!(get(&url, &[("host", "evil.example")]).await.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(get(&url, &[("origin", "http://evil.example")]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(&url, &[("origin", "http://localhost:5173")]).await.status(), StatusCode::OK);

    let (proxy, _) = start_proxy(&config_with_chain(
        upstream,
        &[],
        "[security]\nallowed_hosts = [\"api.example.com\"]\nallowed_origins = [\"https://app.example.com\"]",
    ))
    .await;
    let url = format!("http://{proxy}/");
    assert_eq!(get(&url, &[("host", "api.example.com")]).await.status(), StatusCode::OK);
    assert_eq!(get(&url, &[]).await.status(), StatusCode::MISDIRECTED_REQUEST);
    let origin = [("host", "api.example.com"), ("origin", "https://app.example.com")];
    assert_eq!(get(&url, &origin).await.status(), StatusCode::OK);
}

/// An upstream that serves events `1..=total` with ids, honours `Last-Event-ID`, and breaks the
/// connection after every `drop_every` events. Counts connections. With a `gate`, each break waits
/// for its signal: a reset discards what the upstream has queued but not yet written, so a test that
/// needs every event before a break to arrive signals once its client has read them.
async fn flaky_upstream(
    total: u32,
    drop_every: u32,
    connections: Arc<AtomicUsize>,
    gate: Option<Arc<tokio::sync::Notify>>,
) -> std::net::SocketAddr {
    start_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let (connections, gate) = (connections.clone(), gate.clone());
        async move {
            connections.fetch_add(1, Ordering::SeqCst);
            let after: u32 =
                request.headers().get("last-event-id").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                if after == 0 {
                    let _ = tx.send(Ok(Bytes::from_static(b"retry: 10\n\n"))).await;
                }
                for n in after + 1..=total {
                    let _ = tx.send(Ok(Bytes::from(format!("id: {n}\ndata: event {n}\n\n")))).await;
                    if n % drop_every == 0 && n < total {
                        if let Some(gate) = &gate {
                            gate.notified().await;
                        }
                        // Half an event, then a broken connection.
                        let _ = tx.send(Ok(Bytes::from_static(b"id: 999\ndata: partial"))).await;
                        let _ = tx.send(Err(std::io::Error::other("connection reset"))).await;
                        return;
                    }
                }
            });
            response
        }
    })
    .await
}

/// Reads `before` data events of `response`, lets the upstream break (`gate`), then reads the
/// rest, which (not resumed) ends with the proxy's error: the error event is left out.
async fn read_then_break(
    response: http::Response<hyper::body::Incoming>,
    before: usize,
    gate: &tokio::sync::Notify,
) -> Vec<Event> {
    let mut reader = EventReader::new(response);
    let mut events = vec![];
    read_data_events(&mut reader, &mut events, before).await;
    gate.notify_one();
    events.extend(reader.rest_until_broken().await);
    assert_upstream_error(&events);
    events.pop();
    events
}

/// The last event is the proxy's `event: error` for an upstream stream cut off.
fn assert_upstream_error(events: &[Event]) {
    let last = events.last().expect("at least the error event");
    assert_eq!(last.event_type.as_deref(), Some(&b"error"[..]), "{last:?}");
    let error: serde_json::Value = serde_json::from_slice(last.data.as_deref().unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
}

/// Reads from `reader` into `events` until `events` holds `count` events with data.
async fn read_data_events(reader: &mut EventReader, events: &mut Vec<Event>, count: usize) {
    while data(events).len() < count {
        events.push(reader.next().await.expect("the events before the break"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upstream_is_resumed_without_loss_or_duplicates() {
    let connections = Arc::new(AtomicUsize::new(0));
    let upstream = flaky_upstream(40, 7, connections.clone(), None).await;
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:summary"], "")).await;
    let events = EventReader::new(get(&format!("http://{proxy}/events"), &[]).await).rest().await;
    let ids: Vec<String> =
        events.iter().filter_map(|e| e.id.as_ref()).map(|i| String::from_utf8_lossy(i).into_owned()).collect();
    assert_eq!(ids, (1..=40).map(|n| n.to_string()).collect::<Vec<_>>(), "every event once, in order");
    // One connection and five resumptions; an attempt that fails on its own (a pooled connection
    // that was closed, say) is retried, so a few more connections are fine.
    let made = connections.load(Ordering::SeqCst);
    assert!((6..=10).contains(&made), "{made} connections for five resumptions");
    // The stream ended normally: summary saw one continuous stream of 40 events.
    assert!(data(&events).last().unwrap().starts_with("{\"events\":40,"), "{:?}", data(&events).last());
    eventually("the stream's state is released", || state.active_streams() == 0 && state.live_guest_streams() == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_skips_replayed_events_and_gives_up_after_the_limit() {
    // An upstream that replays the last event on resumption (a common off-by-one), then refuses.
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    // Each stream breaks once the client has read what it sent (see `flaky_upstream`'s gate).
    let gate = Arc::new(tokio::sync::Notify::new());
    let upstream_gate = gate.clone();
    let upstream = start_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let gate = upstream_gate.clone();
        async move {
            if n >= 2 {
                let mut refused = full(503, "text/plain", "busy");
                refused.headers_mut().insert("retry-after", "0".parse().unwrap());
                return refused;
            }
            let after: u32 =
                request.headers().get("last-event-id").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                let from = if after == 0 { 1 } else { after }; // replays `after`
                for i in from..from + 3 {
                    let _ = tx.send(Ok(Bytes::from(format!("id: {i}\ndata: {i}\n\n")))).await;
                }
                gate.notified().await;
                let _ = tx.send(Err(std::io::Error::other("reset"))).await;
            });
            response
        }
    })
    .await;
    let extra = "[reconnect]\nmax_attempts = 3\ninitial_delay_ms = 1\nmax_delay_ms = 5";
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], extra)).await;
    let mut reader = EventReader::new(get(&format!("http://{proxy}/events"), &[]).await);
    let mut events = vec![];
    for wanted in [3, 5] {
        read_data_events(&mut reader, &mut events, wanted).await;
        gate.notify_one(); // the stream that sent them breaks
    }
    events.extend(reader.rest_until_broken().await);
    assert_upstream_error(&events);
    assert_eq!(data(&events)[..5], ["1", "2", "3", "4", "5"], "3 was replayed by the upstream and skipped");
    assert_eq!(connections.load(Ordering::SeqCst), 2 + 3, "two streams, then three refused attempts");
    eventually("the stream's state is released", || state.active_streams() == 0 && state.live_guest_streams() == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_can_be_switched_off_and_a_client_last_event_id_passes_through() {
    let connections = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let upstream = flaky_upstream(10, 4, connections.clone(), Some(gate.clone())).await;
    let (proxy, _) =
        start_proxy(&config_with_chain(upstream, &["example:passthrough"], "[reconnect]\nenabled = false")).await;
    let events = read_then_break(get(&format!("http://{proxy}/e"), &[]).await, 4, &gate).await;
    assert_eq!(data(&events), vec!["event 1", "event 2", "event 3", "event 4"], "the partial event is discarded");
    // The client resumes by itself: its Last-Event-ID reaches the upstream as it is.
    let events = read_then_break(get(&format!("http://{proxy}/e"), &[("last-event-id", "4")]).await, 4, &gate).await;
    assert_eq!(data(&events), vec!["event 5", "event 6", "event 7", "event 8"]);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_is_ended_by_the_idle_timeout() {
    let (hold_tx, hold_rx) = mpsc::unbounded_channel::<mpsc::Sender<Result<Bytes, std::io::Error>>>();
    let upstream = start_upstream(move |_| {
        let hold_tx = hold_tx.clone();
        async move {
            let (tx, response) = streamed("text/event-stream");
            tx.send(Ok(Bytes::from_static(b"data: only\n\n"))).await.unwrap();
            hold_tx.send(tx).unwrap(); // keep the stream open, silent
            response
        }
    })
    .await;
    let extra = "[reconnect]\nenabled = false\nidle_timeout_ms = 200";
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:summary"], extra)).await;
    let events = EventReader::new(get(&format!("http://{proxy}/e"), &[]).await).rest_until_broken().await;
    // The summary is sent: the chain was finished with `upstream-failed`; then the error that
    // tells the client its stream was cut off, and the body ends with an error.
    let data = data(&events);
    assert_eq!(data[..2], ["only", "{\"events\":1,\"data_bytes\":4}"]);
    assert_upstream_error(&events);
    eventually("the stream's state is released", || state.active_streams() == 0 && state.live_guest_streams() == 0)
        .await;
    drop(hold_rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_cancels_the_upstream_and_frees_the_stream() {
    let (cancelled_tx, cancelled_rx) = oneshot::channel::<()>();
    let cancelled_tx = Arc::new(std::sync::Mutex::new(Some(cancelled_tx)));
    let upstream = start_upstream(move |_| {
        let cancelled_tx = cancelled_tx.clone();
        async move {
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                tx.send(Ok(Bytes::from_static(b"data: hello\n\n"))).await.unwrap();
                // Resolves when the proxy drops the upstream response.
                tx.closed().await;
                if let Some(signal) = cancelled_tx.lock().unwrap().take() {
                    let _ = signal.send(());
                }
            });
            response
        }
    })
    .await;
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:summary", "example:redact"], "")).await;
    let mut reader = EventReader::new(get(&format!("http://{proxy}/e"), &[]).await);
    assert_eq!(reader.next().await, Some(Event::message("hello")));
    assert_eq!(state.active_streams(), 1);
    assert_eq!(state.live_guest_streams(), 2);
    drop(reader); // the client goes away while the upstream is quiet
    tokio::time::timeout(Duration::from_secs(10), cancelled_rx).await.expect("upstream not cancelled").unwrap();
    eventually("the stream's state is released", || state.active_streams() == 0 && state.live_guest_streams() == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_slows_the_upstream_instead_of_growing_memory() {
    // 60 MB in all: far more than the kernel's socket buffers take on the two connections when
    // nobody reads (autotuned, they held up to ~14 MB on the 2-core machines; tcp_rmem's maximum
    // here is 32 MiB), so a proxy that buffered without bound would let it all through.
    const EVENTS: usize = 60_000;
    const SIZE: usize = 1000;
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let upstream = start_upstream(move |_| {
        let counter = counter.clone();
        async move {
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                let pad = "x".repeat(SIZE - 20);
                for i in 0..EVENTS {
                    if tx.send(Ok(Bytes::from(format!("id: {i}\ndata: {pad}\n\n")))).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            response
        }
    })
    .await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], "")).await;
    let mut reader = EventReader::new(get(&format!("http://{proxy}/e"), &[]).await);
    assert!(reader.next().await.is_some());
    // The client stops reading. The upstream must stall once the bounded buffers (socket
    // buffers on both sides, a few batches in the proxy) are full.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = produced.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        assert!(now < EVENTS, "the upstream was never slowed down: the proxy buffered everything");
        last = now;
    }
    let buffered_bytes = last * SIZE;
    assert!(buffered_bytes < 32 << 20, "{buffered_bytes} bytes in flight for a client that reads nothing");
    // Now the client reads everything: nothing was lost.
    let rest = reader.rest().await;
    assert_eq!(rest.len() + 1, EVENTS);
    assert_eq!(rest.last().unwrap().id.as_deref(), Some(format!("{}", EVENTS - 1).as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_checked_by_authority() {
    let upstream = start_upstream(|_| async {
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::from_static(b"data: to bob@example.com\n\n"))).await;
        });
        response
    })
    .await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:redact"], "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<Bytes>>();
    // HTTP/2 has no Host header: the `:authority` (127.0.0.1:port) is what is checked.
    let response = client.get(format!("http://{proxy}/s").parse().unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(EventReader::new(response).rest().await, vec![Event::message("to [redacted]")]);
    // A Host header, when an HTTP/2 client sends one, is checked first.
    let request = http::Request::get(format!("http://{proxy}/s"))
        .header("host", "evil.example")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), StatusCode::MISDIRECTED_REQUEST);
}
