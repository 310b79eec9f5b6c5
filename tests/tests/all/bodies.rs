//! No silent bypass: on a route with a chain, JSON bodies (responses and requests) go through it,
//! compressed bodies and streams are decoded and inspected, and every body is counted and logged
//! as inspected, refused or passed by a rule. Real hyper upstreams and clients on loopback.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use sluicegate_tests::net::{TestBody, full, start_proxy, start_upstream};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const WITH_ADDRESS: &str = r#"{"id":"r1","content":"write to ada@example.com today"}"#;
const REDACTED: &str = r#"{"id":"r1","content":"write to [redacted] today"}"#;

fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(data).unwrap();
            drop(e);
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("{other}"),
    }
}

fn with_header(mut response: Response<TestBody>, name: &'static str, value: &str) -> Response<TestBody> {
    response.headers_mut().insert(name, value.parse().unwrap());
    response
}

/// What the upstream saw of the requests that reached it: path, content-encoding, body.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Bytes)>>>;

/// An upstream whose answer depends on the path; it records every request it gets.
async fn upstream(seen: Seen) -> SocketAddr {
    start_upstream(move |request: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = request.uri().path().to_string();
            let coding = request.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_string());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push((path.clone(), coding, body.clone()));
            let (kind, coding) = path.trim_start_matches('/').split_once('/').unwrap_or((&path[1..], ""));
            let coding = coding.rsplit('/').next().unwrap_or("");
            match kind {
                "json" | "g" => full(200, "application/json; charset=utf-8", WITH_ADDRESS),
                "zipped" => with_header(
                    full(200, "application/json", compress(coding, WITH_ADDRESS.as_bytes())),
                    "content-encoding",
                    coding,
                ),
                "zipped-stream" => {
                    let stream = format!("id: 1\ndata: {WITH_ADDRESS}\n\nid: 2\ndata: second\n\n");
                    with_header(
                        full(200, "text/event-stream", compress(coding, stream.as_bytes())),
                        "content-encoding",
                        coding,
                    )
                }
                "bomb" => {
                    // 64 MiB of JSON string, a few tens of KiB compressed.
                    let mut text = Vec::with_capacity(64 << 20);
                    text.extend_from_slice(b"{\"a\":\"");
                    text.resize((64 << 20) - 2, b'0');
                    text.extend_from_slice(b"\"}");
                    with_header(full(200, "application/json", compress("gzip", &text)), "content-encoding", "gzip")
                }
                "big" | "big-pass" => full(
                    200,
                    "application/json",
                    format!("{{\"pad\":\"{}\",\"c\":\"ada@example.com\"}}", "x".repeat(3000)),
                ),
                "html" => full(200, "text/html", "<p>ada@example.com</p>"),
                "png" | "png-pass" => full(200, "image/png", &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR ada@example.com"[..]),
                "not-json" => full(200, "application/json", "plain words for ada@example.com\r\nand a second line"),
                "echo" => full(200, "application/json", body),
                _ => full(404, "text/plain", "no such path"),
            }
        }
    })
    .await
}

async fn send(
    proxy: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Bytes) {
    let mut request = Request::builder().method(method).uri(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client.request(request.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

async fn get(proxy: SocketAddr, path: &str) -> (u16, http::HeaderMap, Bytes) {
    send(proxy, "GET", path, &[], Vec::new()).await
}

fn config(upstream: SocketAddr, extra_limits: &str) -> String {
    format!(
        "upstream = \"http://{upstream}\"\n[limits]\nmax_body_bytes = 2048\n{extra_limits}\n\
         [[route]]\nprefix = \"/json\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/zipped\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/zipped-stream\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/bomb\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/big\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/big-pass\"\non_oversize = \"pass\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/html\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/png\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/png-pass\"\npass_media_types = [\"image/*\"]\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/not-json\"\n[[route.interceptor]]\nspec = \"native:redact\"\n\
         [[route]]\nprefix = \"/echo\"\n[[route.request_interceptor]]\nspec = \"example:redact\"\n\
         [[route.request_interceptor]]\nspec = \"example:tool-guard\"\nconfig = {{ allow = \"count\" }}\n"
    )
}

fn assert_identity_length(headers: &http::HeaderMap, body: &Bytes) {
    assert!(headers.get("content-encoding").is_none(), "{headers:?}");
    assert_eq!(headers.get("content-length").unwrap().to_str().unwrap(), body.len().to_string(), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_response_bodies_go_through_the_chain() {
    let seen = Seen::default();
    let upstream = upstream(seen.clone()).await;
    let (proxy, state) = start_proxy(&config(upstream, "")).await;

    // The control: the upstream's own body has the address.
    let (_, _, direct) = send(upstream, "GET", "/json", &[], Vec::new()).await;
    assert_eq!(direct, WITH_ADDRESS);
    let (status, headers, body) = get(proxy, "/json").await;
    assert_eq!((status, &body[..]), (200, REDACTED.as_bytes()));
    assert_identity_length(&headers, &body);

    // A body labelled JSON that is not: the chain still sees it, as text (CRLF as LF).
    let (status, _, body) = get(proxy, "/not-json").await;
    assert_eq!((status, &body[..]), (200, &b"plain words for [redacted]\nand a second line"[..]));

    // Text in any other media type goes through the chain as well: a label is no way around it.
    let (status, _, body) = get(proxy, "/html").await;
    assert_eq!((status, &body[..]), (200, &b"<p>[redacted]</p>"[..]));

    // Binary content cannot be judged: refused, unless the route has a rule that passes its
    // media type, and then counted as passed.
    let (status, _, body) = get(proxy, "/png").await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("\"not_text\""), "{body:?}");
    let (status, _, body) = get(proxy, "/png-pass").await;
    assert_eq!((status, &body[..]), (200, &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR ada@example.com"[..]));

    let metrics = sluicegate::proxy::admin::metrics(&state);
    for line in [
        r#"sluicegate_bodies_total{route="/json",direction="response",outcome="inspected",reason="body"} 1"#,
        r#"sluicegate_bodies_total{route="/html",direction="response",outcome="inspected",reason="body"} 1"#,
        r#"sluicegate_bodies_total{route="/png",direction="response",outcome="refused",reason="binary"} 1"#,
        r#"sluicegate_bodies_total{route="/png-pass",direction="response",outcome="passed",reason="media_type"} 1"#,
        r#"sluicegate_bodies_total{route="/json",direction="request",outcome="passed",reason="empty"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_and_streams_are_decoded_inspected_and_sent_as_identity() {
    let seen = Seen::default();
    let upstream = upstream(seen.clone()).await;
    let (proxy, state) = start_proxy(&config(upstream, "")).await;
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let (status, headers, body) = get(proxy, &format!("/zipped/{coding}")).await;
        assert_eq!((status, &body[..]), (200, REDACTED.as_bytes()), "{coding}");
        assert_identity_length(&headers, &body);

        let (status, headers, body) = get(proxy, &format!("/zipped-stream/{coding}")).await;
        assert!(headers.get("content-encoding").is_none(), "{coding}: {headers:?}");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(status, 200);
        assert_eq!(text, format!("data: {REDACTED}\nid: 1\n\ndata: second\nid: 2\n\n"), "{coding}");
    }
    // The proxy asked for identity; the upstream compressed anyway.
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert!(
        metrics
            .contains(r#"{route="/zipped-stream",direction="response",outcome="inspected",reason="event_stream"} 4"#),
        "{metrics}"
    );

    // A compression bomb is cut off at the limit and refused, not expanded.
    let (status, _, body) = get(proxy, "/bomb").await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("larger than the 2048 bytes"), "{body:?}");
    let metrics = sluicegate::proxy::admin::metrics(&state);
    assert!(
        metrics.contains(r#"{route="/bomb",direction="response",outcome="refused",reason="oversize"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_follow_the_rule_and_are_counted() {
    let seen = Seen::default();
    let upstream = upstream(seen.clone()).await;
    let (proxy, state) = start_proxy(&config(upstream, "")).await;
    // Refused by default: the client never gets the uninspected body.
    let (status, _, body) = get(proxy, "/big").await;
    assert_eq!(status, 502);
    assert!(!String::from_utf8_lossy(&body).contains("ada@example.com"));
    // `on_oversize = "pass"` on the route: forwarded whole, uninspected, and said so.
    let (status, _, body) = send(proxy, "GET", "/big-pass", &[], Vec::new()).await;
    assert_eq!(status, 200);
    assert!(body.ends_with(b"\"c\":\"ada@example.com\"}") && body.len() > 3000, "passed whole");
    // A request over the limit: 413, and the upstream never sees it.
    let before = seen.lock().unwrap().len();
    let big = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"p":"{}"}}}}"#, "y".repeat(4000));
    let (status, _, _) = send(proxy, "POST", "/echo", &[("content-type", "application/json")], big.into_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(seen.lock().unwrap().len(), before, "the refused request reached the upstream");

    let metrics = sluicegate::proxy::admin::metrics(&state);
    for line in [
        r#"sluicegate_bodies_total{route="/big",direction="response",outcome="refused",reason="oversize"} 1"#,
        r#"sluicegate_bodies_total{route="/big-pass",direction="response",outcome="passed",reason="oversize"} 1"#,
        r#"sluicegate_bodies_total{route="/echo",direction="request",outcome="refused",reason="oversize"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_go_through_the_request_chain_and_refusals_answer_json_rpc() {
    let log = crate::wasi::captured_log();
    let seen = Seen::default();
    let upstream = upstream(seen.clone()).await;
    let (proxy, state) = start_proxy(&config(upstream, "")).await;
    let json = [("content-type", "application/json")];

    // Kept and rewritten: the upstream gets the redacted body with its own length.
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"count","arguments":{"to":"ada@example.com"}}}"#;
    let (status, headers, body) = send(proxy, "POST", "/echo", &json, call.into()).await;
    assert_eq!(status, 200);
    let expected = call.replace("ada@example.com", "[redacted]");
    assert_eq!(body, expected, "the upstream echoes what it received");
    assert_identity_length(&headers, &body);

    // Compressed: decoded, inspected, sent on as identity.
    let zipped = compress("gzip", call.as_bytes());
    let (status, _, body) = send(proxy, "POST", "/echo", &[json[0], ("content-encoding", "gzip")], zipped).await;
    assert_eq!((status, body), (200, Bytes::from(expected.clone())));
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.1, last.2), (None, Bytes::from(expected)));

    // Refused: a JSON-RPC error with the request's id, and the upstream never sees it.
    let before = seen.lock().unwrap().len();
    let refused = r#"{"jsonrpc":"2.0","id":"call-9","method":"tools/call","params":{"name":"secret"}}"#;
    let (status, _, body) = send(proxy, "POST", "/echo", &json, refused.into()).await;
    assert_eq!(status, 200, "an MCP client must see a failed call, not a broken transport");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["id"], "call-9");
    assert_eq!(answer["error"]["code"], -32001);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("example:tool-guard") && message.contains("`secret`"), "{message}");
    assert_eq!(seen.lock().unwrap().len(), before, "the refused request reached the upstream");

    // A refusal of something that is not JSON-RPC: the interceptor's status and message.
    let batch = format!("[{refused}]");
    let (status, _, body) = send(proxy, "POST", "/echo", &json, batch.into()).await;
    assert_eq!(status, 200, "a batch gets an array of errors");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer[0]["id"], "call-9");
    let (status, _, body) =
        send(proxy, "POST", "/echo", &json, br#"{"method":"tools/call","params":{"name":"secret"}}"#.to_vec()).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]["message"].is_string());
    assert_eq!(seen.lock().unwrap().len(), before);

    let metrics = sluicegate::proxy::admin::metrics(&state);
    for line in [
        r#"sluicegate_bodies_total{route="/echo",direction="request",outcome="inspected",reason="body"} 2"#,
        r#"sluicegate_bodies_total{route="/echo",direction="request",outcome="refused",reason="interceptor"} 3"#,
        r#"sluicegate_bodies_total{route="/echo",direction="response",outcome="passed",reason="no_chain"} 2"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in\n{metrics}");
    }

    // The enforcement record of the refused call names what each interceptor did.
    let text = log.text();
    let record = text
        .lines()
        .find(|l| {
            l.contains("enforcement record")
                && l.contains("route=\"/echo\"")
                && l.contains("outcome=\"refused\"")
                && l.contains("reason=\"interceptor\"")
        })
        .unwrap_or_else(|| panic!("no enforcement record in\n{text}"));
    assert!(record.contains("direction=\"request\"") && record.contains("stream_id="), "{record}");
    let interceptors = record.split("interceptors=").nth(1).unwrap().split_whitespace().next().unwrap();
    let interceptors: serde_json::Value = serde_json::from_str(interceptors).unwrap();
    assert_eq!(interceptors[0]["name"], "example:redact");
    assert_eq!(interceptors[0]["events_in"], 1);
    assert_eq!(interceptors[1]["name"], "example:tool-guard");
    assert_eq!(interceptors[1]["ended"], true);
    assert_eq!(interceptors[1]["policy"], "fail-closed");
}
