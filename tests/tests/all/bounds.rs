//! What an upstream or a crowd of clients can make the proxy spend, bounded: reconnects of an
//! upstream that keeps breaking, bytes held for inspection across every request; and a stream cut
//! off by its upstream is never passed on as a whole one.

use bytes::Bytes;
use http_body_util::BodyExt;
use sluicegate_tests::metric;
use sluicegate_tests::net::{EventReader, config_with_chain, full, get, start_proxy, start_upstream};
use sluicegate_tests::process::Start;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream on a raw socket: connection `n` (from 1) is answered with a response head with
/// `content_type`, then `body(n)` as one chunk of a chunked body that never ends: the connection
/// is closed without the last chunk, as an upstream that dies mid-stream does. Counts
/// connections.
async fn breaking_upstream(content_type: &'static str, body: fn(usize) -> String) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buf[..read]),
                    }
                }
                let chunk = body(n);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
                    chunk.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await; // FIN: what was written arrives, then the end
            });
        }
    });
    (addr, connections)
}

fn data(events: &[sluicegate::sse::Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.data.as_ref()).map(|d| String::from_utf8_lossy(d).into_owned()).collect()
}

/// The stream's events, which must end with the proxy's error and a broken body within 30 s.
async fn read_until_broken(response: http::Response<hyper::body::Incoming>) -> Vec<sluicegate::sse::Event> {
    let mut reader = EventReader::new(response);
    let events = tokio::time::timeout(Duration::from_secs(30), reader.rest_until_broken())
        .await
        .expect("the stream ends: reconnects are bounded");
    let last = events.last().expect("the error event");
    assert_eq!(last.event_type.as_deref(), Some(&b"error"[..]), "{last:?}");
    assert!(String::from_utf8_lossy(last.data.as_deref().unwrap()).contains("upstream_error"), "{last:?}");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_that_bring_nothing_new_are_one_failure_that_backs_off() {
    // Every connection sends the same event, asks for `retry: 0`, and dies.
    let (upstream, connections) =
        breaking_upstream("text/event-stream", |_| "id: 1\nretry: 0\ndata: x\n\n".into()).await;
    let extra =
        "[reconnect]\nmax_attempts = 4\ninitial_delay_ms = 1\nmin_delay_ms = 1\nmax_delay_ms = 20\nmax_per_minute = 0";
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], extra)).await;
    let events = read_until_broken(get(&format!("http://{proxy}/"), &[]).await).await;
    assert_eq!(data(&events)[..1], ["x"], "the replays are skipped");
    assert_eq!(connections.load(Ordering::SeqCst), 1 + 4, "one failure's attempts, not four each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reconnects_at_most_max_per_minute_times() {
    // Every connection brings one new event, then dies: progress each time, so only the cap
    // ends it.
    let (upstream, connections) = breaking_upstream("text/event-stream", |n| format!("id: {n}\ndata: x{n}\n\n")).await;
    let extra = "[reconnect]\nmax_attempts = 100\ninitial_delay_ms = 1\nmax_delay_ms = 5\nmax_per_minute = 5";
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], extra)).await;
    let events = read_until_broken(get(&format!("http://{proxy}/"), &[]).await).await;
    assert_eq!(data(&events)[..6], ["x1", "x2", "x3", "x4", "x5", "x6"]);
    assert_eq!(connections.load(Ordering::SeqCst), 1 + 5);
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(metric(&metrics, r#"sluicegate_route_reconnects_capped_total{route="/"}"#), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_off_upstream_is_cut_off_for_the_client_over_http1_and_http2() {
    // No ids: nothing to resume from.
    let (upstream, _) = breaking_upstream("text/event-stream", |_| "data: one\n\n".into()).await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], "")).await;
    for http2 in [false, true] {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(http2)
            .build_http();
        let request =
            http::Request::get(format!("http://{proxy}/")).body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let events = read_until_broken(client.request(request).await.unwrap()).await;
        assert_eq!(data(&events)[..1], ["one"], "http2: {http2}");
    }
    // JSON lines end with an error line, then the broken body.
    let (upstream, _) = breaking_upstream("application/x-ndjson", |_| "{\"a\":1}\n".into()).await;
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], "")).await;
    let mut body = get(&format!("http://{proxy}/"), &[]).await.into_body();
    let mut text = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => text.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("a clean end after {}", String::from_utf8_lossy(&text)),
        }
    };
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("{\"a\":1}\n{\"error\":"), "{text} ({error})");
}

/// A process's counter or gauge from its admin listener.
async fn admin_metric(admin: SocketAddr, line_start: &str) -> u64 {
    let body = get(&format!("http://{admin}/metrics"), &[]).await.into_body().collect().await.unwrap().to_bytes();
    metric(&String::from_utf8_lossy(&body), line_start)
}

/// Polls `line_start` until `done` says so (30 s at most).
async fn until(admin: SocketAddr, line_start: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = admin_metric(admin, line_start).await;
        if done(value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{line_start} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that asks for `path` and never reads the answer (its receive buffer kept small, so
/// that the kernel does not take the answer off the proxy's hands).
async fn non_reader(proxy: SocketAddr, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_held_for_inspection_share_one_budget() {
    const BODY: usize = 12 << 20;
    let mut json = Vec::with_capacity(BODY + 64);
    json.extend_from_slice(b"{\"pad\":\"");
    json.resize(json.len() + BODY, b'x');
    json.extend_from_slice(b"\",\"mail\":\"ada@example.com\"}");
    let json = Bytes::from(json);
    let upstream = start_upstream(move |_| {
        let json = json.clone();
        async move { full(200, "application/json", json) }
    })
    .await;
    let dir = std::env::temp_dir().join(format!("sluicegate-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluicegate.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = \"http://{upstream}\"\n[limits]\nmax_body_bytes = {}\nmax_buffered_bytes = {}\ncall_deadline_ms = 5000\n\
             [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:redact\"\ninstances = 1\n",
            16 << 20,
            30 << 20
        ),
    )
    .unwrap();
    let serving = tokio::task::spawn_blocking(move || Start::serve(&["--config", config.to_str().unwrap()]).start())
        .await
        .unwrap();
    let (proxy, admin) = (serving.addr, serving.admin.unwrap());
    let read_one = || async move {
        let response = get(&format!("http://{proxy}/big"), &[]).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, retry_after, body)
    };
    // A reader is served, and warms the guest up (its memory grows to hold such a body once).
    let (status, _, body) = read_one().await;
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), serving.log());
    assert!(body.ends_with(b"\"mail\":\"[redacted]\"}"));
    let resident_before = admin_metric(admin, "process_resident_memory_bytes").await;

    // Two clients that never read hold two bodies: 24 of the 30 MiB.
    let held = [non_reader(proxy, "/big").await, non_reader(proxy, "/big").await];
    until(admin, "sluicegate_buffered_bytes", |n| n >= 2 * BODY as u64).await;
    let (status, retry_after, _) = read_one().await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "the budget is spent: come back later");

    // A crowd of them: each is refused, and the proxy's memory does not grow with it.
    let mut crowd = Vec::new();
    for _ in 0..20 {
        crowd.push(non_reader(proxy, "/big").await);
    }
    until(admin, "sluicegate_buffer_refusals_total", |n| n >= 21).await;
    assert!(admin_metric(admin, "sluicegate_buffered_bytes").await <= 30 << 20);
    // Without the budget the answers alone would be 22 x 12 = 264 MiB; with it, what grows is
    // the two held answers and the allocator's keep of the copies made while reading and judging
    // them (measured here: 110-120 MiB, from a warmed-up process).
    let resident_after = admin_metric(admin, "process_resident_memory_bytes").await;
    let grown = resident_after.saturating_sub(resident_before) >> 20;
    assert!(grown < 200, "22 clients holding 12 MiB answers grew the proxy by {grown} MiB");
    let metrics = get(&format!("http://{admin}/metrics"), &[]).await.into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metric(
            &metrics,
            r#"sluicegate_bodies_total{route="/",direction="response",outcome="refused",reason="buffer_full"}"#
        ) >= 21
    );

    // Once they are gone, their bytes are given back.
    drop(held);
    drop(crowd);
    until(admin, "sluicegate_buffered_bytes", |n| n == 0).await;
    let (status, _, _) = read_one().await;
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
