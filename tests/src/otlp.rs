//! A small OTLP trace receiver on loopback, over HTTP/protobuf (`POST /v1/traces`) and gRPC,
//! built on the published `opentelemetry-proto` definitions: what a collector would get from the
//! proxy, kept for a test to read.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One received span, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    /// The span as the proxy sent it.
    pub span: Span,
    /// The attributes of the resource it came with.
    pub resource: Vec<KeyValue>,
}

impl Received {
    /// An attribute of the span, as text (numbers and booleans spelt out).
    pub fn attribute(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key)
    }

    /// An attribute of its resource.
    pub fn resource_attribute(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }

    /// Every attribute value of the span and of its events, as text.
    pub fn all_values(&self) -> Vec<String> {
        let events = self.span.events.iter().flat_map(|e| e.attributes.iter());
        self.span.attributes.iter().chain(events).filter_map(|kv| text(kv.value.as_ref()?.value.as_ref()?)).collect()
    }

    /// The names of its span events.
    pub fn event_names(&self) -> Vec<String> {
        self.span.events.iter().map(|e| e.name.clone()).collect()
    }
}

fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    let kv = attributes.iter().find(|kv| kv.key == key)?;
    text(kv.value.as_ref()?.value.as_ref()?)
}

fn text(value: &Value) -> Option<String> {
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(n) => n.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

/// What the receiver has been sent.
#[derive(Default)]
pub struct Store {
    spans: Mutex<Vec<Received>>,
    grew: Notify,
}

impl Store {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Received { span, resource: resource.clone() }));
            }
        }
        self.grew.notify_waiters();
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) until `done` holds for what has been received; returns it.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let grew = self.grew.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                panic!("the receiver did not get what was expected within {limit:?}; it has: {spans:#?}");
            }
        }
    }
}

/// Starts an OTLP/HTTP receiver (protobuf bodies on `/v1/traces`); its address and its store.
pub async fn start_http() -> (SocketAddr, Arc<Store>) {
    let store = Arc::new(Store::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = store.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let store = serving.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let store = store.clone();
                async move { Ok::<_, std::convert::Infallible>(receive(&store, request).await) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, store)
}

async fn receive(store: &Store, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path_ok = request.uri().path() == "/v1/traces";
    let protobuf = request.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let decoded = ExportTraceServiceRequest::decode(body);
    let status = match (path_ok, protobuf, decoded) {
        (true, true, Ok(request)) => {
            store.add(request);
            200
        }
        _ => 400,
    };
    let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
    Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .unwrap()
}

struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts an OTLP/gRPC receiver; its address and its store.
pub async fn start_grpc() -> (SocketAddr, Arc<Store>) {
    let store = Arc::new(Store::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(Grpc(store.clone()));
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
    (addr, store)
}

/// Hex of an id, as W3C Trace Context spells it.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans drawn as a tree (parents before children, siblings by start time), each with its
/// kind, duration, attributes and events: what `docs/operating.md` shows of a real trace.
pub fn tree(spans: &[Received]) -> String {
    let mut out = String::new();
    let ids: Vec<&[u8]> = spans.iter().map(|s| s.span.span_id.as_slice()).collect();
    let mut roots: Vec<&Received> = spans.iter().filter(|s| !ids.contains(&s.span.parent_span_id.as_slice())).collect();
    roots.sort_by_key(|s| s.span.start_time_unix_nano);
    for root in roots {
        draw(spans, root, 0, &mut out);
    }
    out
}

fn draw(spans: &[Received], span: &Received, depth: usize, out: &mut String) {
    let indent = "    ".repeat(depth);
    let micros = span.span.end_time_unix_nano.saturating_sub(span.span.start_time_unix_nano) / 1000;
    let kind = ["unspecified", "internal", "server", "client", "producer", "consumer"]
        .get(span.span.kind as usize)
        .unwrap_or(&"?");
    out.push_str(&format!("{indent}{} [{kind}, {micros} us]\n", span.span.name));
    for kv in &span.span.attributes {
        let value = kv.value.as_ref().and_then(|v| text(v.value.as_ref()?)).unwrap_or_default();
        out.push_str(&format!("{indent}    {} = {value}\n", kv.key));
    }
    for event in &span.span.events {
        out.push_str(&format!("{indent}    event {}\n", event.name));
    }
    let mut children: Vec<&Received> = spans.iter().filter(|s| s.span.parent_span_id == span.span.span_id).collect();
    children.sort_by_key(|s| s.span.start_time_unix_nano);
    for child in children {
        draw(spans, child, depth + 1, out);
    }
}
