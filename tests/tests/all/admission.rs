//! Admission and timeouts on the client side, through the real proxy on loopback: stream limits
//! (503 with `Retry-After`, a slot freed when a stream ends), connection limits, request heads
//! that never complete, oversized heads, and TLS for clients.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use sluicegate_tests::metric;
use sluicegate_tests::net::*;
use sluicegate_tests::tls::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A stream that is live: its first event has arrived.
async fn open_stream(url: &str, accept: bool, streams: &mut mpsc::UnboundedReceiver<Feed>) -> (EventReader, Feed) {
    let headers: &[(&str, &str)] = if accept { &[("accept", "text/event-stream")] } else { &[] };
    let response = get(url, headers).await;
    assert_eq!(response.status(), 200, "{url}");
    let feed = streams.recv().await.unwrap();
    feed.send(Ok(Bytes::from_static(b"data: hello\n\n"))).await.unwrap();
    let mut reader = EventReader::new(response);
    assert!(reader.next().await.is_some());
    (reader, feed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limits_answer_503_with_retry_after_and_a_freed_slot_lets_the_next_in() {
    let (upstream, mut streams) = fed_upstream().await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[limits]\nmax_streams = 3\nretry_after_seconds = 2\n\
         [[route]]\nprefix = \"/one\"\nmax_streams = 1\n[[route.interceptor]]\nspec = \"example:passthrough\"\n"
    );
    let (proxy, state) = start_proxy(&config).await;
    let one = format!("http://{proxy}/one");
    let (mut first, first_feed) = open_stream(&one, true, &mut streams).await;

    let refused = get(&one, &[("accept", "text/event-stream")]).await;
    assert_eq!(refused.status(), 503, "the route's limit");
    assert_eq!(refused.headers()["retry-after"], "2");
    assert!(streams.try_recv().is_err(), "a stream that asks first is refused before it reaches the upstream");

    let other = format!("http://{proxy}/other");
    let _second = open_stream(&other, true, &mut streams).await;
    // Without `Accept: text/event-stream` (as LLM SDKs ask): the slot is taken when the answer
    // turns out to be a stream.
    let _third = open_stream(&other, false, &mut streams).await;
    let refused = get(&other, &[]).await;
    assert_eq!(refused.status(), 503, "the proxy's limit, found when the response is a stream");
    let _dropped = streams.recv().await.unwrap();

    drop(first_feed);
    assert!(first.rest().await.is_empty(), "the first stream ended");
    let (_again, _feed) = open_stream(&one, true, &mut streams).await;
    let refused = get(&other, &[("accept", "text/event-stream")]).await;
    assert_eq!(refused.status(), 503, "the freed slot went to the new /one stream: the proxy is full again");

    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(metric(&metrics, "sluicegate_streams_refused_total{route=\"/one\",limit=\"route\"}"), 1);
    assert_eq!(metric(&metrics, "sluicegate_streams_refused_total{route=\"\",limit=\"proxy\"}"), 2);
    assert_eq!(metric(&metrics, "sluicegate_stream_slots"), 3);
}

/// Reads until the proxy closes the connection; returns what it sent.
async fn until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = socket.read_to_end(&mut got).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_request_heads_are_closed_after_the_header_timeout() {
    let upstream = start_upstream(|_| async { full(200, "text/plain", "ok") }).await;
    let config = format!("upstream = \"http://{upstream}\"\n[limits]\nheader_read_timeout_ms = 300\n");
    let (proxy, state) = start_proxy(&config).await;

    let mut silent = TcpStream::connect(proxy).await.unwrap();
    let mut half = TcpStream::connect(proxy).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
    until_closed(&mut silent).await;
    until_closed(&mut half).await;

    // A kept-alive HTTP/1.1 connection gets the same time for its next request's head.
    let mut kept = TcpStream::connect(proxy).await.unwrap();
    kept.write_all(format!("GET /a HTTP/1.1\r\nHost: {proxy}\r\n\r\n").as_bytes()).await.unwrap();
    let answer = until_closed(&mut kept).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    let metrics = sluicegate::proxy::admin::metrics(&state);
    let closed = metric(&metrics, "sluicegate_connections_closed_total{reason=\"header_timeout\"}");
    assert!(closed >= 2, "{metrics}");
    assert_eq!(get(&format!("http://{proxy}/"), &[]).await.status(), 200, "a real client is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_a_request_gets_503_and_an_oversized_head_gets_431() {
    let upstream = start_upstream(|_| async { full(200, "text/plain", "ok") }).await;
    let config =
        format!("upstream = \"http://{upstream}\"\n[limits]\nmax_connections = 1\nmax_request_header_bytes = 16384\n");
    let (proxy, state) = start_proxy(&config).await;

    let mut held = TcpStream::connect(proxy).await.unwrap();
    held.write_all(format!("GET / HTTP/1.1\r\nHost: {proxy}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200", "the first connection is served and kept open");

    let refused = get(&format!("http://{proxy}/"), &[]).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(metric(&metrics, "sluicegate_connections_refused_total{reason=\"max_connections\"}"), 1);
    drop(held);

    let mut big = TcpStream::connect(proxy).await.unwrap();
    let filler = "x".repeat(20_000);
    // The held connection may take a moment to be counted as closed: retry until admitted.
    let answer = loop {
        big.write_all(format!("GET / HTTP/1.1\r\nHost: {proxy}\r\nX-Filler: {filler}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let answer = until_closed(&mut big).await;
        if !answer.starts_with(b"HTTP/1.1 503") {
            break answer;
        }
        big = TcpStream::connect(proxy).await.unwrap();
    };
    assert!(answer.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(200)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_over_tls_with_http1_or_http2_by_alpn() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls").join("client-side");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("client-side CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "proxy");
    let (upstream, mut streams) = fed_upstream().await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n[limits]\nheader_read_timeout_ms = 300\n\
         [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:redact\"\n",
        cert.display(),
        key.display()
    );
    let (proxy, state) = start_proxy(&config).await;
    for version in [http::Version::HTTP_2, http::Version::HTTP_11] {
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(ca.client_config(&[])).https_only();
        let url = format!("https://localhost:{}/", proxy.port());
        let request = Request::get(&url).body(Empty::<Bytes>::new()).unwrap();
        let executor = hyper_util::rt::TokioExecutor::new();
        // The connector offers one protocol by ALPN; the proxy offers both.
        let response = match version {
            http::Version::HTTP_2 => {
                let connector = builder.enable_http2().build();
                hyper_util::client::legacy::Client::builder(executor).build(connector).request(request).await
            }
            _ => {
                let connector = builder.enable_http1().build();
                hyper_util::client::legacy::Client::builder(executor).build(connector).request(request).await
            }
        }
        .unwrap();
        assert_eq!(response.version(), version);
        let feed = streams.recv().await.unwrap();
        feed.send(Ok(Bytes::from_static(b"data: mail ada@example.com\n\n"))).await.unwrap();
        drop(feed);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"data: mail [redacted]\n\n");
    }
    // Plain HTTP to a TLS listener is not served, and a client that never starts the handshake
    // is closed after the header timeout.
    let mut silent = TcpStream::connect(proxy).await.unwrap();
    until_closed(&mut silent).await;
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert!(metric(&metrics, "sluicegate_connections_closed_total{reason=\"header_timeout\"}") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_no_open_stream_is_closed_after_the_idle_timeout() {
    let upstream = start_upstream(|_| async { full(200, "text/plain", "ok") }).await;
    let config = format!("upstream = \"http://{upstream}\"\n[limits]\nclient_idle_timeout_ms = 300\n");
    let (proxy, state) = start_proxy(&config).await;
    let socket = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(socket),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(format!("http://{proxy}/")).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    // The connection ends when the proxy closes it; nothing else would end it.
    let _ = connection.await.unwrap();
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(metric(&metrics, "sluicegate_connections_closed_total{reason=\"idle_timeout\"}"), 1);
}
