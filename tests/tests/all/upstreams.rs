//! HTTPS upstreams and routes with their own upstream, through the real proxy on loopback:
//! TLS servers with a CA the test makes (HTTP/1.1 or HTTP/2 chosen by ALPN), certificate problems
//! that give 502 and say why, mTLS, timeouts that give 504, and a route's path and header rewrites.

use crate::wasi::captured_log;
use bytes::Bytes;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluicegate_tests::metric;
use sluicegate_tests::net::*;
use sluicegate_tests::tls::{Issued, TestCa};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A fresh directory for one test's certificate files.
fn files(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the upstream saw of each request: version, path and query, headers; and the signal
/// that breaks the first `/events` stream (sent once the client has read its three events, so
/// the break cannot overtake them: a reset discards data the upstream has not written yet).
#[derive(Default)]
struct Seen(Mutex<Vec<(Version, String, http::HeaderMap)>>, tokio::sync::Notify);

impl Seen {
    fn all(&self) -> Vec<(Version, String, http::HeaderMap)> {
        self.0.lock().unwrap().clone()
    }
}

/// An upstream with `/events` (ids 1-3, then, once `Seen`'s signal comes, the connection breaks;
/// resumed with `Last-Event-ID` it sends the rest up to 5 and ends) and `/json` (a body with an address in it).
async fn serve_test_api(seen: Arc<Seen>, tls: Option<rustls::ServerConfig>) -> SocketAddr {
    let broke = Arc::new(AtomicBool::new(false));
    let handler = move |request: Request<Incoming>| {
        let (seen, broke) = (seen.clone(), broke.clone());
        async move {
            let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            seen.0.lock().unwrap().push((request.version(), path.clone(), request.headers().clone()));
            if request.uri().path().ends_with("/json") {
                return full(200, "application/json", r#"{"reply":"write to ada@example.com"}"#);
            }
            // As an SSE server should, a resumption gets the events after the last id it names.
            let last: Option<u32> = request.headers().get("last-event-id").and_then(|v| v.to_str().ok()?.parse().ok());
            let resumed = last.is_some();
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                let ids = match last {
                    Some(last) => last + 1..=5,
                    None => 1..=3,
                };
                for id in ids {
                    let event = format!("id: {id}\ndata: {id} to ada@example.com\n\n");
                    if tx.send(Ok(Bytes::from(event))).await.is_err() {
                        return;
                    }
                }
                if !resumed && !broke.swap(true, Ordering::SeqCst) {
                    seen.1.notified().await;
                    let _ = tx.send(Err(std::io::Error::other("the upstream breaks"))).await;
                }
            });
            response
        }
    };
    match tls {
        Some(tls) => start_tls_upstream(handler, tls).await,
        None => start_upstream(handler).await,
    }
}

fn data(event: &sluicegate::sse::Event) -> String {
    String::from_utf8_lossy(event.data.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_carry_streams_bodies_and_resumption_over_http1_and_http2_by_alpn() {
    for (alpn, version) in
        [(&[&b"http/1.1"[..]][..], Version::HTTP_11), (&[&b"h2"[..], &b"http/1.1"[..]][..], Version::HTTP_2)]
    {
        let dir = files(&format!("alpn-{version:?}"));
        let ca = TestCa::new("sluicegate test CA");
        let seen = Arc::new(Seen::default());
        let upstream = serve_test_api(seen.clone(), Some(ca.server(&["localhost"]).server_config(alpn, None))).await;
        let config = format!(
            "upstream = \"https://localhost:{}\"\nupstream_ca = \"{}\"\n[reconnect]\ninitial_delay_ms = 10\n\
             [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:redact\"\n",
            upstream.port(),
            ca.write(&dir, "ca.pem").display()
        );
        let (proxy, state) = start_proxy(&config).await;

        let mut reader = EventReader::new(get(&format!("http://{proxy}/events"), &[]).await);
        let mut events = vec![];
        for _ in 0..3 {
            events.push(reader.next().await.expect("the first three events"));
        }
        seen.1.notify_one(); // now the upstream breaks
        events.extend(reader.rest().await);
        let got: Vec<String> = events.iter().map(data).collect();
        let want: Vec<String> = (1..=5).map(|i| format!("{i} to [redacted]")).collect();
        assert_eq!(got, want, "{version:?}: redacted, resumed after the break, nothing lost or repeated");

        let body = get(&format!("http://{proxy}/json"), &[]).await.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"reply":"write to [redacted]"}"#,
            "{version:?}: the JSON body went through the chain"
        );

        let all = seen.all();
        assert_eq!(all.len(), 3, "a stream, its resumption and the body");
        assert!(
            all.iter().all(|(v, _, _)| *v == version),
            "ALPN chose {version:?}: {:?}",
            all.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        assert_eq!(all[1].2.get("last-event-id").unwrap(), "3");
        let metrics = sluicegate::proxy::admin::metrics(&state);
        let handshakes = metric(
            &metrics,
            &format!("sluicegate_upstream_tls_handshakes_total{{upstream=\"https://localhost:{}\"}}", upstream.port()),
        );
        if version == Version::HTTP_2 {
            assert_eq!(handshakes, 1, "one pooled HTTP/2 connection carries every request, the resumption too");
        } else {
            assert!(
                (2..=3).contains(&handshakes),
                "HTTP/1.1: a new connection after the break, then reused: {handshakes}"
            );
        }
    }
}

/// A proxy in front of an HTTPS upstream that presents `upstream_cert`, trusting only `trusted`;
/// returns the status of one request and the upstream's name.
async fn status_through(name: &str, upstream_cert: &Issued, trusted: &TestCa, host: &str) -> (u16, String, String) {
    let dir = files(name);
    let seen = Arc::new(Seen::default());
    let upstream = serve_test_api(seen, Some(upstream_cert.server_config(&[b"h2", b"http/1.1"], None))).await;
    let upstream_name = format!("https://{host}:{}", upstream.port());
    let config = format!(
        "upstream = \"{upstream_name}\"\nupstream_ca = \"{}\"\n[[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:passthrough\"\n",
        trusted.write(&dir, "ca.pem").display()
    );
    let (proxy, state) = start_proxy(&config).await;
    let response = get(&format!("http://{proxy}/json"), &[]).await;
    let status = response.status().as_u16();
    let metrics = sluicegate::proxy::admin::metrics(&state);
    (status, upstream_name, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_give_502_and_a_log_line_that_says_what_failed() {
    let log = captured_log();
    let ca = TestCa::new("the CA the proxy trusts");
    let stranger = TestCa::new("a CA nobody trusts");
    let cases = [
        ("unknown-issuer", stranger.server(&["localhost"]), "localhost", "unknown issuer"),
        ("name-mismatch", ca.server(&["elsewhere.example"]), "localhost", "name mismatch"),
        ("expired", ca.expired_server(&["localhost"]), "localhost", "expired"),
    ];
    for (name, cert, host, reason) in cases {
        let (status, upstream, metrics) = status_through(name, &cert, &ca, host).await;
        assert_eq!(status, 502, "{name}");
        let line = log.text().lines().find(|l| l.contains(&upstream) && l.contains("TLS")).map(str::to_string);
        let line = line.unwrap_or_else(|| panic!("{name}: no log line names {upstream}: {}", log.text()));
        assert!(line.contains(reason), "{name}: the log says `{reason}`: {line}");
        assert_eq!(
            metric(&metrics, &format!("sluicegate_upstream_errors_total{{upstream=\"{upstream}\",kind=\"tls\"}}")),
            1
        );
    }
    // The control: the same set-up with a good certificate is served.
    let (status, _, _) = status_through("good", &ca.server(&["localhost"]), &ca, "localhost").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_requires_a_client_certificate_is_reached_with_one_and_refused_without() {
    let log = captured_log();
    let dir = files("mtls");
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let seen = Arc::new(Seen::default());
    let tls = ca.server(&["localhost"]).server_config(&[b"h2", b"http/1.1"], Some(&clients));
    let upstream = serve_test_api(seen.clone(), Some(tls)).await;
    let (cert, key) = clients.client("sluicegate").write(&dir, "client");
    let ca_file = ca.write(&dir, "ca.pem");
    let base =
        format!("upstream = \"https://localhost:{}\"\nupstream_ca = \"{}\"\n", upstream.port(), ca_file.display());

    let with =
        format!("{base}upstream_client_cert = \"{}\"\nupstream_client_key = \"{}\"\n", cert.display(), key.display());
    let (proxy, _) = start_proxy(&with).await;
    let response = get(&format!("http://{proxy}/json"), &[]).await;
    assert_eq!(response.status(), 200, "with the client certificate");
    assert_eq!(seen.all().len(), 1);

    let (proxy, _) = start_proxy(&base).await;
    let response = get(&format!("http://{proxy}/json"), &[]).await;
    assert_eq!(response.status(), 502, "without it");
    assert_eq!(seen.all().len(), 1, "the upstream's handler never ran");
    let text = log.text();
    let line = text.lines().rev().find(|l| l.contains(&format!("localhost:{}", upstream.port())) && l.contains("TLS"));
    assert!(line.is_some_and(|l| l.contains("client certificate")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_in_time_gives_504() {
    // A TCP server that accepts and never says a word: the TLS handshake cannot finish.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let held = held.clone();
        async move {
            while let Ok((socket, _)) = silent.accept().await {
                held.lock().unwrap().push(socket);
            }
        }
    });
    let config = format!(
        "upstream = \"https://127.0.0.1:{}\"\n[limits]\nupstream_connect_timeout_ms = 200\n",
        silent_addr.port()
    );
    let (proxy, state) = start_proxy(&config).await;
    assert_eq!(get(&format!("http://{proxy}/x"), &[]).await.status(), 504, "no TLS handshake in time");
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(
        metric(
            &metrics,
            &format!(
                "sluicegate_upstream_errors_total{{upstream=\"https://127.0.0.1:{}\",kind=\"connect_timeout\"}}",
                silent_addr.port()
            )
        ),
        1
    );

    // An HTTP upstream that takes the request and never answers.
    let mute = start_upstream(|_| std::future::pending()).await;
    let config = format!("upstream = \"http://{mute}\"\n[limits]\nupstream_header_timeout_ms = 200\n");
    let (proxy, _) = start_proxy(&config).await;
    assert_eq!(get(&format!("http://{proxy}/x"), &[]).await.status(), 504, "no response head in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reach_their_own_upstreams_with_their_paths_and_headers() {
    let log = captured_log();
    let dir = files("routes");
    let ca = TestCa::new("routes CA");
    let (secure_seen, plain_seen) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let secure =
        serve_test_api(secure_seen.clone(), Some(ca.server(&["localhost"]).server_config(&[b"h2", b"http/1.1"], None)))
            .await;
    let plain = serve_test_api(plain_seen.clone(), None).await;
    // `${CARGO_PKG_NAME}` stands for a key in the environment (cargo sets it for every test).
    let config = format!(
        "upstream = \"http://{plain}\"\n\
         [[route]]\nprefix = \"/provider\"\nupstream = \"https://localhost:{}\"\nupstream_ca = \"{}\"\nstrip_prefix = true\n\
         set_request_headers = {{ authorization = \"Bearer key-of-${{CARGO_PKG_NAME}}\", x-team = \"blue\" }}\n\
         remove_request_headers = [\"x-client-key\"]\n\
         [[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/kept\"\n",
        secure.port(),
        ca.write(&dir, "ca.pem").display()
    );
    let (proxy, state) = start_proxy(&config).await;
    let client_headers = [("authorization", "Bearer the-client's"), ("x-client-key", "k")];
    // Resumption goes to the route's upstream, with the stripped path and the injected headers.
    let mut reader = EventReader::new(get(&format!("http://{proxy}/provider/events"), &[]).await);
    let mut events = vec![];
    for _ in 0..3 {
        events.push(reader.next().await.expect("the first three events"));
    }
    secure_seen.1.notify_one(); // now the upstream breaks
    events.extend(reader.rest().await);
    assert_eq!(events.len(), 5, "resumed through the route's upstream");
    let body = get(&format!("http://{proxy}/provider/v1/json?x=1"), &client_headers).await.into_body().collect().await;
    assert_eq!(&body.unwrap().to_bytes()[..], br#"{"reply":"write to [redacted]"}"#);
    assert_eq!(get(&format!("http://{proxy}/provider"), &[]).await.status(), 200);
    get(&format!("http://{proxy}/kept/json"), &client_headers).await.into_body().collect().await.unwrap();
    get(&format!("http://{proxy}/elsewhere/json"), &[]).await.into_body().collect().await.unwrap();

    let secure_seen = secure_seen.all();
    let (resumed_path, resumed) = (&secure_seen[1].1, &secure_seen[1].2);
    assert_eq!(resumed_path.as_str(), "/events", "the prefix stripped on resumption too");
    assert_eq!(resumed["last-event-id"], "3");
    assert_eq!(resumed["authorization"], "Bearer key-of-sluicegate-tests");
    let secure_seen = &secure_seen[2..];
    let (_, path, headers) = &secure_seen[0];
    assert_eq!(path, "/v1/json?x=1", "the prefix is stripped, the query kept");
    assert_eq!(headers["authorization"], "Bearer key-of-sluicegate-tests", "the proxy's key replaces the client's");
    assert_eq!(headers["x-team"], "blue");
    assert!(headers.get("x-client-key").is_none(), "removed");
    assert_eq!(headers["host"], format!("localhost:{}", secure.port()).as_str(), "Host is the route's upstream");
    assert_eq!(secure_seen[1].1, "/", "the prefix alone is the upstream's root");
    let plain_seen = plain_seen.all();
    assert_eq!(plain_seen.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(), ["/kept/json", "/elsewhere/json"]);
    assert_eq!(plain_seen[0].2["authorization"], "Bearer the-client's", "other routes keep the client's headers");
    assert_eq!(plain_seen[0].2["host"], plain.to_string().as_str());

    let status = sluicegate::proxy::admin::status_json(&state);
    assert!(status.contains(&format!("\"upstream\":\"https://localhost:{}\"", secure.port())), "{status}");
    for shown in [status, sluicegate::proxy::admin::metrics(&state), log.text()] {
        assert!(!shown.contains("key-of-sluicegate-tests"), "an injected value is never shown");
    }
}

#[tokio::test]
async fn an_injected_header_from_a_missing_variable_is_a_config_error_that_names_it() {
    let config = sluicegate::config::ProxyConfig::from_toml(
        "upstream = \"http://127.0.0.1:9\"\n[[route]]\nprefix = \"/a\"\n\
         set_request_headers = { authorization = \"Bearer ${SLUICEGATE_TEST_UNSET_KEY}\" }\n",
    )
    .unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let error = match sluicegate::proxy::Proxy::new(&config, sluicegate_tests::runtime(), addr) {
        Ok(_) => panic!("a missing variable must not start the proxy"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("SLUICEGATE_TEST_UNSET_KEY is not set") && error.contains("route `/a`"), "{error}");

    // A value that is not a header value: refused, and the message does not repeat it.
    let config = sluicegate::config::ProxyConfig::from_toml(
        "upstream = \"http://127.0.0.1:9\"\n[[route]]\nprefix = \"/a\"\nset_request_headers = { x = \"bad\\nsecret-value\" }\n",
    )
    .unwrap();
    let error = match sluicegate::proxy::Proxy::new(&config, sluicegate_tests::runtime(), addr) {
        Ok(_) => panic!("an invalid header value must not start the proxy"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("not a valid header value") && !error.contains("secret-value"), "{error}");
}

/// Serves HTTP/1.1 on a Unix socket at `path`: an event stream with an address in it, and what
/// each request's head held.
async fn serve_on_socket(path: &std::path::Path, seen: Arc<Mutex<Vec<http::request::Parts>>>) {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    seen.lock().unwrap().push(request.into_parts().0);
                    async {
                        Ok::<_, std::convert::Infallible>(full(
                            200,
                            "text/event-stream",
                            "id: 1\ndata: mail ada@example.com\n\n",
                        ))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_upstreams_carry_their_own_headers_and_may_be_unix_sockets() {
    let socket = files("unix-upstream").join("mcp.sock");
    let seen: Arc<Mutex<Vec<http::request::Parts>>> = Arc::default();
    serve_on_socket(&socket, seen.clone()).await;
    let config = format!(
        "[upstreams.local]\nurl = \"unix:{}\"\nset_request_headers = {{ x-upstream-key = \"u-key\", x-both = \"upstream\" }}\n\
         remove_request_headers = [\"x-client-secret\"]\n\
         [[route]]\nprefix = \"/mcp\"\nupstream = \"local\"\nset_request_headers = {{ x-both = \"route\" }}\n\
         [[route.interceptor]]\nspec = \"example:redact\"\n",
        socket.display()
    );
    let (proxy, state) = start_proxy(&config).await;
    let response = get(&format!("http://{proxy}/mcp/%73tream"), &[("x-client-secret", "s")]).await;
    let events = EventReader::new(response).rest().await;
    assert_eq!(events.iter().map(data).collect::<Vec<_>>(), ["mail [redacted]"]);
    let head = seen.lock().unwrap().pop().expect("the socket's server got the request");
    assert_eq!(head.uri.path(), "/mcp/stream", "the canonical path");
    assert_eq!(head.headers["host"], "localhost");
    assert_eq!(head.headers["x-upstream-key"], "u-key");
    assert_eq!(head.headers["x-both"], "route", "a route's changes come after its upstream's");
    assert!(!head.headers.contains_key("x-client-secret"));
    let metrics = sluicegate::proxy::admin::metrics(&state);
    let upstream = format!("sluicegate_upstream_connections_total{{upstream=\"unix:{}\"}}", socket.display());
    assert_eq!(metric(&metrics, &upstream), 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_upstream_has_its_own_timeouts_and_names_are_checked() {
    // Accepts, then never answers.
    let silent = start_silent().await;
    let config = format!("upstream = \"slow\"\n[upstreams.slow]\nurl = \"http://{silent}\"\nheader_timeout_ms = 100\n");
    let (proxy, _) = start_proxy(&config).await;
    assert_eq!(get(&format!("http://{proxy}/x"), &[]).await.status(), 504, "the top-level upstream may be a name");

    let refused = |config: &str| {
        let config = sluicegate::config::ProxyConfig::from_toml(config).unwrap();
        match sluicegate::proxy::Proxy::new(&config, sluicegate_tests::runtime(), "127.0.0.1:0".parse().unwrap()) {
            Ok(_) => panic!("accepted: {config:?}"),
            Err(e) => format!("{e:#}"),
        }
    };
    let unknown = refused("[[route]]\nprefix = \"/a\"\nupstream = \"nowhere\"\n");
    assert!(unknown.contains("neither a name in [upstreams] nor a URL"), "{unknown}");
    let misplaced = refused(
        "[upstreams.x]\nurl = \"https://localhost:1\"\n[[route]]\nprefix = \"/a\"\nupstream = \"x\"\nupstream_ca = \"ca.pem\"\n",
    );
    assert!(misplaced.contains("go in [upstreams.x]"), "{misplaced}");
}

/// What the raw upstream below saw, connection by connection (numbered from 0).
#[derive(Debug, PartialEq)]
enum Happened {
    Accepted(usize),
    Answered(usize, String),
    /// The upstream closed it (fully after `/then-close`, its sending half on `close_idle`).
    Closed(usize),
    /// The proxy closed its end.
    ClosedByProxy(usize),
}

/// A plain HTTP/1.1 upstream on raw sockets, so the test decides when a connection closes: every
/// `GET` gets a two-event stream with a length, on a connection kept alive; a path ending in
/// `/then-close` closes the connection after its answer; `close_idle` half-closes every
/// connection waiting for a request (the FIN an idle timeout sends), after which the upstream
/// waits to see the proxy close its end.
async fn raw_keep_alive_upstream()
-> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Happened>, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (close_idle, idle_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        for n in 0.. {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (seen, mut close_idle) = (seen.clone(), idle_rx.clone());
            let _ = seen.send(Happened::Accepted(n));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let read = tokio::select! {
                        read = socket.read(&mut buf) => read.unwrap_or(0),
                        _ = close_idle.changed(), if head.is_empty() => {
                            socket.shutdown().await.unwrap();
                            let _ = seen.send(Happened::Closed(n));
                            while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
                            let _ = seen.send(Happened::ClosedByProxy(n));
                            return;
                        }
                    };
                    if read == 0 {
                        let _ = seen.send(Happened::ClosedByProxy(n));
                        return;
                    }
                    head.extend_from_slice(&buf[..read]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    head.drain(..end + 4);
                    let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                    let body = format!("id: 1\ndata: {path} for ada@example.com\n\nid: 2\ndata: done\n\n");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    let _ = seen.send(Happened::Answered(n, path.clone()));
                    if path.ends_with("/then-close") {
                        drop(socket);
                        let _ = seen.send(Happened::Closed(n));
                        return;
                    }
                }
            });
        }
    });
    (addr, seen_rx, close_idle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_upstream_connection_is_kept_between_requests_and_never_used_once_closed() {
    let (upstream, mut seen, close_idle) = raw_keep_alive_upstream().await;
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:redact"], "")).await;
    let read = async |path: &str| {
        let response = get(&format!("http://{proxy}{path}"), &[("accept", "text/event-stream")]).await;
        assert_eq!(response.status(), 200, "{path}");
        let events = EventReader::new(response).rest().await;
        assert_eq!(events.iter().map(data).collect::<Vec<_>>(), [format!("{path} for [redacted]"), "done".into()]);
    };
    let connections = |state: &Arc<sluicegate::proxy::Proxy>| {
        let metrics = sluicegate::proxy::admin::metrics(state);
        metric(&metrics, &format!("sluicegate_upstream_connections_total{{upstream=\"http://{upstream}\"}}"))
    };

    read("/one").await;
    read("/two").await;
    assert_eq!(seen.recv().await, Some(Happened::Accepted(0)));
    assert_eq!(seen.recv().await, Some(Happened::Answered(0, "/one".into())));
    assert_eq!(
        seen.recv().await,
        Some(Happened::Answered(0, "/two".into())),
        "the second request on the first connection"
    );
    assert_eq!(connections(&state), 1);

    // The upstream closes the connection after an answer: the next request opens a new one
    // rather than failing on the closed one.
    read("/three/then-close").await;
    assert_eq!(seen.recv().await, Some(Happened::Answered(0, "/three/then-close".into())));
    assert_eq!(seen.recv().await, Some(Happened::Closed(0)));
    read("/four").await;
    assert_eq!(seen.recv().await, Some(Happened::Accepted(1)));
    assert_eq!(seen.recv().await, Some(Happened::Answered(1, "/four".into())));
    assert_eq!(connections(&state), 2);

    // The upstream ends an idle connection (as its idle timeout would): the proxy closes its end
    // too, with no request to make it look (its reaper looks every few seconds).
    close_idle.send(true).unwrap();
    assert_eq!(seen.recv().await, Some(Happened::Closed(1)));
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), seen.recv()).await;
    assert_eq!(closed.expect("the proxy closes a connection its upstream ended"), Some(Happened::ClosedByProxy(1)));
}
