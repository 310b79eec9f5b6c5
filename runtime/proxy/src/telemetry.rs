//! OpenTelemetry export: the proxy's spans, sent to a collector over OTLP.
//!
//! Off unless an endpoint is configured (`[telemetry] endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`). The proxy marks the spans it exports with the target
//! [`TARGET`]; the export layer ([`Telemetry::layer`]) takes only those, and the log leaves them
//! out ([`HIDDEN_FROM_LOGS`]). Without the layer they are disabled and cost a branch.
//!
//! A collector that is down, slow or black-holing never slows a request: a finished span goes into
//! a bounded queue (`queue_size`) with a non-blocking send, and the batch processor's own thread
//! does the exporting (over HTTP/protobuf with a blocking client, or over gRPC through a one-thread
//! runtime of its own). Spans that find the queue full are dropped; an export that fails loses
//! its batch. Both are counted ([`counts`], in `/metrics`) and logged at most once a minute.

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use sluicegate_contract::config::{FaultPolicy, OtlpProtocol, TelemetryConfig};
use sluicegate_host::chain::LinkRecord;
use sluicegate_host::text::facts::{Facts, read_request};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of every span (and span event) the proxy exports.
pub const TARGET: &str = "sluicegate::otel";

/// The log filter directive that keeps exported spans out of the log's lines.
pub const HIDDEN_FROM_LOGS: &str = "sluicegate::otel=off";

/// Where and how to export, resolved from `[telemetry]` and the `OTEL_*` environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The URL spans are sent to: for HTTP/protobuf, the base with `/v1/traces` appended.
    pub url: String,
    /// HTTP/protobuf or gRPC.
    pub protocol: OtlpProtocol,
    /// `service.name`: the configured one, else `OTEL_SERVICE_NAME`, else `sluicegate`.
    pub service_name: String,
    /// Resource attributes beyond the environment's.
    pub resource_attributes: Vec<(String, String)>,
    /// Finished spans held for export at most.
    pub queue_size: usize,
    /// The longest one export may take.
    pub timeout: Duration,
    /// Where and how often metrics are pushed; `None`: they are not.
    pub metrics: Option<MetricsExport>,
    /// Headers sent with every export.
    pub headers: Headers,
    /// A CA trusted for an `https://` endpoint besides the system's roots.
    pub ca: Option<std::path::PathBuf>,
}

/// Headers of every export: a vendor's key, as often as not, so only their names are shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(http::HeaderName, http::HeaderValue)>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

impl Headers {
    /// As an HTTP header map.
    pub fn map(&self) -> HeaderMap {
        self.0.iter().cloned().collect()
    }

    /// The configured ones (`${NAME}` expanded), else `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`,
    /// values percent-encoded as the specification says).
    fn resolve(config: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Result<Headers, TelemetryError> {
        let named: Vec<(String, String)> = if !config.headers.is_empty() {
            let expand = |(name, value): (&String, &String)| {
                let value = sluicegate_contract::config::expand_env(value)
                    .map_err(|e| TelemetryError::Header(name.clone(), e.to_string()))?;
                Ok((name.clone(), value))
            };
            config.headers.iter().map(expand).collect::<Result<_, TelemetryError>>()?
        } else {
            let list = env("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default();
            let pairs = list.split(',').filter(|pair| !pair.trim().is_empty());
            let pair = |pair: &str| match pair.split_once('=') {
                Some((name, value)) => {
                    let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
                    Ok((name.trim().to_string(), value.into_owned()))
                }
                None => Err(TelemetryError::Header(pair.trim().to_string(), "no `=`".into())),
            };
            pairs.map(pair).collect::<Result<_, TelemetryError>>()?
        };
        let typed = |(name, value): (String, String)| {
            let bad = |why: &str| TelemetryError::Header(name.clone(), why.to_string());
            let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a header name"))?;
            let mut value = http::HeaderValue::from_str(&value).map_err(|_| bad("its value is not a header value"))?;
            value.set_sensitive(true);
            Ok((header, value))
        };
        Ok(Headers(named.into_iter().map(typed).collect::<Result<_, TelemetryError>>()?))
    }
}

/// The metrics' push: the same instruments as `/metrics`, as OTLP metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsExport {
    /// For HTTP/protobuf, the base with `/v1/metrics` appended; for gRPC, the endpoint.
    pub url: String,
    /// How often.
    pub interval: Duration,
}

/// A telemetry setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The protocol variable names no protocol the proxy speaks.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL `{0}` is not one of `http/protobuf` and `grpc`")]
    Protocol(String),
    /// `OTEL_METRICS_EXPORTER` names an exporter the proxy does not have.
    #[error("OTEL_METRICS_EXPORTER `{0}` is not one of `otlp` and `none`")]
    Exporter(String),
    /// `OTEL_METRIC_EXPORT_INTERVAL` is not a number of milliseconds.
    #[error("OTEL_METRIC_EXPORT_INTERVAL `{0}` is not a number of milliseconds")]
    Interval(String),
    /// The endpoint is not an HTTP URL.
    #[error("telemetry endpoint `{0}` is not an http:// URL")]
    Endpoint(String),
    /// The endpoint asks for TLS over gRPC, which the gRPC exporters are built without.
    #[error(
        "telemetry endpoint `{0}`: TLS over gRPC is not built in; use `protocol = \"http/protobuf\"` \
         (https:// works there), or a collector nearby over plain http://"
    )]
    Tls(String),
    /// A header cannot be sent (its value is never shown).
    #[error("telemetry header `{0}`: {1}")]
    Header(String, String),
    /// The CA file or the system's roots cannot be used.
    #[error("telemetry endpoint's TLS: {0}")]
    TlsSetup(#[from] crate::tls::TlsSetupError),
    /// The HTTP client refused its settings.
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The exporter refused its settings.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The gRPC client's runtime could not start.
    #[error("cannot start the OTLP gRPC runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl Export {
    /// The export `config` asks for, with `env` (the process environment, or a test's) filling
    /// what it leaves out; `None` when no endpoint is set or `OTEL_SDK_DISABLED` is `true`.
    pub fn resolve(
        config: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Export>, TelemetryError> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(endpoint) = config.endpoint.clone().or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")) else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TelemetryError::Endpoint(endpoint));
        }
        let protocol = match (config.protocol, env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            (Some(protocol), _) => protocol,
            (None, None) => OtlpProtocol::HttpProtobuf,
            (None, Some(named)) => match named.trim() {
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                "grpc" => OtlpProtocol::Grpc,
                _ => return Err(TelemetryError::Protocol(named)),
            },
        };
        if protocol == OtlpProtocol::Grpc && endpoint.starts_with("https://") {
            return Err(TelemetryError::Tls(endpoint));
        }
        let signal = |path: &str| match protocol {
            OtlpProtocol::HttpProtobuf => format!("{}/{path}", endpoint.trim_end_matches('/')),
            OtlpProtocol::Grpc => endpoint.clone(),
        };
        let metrics =
            metrics_interval(config, &env)?.map(|interval| MetricsExport { url: signal("v1/metrics"), interval });
        Ok(Some(Export {
            url: signal("v1/traces"),
            protocol,
            service_name: config
                .service_name
                .clone()
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "sluicegate".into()),
            resource_attributes: config.resource_attributes.clone().into_iter().collect(),
            queue_size: config.queue_size,
            timeout: config.timeout_ms,
            metrics,
            headers: Headers::resolve(config, &env)?,
            ca: config.ca.clone(),
        }))
    }
}

/// How often metrics are pushed: the config's interval, else `OTEL_METRIC_EXPORT_INTERVAL`
/// (milliseconds), else a minute; `None` for an interval of zero or `OTEL_METRICS_EXPORTER=none`.
fn metrics_interval(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, TelemetryError> {
    if let Some(interval) = config.metrics_interval_ms {
        return Ok((!interval.is_zero()).then_some(interval));
    }
    match env("OTEL_METRICS_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => return Err(TelemetryError::Exporter(other.to_string())),
    }
    let Some(named) = env("OTEL_METRIC_EXPORT_INTERVAL") else { return Ok(Some(Duration::from_secs(60))) };
    match named.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) => Ok(Some(Duration::from_millis(ms))),
        Err(_) => Err(TelemetryError::Interval(named)),
    }
}

/// Export running: the tracer provider, and the runtime the gRPC client needs.
pub struct Telemetry {
    provider: SdkTracerProvider,
    export: Export,
    grpc: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Builds the exporter and its batch processor. Call it outside any async runtime (the
    /// HTTP client blocks on its own thread, and the gRPC client gets a runtime of its own).
    pub fn start(export: &Export) -> Result<Telemetry, TelemetryError> {
        let pending = Arc::new(AtomicUsize::new(0));
        let (exporter, grpc) = match export.protocol {
            OtlpProtocol::HttpProtobuf => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(export.url.clone())
                    .with_timeout(export.timeout)
                    .with_http_client(http_client(export)?)
                    .build()?;
                (exporter, None)
            }
            OtlpProtocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-grpc")
                    .enable_all()
                    .build()?;
                let metadata = tonic::metadata::MetadataMap::from_headers(export.headers.map());
                let exporter = runtime.block_on(async {
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(export.url.clone())
                        .with_timeout(export.timeout)
                        .with_metadata(metadata)
                        .build()
                })?;
                (exporter, Some(runtime))
            }
        };
        let counted = Counted { inner: exporter, pending: pending.clone(), warned: Mutex::new(None) };
        let batches = BatchConfigBuilder::default().with_max_queue_size(export.queue_size).build();
        let processor = BatchSpanProcessor::builder(counted).with_batch_config(batches).build();
        let bounded = Bounded { inner: processor, pending, max: export.queue_size, warned: Mutex::new(None) };
        let provider =
            SdkTracerProvider::builder().with_span_processor(bounded).with_resource(resource(export)).build();
        Ok(Telemetry { provider, export: export.clone(), grpc })
    }

    /// The `tracing` layer that turns the proxy's [`TARGET`] spans into OpenTelemetry spans.
    /// Add it to the subscriber beside the log.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use tracing_subscriber::Layer as _;
        let tracer = self.provider.tracer("sluicegate");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_level(false)
            .with_filter(tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::TRACE))
    }

    /// Where spans go.
    pub fn url(&self) -> &str {
        &self.export.url
    }

    /// What it was started with (metrics are pushed by [`crate::otlp_metrics`] as it says).
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Exports what is queued (waiting up to the export timeout) and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("telemetry: the last export did not finish: {e}");
        }
        if let Some(runtime) = self.grpc {
            runtime.shutdown_background();
        }
    }
}

/// The blocking HTTP client of the exports (spans and metrics), sending the configured headers
/// with every request: for an `https://` endpoint, rustls with the system's roots and the
/// configured CA, as for upstreams. Build it outside any async runtime (it runs one of its own).
pub(crate) fn http_client(export: &Export) -> Result<reqwest::blocking::Client, TelemetryError> {
    // Always the proxy's own configuration (reqwest is built without a crypto provider of its
    // own); for plain http:// one without roots, so the system's are not read for it.
    let tls = match export.url.starts_with("https://") {
        true => crate::tls::client_config(export.ca.as_deref(), None)?,
        false => crate::tls::unused_client_config(),
    };
    let client = reqwest::blocking::Client::builder().timeout(export.timeout).default_headers(export.headers.map());
    Ok(client.use_preconfigured_tls(tls).build()?)
}

/// `service.name` as resolved, `OTEL_RESOURCE_ATTRIBUTES`, then the configured attributes.
pub(crate) fn resource(export: &Export) -> Resource {
    let attributes = export.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    Resource::builder().with_service_name(export.service_name.clone()).with_attributes(attributes).build()
}

/// What the export has lost and sent since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Spans dropped because the queue was full (the collector could not keep up).
    pub spans_dropped: u64,
    /// Exports that failed (collector down, refusing, or past the timeout).
    pub exports_failed: u64,
    /// Spans in failed exports.
    pub spans_lost: u64,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Pushes of the metrics the collector accepted.
    pub metric_pushes: u64,
    /// Pushes of the metrics that failed (each push carries every value, so a later one makes
    /// up for it: nothing is lost but the points in between).
    pub metric_pushes_failed: u64,
}

static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);
static METRIC_PUSHES: AtomicU64 = AtomicU64::new(0);
static METRIC_PUSHES_FAILED: AtomicU64 = AtomicU64::new(0);
static EXPORTS_FAILED: AtomicU64 = AtomicU64::new(0);
static SPANS_LOST: AtomicU64 = AtomicU64::new(0);
static SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);

/// The export's counts (zero while export is off).
pub fn counts() -> Counts {
    Counts {
        spans_dropped: SPANS_DROPPED.load(Ordering::Relaxed),
        exports_failed: EXPORTS_FAILED.load(Ordering::Relaxed),
        spans_lost: SPANS_LOST.load(Ordering::Relaxed),
        spans_exported: SPANS_EXPORTED.load(Ordering::Relaxed),
        metric_pushes: METRIC_PUSHES.load(Ordering::Relaxed),
        metric_pushes_failed: METRIC_PUSHES_FAILED.load(Ordering::Relaxed),
    }
}

/// Counts one push of the metrics; returns the failures so far if it failed.
pub(crate) fn count_metric_push(ok: bool) -> Option<u64> {
    match ok {
        true => {
            METRIC_PUSHES.fetch_add(1, Ordering::Relaxed);
            None
        }
        false => Some(METRIC_PUSHES_FAILED.fetch_add(1, Ordering::Relaxed) + 1),
    }
}

/// True at most once a minute per `last`: how often a loss is logged.
pub(crate) fn due(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    let due = last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60));
    if due {
        *last = Some(now);
    }
    due
}

/// The batch processor behind a count of the spans it holds: a span that would overfill it is
/// dropped here, where it can be counted (the SDK's own queue drops silently).
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    /// Spans handed to `inner` and not yet through an export.
    pending: Arc<AtomicUsize>,
    max: usize,
    warned: Mutex<Option<Instant>>,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted =
            self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        if admitted.is_err() {
            let dropped = SPANS_DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
            if due(&self.warned) {
                tracing::warn!(dropped, queue = self.max, "telemetry: the export queue is full; dropping spans");
            }
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it sends and loses and giving queue room back.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
    warned: Mutex<Option<Instant>>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(spans, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                SPANS_EXPORTED.fetch_add(spans as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let failed = EXPORTS_FAILED.fetch_add(1, Ordering::Relaxed) + 1;
                SPANS_LOST.fetch_add(spans as u64, Ordering::Relaxed);
                if due(&self.warned) {
                    tracing::warn!(failed, "telemetry: an export to the collector failed: {}", describe(e));
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn describe(error: &OTelSdkError) -> String {
    match error {
        OTelSdkError::Timeout(after) => format!("no answer within {} ms", after.as_millis()),
        other => other.to_string(),
    }
}

/// Makes `span` continue the trace of the caller's `traceparent` (and `tracestate`), if the
/// headers carry a valid one; else `span` starts a trace of its own.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Writes `span`'s `traceparent` (and the caller's `tracestate`) into `headers`, replacing
/// what the caller sent: the upstream's parent is the proxy's span.
pub(crate) fn propagate(span: &tracing::Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(&span.context(), &mut opentelemetry_http::HeaderInjector(headers));
}

/// The span of one client request (HTTP server conventions), continuing the caller's trace.
/// It lasts as long as its response, an event stream's included: the stream's span is its child.
pub(crate) fn server_span(method: &http::Method, path: &str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(target: TARGET, "request",
        otel.name = %method, otel.kind = "server", otel.status_code = tracing::field::Empty,
        http.request.method = %method, url.path = path, http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty);
    continue_trace(&span, headers);
    span
}

/// Names the server span after its route (`GET /v1`), as the conventions ask.
pub(crate) fn record_route(span: &tracing::Span, method: &http::Method, prefix: &str) {
    if span.is_disabled() {
        return;
    }
    // Renamed through its context: the span has started (it is entered) by the time the route
    // is known, and a started span takes no `otel.name`.
    span.context().span().update_name(format!("{method} {prefix}"));
    span.record("http.route", prefix);
}

/// The answer's status; a 5xx marks a server span as failed (a 4xx is the client's error).
pub(crate) fn record_status(span: &tracing::Span, status: http::StatusCode, server: bool) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() || (!server && status.is_client_error()) {
        span.record("otel.status_code", "error");
    }
}

/// True if `span` is exported: export is on and the sampler kept its trace.
fn sampled(span: &tracing::Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_sampled()
}

/// True while export is on: a branch on the callsite's cached interest.
fn exporting() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The span of one request to an upstream (HTTP client conventions), up to its response head;
/// its context goes upstream in `traceparent` (a dropped trace's too, marked not sampled, so the
/// upstream's own sampler follows the decision).
pub(crate) fn client_span(method: &http::Method, uri: &http::Uri, headers: &mut HeaderMap) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    // A trace the sampler dropped (`OTEL_TRACES_SAMPLER`) builds no child span only to drop it:
    // that is what makes sampling save what it promises.
    let parent = tracing::Span::current();
    if !sampled(&parent) {
        propagate(&parent, headers);
        return tracing::Span::none();
    }
    let span = tracing::info_span!(target: TARGET, "upstream",
        otel.name = %method, otel.kind = "client", otel.status_code = tracing::field::Empty,
        http.request.method = %method, server.address = uri.host().unwrap_or(""),
        server.port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 }),
        url.full = tracing::field::Empty, http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty);
    if !span.is_disabled() {
        // The query is left out: it is where API keys travel.
        // Host and port only: an authority's user-info would be a credential.
        let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        let full = format!("{}://{}{port}{}", uri.scheme_str().unwrap_or("http"), uri.host().unwrap_or(""), uri.path());
        span.record("url.full", full);
    }
    propagate(&span, headers);
    span
}

/// How the upstream answered: its status, or the kind of its failure.
pub(crate) fn record_upstream<B>(
    span: &tracing::Span,
    result: &Result<http::Response<B>, super::upstream::UpstreamError>,
) {
    match result {
        Ok(response) => record_status(span, response.status(), false),
        Err(error) => {
            span.record("error.type", error.kind().name());
            span.record("otel.status_code", "error");
        }
    }
}

/// An event stream's spans for export: the stream, a child of its request, and one child per
/// interceptor link, each summarising at the end what the link did to the stream (spans per
/// batch would cost what the batch path saves). Verdicts that matter are span events.
pub(crate) struct StreamSpans {
    /// The request's span, which also gets the stream's GenAI attributes.
    request: tracing::Span,
    stream: tracing::Span,
    links: Vec<tracing::Span>,
}

impl StreamSpans {
    /// The spans of a stream through `links` (as the chain opened them) on route `prefix`;
    /// `None` while export is off. Call it inside the request's span.
    pub(crate) fn open(
        stream_id: &str,
        prefix: &str,
        framing: &'static str,
        links: &[LinkRecord],
    ) -> Option<Box<Self>> {
        if !exporting() {
            return None;
        }
        let request = tracing::Span::current();
        if !sampled(&request) {
            return None;
        }
        let stream = tracing::info_span!(target: TARGET, "stream", otel.name = "sluicegate.stream",
            otel.status_code = tracing::field::Empty);
        if stream.is_disabled() {
            return None;
        }
        stream.set_attribute("sluicegate.stream_id", stream_id.to_owned());
        stream.set_attribute("http.route", prefix.to_owned());
        stream.set_attribute("sluicegate.framing", framing);
        let links = links.iter().map(|link| link_span(&stream, link)).collect();
        Some(Box::new(StreamSpans { request, stream, links }))
    }

    /// The stream's span, to parent what the stream does (its resumptions).
    pub(crate) fn stream(&self) -> &tracing::Span {
        &self.stream
    }

    /// Records how the stream ended, the waits its client had and what each link did; the spans
    /// end when dropped.
    pub(crate) fn close(
        &self,
        end: &'static str,
        refused: bool,
        records: &[LinkRecord],
        bytes: (u64, u64),
        facts: Option<&Facts>,
        waits: &Waits,
    ) {
        if let Some(facts) = facts {
            gen_ai(&self.stream, facts);
            gen_ai(&self.request, facts);
        }
        let millis = |d: Duration| d.as_secs_f64() * 1e3;
        let latencies = [
            ("sluicegate.latency.first_event_ms", waits.first_event),
            ("sluicegate.latency.chain_max_ms", waits.chain_max),
            ("sluicegate.latency.held_max_ms", waits.held_max),
        ];
        for (key, wait) in latencies {
            if let Some(wait) = wait {
                self.stream.set_attribute(key, millis(wait));
            }
        }
        self.stream.set_attribute("sluicegate.end", end);
        self.stream.set_attribute("sluicegate.bytes_in", bytes.0 as i64);
        self.stream.set_attribute("sluicegate.bytes_out", bytes.1 as i64);
        if refused {
            self.stream.record("otel.status_code", "error");
        }
        for (span, link) in self.links.iter().zip(records) {
            summarise(span, link);
        }
    }
}

impl Drop for StreamSpans {
    /// The exporting layer ends a span at its last exit (the request's was last entered when its
    /// response head went out, the stream's maybe at a resumption), so each is entered once more
    /// as the stream ends, children first: the links end, then the stream, then the request.
    fn drop(&mut self) {
        for span in self.links.iter().chain([&self.stream, &self.request]) {
            span.in_scope(|| ());
        }
    }
}

/// What a request body judged whole says of itself (see [`read_request`]): the model asked for,
/// an MCP message's method and the tool or prompt it names. Read only while export is on.
pub(crate) fn record_request(span: &tracing::Span, body: &str, path: &str) {
    if !sampled(span) {
        return;
    }
    let facts = read_request(body, path);
    let attributes = [
        ("gen_ai.request.model", facts.model),
        ("mcp.method.name", facts.mcp_method),
        ("gen_ai.tool.name", facts.tool),
        ("gen_ai.prompt.name", facts.prompt),
    ];
    for (key, value) in attributes {
        if let Some(value) = value {
            span.set_attribute(key, value);
        }
    }
}

/// The waits a stream's client had, as its `/metrics` histograms count them: its first event, the
/// longest a batch took from arrival to write, the longest a guard held text back.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Waits {
    pub first_event: Option<Duration>,
    pub chain_max: Option<Duration>,
    pub held_max: Option<Duration>,
}

/// The GenAI conventions' attributes of what the stream showed (nothing it did not show).
fn gen_ai(span: &tracing::Span, facts: &Facts) {
    if let Some(system) = facts.system {
        span.set_attribute("gen_ai.system", system);
    }
    if let Some(model) = &facts.response_model {
        span.set_attribute("gen_ai.response.model", model.clone());
    }
    if let Some(n) = facts.input_tokens {
        span.set_attribute("gen_ai.usage.input_tokens", n as i64);
    }
    if let Some(n) = facts.output_tokens {
        span.set_attribute("gen_ai.usage.output_tokens", n as i64);
    }
    if !facts.finish_reasons.is_empty() {
        let reasons = facts.finish_reasons.iter().map(|r| r.clone().into()).collect();
        span.set_attribute(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(opentelemetry::Array::String(reasons)),
        );
    }
}

/// A link's work as attributes, and its verdicts that matter as events: a stop, faults, fail-open
/// passes, a bypass by an open circuit. Names and numbers only, never an event's content.
fn summarise(span: &tracing::Span, link: &LinkRecord) {
    let numbers = [
        ("sluicegate.batches", link.batches),
        ("sluicegate.events.in", link.events_in),
        ("sluicegate.events.out", link.events_out),
        ("sluicegate.events.modified", link.modified),
        ("sluicegate.events.dropped", link.dropped),
        ("sluicegate.events.injected", link.injected),
        ("sluicegate.faults", link.faults),
        ("sluicegate.failed_open", link.failed_open),
        ("sluicegate.bypassed", link.bypassed),
    ];
    for (key, value) in numbers {
        span.set_attribute(key, value as i64);
    }
    // The time the link's calls took: what this guardrail added to the stream.
    span.set_attribute("sluicegate.calls.time_ms", link.busy.as_secs_f64() * 1e3);
    for (name, value) in &link.counts {
        span.set_attribute(format!("sluicegate.count.{name}"), *value as i64);
    }
    if link.ended {
        span.add_event("sluicegate.stop", vec![KeyValue::new("sluicegate.interceptor.name", link.name.clone())]);
    }
    if link.faults > 0 {
        span.add_event("sluicegate.fault", vec![KeyValue::new("sluicegate.faults", link.faults as i64)]);
        if link.policy == FaultPolicy::FailClosed {
            span.record("otel.status_code", "error");
        }
    }
    if link.failed_open > 0 {
        span.add_event("sluicegate.fail_open", vec![KeyValue::new("sluicegate.failed_open", link.failed_open as i64)]);
    }
    if link.bypassed > 0 {
        span.add_event("sluicegate.bypassed", vec![KeyValue::new("sluicegate.bypassed", link.bypassed as i64)]);
    }
}

fn policy_name(policy: FaultPolicy) -> &'static str {
    match policy {
        FaultPolicy::FailOpen => "fail-open",
        FaultPolicy::FailClosed => "fail-closed",
    }
}

/// A client span for a stream's resumption (`attempt` counts from 1), inside the stream's span.
pub(crate) fn resumption_span(
    method: &http::Method,
    uri: &http::Uri,
    headers: &mut HeaderMap,
    attempt: u32,
) -> tracing::Span {
    let span = client_span(method, uri, headers);
    span.set_attribute("sluicegate.resumption.attempt", i64::from(attempt));
    span
}

/// What became of a body judged whole (or refused before its chain), on the request's span: its
/// outcome and reason as attributes, a refusal as an event, and a child span per link that
/// judged it (made when the record is written, so each spans no time).
pub(crate) fn record_body(
    span: &tracing::Span,
    direction: &'static str,
    outcome: &'static str,
    reason: &'static str,
    links: &[LinkRecord],
) {
    if !sampled(span) {
        return;
    }
    span.set_attribute(format!("sluicegate.{direction}.outcome"), outcome);
    span.set_attribute(format!("sluicegate.{direction}.reason"), reason);
    if outcome == "refused" {
        let mut attributes =
            vec![KeyValue::new("sluicegate.direction", direction), KeyValue::new("sluicegate.reason", reason)];
        if let Some(link) = links.iter().find(|l| l.ended) {
            attributes.push(KeyValue::new("sluicegate.interceptor.name", link.name.clone()));
        }
        span.add_event("sluicegate.refusal", attributes);
    }
    for link in links {
        let child = link_span(span, link);
        child.set_attribute("sluicegate.direction", direction);
        summarise(&child, link);
    }
}

/// The span of one interceptor link, a child of `parent`, named after its interceptor.
fn link_span(parent: &tracing::Span, link: &LinkRecord) -> tracing::Span {
    let span = tracing::info_span!(target: TARGET, parent: parent, "link",
        otel.name = format!("sluicegate.link {}", link.name), otel.status_code = tracing::field::Empty);
    span.set_attribute("sluicegate.interceptor.name", link.name.clone());
    span.set_attribute("sluicegate.link.index", link.link as i64);
    span.set_attribute("sluicegate.link.policy", policy_name(link.policy));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_when_the_sdk_is_disabled() {
        let config = TelemetryConfig::default();
        assert_eq!(Export::resolve(&config, env(&[])).unwrap(), None);
        let disabled = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "TRUE")];
        assert_eq!(Export::resolve(&config, env(&disabled)).unwrap(), None);
    }

    #[test]
    fn the_environment_fills_what_the_file_leaves_out_and_the_file_wins() {
        let from_env =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        let export = Export::resolve(&TelemetryConfig::default(), env(&from_env)).unwrap().unwrap();
        assert_eq!((export.url.as_str(), export.protocol), ("http://c:4318/v1/traces", OtlpProtocol::HttpProtobuf));
        assert_eq!(export.service_name, "sluicegate");
        let named = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SERVICE_NAME", "edge")];
        assert_eq!(Export::resolve(&TelemetryConfig::default(), env(&named)).unwrap().unwrap().service_name, "edge");

        let config = TelemetryConfig {
            endpoint: Some("http://file:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            ..TelemetryConfig::default()
        };
        let export = Export::resolve(&config, env(&from_env)).unwrap().unwrap();
        assert_eq!((export.url.as_str(), export.protocol), ("http://file:4317", OtlpProtocol::Grpc));
    }

    #[test]
    fn metrics_are_pushed_every_minute_unless_the_interval_or_the_exporter_says_otherwise() {
        let interval = |config: &TelemetryConfig, vars: &[(&str, &str)]| {
            let vars: Vec<(&str, &str)> =
                [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")].into_iter().chain(vars.iter().copied()).collect();
            Export::resolve(config, env(&vars)).map(|export| export.unwrap().metrics)
        };
        let default = TelemetryConfig::default();
        let every_minute = MetricsExport { url: "http://c:4318/v1/metrics".into(), interval: Duration::from_secs(60) };
        assert_eq!(interval(&default, &[]).unwrap(), Some(every_minute));
        let often = interval(&default, &[("OTEL_METRIC_EXPORT_INTERVAL", "250")]).unwrap();
        assert_eq!(often.map(|m| m.interval), Some(Duration::from_millis(250)));
        assert_eq!(interval(&default, &[("OTEL_METRICS_EXPORTER", "none")]).unwrap(), None);
        assert_eq!(interval(&default, &[("OTEL_METRIC_EXPORT_INTERVAL", "0")]).unwrap(), None);
        assert!(matches!(
            interval(&default, &[("OTEL_METRIC_EXPORT_INTERVAL", "1s")]),
            Err(TelemetryError::Interval(_))
        ));
        assert!(matches!(
            interval(&default, &[("OTEL_METRICS_EXPORTER", "prometheus")]),
            Err(TelemetryError::Exporter(_))
        ));
        // The file wins: its interval over the variables, and its zero turns the push off.
        let file =
            |ms| TelemetryConfig { metrics_interval_ms: Some(Duration::from_millis(ms)), ..TelemetryConfig::default() };
        let pushed = interval(&file(5000), &[("OTEL_METRICS_EXPORTER", "none"), ("OTEL_METRIC_EXPORT_INTERVAL", "9")]);
        assert_eq!(pushed.unwrap().map(|m| m.interval), Some(Duration::from_secs(5)));
        assert_eq!(interval(&file(0), &[]).unwrap(), None);
        let grpc = TelemetryConfig { protocol: Some(OtlpProtocol::Grpc), ..TelemetryConfig::default() };
        assert_eq!(interval(&grpc, &[]).unwrap().map(|m| m.url), Some("http://c:4318".into()));
    }

    #[test]
    fn an_unknown_protocol_or_a_non_http_endpoint_is_refused() {
        let grpc_typo = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "gprc")];
        assert!(matches!(
            Export::resolve(&TelemetryConfig::default(), env(&grpc_typo)),
            Err(TelemetryError::Protocol(_))
        ));
        let json = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")];
        assert!(Export::resolve(&TelemetryConfig::default(), env(&json)).is_err(), "JSON is not spoken");
        let bare = [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")];
        assert!(matches!(Export::resolve(&TelemetryConfig::default(), env(&bare)), Err(TelemetryError::Endpoint(_))));
        // HTTPS for HTTP/protobuf; refused at start over gRPC (not failing export after export).
        let https = [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")];
        assert!(Export::resolve(&TelemetryConfig::default(), env(&https)).unwrap().is_some());
        let grpc = [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(matches!(Export::resolve(&TelemetryConfig::default(), env(&grpc)), Err(TelemetryError::Tls(_))));
    }

    #[test]
    fn headers_come_from_the_file_or_the_variable_and_are_never_shown() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%3Dcr3t , tenant=acme"),
        ];
        let export = Export::resolve(&TelemetryConfig::default(), env(&vars)).unwrap().unwrap();
        let map = export.headers.map();
        assert_eq!((map["x-api-key"].to_str().unwrap(), map["tenant"].to_str().unwrap()), ("s=cr3t", "acme"));
        let shown = format!("{export:?}");
        assert!(shown.contains("x-api-key") && !shown.contains("cr3t"), "{shown}");
        // The file's headers win over the variable's, all of them.
        let config = TelemetryConfig {
            headers: [("authorization".to_string(), "Bearer k".to_string())].into(),
            ..TelemetryConfig::default()
        };
        let map = Export::resolve(&config, env(&vars)).unwrap().unwrap().headers.map();
        assert_eq!((map.len(), map["authorization"].to_str().unwrap()), (1, "Bearer k"));
        for bad in ["novalue", "bad name=x"] {
            let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_HEADERS", bad)];
            assert!(matches!(
                Export::resolve(&TelemetryConfig::default(), env(&vars)),
                Err(TelemetryError::Header(..))
            ));
        }
    }
}
