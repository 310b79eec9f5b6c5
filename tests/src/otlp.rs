//! A small OTLP receiver on loopback, over HTTP/protobuf (`POST /v1/traces`, `POST /v1/metrics`)
//! and gRPC, built on the published `opentelemetry-proto` definitions: what a collector would get
//! from the proxy, kept for a test to read.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
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

/// One data point of a pushed metric, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The metric's name and unit.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// `sum` (monotonic and cumulative), `gauge` or `histogram` (cumulative).
    pub kind: &'static str,
    /// Its attributes, in order.
    pub labels: Vec<(String, String)>,
    /// A sum's or gauge's value; a histogram's sum.
    pub value: f64,
    /// A histogram's count, bucket counts (each alone) and bounds.
    pub count: u64,
    /// A histogram's counts per bucket.
    pub buckets: Vec<u64>,
    /// A histogram's bounds.
    pub bounds: Vec<f64>,
    /// Its start and time (Unix nanoseconds).
    pub start: u64,
    /// When it was read.
    pub time: u64,
}

impl Point {
    /// The lines of the Prometheus text format this point reads as (`name{labels} value`):
    /// what `/metrics` would show for it when the names are mapped back as the OpenTelemetry
    /// compatibility rules say (a monotonic sum gets `_total`).
    pub fn prometheus_lines(&self) -> Vec<String> {
        let labels = |extra: Option<(&str, String)>| {
            let mut all: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            all.extend(extra.map(|(k, v)| format!("{k}=\"{v}\"")));
            if all.is_empty() { String::new() } else { format!("{{{}}}", all.join(",")) }
        };
        match self.kind {
            "sum" => vec![format!("{}_total{} {}", self.name, labels(None), self.value)],
            "gauge" => vec![format!("{}{} {}", self.name, labels(None), self.value)],
            _ => {
                let mut lines = Vec::new();
                let mut below = 0;
                for (at, n) in self.buckets.iter().enumerate() {
                    below += n;
                    let le = self.bounds.get(at).map_or("+Inf".to_string(), |b| b.to_string());
                    lines.push(format!("{}_bucket{} {below}", self.name, labels(Some(("le", le)))));
                }
                lines.push(format!("{}_sum{} {}", self.name, labels(None), self.value));
                lines.push(format!("{}_count{} {}", self.name, labels(None), self.count));
                lines
            }
        }
    }
}

/// One push of metrics: its resource's attributes and its points.
#[derive(Debug, Clone)]
pub struct Push {
    /// The resource's attributes.
    pub resource: Vec<KeyValue>,
    /// Every point, in the order sent.
    pub points: Vec<Point>,
}

impl Push {
    fn from(request: ExportMetricsServiceRequest) -> Push {
        let mut push = Push { resource: Vec::new(), points: Vec::new() };
        for resource_metrics in request.resource_metrics {
            push.resource = resource_metrics.resource.map(|r| r.attributes).unwrap_or_default();
            let metrics = resource_metrics.scope_metrics.into_iter().flat_map(|scope| scope.metrics);
            for m in metrics {
                push.points.extend(points(&m.name, &m.unit, m.data));
            }
        }
        push
    }

    /// The value of the point `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let point = self.points.iter().find(|p| {
            p.name == name && p.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).eq(labels.iter().copied())
        })?;
        Some(if point.kind == "histogram" { point.count as f64 } else { point.value })
    }

    /// An attribute of its resource.
    pub fn resource_attribute(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }
}

fn points(name: &str, unit: &str, data: Option<metric::Data>) -> Vec<Point> {
    let labels = |attributes: &[KeyValue]| -> Vec<(String, String)> {
        attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.as_ref().and_then(|v| text(v.value.as_ref()?)).unwrap_or_default()))
            .collect()
    };
    let base = |kind, attributes: &[KeyValue], start, time| Point {
        name: name.to_string(),
        unit: unit.to_string(),
        kind,
        labels: labels(attributes),
        value: 0.0,
        count: 0,
        buckets: Vec::new(),
        bounds: Vec::new(),
        start,
        time,
    };
    let number = |value: Option<number_data_point::Value>| match value {
        Some(number_data_point::Value::AsInt(n)) => n as f64,
        Some(number_data_point::Value::AsDouble(d)) => d,
        None => f64::NAN,
    };
    match data {
        Some(metric::Data::Sum(sum)) if sum.is_monotonic && sum.aggregation_temporality == 2 => sum
            .data_points
            .into_iter()
            .map(|p| Point {
                value: number(p.value),
                ..base("sum", &p.attributes, p.start_time_unix_nano, p.time_unix_nano)
            })
            .collect(),
        Some(metric::Data::Gauge(gauge)) => gauge
            .data_points
            .into_iter()
            .map(|p| Point {
                value: number(p.value),
                ..base("gauge", &p.attributes, p.start_time_unix_nano, p.time_unix_nano)
            })
            .collect(),
        Some(metric::Data::Histogram(h)) if h.aggregation_temporality == 2 => h
            .data_points
            .into_iter()
            .map(|p| Point {
                value: p.sum.unwrap_or(f64::NAN),
                count: p.count,
                buckets: p.bucket_counts.clone(),
                bounds: p.explicit_bounds.clone(),
                ..base("histogram", &p.attributes, p.start_time_unix_nano, p.time_unix_nano)
            })
            .collect(),
        other => panic!("a metric `{name}` of a kind the proxy does not send: {other:?}"),
    }
}

/// What the receiver has been sent.
#[derive(Default)]
pub struct Store {
    spans: Mutex<Vec<Received>>,
    pushes: Mutex<Vec<Push>>,
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

    fn add_metrics(&self, request: ExportMetricsServiceRequest) {
        self.pushes.lock().unwrap().push(Push::from(request));
        self.grew.notify_waiters();
    }

    /// Every push of metrics received so far, oldest first.
    pub fn pushes(&self) -> Vec<Push> {
        self.pushes.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) for a push after the first `after` for which `done` holds.
    pub async fn wait_for_push(&self, limit: Duration, after: usize, done: impl Fn(&Push) -> bool) -> (usize, Push) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let grew = self.grew.notified();
            let pushes = self.pushes();
            if let Some((at, push)) = pushes.iter().enumerate().skip(after).find(|(_, p)| done(p)) {
                return (at, push.clone());
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                panic!("no push as expected within {limit:?}; the last: {:#?}", pushes.last());
            }
        }
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

/// Starts an OTLP/HTTP receiver (protobuf bodies on `/v1/traces` and `/v1/metrics`); its
/// address and its store.
pub async fn start_http() -> (SocketAddr, Arc<Store>) {
    start_http_with(None, None).await
}

/// Starts an OTLP/HTTPS receiver with `identity` (a certificate of a test's CA) that answers 401
/// to an export without header `required` (name, value): a vendor's endpoint.
pub async fn start_https(identity: &crate::tls::Issued, required: (&str, &str)) -> (SocketAddr, Arc<Store>) {
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config(&[b"http/1.1"], None)));
    start_http_with(Some(tls), Some((required.0.to_string(), required.1.to_string()))).await
}

async fn start_http_with(
    tls: Option<tokio_rustls::TlsAcceptor>,
    required: Option<(String, String)>,
) -> (SocketAddr, Arc<Store>) {
    let store = Arc::new(Store::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = store.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (store, required, tls) = (serving.clone(), required.clone(), tls.clone());
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (store, required) = (store.clone(), required.clone());
                async move { Ok::<_, std::convert::Infallible>(receive(&store, required, request).await) }
            });
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(tls) => match tls.accept(socket).await {
                        Ok(stream) => http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(hyper_util::rt::TokioIo::new(socket), service).await,
                };
            });
        }
    });
    (addr, store)
}

async fn receive(
    store: &Store,
    required: Option<(String, String)>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some((name, value)) = required
        && request.headers().get(name.as_str()).is_none_or(|v| v != value.as_str())
    {
        return Response::builder().status(401).body(Full::new(Bytes::new())).unwrap();
    }
    let path = request.uri().path().to_string();
    let protobuf = request.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (status, answer) = match (path.as_str(), protobuf) {
        ("/v1/traces", true) => match ExportTraceServiceRequest::decode(body) {
            Ok(request) => {
                store.add(request);
                (200, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
            }
            Err(_) => (400, Vec::new()),
        },
        ("/v1/metrics", true) => match ExportMetricsServiceRequest::decode(body) {
            Ok(request) => {
                store.add_metrics(request);
                (200, ExportMetricsServiceResponse { partial_success: None }.encode_to_vec())
            }
            Err(_) => (400, Vec::new()),
        },
        _ => (400, Vec::new()),
    };
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

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// Starts an OTLP/gRPC receiver (traces and metrics); its address and its store.
pub async fn start_grpc() -> (SocketAddr, Arc<Store>) {
    let store = Arc::new(Store::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let traces = TraceServiceServer::new(Grpc(store.clone()));
    let metrics = MetricsServiceServer::new(Grpc(store.clone()));
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tonic::transport::Server::builder().add_service(traces).add_service(metrics);
    tokio::spawn(server.serve_with_incoming(incoming));
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
