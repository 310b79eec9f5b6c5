//! Closed by default: what an attacker (or an unusual upstream) tries, to get traffic past a
//! guarded route without its chain. Path spellings, media-type labels, character encodings,
//! JSON-lines streams and request bodies that make an interceptor fault, each against the real
//! MCP SDK server (stateless JSON mode: a bare `tools/call` runs) or a test upstream, with a control
//! that shows the trick works on the server itself.

use crate::mcp::{python_with_mcp, start_mcp_server_with};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluicegate_tests::net::{full, start_proxy, start_upstream, streamed};
use sluicegate_tests::{llm, metric};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// Sends one request over HTTP/1.1 or, with `http2`, over HTTP/2 by prior knowledge (a header
/// with an empty value is left out).
async fn send(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    http2: bool,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::post(format!("http://{addr}{path}"));
    for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
        request = request.header(*name, *value);
    }
    let client = Client::builder(TokioExecutor::new()).http2_only(http2).build_http();
    let response = client.request(request.body(Full::new(body.into())).unwrap()).await.expect("a response");
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.expect("the whole body").to_bytes())
}

const MCP_JSON: [(&str, &str); 2] =
    [("accept", "application/json, text/event-stream"), ("content-type", "application/json")];

fn call(tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
        .to_string()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// The tool names of a `tools/list` answer.
fn tools(body: &Bytes) -> Vec<String> {
    let answer = json_of(body);
    let listed = answer["result"]["tools"].as_array().unwrap_or_else(|| panic!("not a tools/list result: {answer}"));
    listed.iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

/// Asserts a JSON-RPC refusal by the proxy (code -32001) for request id 7.
fn assert_refused(status: StatusCode, body: &Bytes, what: &str) {
    let answer = json_of(body);
    assert_eq!(
        (status, answer["id"].clone(), answer["error"]["code"].clone()),
        (StatusCode::OK, json!(7), json!(-32001)),
        "{what}: {answer}"
    );
}

/// A marker file the MCP server's `secret` tool writes when it runs.
struct Marker(PathBuf);

impl Marker {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("sluicegate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Marker(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// True if `secret` ran since the last call (which forgets it).
    fn ran(&self) -> bool {
        std::fs::remove_file(&self.0).is_ok()
    }
}

/// `/mcp` guarded by tool-guard (allow `count`) in both chains, in front of `upstream`, which
/// is also the top-level upstream (where unmatched paths go, unguarded).
fn guarded_mcp(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "upstream = \"http://{upstream}\"\n{extra}\n[[route]]\nprefix = \"/mcp\"\n\
         [[route.interceptor]]\nspec = \"example:tool-guard\"\nconfig = {{ allow = \"count\" }}\n\
         [[route.request_interceptor]]\nspec = \"example:tool-guard\"\nconfig = {{ allow = \"count\" }}\n"
    )
}

async fn mcp_server(marker: &Marker) -> (crate::mcp::Server, SocketAddr) {
    let python = python_with_mcp();
    start_mcp_server_with(&python, &["json", marker.arg()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_route_is_the_same_route_however_its_path_is_spelled() {
    let marker = Marker::new("paths");
    let (_server, upstream) = mcp_server(&marker).await;
    let (proxy, state) = start_proxy(&guarded_mcp(upstream, "")).await;
    // The control: the server decodes the path, so `/%6dcp` is its `/mcp`.
    let (status, _, body) = send(upstream, "/%6dcp", &MCP_JSON, call("secret", json!({})), false).await;
    assert!(status.is_success() && marker.ran(), "the server runs a call sent to /%6dcp: {body:?}");

    for http2 in [false, true] {
        for path in ["/mcp", "/%6dcp", "/mc%70", "/%6D%63%70", "//mcp", "/./mcp", "/%2e/mcp"] {
            let at = format!("{path} over HTTP/{}", if http2 { 2 } else { 1 });
            let (status, _, body) = send(proxy, path, &MCP_JSON, LIST, http2).await;
            assert_eq!((status, tools(&body)), (StatusCode::OK, vec!["count".to_string()]), "{at}");
            let (status, _, body) = send(proxy, path, &MCP_JSON, call("secret", json!({})), http2).await;
            assert_refused(status, &body, &at);
            assert!(!marker.ran(), "{at}: the refused tool ran");
        }
        // What cannot be one spelling is refused before it goes anywhere.
        for path in ["/x/../mcp", "/mcp%2F", "/%2e%2e/mcp", "/mcp%00", "/m\\cp", "/mc%p"] {
            let (status, _, body) = send(proxy, path, &MCP_JSON, call("secret", json!({})), http2).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body:?}");
            assert!(!marker.ran(), "{path}: the refused tool ran");
        }
    }
    let metrics = sluicegate::proxy::admin::metrics(&state);
    let refused = r#"sluicegate_bodies_total{route="/mcp",direction="request",outcome="refused",reason="interceptor"}"#;
    assert_eq!(metric(&metrics, refused), 14, "one enforcement per refused call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_prefix_forwards_the_canonical_path_and_never_climbs_out() {
    // Each request the upstream got: its path and its `x-api-key`.
    type Seen = Vec<(String, Option<String>)>;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let upstream = start_upstream({
        let seen = seen.clone();
        move |request: Request<hyper::body::Incoming>| {
            let key = request.headers().get("x-api-key").map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push((request.uri().path().to_string(), key));
            async { full(200, "application/json", "{}") }
        }
    })
    .await;
    let config = format!(
        "[[route]]\nprefix = \"/api\"\nupstream = \"http://{upstream}\"\nstrip_prefix = true\n\
         set_request_headers = {{ x-api-key = \"the-key\" }}\n\
         [[route.interceptor]]\nspec = \"example:passthrough\"\n"
    );
    let (proxy, _) = start_proxy(&config).await;
    for (path, upstream_path) in
        [("/api/v1/%63hat", "/v1/chat"), ("/api//v1/./chat", "/v1/chat"), ("/api/v1/x/../chat", "/v1/chat")]
    {
        let (status, _, _) = send(proxy, path, &[], "{}", false).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let last = seen.lock().unwrap().pop();
        assert_eq!(last, Some((upstream_path.to_string(), Some("the-key".to_string()))), "{path}");
    }
    for path in ["/api/../x", "/api/%2e%2e/x", "/api/a%2Fb", "/api/a%5cb"] {
        let (status, _, _) = send(proxy, path, &[], "{}", false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing refused reached the upstream: {:?}", seen.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_judged_by_its_content_not_its_label_nor_its_encoding() {
    let marker = Marker::new("labels");
    let (_server, upstream) = mcp_server(&marker).await;
    let (proxy, state) = start_proxy(&guarded_mcp(upstream, "")).await;
    let secret = call("secret", json!({}));
    let utf16le = |text: &str| -> Vec<u8> { text.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let utf16be = |text: &str| -> Vec<u8> { text.encode_utf16().flat_map(u16::to_be_bytes).collect() };
    let utf32le = |text: &str| -> Vec<u8> { text.chars().flat_map(|c| (c as u32).to_le_bytes()).collect() };
    let utf32be = |text: &str| -> Vec<u8> { text.chars().flat_map(|c| (c as u32).to_be_bytes()).collect() };
    let bom = |mark: &[u8], body: Vec<u8>| -> Vec<u8> { [mark, &body].concat() };
    let accept = ("accept", "application/json, text/event-stream");
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("a list", "application/json, text/plain", secret.clone().into_bytes()),
        ("a trailing comma", "application/json,", secret.clone().into_bytes()),
        ("UTF-16LE", "application/json", utf16le(&secret)),
        ("UTF-16BE", "application/json", utf16be(&secret)),
        ("UTF-32LE", "application/json", utf32le(&secret)),
        ("UTF-32BE", "application/json", utf32be(&secret)),
        ("UTF-16LE with its mark", "application/json", bom(&[0xFF, 0xFE], utf16le(&secret))),
        ("UTF-8 with a mark", "application/json", bom(&[0xEF, 0xBB, 0xBF], secret.clone().into_bytes())),
        ("no label", "", secret.clone().into_bytes()),
        ("a label that says text", "text/plain", utf16le(&secret)),
    ];
    for (what, content_type, body) in &cases {
        // The control: the server itself runs the call as sent (it reads JSON whatever the
        // label says, once the label contains `application/json`).
        let (status, _, answer) =
            send(upstream, "/mcp", &[accept, ("content-type", content_type)], body.clone(), false).await;
        if content_type.contains("application/json") {
            assert!(status.is_success() && marker.ran(), "{what}: the server runs it directly: {answer:?}");
        }
        let (status, _, answer) =
            send(proxy, "/mcp", &[accept, ("content-type", content_type)], body.clone(), false).await;
        assert_refused(status, &answer, what);
        assert!(!marker.ran(), "{what}: the refused tool ran through the proxy");
    }
    // Compressed, then in UTF-16: decoded both ways before the chain.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, &utf16be(&secret)).unwrap();
    let zipped = [accept, ("content-type", "application/json"), ("content-encoding", "gzip")];
    let (status, _, answer) = send(proxy, "/mcp", &zipped, gzip.finish().unwrap(), false).await;
    assert_refused(status, &answer, "gzip of UTF-16BE");
    assert!(!marker.ran());
    // An allowed call in UTF-16 is decoded, judged, and reaches the server as UTF-8.
    let (status, _, answer) = send(proxy, "/mcp", &MCP_JSON, utf16le(&call("count", json!({"to": 3}))), false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&answer)["result"]["content"][0]["text"], "1 2 3", "{answer:?}");
    // A charset that the bytes contradict cannot be judged either way: refused, 415.
    let (status, _, answer) =
        send(proxy, "/mcp", &[accept, ("content-type", "application/json; charset=utf-16")], secret.clone(), false)
            .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer:?}");
    // Binary content has no rule to pass it on this route.
    let (status, _, _) =
        send(proxy, "/mcp", &[accept, ("content-type", "image/png")], &b"\x89PNG\r\n\x1a\n\0"[..], false).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(!marker.ran());
    let metrics = sluicegate::proxy::admin::metrics(&state);
    for (reason, n) in [("interceptor", cases.len() as u64 + 1), ("charset", 1), ("binary", 1)] {
        let line = format!(
            r#"sluicegate_bodies_total{{route="/mcp",direction="request",outcome="refused",reason="{reason}"}}"#
        );
        assert_eq!(metric(&metrics, &line), n, "{reason}");
    }
    assert!(!metrics.contains(r#"direction="request",outcome="passed""#), "nothing passed uninspected:\n{metrics}");
}

/// An OpenAI chat stream whose answer has an address split over many token events.
fn chat_with_address() -> String {
    let deltas: Vec<String> = ["Write", " to", " ada", ".", "love", "lace", "@", "example", ".", "com", " today"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    llm::stream(llm::Format::Chat, &deltas, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_is_judged_by_its_content_not_its_label_nor_its_encoding() {
    let upstream = start_upstream(|request: Request<hyper::body::Incoming>| async move {
        let chat = chat_with_address();
        let json = r#"{"text":"write to ada.lovelace@example.com"}"#;
        let utf16: Vec<u8> = json.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let latin1 = b"{\"text\":\"caf\xe9 for ada.lovelace@example.com\"}".to_vec();
        let label = |body: Vec<u8>, content_type: Option<&str>| {
            let mut response = http::Response::builder().status(200);
            if let Some(content_type) = content_type {
                response = response.header("content-type", content_type);
            }
            response.body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync()).unwrap()
        };
        match request.uri().path() {
            "/stream-as-text" => label(chat.into_bytes(), Some("text/plain")),
            "/stream-as-octets" => label(chat.into_bytes(), Some("application/octet-stream")),
            "/stream-unlabelled" => label(chat.into_bytes(), None),
            "/stream-as-a-list" => label(chat.into_bytes(), Some("text/event-stream, text/plain")),
            "/json-as-text" => label(json.as_bytes().to_vec(), Some("text/plain")),
            "/json-in-utf16" => label(utf16, Some("application/json")),
            "/json-in-latin1" => label(latin1, Some("application/json; charset=iso-8859-1")),
            _ => label(Vec::new(), None),
        }
    })
    .await;
    let (proxy, state) =
        start_proxy(&sluicegate_tests::net::config_with_chain(upstream, &["example:redact"], "")).await;
    for path in ["/stream-as-text", "/stream-as-octets", "/stream-unlabelled", "/stream-as-a-list"] {
        let (status, _, body) = send(proxy, path, &[], "", false).await;
        let events = sluicegate_tests::parse_all(&body);
        let text = llm::text_of(llm::Format::Chat, &events);
        assert_eq!((status, text.as_str()), (StatusCode::OK, "Write to [redacted] today"), "{path}");
    }
    for path in ["/json-as-text", "/json-in-utf16"] {
        let (status, headers, body) = send(proxy, path, &[], "", false).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &br#"{"text":"write to [redacted]"}"#[..]), "{path}");
        assert_eq!(headers["content-length"], body.len().to_string(), "{path}");
    }
    let (status, headers, body) = send(proxy, "/json-in-latin1", &[], "", false).await;
    assert_eq!((status, std::str::from_utf8(&body).unwrap()), (StatusCode::OK, "{\"text\":\"café for [redacted]\"}"));
    assert_eq!(headers["content-type"], "application/json; charset=utf-8", "sent on as UTF-8, labelled so");
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(
        metric(
            &metrics,
            r#"sluicegate_bodies_total{route="/",direction="response",outcome="inspected",reason="event_stream"}"#
        ),
        4
    );
    assert!(!metrics.contains(r#"direction="response",outcome="passed""#), "nothing passed uninspected:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_stream_through_the_chain_line_by_line() {
    // Two lines, then the rest only once the test has read them: what arrives before is streamed.
    let (gate_tx, gate_rx) = mpsc::channel::<()>(1);
    let gate = Arc::new(Mutex::new(gate_rx));
    let upstream = start_upstream(move |request: Request<hyper::body::Incoming>| {
        let gate = gate.clone();
        async move {
            let label = if request.uri().path() == "/labelled" { "application/x-ndjson" } else { "text/plain" };
            let (tx, response) = streamed(label);
            tokio::spawn(async move {
                let line = |n: u32| Bytes::from(format!("{{\"note\":\"mail ada{n}@example.com\"}}\n"));
                tx.send(Ok(line(1))).await.unwrap();
                tx.send(Ok(line(2))).await.unwrap();
                gate.lock().await.recv().await;
                tx.send(Ok(line(3))).await.unwrap();
                tx.send(Ok(Bytes::from_static(b"{\"done\":true}"))).await.unwrap();
            });
            response
        }
    })
    .await;
    let (proxy, state) =
        start_proxy(&sluicegate_tests::net::config_with_chain(upstream, &["example:redact"], "")).await;
    let line = "{\"note\":\"mail [redacted]\"}\n";
    for path in ["/labelled", "/unlabelled"] {
        let response = sluicegate_tests::net::get(&format!("http://{proxy}{path}"), &[]).await;
        assert_eq!(response.headers().get("content-length"), None, "{path}: streamed, not read whole");
        let mut body = response.into_body();
        let mut text = String::new();
        while text.lines().count() < 2 {
            let frame = body.frame().await.expect("the first lines before the upstream goes on").unwrap();
            text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
        }
        assert_eq!(text, line.repeat(2), "{path}: each line through the chain as it came");
        gate_tx.send(()).await.unwrap();
        text.push_str(std::str::from_utf8(&body.collect().await.unwrap().to_bytes()).unwrap());
        assert_eq!(text, line.repeat(3) + "{\"done\":true}\n", "{path}");
    }
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert_eq!(
        metric(
            &metrics,
            r#"sluicegate_bodies_total{route="/",direction="response",outcome="inspected",reason="lines"}"#
        ),
        2
    );
}

/// A `tools/call` of `tool` padded with a `_meta` array of `n` zeros: a body that is cheap to send
/// and costly to parse into a tree.
fn padded_call(tool: &str, n: usize) -> String {
    let mut pad = String::with_capacity(2 * n + 2);
    pad.push('[');
    for i in 0..n {
        pad.push_str(if i == 0 { "0" } else { ",0" });
    }
    pad.push(']');
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"to":3}},"_meta":{{"pad":{pad}}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_makes_an_interceptor_fault_is_refused_alone_and_never_passes() {
    let marker = Marker::new("faults");
    let (_server, upstream) = mcp_server(&marker).await;
    // 4 MiB of `0,` is two million JSON values: tool-guard's tree of them outgrows its memory.
    let padded = padded_call("count", (4 << 20) / 2 - 200);
    assert!(padded.len() < 4 << 20, "under max_body_bytes: the proxy hands it to the chain");
    let breaker = "[limits]\nbreaker_faults = 3\nbreaker_window_ms = 60000\nbreaker_backoff_ms = 60000";
    let (proxy, state) = start_proxy(&guarded_mcp(upstream, breaker)).await;
    for attempt in 0..6 {
        let (status, _, body) = send(proxy, "/mcp", &MCP_JSON, padded.clone(), false).await;
        assert_refused(status, &body, &format!("padded call {attempt}"));
        assert!(json_of(&body)["error"]["message"].as_str().unwrap().contains("could not judge"), "{body:?}");
    }
    // Every other client is still served: the faults were the padded requests' own.
    let (status, _, body) = send(proxy, "/mcp", &MCP_JSON, call("count", json!({"to": 3})), false).await;
    assert_eq!((status, json_of(&body)["result"]["content"][0]["text"].clone()), (StatusCode::OK, json!("1 2 3")));
    let link = &state.links()[1];
    assert!(link.stats().traps() >= 6, "each padded request trapped: {}", link.stats().traps());
    assert_eq!(link.stats().circuit_opened.load(std::sync::atomic::Ordering::Relaxed), 0, "the breaker was not moved");

    // Under fail-open, a padded call of a refused tool is still refused: content it could not
    // judge never passes.
    let fail_open = guarded_mcp(upstream, "")
        .replace("config = { allow = \"count\" }\n", "config = { allow = \"count\" }\non_fault = \"fail-open\"\n");
    let (proxy, _) = start_proxy(&fail_open).await;
    let (status, _, body) = send(proxy, "/mcp", &MCP_JSON, padded_call("secret", (4 << 20) / 2 - 200), false).await;
    assert_refused(status, &body, "padded secret under fail-open");
    assert!(!marker.ran(), "the padded call of a refused tool ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_rule_passes_binary_content_only_whatever_the_label_says() {
    let seen: Arc<std::sync::Mutex<Vec<Bytes>>> = Arc::default();
    let upstream = start_upstream({
        let seen = seen.clone();
        move |request: Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                seen.lock().unwrap().push(body);
                full(200, "application/json", "{}")
            }
        }
    })
    .await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[[route]]\nprefix = \"/\"\npass_media_types = [\"image/*\"]\n\
         [[route.request_interceptor]]\nspec = \"example:redact\"\n"
    );
    let (proxy, state) = start_proxy(&config).await;
    let png = &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR ada@example.com"[..];
    let (status, _, _) = send(proxy, "/upload", &[("content-type", "image/png")], png, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().pop().as_deref(), Some(png), "binary content passes untouched, by the rule");
    // Text labelled as an image is text: the rule does not apply to it.
    let text = "{\"note\":\"mail ada@example.com\"}";
    let (status, _, _) = send(proxy, "/upload", &[("content-type", "image/png")], text, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().pop().as_deref(), Some(&b"{\"note\":\"mail [redacted]\"}"[..]));
    let metrics = sluicegate::proxy::admin::metrics(&state);
    let counted = |outcome: &str, reason: &str| {
        let line = format!(
            r#"sluicegate_bodies_total{{route="/",direction="request",outcome="{outcome}",reason="{reason}"}}"#
        );
        metric(&metrics, &line)
    };
    assert_eq!((counted("passed", "media_type"), counted("inspected", "body")), (1, 1));
}

#[test]
fn a_body_limit_that_a_guest_cannot_hold_is_refused_at_load() {
    let config = "upstream = \"http://127.0.0.1:9\"\n[limits]\nmax_body_bytes = 8388608\n\
                  [[route]]\nprefix = \"/\"\n[[route.request_interceptor]]\nspec = \"example:tool-guard\"\n\
                  config = { allow = \"count\" }\nmax_memory_bytes = 8388608\n";
    let config = sluicegate::config::ProxyConfig::from_toml(config).unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    let error = match sluicegate::proxy::Proxy::new(&config, sluicegate_tests::runtime(), listen) {
        Ok(_) => panic!("a guest of 8 MiB cannot be handed bodies of 8 MiB"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("max_memory_bytes = 8388608 cannot hold"), "{error}");
    assert!(error.contains("raise max_memory_bytes to 12582912"), "it says what fits: {error}");
}
