//! `sluicegate serve` as a process, as an operator runs it: per-core workers sharing the port, a
//! low descriptor limit under a crowd of silent connections, the certificate replaced by SIGHUP under a live stream, the guide's
//! configuration in front of three HTTPS upstreams with the real SDKs.

use crate::mcp::{python_with_mcp, run_client_env, start_mcp_server_env};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use sluicegate_tests::metric;
use sluicegate_tests::net::*;
use sluicegate_tests::process::Start;
use sluicegate_tests::tls::TestCa;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn text_of(url: &str) -> (u16, String) {
    let response = get(url, &[]).await;
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_silent_connections_under_a_low_descriptor_limit_neither_wedges_the_proxy_nor_its_admin() {
    let upstream = start_upstream(|_| async { full(200, "text/plain", "served") }).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("crowd");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("upstream = \"http://{upstream}\"\n[limits]\nheader_read_timeout_ms = 1500\n"))
        .unwrap();
    // 256 descriptors: the top 32 are kept back from clients.
    let proxy = Start::serve(&["--config", config.to_str().unwrap()]).open_files(256).start();
    let admin = proxy.admin.unwrap();

    let mut crowd = Vec::new();
    for _ in 0..300 {
        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ").await.unwrap();
        crowd.push(socket);
    }
    // While the crowd holds every descriptor it can get, the admin listener answers.
    for _ in 0..3 {
        let (status, body) = text_of(&format!("http://{admin}/healthz")).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
    let (_, metrics) = text_of(&format!("http://{admin}/metrics")).await;
    let refused = metric(&metrics, "sluicegate_connections_refused_total{reason=\"descriptors\"}");
    assert!(refused > 0, "the crowd reached the reserve: {metrics}");

    // Every crowd connection is closed: at once in the reserve, or when the header timeout passes.
    for socket in &mut crowd {
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
    }
    let (status, body) = text_of(&format!("http://{}/", proxy.addr)).await;
    assert_eq!((status, body.as_str()), (200, "served"), "a real client is served once the crowd is gone");
    // Read again: the proxy may have accepted (and refused) more of the crowd since the first read.
    let (_, metrics) = text_of(&format!("http://{admin}/metrics")).await;
    let refused = metric(&metrics, "sluicegate_connections_refused_total{reason=\"descriptors\"}");
    let timed_out = metric(&metrics, "sluicegate_connections_closed_total{reason=\"header_timeout\"}");
    assert!(timed_out + refused >= 300, "every crowd connection is accounted for: {timed_out} + {refused}");
    proxy.wait_for_line("close to the open file limit", std::time::Duration::from_secs(10));

    // The admin listener has no reserve: a crowd on it runs the process out of descriptors. Its
    // accept fails, is counted and retried, and it answers again once the crowd leaves.
    let mut crowd = Vec::new();
    for _ in 0..300 {
        crowd.push(TcpStream::connect(admin).await.unwrap());
    }
    proxy.wait_for_line("accept failed (retrying)", Duration::from_secs(30));
    drop(crowd);
    let (status, _) = text_of(&format!("http://{admin}/healthz")).await;
    assert_eq!(status, 200, "the admin listener recovered");
    let (_, metrics) = text_of(&format!("http://{admin}/metrics")).await;
    assert!(metric(&metrics, "sluicegate_accept_errors_total{listener=\"admin\"}") > 0, "{metrics}");
    let (status, _) = text_of(&format!("http://{}/", proxy.addr)).await;
    assert_eq!(status, 200, "and the proxy serves");
}

/// The per-core workers (the default thread model) share the listening port: the kernel spreads
/// connections over them, each serves whole streams through a chain, and `/metrics` counts what
/// each accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_workers_share_the_port_and_each_serves_whole_streams() {
    let upstream = start_upstream(|request: http::Request<hyper::body::Incoming>| async move {
        let n = request.uri().path().trim_start_matches('/').to_string();
        let events: String =
            (0..3).map(|i| format!("id: {i}\ndata: stream {n} event {i} ada@example.com\n\n")).collect();
        full(200, "text/event-stream", events)
    })
    .await;
    let metrics =
        two_workers_serve_32_streams("workers", upstream, "", |n, i| format!("stream {n} event {i} [redacted]")).await;
    let per_worker = connections_per_worker(&metrics);
    assert_eq!(per_worker.iter().sum::<u64>(), 32, "{metrics}");
    assert!(per_worker.iter().all(|&n| n > 0), "both workers accepted connections: {per_worker:?}");
}

/// A plain-HTTP/2 upstream behind per-core workers: each worker opens its own connection to it
/// and carries its streams on it, so an upstream read wakes the worker that serves the stream,
/// never the other one (one connection shared by both made a cross-thread wake-up per event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_workers_each_keep_their_own_http2_connection_to_the_upstream() {
    let upstream = start_upstream(|request: http::Request<hyper::body::Incoming>| async move {
        let version = format!("{:?}", request.version());
        let n = request.uri().path().trim_start_matches('/').to_string();
        let events: String =
            (0..3).map(|i| format!("id: {i}\ndata: stream {n} event {i} over {version} ada@example.com\n\n")).collect();
        full(200, "text/event-stream", events)
    })
    .await;
    let metrics = two_workers_serve_32_streams("workers-http2", upstream, "upstream_http2 = true\n", |n, i| {
        format!("stream {n} event {i} over HTTP/2.0 [redacted]")
    })
    .await;
    let per_worker = connections_per_worker(&metrics);
    assert!(per_worker.iter().all(|&n| n > 0), "both workers accepted connections: {per_worker:?}");
    let connections =
        metric(&metrics, &format!("sluicegate_upstream_connections_total{{upstream=\"http://{upstream}\"}}"));
    assert_eq!(connections, 2, "one HTTP/2 connection per worker, shared by that worker's streams: {metrics}");
}

/// Runs `sluicegate serve` with two per-core workers in front of `upstream` (`extra` adds
/// top-level configuration), opens 32 streams at once through `example:redact` and reads each
/// whole: event `i` of stream `n` must carry `expected(n, i)`. Returns the proxy's `/metrics`.
async fn two_workers_serve_32_streams(
    name: &str,
    upstream: std::net::SocketAddr,
    extra: &str,
    expected: impl Fn(usize, usize) -> String,
) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = \"http://{upstream}\"\n{extra}[threads]\ncount = 2\n\
             [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:redact\"\n"
        ),
    )
    .unwrap();
    let proxy = Start::serve(&["--config", config.to_str().unwrap()]).start();
    proxy.wait_for_line("threads=per-core, 2 workers", Duration::from_secs(5));
    // Every stream open at once, each on a connection of its own.
    let mut readers = Vec::new();
    for n in 0..32 {
        readers.push((n, EventReader::new(get(&format!("http://{}/{n}", proxy.addr), &[]).await)));
    }
    for (n, mut reader) in readers {
        for i in 0..3 {
            let event = reader.next().await.expect("each stream is served whole");
            assert_eq!(event.data.as_deref(), Some(expected(n, i).as_bytes()), "through the chain");
        }
        assert!(reader.next().await.is_none());
    }
    text_of(&format!("http://{}/metrics", proxy.admin.unwrap())).await.1
}

fn connections_per_worker(metrics: &str) -> Vec<u64> {
    (0..2).map(|w| metric(metrics, &format!("sluicegate_worker_connections_total{{worker=\"{w}\"}}"))).collect()
}

/// A GET over a fresh TLS connection (HTTP/1.1) that trusts only `ca`; the response and the
/// certificate the proxy presented.
async fn tls_get(
    ca: &TestCa,
    addr: std::net::SocketAddr,
    path: &str,
) -> (http::Response<hyper::body::Incoming>, Vec<u8>) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(&[b"http/1.1"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", format!("localhost:{}", addr.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    (sender.send_request(request).await.unwrap(), presented)
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

fn data(event: &sluicegate::sse::Event) -> String {
    String::from_utf8_lossy(event.data.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_connects_over_tls_and_sighup_replaces_the_certificate_under_a_live_stream() {
    let python = tokio::task::spawn_blocking(python_with_mcp).await.unwrap();
    let (_mcp, mcp_addr) = start_mcp_server_env(&python, &[], &[]).await;
    let (upstream, mut streams) = fed_upstream().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sighup-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("sighup CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let first = ca.server(&["localhost"]);
    let (cert, key) = first.write(&dir, "proxy");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = \"http://{upstream}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[route]]\nprefix = \"/mcp\"\nupstream = \"http://{mcp_addr}\"\n[[route.interceptor]]\nspec = \"example:redact\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let proxy = Start::serve(&["--config", config.to_str().unwrap()]).start();
    let mcp_url = format!("https://localhost:{}/mcp", proxy.addr.port());
    let mcp_client = |python: std::path::PathBuf, url: String, ca: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || run_client_env(&python, &url, &[("SSL_CERT_FILE", &ca)])).await.unwrap()
    };
    let seen = mcp_client(python.clone(), mcp_url.clone(), ca_file.clone()).await;
    assert_eq!(seen["text"], serde_json::json!(["Ada can be reached at [redacted]"]), "{seen}");
    assert_eq!(seen["progress"], serde_json::json!([[1.0, 2.0, "searching"], [2.0, 2.0, "found"]]));

    let (response, presented) = tls_get(&ca, proxy.addr, "/events").await;
    assert_eq!(presented, der(&first.cert_pem));
    let mut live = EventReader::new(response);
    let live_feed = streams.recv().await.unwrap();
    live_feed.send(Ok(Bytes::from_static(b"data: one\n\n"))).await.unwrap();
    assert_eq!(data(&live.next().await.unwrap()), "one");

    let second = ca.server(&["localhost"]);
    second.write(&dir, "proxy");
    proxy.signal("HUP");
    proxy.wait_for_line("reloaded", Duration::from_secs(60));

    let (response, presented) = tls_get(&ca, proxy.addr, "/events").await;
    assert_eq!(presented, der(&second.cert_pem), "a new connection gets the new certificate");
    let mut fresh = EventReader::new(response);
    let fresh_feed = streams.recv().await.unwrap();
    fresh_feed.send(Ok(Bytes::from_static(b"data: new\n\n"))).await.unwrap();
    assert_eq!(data(&fresh.next().await.unwrap()), "new");
    live_feed.send(Ok(Bytes::from_static(b"data: two\n\n"))).await.unwrap();
    assert_eq!(data(&live.next().await.unwrap()), "two", "the live stream goes on over its connection");
    drop((live_feed, fresh_feed));
    assert!(live.rest().await.is_empty() && fresh.rest().await.is_empty());

    let seen = mcp_client(python, mcp_url, ca_file).await;
    assert_eq!(seen["text"], serde_json::json!(["Ada can be reached at [redacted]"]), "after the reload: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_config_serves_the_real_sdks_through_three_https_upstreams_with_injected_credentials() {
    let llm_python = tokio::task::spawn_blocking(crate::llm_sdks::python);
    let mcp_python = tokio::task::spawn_blocking(python_with_mcp).await.unwrap();
    let llm_python = llm_python.await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("front-door");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("front-door CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let upstream_cert = ca.server(&["localhost"]);
    let (cert_file, key_file) = upstream_cert.write(&dir, "upstream");
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (openai_key, anthropic_key) = (format!("sk-openai-{nonce}"), format!("sk-ant-{nonce}"));
    let (openai_seen, anthropic_seen) = (Arc::default(), Arc::default());
    // One upstream speaks HTTP/2 (by ALPN), the other HTTP/1.1 only.
    let openai = crate::llm_sdks::start_llm_upstream_tls(
        upstream_cert.server_config(&[b"h2", b"http/1.1"], None),
        ("authorization", format!("Bearer {openai_key}")),
        Arc::clone(&openai_seen),
    )
    .await;
    let anthropic = crate::llm_sdks::start_llm_upstream_tls(
        upstream_cert.server_config(&[b"http/1.1"], None),
        ("x-api-key", anthropic_key.clone()),
        Arc::clone(&anthropic_seen),
    )
    .await;
    let tls_env = [("MCP_TLS_CERT", cert_file.as_path()), ("MCP_TLS_KEY", key_file.as_path())];
    let (_mcp, mcp) = start_mcp_server_env(&mcp_python, &[], &tls_env).await;

    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/front-door.toml")).unwrap();
    let config = guide
        .replace("https://api.openai.com", &format!("https://localhost:{}", openai.port()))
        .replace("https://api.anthropic.com", &format!("https://localhost:{}", anthropic.port()))
        .replace("https://mcp.example.com", &format!("https://localhost:{}", mcp.port()));
    assert_ne!(config, guide);
    let config_file = dir.join("front-door.toml");
    std::fs::write(&config_file, config).unwrap();
    let proxy = Start::serve(&["--config", config_file.to_str().unwrap(), "--upstream-ca", ca_file.to_str().unwrap()])
        .env("OPENAI_API_KEY", &openai_key)
        .env("ANTHROPIC_API_KEY", &anthropic_key)
        .env("MCP_TOKEN", "mcp-token")
        .start();

    let redacted = "Hello! Write to [redacted] or [redacted] about the secret plan, then wait for [redacted]";
    let no_key = [("SLUICEGATE_NO_KEY", "1")];
    for (api, base) in [("chat", "/openai/v1"), ("responses", "/openai/v1"), ("anthropic", "/anthropic")] {
        let url = format!("http://{}{base}", proxy.addr);
        let seen = crate::llm_sdks::sdk_with(&llm_python, url.clone(), api, "stream", &no_key).await;
        assert_eq!(seen["deltas"], redacted, "{api}: {seen}");
        let whole = crate::llm_sdks::sdk_with(&llm_python, url, api, "whole", &no_key).await;
        assert_eq!(whole["final"], redacted, "{api} without streaming: {whole}");
    }
    let openai_seen = openai_seen.lock().unwrap().clone();
    assert_eq!(
        openai_seen,
        vec![format!("Bearer {openai_key}"); 4],
        "every request carried the key the proxy injected"
    );
    assert_eq!(*anthropic_seen.lock().unwrap(), vec![anthropic_key.clone(); 2]);

    let url = format!("http://{}/mcp", proxy.addr);
    let seen = tokio::task::spawn_blocking(move || run_client_env(&mcp_python, &url, &[])).await.unwrap();
    assert_eq!(seen["text"], serde_json::json!(["Ada can be reached at [redacted]"]), "{seen}");
    assert_eq!(seen["tools"], serde_json::json!(["lookup", "count"]), "the tool list is trimmed to the allowed");
    let (status, _) = text_of(&format!("http://{}/elsewhere", proxy.addr)).await;
    assert_eq!(status, 404, "no route, no top-level upstream");

    let admin = proxy.admin.unwrap();
    let (_, status_json) = text_of(&format!("http://{admin}/status.json")).await;
    let (_, metrics) = text_of(&format!("http://{admin}/metrics")).await;
    for (shown, what) in [(proxy.log(), "the log"), (status_json, "/status.json"), (metrics.clone(), "/metrics")] {
        assert!(!shown.contains(&openai_key) && !shown.contains(&anthropic_key), "a key is shown in {what}");
    }
    let handshakes = metric(
        &metrics,
        &format!("sluicegate_upstream_tls_handshakes_total{{upstream=\"https://localhost:{}\"}}", openai.port()),
    );
    assert_eq!(handshakes, 1, "one pooled HTTP/2 connection to the OpenAI-like upstream served every call");
}

/// The epoch ticker keeps guests' CPU deadlines, waking 200 times a second: a proxy with no guest
/// (no interceptors, or native ones) has none running; one with a guest has it from the start.
/// Guests load before the proxy says it is serving, so the ticker's log line comes before that
/// one or never; its thread names itself once it runs, so that is waited for.
#[test]
fn only_a_proxy_with_a_guest_runs_the_epoch_ticker() {
    const STARTED: &str = "epoch ticker started";
    let bare = Start::serve(&["--upstream", "http://127.0.0.1:9", "--interceptor", "native:passthrough"]).start();
    assert!(!bare.log().contains(STARTED), "no guest, no ticker:\n{}", bare.log());
    assert!(!bare.thread_names().iter().any(|n| n == "sluicegate-epoc"), "{:?}", bare.thread_names());
    let guest = Start::serve(&["--upstream", "http://127.0.0.1:9", "--interceptor", "example:passthrough"]).start();
    assert!(guest.log().contains(STARTED), "a guest's deadlines need the ticker:\n{}", guest.log());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !guest.thread_names().iter().any(|n| n == "sluicegate-epoc") {
        assert!(std::time::Instant::now() < deadline, "no ticker thread: {:?}", guest.thread_names());
        std::thread::sleep(Duration::from_millis(5)); // polling the condition, bounded above
    }
}
