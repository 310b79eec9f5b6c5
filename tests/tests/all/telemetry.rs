//! OpenTelemetry export from `sluicegate serve`, received by a real OTLP receiver on loopback
//! (HTTP/protobuf and gRPC, on the published protocol definitions): the spans of a guarded event
//! stream and their parent links, the caller's trace continued up to the upstream, no credential
//! or redacted value in any attribute, and a collector that is down or never answers costing the
//! requests nothing while its losses are counted.

use sluicegate_tests::metric;
use sluicegate_tests::net::*;
use sluicegate_tests::otlp::{self, Received, hex};
use sluicegate_tests::process::{Serving, Start};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const SECRET: &str = "sk-live-do-not-export-7f3a";
const EMAIL: &str = "ada@example.com";

/// An SSE upstream that remembers the `traceparent` each request brought.
async fn stamping_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let addr = start_upstream(move |request| {
        let seen = kept.clone();
        async move {
            let parent = request.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(parent.unwrap_or_default());
            let events: String = (0..3).map(|i| format!("id: {i}\ndata: event {i} for {EMAIL}\n\n")).collect();
            full(200, "text/event-stream", events)
        }
    })
    .await;
    (addr, seen)
}

/// A config file in `dir`: `example:redact` on `/v1`, `[telemetry]` with `protocol` and `extra`.
fn write_config(dir: &std::path::Path, upstream: SocketAddr, protocol: &str, extra: &str) -> String {
    let config = dir.join("config.toml");
    let text = format!(
        "upstream = \"http://{upstream}\"\n[telemetry]\nprotocol = \"{protocol}\"\n{extra}\n\
         [[route]]\nprefix = \"/v1\"\n[[route.interceptor]]\nspec = \"example:redact\"\n"
    );
    std::fs::write(&config, text).unwrap();
    config.to_str().unwrap().to_string()
}

/// `serve` with `example:redact` on `/v1`, exporting to `endpoint` over `protocol`.
fn serve_exporting(name: &str, upstream: SocketAddr, endpoint: &str, protocol: &str, extra: &str) -> Serving {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("telemetry-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    Start::serve(&["--config", &write_config(&dir, upstream, protocol, extra)])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", "edge-guard")
        // Export each batch within 50 ms of its first span, not the SDK's 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .start()
}

/// `serve` with the configuration `text`, exporting to `receiver` over HTTP/protobuf.
fn serve_config(name: &str, text: &str, receiver: SocketAddr) -> Serving {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("telemetry-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    Start::serve(&["--config", config.to_str().unwrap()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{receiver}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .start()
}

/// One stream through the proxy as a caller in trace `CALLER_TRACE` makes it, with a credential.
async fn stream_through(proxy: &Serving) -> Vec<String> {
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let bearer = format!("Bearer {SECRET}");
    let headers =
        [("traceparent", traceparent.as_str()), ("authorization", bearer.as_str()), ("accept", "text/event-stream")];
    let mut reader = EventReader::new(get(&format!("http://{}/v1/chat", proxy.addr), &headers).await);
    let mut data = Vec::new();
    while let Some(event) = reader.next().await {
        data.push(String::from_utf8_lossy(&event.data.unwrap_or_default()).into_owned());
    }
    data
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.span.name == name || s.span.name.starts_with(&format!("{name} "))).collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one `{name}` span: {spans:#?}");
    found[0]
}

/// The request, upstream, stream and link spans have all arrived.
fn complete(spans: &[Received]) -> bool {
    ["GET /v1", "GET", "sluicegate.stream", "sluicegate.link"].iter().all(|name| !named(spans, name).is_empty())
}

/// What every receiver must have got for one stream: the tree, its kinds and attributes.
fn assert_the_trace(spans: &[Received], upstream_saw: &[String]) {
    let request = one(spans, "GET /v1");
    let upstream = spans.iter().find(|s| s.span.name == "GET").expect("the upstream span");
    let stream = one(spans, "sluicegate.stream");
    let link = one(spans, "sluicegate.link");
    // The caller's trace goes on: same trace id, the caller's span the request's parent.
    for span in [request, upstream, stream, link] {
        assert_eq!(hex(&span.span.trace_id), CALLER_TRACE, "{span:#?}");
    }
    assert_eq!(hex(&request.span.parent_span_id), CALLER_SPAN);
    assert_eq!(upstream.span.parent_span_id, request.span.span_id, "the upstream call is the request's child");
    assert_eq!(stream.span.parent_span_id, request.span.span_id, "the stream is the request's child");
    assert_eq!(link.span.parent_span_id, stream.span.span_id, "the link is the stream's child");
    // The request lasts as long as its response: the stream and its links end within it.
    for child in [stream, link] {
        assert!(child.span.end_time_unix_nano <= request.span.end_time_unix_nano, "{child:#?} after {request:#?}");
    }
    // Server and client kinds (SpanKind 2 and 3), with the HTTP conventions' attributes.
    assert_eq!((request.span.kind, upstream.span.kind), (2, 3));
    assert_eq!(request.attribute("http.route").as_deref(), Some("/v1"));
    assert_eq!(request.attribute("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(upstream.attribute("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(stream.attribute("sluicegate.end").as_deref(), Some("upstream_closed"));
    // The link's summary: three events in, each rewritten by the redaction.
    assert_eq!(link.attribute("sluicegate.interceptor.name").as_deref(), Some("example:redact"));
    assert_eq!(link.attribute("sluicegate.events.in").as_deref(), Some("3"));
    assert_eq!(link.attribute("sluicegate.events.modified").as_deref(), Some("3"));
    // The waits the guardrail's client had, and the time its calls took, in milliseconds.
    let millis = |span: &Received, key: &str| -> f64 {
        span.attribute(key).unwrap_or_else(|| panic!("no {key}: {span:#?}")).parse().unwrap()
    };
    let first = millis(stream, "sluicegate.latency.first_event_ms");
    let chain = millis(stream, "sluicegate.latency.chain_max_ms");
    let calls = millis(link, "sluicegate.calls.time_ms");
    assert!(first > 0.0 && chain > 0.0 && calls > 0.0, "{first} {chain} {calls}");
    assert_eq!(stream.attribute("sluicegate.latency.held_max_ms"), None, "redact holds nothing back");
    assert_eq!(request.resource_attribute("service.name").as_deref(), Some("edge-guard"));
    // The upstream got the proxy's context: the caller's trace, the upstream span as parent.
    let expected = format!("00-{CALLER_TRACE}-{}-01", hex(&upstream.span.span_id));
    assert_eq!(upstream_saw, [expected]);
    // Nothing exported holds the credential or the value the guard removed.
    for span in spans {
        for value in span.all_values() {
            assert!(!value.contains(SECRET) && !value.contains(EMAIL), "{value} in {span:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_stream_arrives_over_http_protobuf_as_one_trace_continuing_the_callers() {
    let (receiver, store) = otlp::start_http().await;
    let (upstream, saw) = stamping_upstream().await;
    let proxy = serve_exporting("http", upstream, &format!("http://{receiver}"), "http/protobuf", "");
    let data = stream_through(&proxy).await;
    assert_eq!(data, ["event 0 for [redacted]", "event 1 for [redacted]", "event 2 for [redacted]"]);
    let spans = store.wait_for(Duration::from_secs(20), complete).await;
    // The trace as docs/operating.md draws it (`--nocapture` shows it).
    println!("{}", otlp::tree(&spans));
    assert_the_trace(&spans, &saw.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_stream_arrives_over_grpc_as_one_trace_continuing_the_callers() {
    let (receiver, store) = otlp::start_grpc().await;
    let (upstream, saw) = stamping_upstream().await;
    let proxy = serve_exporting("grpc", upstream, &format!("http://{receiver}"), "grpc", "");
    let data = stream_through(&proxy).await;
    assert_eq!(data.len(), 3);
    let spans = store.wait_for(Duration::from_secs(20), complete).await;
    assert_the_trace(&spans, &saw.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_the_sampler_drops_makes_no_spans_and_the_upstream_learns_the_decision() {
    let (receiver, store) = otlp::start_http().await;
    let (upstream, saw) = stamping_upstream().await;
    let proxy = serve_exporting("unsampled", upstream, &format!("http://{receiver}"), "http/protobuf", "");
    // A caller whose trace is not sampled (flags 00): the default parent-based sampler follows it.
    let dropped = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{dropped}-b7ad6b7169203331-00");
    let headers = [("traceparent", traceparent.as_str()), ("accept", "text/event-stream")];
    let events = EventReader::new(get(&format!("http://{}/v1/chat", proxy.addr), &headers).await).rest().await;
    assert_eq!(events.len(), 3, "the stream is served whole");
    // Then a sampled caller. Spans are exported in the order they end, so once this trace is
    // in, anything the first request made would be too.
    stream_through(&proxy).await;
    let spans = store.wait_for(Duration::from_secs(20), complete).await;
    for span in &spans {
        assert_eq!(hex(&span.span.trace_id), CALLER_TRACE, "only the sampled trace: {span:#?}");
    }
    let seen = saw.lock().unwrap().clone();
    let (prefix, flags) = (format!("00-{dropped}-"), "-00");
    assert!(seen[0].starts_with(&prefix) && seen[0].ends_with(flags), "the decision goes upstream: {seen:?}");
    assert!(!seen[0].contains("b7ad6b7169203331"), "with the proxy's span as parent: {seen:?}");
}

/// The counter `name` on the proxy's `/metrics`.
async fn count(proxy: &Serving, name: &str) -> u64 {
    let response = get(&format!("http://{}/metrics", proxy.admin.unwrap()), &[]).await;
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    metric(&String::from_utf8_lossy(&body), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_the_streams_nothing_and_its_losses_are_counted() {
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (upstream, _) = stamping_upstream().await;
    let proxy =
        serve_exporting("down", upstream, &format!("http://{closed}"), "http/protobuf", "metrics_interval_ms = 100");
    for _ in 0..3 {
        assert_eq!(stream_through(&proxy).await.len(), 3, "every stream is served whole");
    }
    // The loss is counted before it is logged.
    proxy.wait_for_line("telemetry: an export to the collector failed", Duration::from_secs(30));
    assert!(count(&proxy, "sluicegate_telemetry_exports_failed_total").await >= 1);
    assert!(count(&proxy, "sluicegate_telemetry_spans_lost_total").await >= 1);
    assert_eq!(count(&proxy, "sluicegate_telemetry_spans_exported_total").await, 0);
    // So are the metrics' pushes.
    proxy.wait_for_line("telemetry: a push of the metrics to the collector failed", Duration::from_secs(30));
    assert!(count(&proxy, "sluicegate_telemetry_metric_pushes_failed_total").await >= 1);
    assert_eq!(count(&proxy, "sluicegate_telemetry_metric_pushes_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_the_streams_nothing_and_a_full_queue_drops_counted() {
    let addr = start_silent().await;
    let (upstream, _) = stamping_upstream().await;
    // Room for four spans: the first export hangs, so the second stream's spans find it full.
    let extra = "queue_size = 4\ntimeout_ms = 2000";
    let proxy = serve_exporting("hole", upstream, &format!("http://{addr}"), "http/protobuf", extra);
    for _ in 0..4 {
        assert_eq!(stream_through(&proxy).await.len(), 3, "every stream is served whole");
    }
    proxy.wait_for_line("telemetry: the export queue is full", Duration::from_secs(30));
    assert!(count(&proxy, "sluicegate_telemetry_spans_dropped_total").await >= 1);
    // The hung export is abandoned at its timeout, and counted.
    proxy.wait_for_line("telemetry: an export to the collector failed", Duration::from_secs(30));
    assert!(count(&proxy, "sluicegate_telemetry_exports_failed_total").await >= 1);
}

/// Upstream for the verdict routes: `/flaky` breaks after event 2 unless resumed (and remembers
/// each request's `traceparent`); everything else is a short event stream.
async fn verdict_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let addr = start_upstream(move |request| {
        let seen = kept.clone();
        async move {
            if !request.uri().path().starts_with("/flaky") {
                return full(200, "text/event-stream", "id: 1\ndata: one\n\nid: 2\ndata: two\n\n");
            }
            let parent = request.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(parent.unwrap_or_default());
            let resumed = request.headers().contains_key("last-event-id");
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                if resumed {
                    let _ = tx.send(Ok(bytes::Bytes::from_static(b"id: 3\ndata: three\n\n"))).await;
                    return;
                }
                let first = b"retry: 10\n\nid: 1\ndata: one\n\nid: 2\ndata: two\n\n";
                let _ = tx.send(Ok(bytes::Bytes::from_static(first))).await;
                let _ = tx.send(Err(std::io::Error::other("connection reset"))).await;
            });
            response
        }
    })
    .await;
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_a_fault_under_fail_open_and_a_resumption_arrive_as_spans_and_events() {
    let (receiver, store) = otlp::start_http().await;
    let (upstream, saw) = verdict_upstream().await;
    let hostile = sluicegate_tests::TEST_GUESTS_PATHS.iter().find(|(n, _)| *n == "hostile").unwrap().1;
    let text = format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/mcp\"\n[[route.request_interceptor]]\nspec = \"example:tool-guard\"\nconfig = {{ allow = \"count\" }}\n\
         [[route]]\nprefix = \"/bad\"\n[[route.interceptor]]\nspec = \"{hostile}\"\non_fault = \"fail-open\"\nconfig = {{ mode = \"short-count\" }}\n\
         [[route]]\nprefix = \"/flaky\"\n[[route.interceptor]]\nspec = \"example:passthrough\"\n"
    );
    let proxy = serve_config("verdicts", &text, receiver);

    // A tool call the guard refuses never reaches the upstream.
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"secret","arguments":{}}}"#;
    let request = http::Request::post(format!("http://{}/mcp", proxy.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(call)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let refused = client.request(request).await.unwrap();
    let answer = http_body_util::BodyExt::collect(refused.into_body()).await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&answer).contains("\"error\""), "a JSON-RPC error: {answer:?}");
    // A guest that answers wrongly, under fail-open: the events pass unmodified.
    assert_eq!(EventReader::new(get(&format!("http://{}/bad/s", proxy.addr), &[]).await).rest().await.len(), 2);
    // An upstream that breaks after two events and is resumed for the third.
    let flaky = EventReader::new(get(&format!("http://{}/flaky/s", proxy.addr), &[]).await).rest().await;
    let data: Vec<_> = flaky.iter().filter_map(|e| e.data.clone()).collect();
    assert_eq!(data, ["one", "two", "three"]);

    let spans = store
        .wait_for(Duration::from_secs(20), |spans| {
            ["POST /mcp", "GET /bad", "GET /flaky"].iter().all(|n| !named(spans, n).is_empty())
                && named(spans, "sluicegate.link").len() >= 3
                && spans.iter().filter(|s| s.span.name == "GET").count() >= 3
        })
        .await;

    let mcp = one(&spans, "POST /mcp");
    assert_eq!(mcp.event_names(), ["sluicegate.refusal"]);
    let refusal = &mcp.span.events[0];
    let detail: Vec<(String, String)> =
        refusal.attributes.iter().map(|kv| (kv.key.clone(), format!("{:?}", kv.value))).collect();
    assert!(detail.iter().any(|(k, v)| k == "sluicegate.direction" && v.contains("request")), "{detail:?}");
    assert!(
        detail.iter().any(|(k, v)| k == "sluicegate.interceptor.name" && v.contains("example:tool-guard")),
        "{detail:?}"
    );
    assert_eq!(mcp.attribute("sluicegate.request.outcome").as_deref(), Some("refused"));
    // What the call was: its method and tool, by name (the request chain read the body anyway).
    assert_eq!(mcp.attribute("mcp.method.name").as_deref(), Some("tools/call"));
    assert_eq!(mcp.attribute("gen_ai.tool.name").as_deref(), Some("secret"));
    let guard = named(&spans, "sluicegate.link example:tool-guard");
    assert_eq!(guard.len(), 1);
    assert_eq!(guard[0].span.parent_span_id, mcp.span.span_id);
    assert_eq!(guard[0].attribute("sluicegate.direction").as_deref(), Some("request"));

    let bad_stream = spans
        .iter()
        .find(|s| s.span.name == "sluicegate.stream" && s.attribute("http.route").as_deref() == Some("/bad"))
        .expect("the /bad stream");
    let bad_link = named(&spans, "sluicegate.link")
        .into_iter()
        .find(|l| l.span.parent_span_id == bad_stream.span.span_id)
        .unwrap();
    assert!(bad_link.event_names().contains(&"sluicegate.fault".to_string()), "{bad_link:#?}");
    assert!(bad_link.event_names().contains(&"sluicegate.fail_open".to_string()), "{bad_link:#?}");
    assert_eq!(bad_link.attribute("sluicegate.link.policy").as_deref(), Some("fail-open"));

    let flaky_stream = spans
        .iter()
        .find(|s| s.span.name == "sluicegate.stream" && s.attribute("http.route").as_deref() == Some("/flaky"))
        .expect("the /flaky stream");
    let resumption = spans
        .iter()
        .find(|s| s.span.parent_span_id == flaky_stream.span.span_id && s.span.name == "GET")
        .expect("the resumption is the stream's child");
    assert_eq!(resumption.attribute("sluicegate.resumption.attempt").as_deref(), Some("1"));
    let seen = saw.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "the first request and the resumption");
    assert!(seen[1].contains(&hex(&resumption.span.span_id)), "the resumption carries its own span: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_streams_model_usage_and_finish_reason_become_gen_ai_attributes() {
    let (receiver, store) = otlp::start_http().await;
    let upstream = start_upstream(|_| async {
        let chunk = |delta: &str, finish: &str| {
            format!(
                "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test-1\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
            )
        };
        let usage = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2}}\n\n";
        let body = [chunk("{\"content\":\"mail \"}", "null"), chunk(&format!("{{\"content\":\"{EMAIL}\"}}"), "null"), chunk("{}", "\"stop\""), usage.into(), "data: [DONE]\n\n".into()].concat();
        full(200, "text/event-stream", body)
    })
    .await;
    let proxy = serve_exporting("gen-ai", upstream, &format!("http://{receiver}"), "http/protobuf", "");
    let events = EventReader::new(get(&format!("http://{}/v1/chat/completions", proxy.addr), &[]).await).rest().await;
    assert_eq!(events.len(), 5);
    let spans = store
        .wait_for(Duration::from_secs(20), |s| {
            !named(s, "sluicegate.stream").is_empty() && !named(s, "GET /v1").is_empty()
        })
        .await;
    for span in [one(&spans, "sluicegate.stream"), one(&spans, "GET /v1")] {
        assert_eq!(span.attribute("gen_ai.system").as_deref(), Some("openai"), "{span:#?}");
        assert_eq!(span.attribute("gen_ai.response.model").as_deref(), Some("gpt-test-1"));
        assert_eq!(span.attribute("gen_ai.usage.input_tokens").as_deref(), Some("11"));
        assert_eq!(span.attribute("gen_ai.usage.output_tokens").as_deref(), Some("2"));
        let reasons =
            span.span.attributes.iter().find(|kv| kv.key == "gen_ai.response.finish_reasons").expect("finish reasons");
        assert!(format!("{:?}", reasons.value).contains("\"stop\""), "{reasons:?}");
        for value in span.all_values() {
            assert!(!value.contains(EMAIL), "no text the model wrote: {value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_a_request_asks_for_is_an_attribute_where_a_request_chain_reads_the_body() {
    let (receiver, store) = otlp::start_http().await;
    let upstream =
        start_upstream(|_| async { full(200, "text/event-stream", "data: {\"choices\":[]}\n\ndata: [DONE]\n\n") })
            .await;
    let text = format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/judged\"\n[[route.request_interceptor]]\nspec = \"example:passthrough\"\n\
         [[route]]\nprefix = \"/streamed\"\n[[route.interceptor]]\nspec = \"example:passthrough\"\n"
    );
    let proxy = serve_config("request-model", &text, receiver);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    for route in ["judged", "streamed"] {
        let body =
            format!(r#"{{"model":"gpt-test-2","stream":true,"messages":[{{"role":"user","content":"{EMAIL}"}}]}}"#);
        let request = http::Request::post(format!("http://{}/{route}/v1/chat/completions", proxy.addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(EventReader::new(response).rest().await.len(), 2);
    }
    let spans = store
        .wait_for(Duration::from_secs(20), |s| {
            !named(s, "POST /judged").is_empty() && !named(s, "POST /streamed").is_empty()
        })
        .await;
    let judged = one(&spans, "POST /judged");
    assert_eq!(judged.attribute("gen_ai.request.model").as_deref(), Some("gpt-test-2"));
    assert!(judged.all_values().iter().all(|v| !v.contains(EMAIL)), "no message text: {judged:#?}");
    // Without a request chain the body streams to the upstream unread: it is not held to label a span.
    assert_eq!(one(&spans, "POST /streamed").attribute("gen_ai.request.model"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_a_vendors_https_endpoint_with_its_key() {
    let ca = sluicegate_tests::tls::TestCa::new("collector ca");
    let (receiver, store) = otlp::start_https(&ca.server(&["localhost"]), ("x-api-key", "k-7f3a")).await;
    let (upstream, _) = stamping_upstream().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("telemetry-https");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = ca.write(&dir, "ca.pem");
    let endpoint = format!("https://localhost:{}", receiver.port());
    let extra = format!(
        "metrics_interval_ms = 100\nca = \"{}\"\nheaders = {{ x-api-key = \"${{COLLECTOR_KEY}}\" }}",
        ca_file.display()
    );
    let proxy = Start::serve(&["--config", &write_config(&dir, upstream, "http/protobuf", &extra)])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("COLLECTOR_KEY", "k-7f3a")
        .start();
    assert_eq!(stream_through(&proxy).await.len(), 3);
    let spans = store.wait_for(Duration::from_secs(20), complete).await;
    assert_eq!(hex(&one(&spans, "GET /v1").span.trace_id), CALLER_TRACE);
    store
        .wait_for_push(Duration::from_secs(20), 0, |p| {
            p.value("sluicegate_route_streams", &[("route", "/v1")]) == Some(1.0)
        })
        .await;
    assert!(!proxy.log().contains("k-7f3a"), "the key is never logged");

    // Without the key the collector refuses: counted, and the streams go on.
    let (upstream, _) = stamping_upstream().await;
    let dir = dir.join("no-key");
    std::fs::create_dir_all(&dir).unwrap();
    let extra = format!("metrics_interval_ms = 100\nca = \"{}\"", ca_file.display());
    let keyless = Start::serve(&["--config", &write_config(&dir, upstream, "http/protobuf", &extra)])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .start();
    assert_eq!(stream_through(&keyless).await.len(), 3);
    keyless.wait_for_line("telemetry: a push of the metrics to the collector failed", Duration::from_secs(30));
    assert!(count(&keyless, "sluicegate_telemetry_metric_pushes_failed_total").await >= 1);
}

/// `/metrics` of `proxy`, as text.
async fn scrape(proxy: &Serving) -> String {
    let response = get(&format!("http://{}/metrics", proxy.admin.unwrap()), &[]).await;
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The two finished streams are in the push: counted, and no longer active.
fn both_streams_counted(push: &otlp::Push) -> bool {
    push.value("sluicegate_route_streams", &[("route", "/v1")]) == Some(2.0)
        && push.value("sluicegate_route_active_streams", &[("route", "/v1")]) == Some(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instrument_of_slash_metrics_is_pushed_over_otlp_with_its_values_labels_and_buckets() {
    let (receiver, store) = otlp::start_http().await;
    let (upstream, _) = stamping_upstream().await;
    let proxy = serve_exporting(
        "metrics",
        upstream,
        &format!("http://{receiver}"),
        "http/protobuf",
        "metrics_interval_ms = 100",
    );
    for _ in 0..2 {
        assert_eq!(stream_through(&proxy).await.len(), 3);
    }
    // Once a push shows the streams over, nothing moves but the exporter's own counters: what
    // `/metrics` says now, the next push says too.
    let (seen, _) = store.wait_for_push(Duration::from_secs(20), 0, both_streams_counted).await;
    let text = scrape(&proxy).await;
    let (_, push) = store.wait_for_push(Duration::from_secs(20), seen + 1, |_| true).await;
    let pushed: std::collections::HashSet<String> =
        push.points.iter().flat_map(otlp::Point::prometheus_lines).collect();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("sluicegate_telemetry_") && !l.starts_with("process_"))
        .collect();
    assert!(samples.len() > 100, "every family of the scrape: {text}");
    for line in &samples {
        assert!(pushed.contains(*line), "`{line}` of /metrics is not in the push:\n{:#?}", push.points);
    }
    // The instruments: what the guard did and the latency it added, with their units.
    let events_in = push.value("sluicegate_interceptor_events_in", &[("interceptor", "example:redact"), ("link", "0")]);
    assert_eq!(events_in, Some(6.0));
    let first = push.points.iter().find(|p| p.name == "sluicegate_route_time_to_first_event_seconds").unwrap();
    assert_eq!((first.kind, first.unit.as_str(), first.count), ("histogram", "s", 2));
    assert!(first.start > 0 && first.start < first.time, "a cumulative series says when it started");
    assert_eq!(push.resource_attribute("service.name").as_deref(), Some("edge-guard"));
    assert_eq!(count(&proxy, "sluicegate_telemetry_metric_pushes_failed_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_values_are_pushed_over_grpc_when_the_proxy_stops() {
    let (receiver, store) = otlp::start_grpc().await;
    let (upstream, _) = stamping_upstream().await;
    // The default interval, a minute: only the push at the stop can arrive in this test.
    let proxy = serve_exporting("metrics-grpc", upstream, &format!("http://{receiver}"), "grpc", "");
    assert_eq!(stream_through(&proxy).await.len(), 3);
    assert!(store.pushes().is_empty());
    proxy.signal("TERM");
    let (_, push) = store
        .wait_for_push(Duration::from_secs(30), 0, |p| {
            p.value("sluicegate_route_streams", &[("route", "/v1")]) == Some(1.0)
        })
        .await;
    let modified =
        push.value("sluicegate_interceptor_events_modified", &[("interceptor", "example:redact"), ("link", "0")]);
    assert_eq!(modified, Some(3.0), "the redactions, counted");
    assert_eq!(push.resource_attribute("service.name").as_deref(), Some("edge-guard"));
}
