//! The proxy's configuration: a TOML file, overridden by command-line flags.
//!
//! Every section and key is optional; see `docs/sluicegate.example.toml` for all of them with
//! their defaults.
//!
//! This is plain data at the bottom of the crate: it imports none of the layers it configures
//! (only the SSE codec's event size limit). Each default is written here, once; the layers build
//! their settings from their section (`host::Limits`, `chain::BreakerConfig` and
//! `engine::BatchLimits` from `[limits]` and `[batch]`) and take their own defaults from these.
//! [`ProxyConfig::validate`] checks what types cannot; `Proxy::build` calls it, once, after
//! the command line's flags are merged in.
//!
//! Durations keep their `_ms` keys: an integer is milliseconds, and a string carries its unit
//! (`"250ms"`, `"20s"`, `"1m 30s"`, read by humantime).

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Where to accept clients, e.g. `127.0.0.1:8080`.
    pub listen: Option<SocketAddr>,
    /// The upstream's base URL, e.g. `http://127.0.0.1:3000`. Request paths are appended to it.
    pub upstream: Option<String>,
    /// Speak only HTTP/2 to upstreams: by prior knowledge over http://, by ALPN h2 alone over
    /// https://. Many streams share one connection, from the first requests on. Without it,
    /// HTTPS upstreams still get HTTP/2 when they offer it by ALPN.
    pub upstream_http2: bool,
    /// Extra CA certificates (PEM) trusted for HTTPS upstreams besides the system's roots.
    pub upstream_ca: Option<PathBuf>,
    /// A client certificate (PEM) and its key, presented to HTTPS upstreams that ask for one.
    pub upstream_client_cert: Option<PathBuf>,
    /// The key of `upstream_client_cert` (PEM).
    pub upstream_client_key: Option<PathBuf>,
    /// TLS for clients: when set, the proxy's listener speaks only HTTPS.
    pub tls: Option<TlsConfig>,
    /// `[batch]`: how events are grouped into batches.
    pub batch: BatchConfig,
    /// `[reconnect]`: resuming upstream event streams.
    pub reconnect: ReconnectConfig,
    /// `[limits]`: bounds on input, interceptors and connections.
    pub limits: LimitsConfig,
    /// `[security]`: the `Host` and `Origin` checks.
    pub security: SecurityConfig,
    /// `[shutdown]`: how long live streams get to end.
    pub shutdown: ShutdownConfig,
    /// `[threads]`: how the proxy's work is spread over threads (read at start; a reload keeps
    /// the threads it started with).
    pub threads: ThreadsConfig,
    /// `[store]`: where interceptors keep state shared across streams and replicas.
    pub store: StoreConfig,
    /// `[telemetry]`: OpenTelemetry export (read at start; a reload keeps what it started with).
    pub telemetry: TelemetryConfig,
    /// Routes by path prefix; the longest matching prefix wins. A request that matches none is
    /// forwarded with no interceptors.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[upstreams.NAME]`: upstreams that routes (and the top-level `upstream`) name. The
    /// top-level and per-route URL and TLS keys still work: they make upstreams without a name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

/// A named upstream: where it is and how it is reached.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://HOST:PORT/PATH`, `https://...`, or `unix:/path/to/socket` (plain HTTP over a Unix
    /// socket, for local servers).
    pub url: String,
    /// Extra CA certificates (PEM) trusted besides the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for mTLS, and its key.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// HTTP/2 only (default: the top-level `upstream_http2`).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Overrides `limits.upstream_connect_timeout_ms`.
    #[serde(default, with = "millis::optional")]
    pub connect_timeout_ms: Option<Duration>,
    /// Overrides `limits.upstream_header_timeout_ms` (0: no limit).
    #[serde(default, with = "millis::optional")]
    pub header_timeout_ms: Option<Duration>,
    /// Headers set on every request to this upstream (`${NAME}` from the environment, never
    /// logged); a route's own are applied after them.
    #[serde(default)]
    pub set_request_headers: BTreeMap<String, String>,
    /// Headers removed from every request to this upstream.
    #[serde(default)]
    pub remove_request_headers: Vec<String>,
}

/// The proxy's own certificate, for clients (PEM files, read again on every reload).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The host store of interceptors (counters such as token budgets).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// A Redis server shared by every replica (`redis://HOST:PORT`, with `user:password@` and a
    /// `/db` if needed; `rediss://` for TLS). Absent: the proxy's own memory (one process only).
    /// `${NAME}` is the environment variable NAME, as in headers.
    pub url: Option<String>,
    /// The longest a store call may take; then it fails as unavailable (a fault of the caller).
    /// Keep it under `limits.call_deadline_ms`: the time a guest waits counts toward its
    /// deadline, and a guest past its deadline traps when the call returns.
    #[serde(with = "millis")]
    pub timeout_ms: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: None, timeout_ms: Duration::from_millis(50) }
    }
}

/// OpenTelemetry export over OTLP. Off unless an endpoint is set here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; a key set here wins over its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's base URL: `http://HOST:4318` for HTTP/protobuf (the proxy appends
    /// `/v1/traces`), `http://HOST:4317` for gRPC. Else `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `http/protobuf` or `grpc`. Else `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`.
    pub protocol: Option<OtlpProtocol>,
    /// The `service.name` of every span. Else `OTEL_SERVICE_NAME`, else `sluicegate`.
    pub service_name: Option<String>,
    /// More resource attributes, added to (and winning over) `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: BTreeMap<String, String>,
    /// Finished spans waiting for export at most; more are dropped and counted
    /// (`sluicegate_telemetry_spans_dropped_total`), so a slow collector costs no memory growth.
    pub queue_size: usize,
    /// The longest one export may take before it is abandoned (and its spans counted as lost).
    #[serde(with = "millis")]
    pub timeout_ms: Duration,
    /// How often the metrics (those of `/metrics`) are pushed; `0` pushes none. Else
    /// `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s; `OTEL_METRICS_EXPORTER=none` pushes none.
    #[serde(default, with = "millis::optional")]
    pub metrics_interval_ms: Option<Duration>,
    /// Headers sent with every export (a vendor's API key: `${NAME}` is the environment variable
    /// NAME, never logged). Else `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`).
    pub headers: BTreeMap<String, String>,
    /// A CA certificate (PEM) trusted for an `https://` endpoint besides the system's roots.
    pub ca: Option<PathBuf>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            endpoint: None,
            protocol: None,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            queue_size: 2048,
            timeout_ms: Duration::from_secs(10),
            metrics_interval_ms: None,
            headers: BTreeMap::new(),
            ca: None,
        }
    }
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC (port 4317 by convention).
    #[serde(rename = "grpc")]
    Grpc,
}

/// How the proxy stops (on SIGTERM or Ctrl-C).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long live event streams may go on after the listener closes.
    #[serde(with = "millis")]
    pub drain_ms: Duration,
    /// Then, how long the remaining streams get to send their last events.
    #[serde(with = "millis")]
    pub finish_ms: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { drain_ms: Duration::from_secs(20), finish_ms: Duration::from_secs(5) }
    }
}

/// How the proxy's work is spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThreadsConfig {
    /// `per-core` or `shared`; absent: `per-core`, unless the store is a Redis server (its calls
    /// wait on the calling thread, which `shared` hands over to another).
    pub model: Option<ThreadModel>,
    /// Worker threads; 0 (the default): one per core the process may run on.
    pub count: usize,
    /// Calls into slow chains (those run off the I/O threads) that may run at once, in the whole
    /// process; more wait their turn. 0 (the default): half the cores the process may run on, at
    /// least one, so that a slow tenant with many streams cannot take every core from the
    /// threads that serve sockets.
    pub slow_calls: usize,
}

impl ThreadsConfig {
    /// The model in effect for a store configured as `store`.
    pub fn model_for(&self, store: &StoreConfig) -> ThreadModel {
        self.model.unwrap_or(match store.url {
            Some(_) => ThreadModel::Shared,
            None => ThreadModel::PerCore,
        })
    }
}

/// How connections are placed on threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadModel {
    /// One single-threaded runtime per worker, each accepting on its own `SO_REUSEPORT`
    /// listener: a connection, its streams and their upstream connections stay on the thread that
    /// accepted it, so an event wakes no other thread.
    PerCore,
    /// One work-stealing pool: tasks move to idle threads, at the cost of cross-thread wake-ups.
    Shared,
}

/// How events are grouped into batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// The most events in one batch.
    pub max_events: usize,
    /// The most field bytes in one batch (one larger event still makes a batch of its own).
    pub max_bytes: usize,
    /// How long to wait for more events to fill a batch once one is ready. 0 (the default)
    /// sends what is there at once: a quiet stream gets no added latency.
    #[serde(with = "millis")]
    pub linger_ms: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_events: 256, max_bytes: 256 * 1024, linger_ms: Duration::ZERO }
    }
}

/// Resuming an upstream event stream that fails mid-way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Reconnect to the upstream with `Last-Event-ID` when an event stream fails.
    pub enabled: bool,
    /// Attempts after one failure before giving up. The count restarts only once a new event
    /// has arrived: reconnects that bring nothing new count as one failure.
    pub max_attempts: u32,
    /// The first delay, unless the upstream sent `retry`.
    #[serde(with = "millis")]
    pub initial_delay_ms: Duration,
    /// The shortest delay an upstream's `retry` (or `Retry-After`) may ask for: `retry: 0` does
    /// not make the proxy reconnect in a loop.
    #[serde(with = "millis")]
    pub min_delay_ms: Duration,
    /// The most reconnects of one stream in any minute (0: no cap); then the stream ends as
    /// failed.
    pub max_per_minute: u32,
    /// The longest delay (also caps `retry` and `Retry-After`).
    #[serde(with = "millis")]
    pub max_delay_ms: Duration,
    /// An upstream event stream that sends nothing (not even a comment) for this long has
    /// failed. 0 disables the check.
    #[serde(with = "millis")]
    pub idle_timeout_ms: Duration,
    /// Also resume event streams that answered a POST, by GET with `Last-Event-ID` (how MCP
    /// Streamable HTTP clients resume).
    pub resume_post_with_get: bool,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            enabled: true,
            max_attempts: 5,
            initial_delay_ms: Duration::from_millis(100),
            min_delay_ms: Duration::from_millis(100),
            max_per_minute: 30,
            max_delay_ms: Duration::from_secs(10),
            idle_timeout_ms: Duration::ZERO,
            resume_post_with_get: true,
        }
    }
}

impl ReconnectConfig {
    /// `idle_timeout_ms`; none when 0 (off).
    pub fn idle_timeout(&self) -> Option<Duration> {
        (!self.idle_timeout_ms.is_zero()).then_some(self.idle_timeout_ms)
    }
}

/// Bounds on input and on interceptors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The largest upstream event (field bytes) or line; larger events are dropped with a log
    /// line and counted. Counted after decompression.
    pub max_event_bytes: usize,
    /// The largest request or response body a chain inspects whole (after decompression).
    pub max_body_bytes: usize,
    /// What happens on a route with a chain to a body over `max_body_bytes`: `refuse` (413 for
    /// a request, 502 for a response) or `pass` (forwarded uninspected, counted and logged).
    pub on_oversize: OversizePolicy,
    /// The most bytes of bodies held for inspection at once, across every request (0: no
    /// limit). A body that does not fit is refused with 503 and `Retry-After`.
    pub max_buffered_bytes: usize,
    /// The largest linear memory of a guest instance.
    pub max_memory_bytes: usize,
    /// The most field bytes one interceptor may produce for one batch.
    pub max_output_bytes: usize,
    /// The most elements a guest's tables may grow to.
    pub max_table_elements: usize,
    /// Instances per component interceptor; 0 means one per core.
    pub instances_per_interceptor: usize,
    /// Accepted for configurations written for older versions; has no effect. (An event
    /// stream now runs in its client's body: the client connection's write buffer is the only
    /// buffer between the chain and a slow client.)
    pub client_buffer_batches: usize,
    /// The longest one call into a guest may run (a guest still running then traps within
    /// one more epoch tick, 5 ms).
    #[serde(with = "millis")]
    pub call_deadline_ms: Duration,
    /// Lines per second of guest stdout/stderr that reach the log (bursts of ten times this).
    pub guest_log_lines_per_second: u32,
    /// Client connections open at once (0 = unlimited); beyond it a request is answered 503.
    pub max_connections: usize,
    /// Event streams at once, for the whole proxy (0 = unlimited); beyond it a new stream gets
    /// 503. Routes may set their own `max_streams` too.
    pub max_streams: usize,
    /// The `Retry-After` (seconds) sent with a 503 for a limit.
    pub retry_after_seconds: u64,
    /// Connecting to an upstream (TCP and TLS) may take this long: then 504.
    #[serde(with = "millis")]
    pub upstream_connect_timeout_ms: Duration,
    /// An upstream must send its response head within this long of the request (0 = no
    /// limit): then 504. Generous by default: a model that answers without streaming sends its
    /// head only when the whole answer is ready.
    #[serde(with = "millis")]
    pub upstream_header_timeout_ms: Duration,
    /// A client must send a request's head within this long: of connecting (the TLS handshake
    /// included), and of the previous response on a kept-alive HTTP/1.1 connection.
    #[serde(with = "millis")]
    pub header_read_timeout_ms: Duration,
    /// An HTTP/2 client connection with no open stream is closed after this long.
    #[serde(with = "millis")]
    pub client_idle_timeout_ms: Duration,
    /// The largest request head (request line and headers, or an HTTP/2 header list); larger
    /// heads get 431.
    pub max_request_header_bytes: usize,
    /// Faults within `breaker_window_ms` that take an interceptor out of service...
    pub breaker_faults: u32,
    /// The window `breaker_faults` are counted over.
    #[serde(with = "millis")]
    pub breaker_window_ms: Duration,
    /// ...for this long at first (doubling, up to 5 minutes, while trial batches fail).
    #[serde(with = "millis")]
    pub breaker_backoff_ms: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: crate::sse::DEFAULT_MAX_EVENT_BYTES,
            max_body_bytes: 4 << 20,
            on_oversize: OversizePolicy::Refuse,
            max_buffered_bytes: 256 << 20,
            max_memory_bytes: 64 << 20,
            max_output_bytes: 16 << 20,
            max_table_elements: 20_000,
            instances_per_interceptor: 0,
            client_buffer_batches: 4,
            call_deadline_ms: Duration::from_millis(100),
            guest_log_lines_per_second: 20,
            max_connections: 0,
            max_streams: 0,
            retry_after_seconds: 1,
            upstream_connect_timeout_ms: Duration::from_secs(10),
            upstream_header_timeout_ms: Duration::from_secs(300),
            header_read_timeout_ms: Duration::from_secs(10),
            client_idle_timeout_ms: Duration::from_secs(60),
            max_request_header_bytes: 64 << 10,
            breaker_faults: 5,
            breaker_window_ms: Duration::from_secs(10),
            breaker_backoff_ms: Duration::from_secs(5),
        }
    }
}

/// DNS-rebinding protection (the proxy rewrites `Host` to the upstream's authority, so it must
/// check the client's `Host` and `Origin` itself, as MCP servers do).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Accepted `Host` values (`name` or `name:port`; `name:*` for any port). Empty: the loopback
    /// names when listening on loopback, anything otherwise.
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` values (e.g. `http://localhost:*`). Empty: loopback origins when listening
    /// on loopback, anything otherwise. Requests without `Origin` are accepted.
    pub allowed_origins: Vec<String>,
    /// Forward the client's `Host` instead of the upstream's authority (the checks are then left to
    /// the upstream).
    pub preserve_host: bool,
}

/// What to do with a body too large to inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OversizePolicy {
    /// Refuse it: 413 for a request, 502 for a response.
    #[default]
    Refuse,
    /// Forward it uninspected (counted as passed, reason `oversize`, and logged).
    Pass,
}

/// One route: a path prefix and its chains.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Requests whose path starts with this (at a `/` boundary) take this route.
    pub prefix: String,
    /// The response chain, in order: event streams and inspected response bodies.
    #[serde(default, rename = "interceptor")]
    pub interceptors: Vec<InterceptorConfig>,
    /// The request chain, in order: inspected request bodies, before they go upstream.
    #[serde(default, rename = "request_interceptor")]
    pub request_interceptors: Vec<InterceptorConfig>,
    /// Accepted for configurations written for older versions; has no effect. (Every body on a
    /// guarded route is now judged by its content: text and JSON are always inspected.)
    #[serde(default)]
    pub body_types: Vec<String>,
    /// Media types (`image/png`, `image/*`, `*/*`) whose binary content (neither text nor
    /// JSON, judged by the bytes, not the label) passes this route's chains uninspected, counted.
    /// Without a rule, binary bodies on a guarded route are refused.
    #[serde(default)]
    pub pass_media_types: Vec<String>,
    /// Overrides `limits.on_oversize` on this route.
    #[serde(default)]
    pub on_oversize: Option<OversizePolicy>,
    /// This route's upstream: a URL, or the name of one in `[upstreams]` (default: the top-level
    /// `upstream`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Remove the prefix from the path sent upstream (`/openai/v1/x` -> `/v1/x`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Headers set on every request sent upstream (replacing the client's). `${NAME}` in a value
    /// is the environment variable NAME, read at load time; such values never reach a log.
    #[serde(default)]
    pub set_request_headers: BTreeMap<String, String>,
    /// Headers removed from every request before it goes upstream.
    #[serde(default)]
    pub remove_request_headers: Vec<String>,
    /// Overrides the top-level `upstream_ca` / `upstream_client_cert` / `upstream_client_key`.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// This route's client certificate (PEM) for its HTTPS upstream.
    #[serde(default)]
    pub upstream_client_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub upstream_client_key: Option<PathBuf>,
    /// Event streams at once on this route (0 or absent: only `limits.max_streams` applies).
    #[serde(default)]
    pub max_streams: Option<usize>,
}

/// A header value with `${NAME}` replaced by the environment variable NAME (`$$` is a `$`).
/// The error names the variable, never a value.
pub fn expand_env(value: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').context("`${` without a closing `}`")?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("`${{{name}}}` is not an environment variable name");
            }
            match std::env::var(name) {
                Ok(v) => out.push_str(&v),
                Err(std::env::VarError::NotPresent) => bail!("the environment variable {name} is not set"),
                Err(std::env::VarError::NotUnicode(_)) => bail!("the environment variable {name} is not UTF-8"),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What happens to a stream when one of its interceptors faults (traps, overruns its deadline or
/// memory, returns an invalid verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultPolicy {
    /// The batch passes that interceptor unmodified (logged and counted); the stream goes on. An
    /// interceptor whose instance was discarded gets a fresh stream state on the next batch.
    FailOpen,
    /// The stream ends with a well-formed error event, then closes.
    #[default]
    FailClosed,
}

/// One interceptor of a chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptorConfig {
    /// A component path, `example:NAME` or `native:NAME`.
    pub spec: String,
    /// Its configuration (values may be strings, numbers or booleans; they reach the interceptor
    /// as strings).
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// `fail-open` or `fail-closed` (the default).
    #[serde(default)]
    pub on_fault: FaultPolicy,
    /// Overrides of `[limits]` for this interceptor: `limits.call_deadline_ms`.
    #[serde(default, with = "millis::optional")]
    pub call_deadline_ms: Option<Duration>,
    /// Overrides `limits.max_memory_bytes`.
    pub max_memory_bytes: Option<usize>,
    /// Overrides `limits.max_output_bytes`.
    pub max_output_bytes: Option<usize>,
    /// Overrides `limits.instances_per_interceptor` (either name may be used).
    #[serde(alias = "instances_per_interceptor")]
    pub instances: Option<usize>,
    /// Give this guest the real clocks (otherwise they read zero).
    #[serde(default)]
    pub grant_clocks: bool,
    /// The scope of its keys in the store (default: its `spec`). Interceptors with one scope
    /// share their keys: the same spec on a route's request and response chains, say.
    #[serde(default)]
    pub store_scope: Option<String>,
}

impl InterceptorConfig {
    /// An interceptor with default settings.
    pub fn new(spec: impl Into<String>) -> Self {
        InterceptorConfig {
            spec: spec.into(),
            config: BTreeMap::new(),
            on_fault: Default::default(),
            call_deadline_ms: None,
            max_memory_bytes: None,
            max_output_bytes: None,
            instances: None,
            grant_clocks: false,
            store_scope: None,
        }
    }

    /// The scope of its keys in the store.
    pub fn store_scope(&self) -> &str {
        self.store_scope.as_deref().unwrap_or(&self.spec)
    }

    /// The configuration as strings.
    pub fn entries(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.config
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(String::from).unwrap_or_else(|| i.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => bail!(
                        "interceptor `{}`: config key `{k}` must be a string, number, boolean or list, not {other}",
                        self.spec
                    ),
                };
                Ok((k.clone(), value))
            })
            .collect()
    }
}

impl ProxyConfig {
    /// Reads and checks a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses TOML text. Types, ranges of integers and unknown keys are checked here, the rest
    /// by [`ProxyConfig::validate`].
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Checks what types alone cannot. `Proxy::build` calls it before it builds anything.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_limits()?;
        let mut prefixes = std::collections::HashSet::new();
        for route in &self.routes {
            if !prefixes.insert(route.prefix.trim_end_matches('/')) {
                bail!("route prefix `{}` appears twice", route.prefix);
            }
            route.validate()?;
        }
        client_pair(&self.upstream_client_cert, &self.upstream_client_key, "")?;
        for (name, upstream) in &self.upstreams {
            let at = format!("upstreams.{name}: ");
            if name.is_empty() || name.contains(':') || name.contains('/') {
                bail!("upstreams.{name}: a name has no `:` or `/` (it would read as a URL)");
            }
            client_pair(&upstream.client_cert, &upstream.client_key, &at)?;
            header_names(upstream.set_request_headers.keys().chain(&upstream.remove_request_headers), &at)?;
        }
        Ok(())
    }

    /// `[batch]`, `[limits]`, `[store]` and `[telemetry]`: what their types allow but the proxy cannot use.
    fn validate_limits(&self) -> anyhow::Result<()> {
        let (batch, limits) = (&self.batch, &self.limits);
        let between = |value: usize, key: &str| match (1..=1 << 30).contains(&value) {
            true => Ok(()),
            false => Err(anyhow::anyhow!("{key} must be between 1 and 2^30")),
        };
        between(batch.max_bytes, "batch.max_bytes")?;
        between(limits.max_event_bytes, "limits.max_event_bytes")?;
        between(limits.max_body_bytes, "limits.max_body_bytes")?;
        let at_least_one = [
            (batch.max_events == 0, "batch.max_events"),
            (limits.client_buffer_batches == 0, "limits.client_buffer_batches"),
            (limits.call_deadline_ms.is_zero(), "limits.call_deadline_ms"),
            (limits.retry_after_seconds == 0, "limits.retry_after_seconds"),
            (limits.upstream_connect_timeout_ms.is_zero(), "limits.upstream_connect_timeout_ms"),
            (limits.header_read_timeout_ms.is_zero(), "limits.header_read_timeout_ms"),
            (limits.client_idle_timeout_ms.is_zero(), "limits.client_idle_timeout_ms"),
            // Not checked against call_deadline_ms: a store slower than a guest's deadline is a
            // fault either way (a deadline trap instead of a store fault), and an existing config
            // with a short deadline must keep loading.
            (self.store.timeout_ms.is_zero(), "store.timeout_ms"),
            (self.telemetry.queue_size == 0, "telemetry.queue_size"),
            (self.telemetry.timeout_ms.is_zero(), "telemetry.timeout_ms"),
        ];
        if let Some((_, key)) = at_least_one.iter().find(|(zero, _)| *zero) {
            bail!("{key} must be at least 1");
        }
        if !(8 << 10..=1 << 24).contains(&limits.max_request_header_bytes) {
            bail!("limits.max_request_header_bytes must be between 8192 and 16 MiB");
        }
        Ok(())
    }
}

impl RouteConfig {
    /// What its types allow but a route cannot use.
    fn validate(&self) -> anyhow::Result<()> {
        let at = format!("route `{}`: ", self.prefix);
        if !self.prefix.starts_with('/') {
            bail!("route prefix `{}` must start with `/`", self.prefix);
        }
        for types in self.body_types.iter().chain(&self.pass_media_types) {
            if !types.contains('/') {
                bail!("{at}`{types}` is not a media type (type/subtype)");
            }
        }
        for interceptor in self.interceptors.iter().chain(&self.request_interceptors) {
            interceptor.entries()?;
            if interceptor.call_deadline_ms.is_some_and(|d| d.is_zero()) {
                bail!("interceptor `{}`: call_deadline_ms must be at least 1", interceptor.spec);
            }
        }
        client_pair(&self.upstream_client_cert, &self.upstream_client_key, &at)?;
        header_names(self.set_request_headers.keys().chain(&self.remove_request_headers), &at)
    }
}

/// A client certificate and its key: both or neither.
fn client_pair(cert: &Option<PathBuf>, key: &Option<PathBuf>, at: &str) -> anyhow::Result<()> {
    if cert.is_some() != key.is_some() {
        bail!("{at}a client certificate and its key go together (upstream_client_cert/_key, client_cert/_key)");
    }
    Ok(())
}

/// Every name a header name.
fn header_names<'a>(names: impl Iterator<Item = &'a String>, at: &str) -> anyhow::Result<()> {
    match names.into_iter().find(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err()) {
        Some(name) => bail!("{at}`{name}` is not a header name"),
        None => Ok(()),
    }
}

/// Durations under `_ms` keys: an integer is milliseconds; a string has a unit, read by
/// humantime (`"250ms"`, `"20s"`, `"1m 30s"`).
mod millis {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;
    use std::time::Duration;

    struct Millis;

    impl Visitor<'_> for Millis {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("milliseconds (an integer) or a duration with its unit (\"250ms\", \"20s\")")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms).map(Duration::from_millis).map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text).map_err(|e| E::custom(format!("`{text}` is not a duration: {e}")))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Millis)
    }

    /// The same for an optional key.
    pub(super) mod optional {
        use super::*;

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_expand_and_a_missing_one_is_named_not_shown() {
        // Cargo sets this for every test process (no set_var: other test threads read the env).
        assert_eq!(expand_env("Bearer ${CARGO_PKG_NAME}!").unwrap(), "Bearer sluicegate-contract!");
        assert_eq!(expand_env("a$$b$c").unwrap(), "a$b$c");
        let missing = format!("{:#}", expand_env("Bearer ${SLUICEGATE_TEST_NOT_SET}").unwrap_err());
        assert!(missing.contains("SLUICEGATE_TEST_NOT_SET is not set"), "{missing}");
        assert!(format!("{:#}", expand_env("${A").unwrap_err()).contains("closing"));
        assert!(format!("{:#}", expand_env("${a-b}").unwrap_err()).contains("not an environment variable name"));
    }

    #[test]
    fn the_documented_example_parses() {
        let config = ProxyConfig::from_toml(include_str!("../../../docs/sluicegate.example.toml")).unwrap();
        assert_eq!(config.routes.len(), 3);
        let patterns = config.routes[1].interceptors[0].entries().unwrap();
        assert!(patterns.contains(&("pattern.ticket".into(), "TCK-[0-9]{6}".into())), "{patterns:?}");
        assert_eq!(
            config.routes[2].interceptors[0].entries().unwrap(),
            vec![("types".into(), "ping,heartbeat".into())]
        );
        let defaults = ProxyConfig::default();
        assert_eq!(
            (config.batch.max_events, config.batch.linger_ms),
            (defaults.batch.max_events, defaults.batch.linger_ms)
        );
        assert_eq!(config.reconnect.max_attempts, defaults.reconnect.max_attempts);
        assert_eq!(config.limits.max_event_bytes, defaults.limits.max_event_bytes);
        assert_eq!(config.telemetry, defaults.telemetry);
    }

    #[test]
    fn durations_are_milliseconds_or_carry_their_unit() {
        let config = ProxyConfig::from_toml(
            "[limits]\ncall_deadline_ms = 250\nbreaker_window_ms = \"1m 30s\"\n[shutdown]\ndrain_ms = \"2s\"\n\
             [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:redact\"\ncall_deadline_ms = \"20ms\"",
        )
        .unwrap();
        assert_eq!(config.limits.call_deadline_ms, Duration::from_millis(250));
        assert_eq!(config.limits.breaker_window_ms, Duration::from_secs(90));
        assert_eq!(config.shutdown.drain_ms, Duration::from_secs(2));
        assert_eq!(config.routes[0].interceptors[0].call_deadline_ms, Some(Duration::from_millis(20)));
        assert_eq!(config.shutdown.finish_ms, ShutdownConfig::default().finish_ms, "untouched keys keep their default");
        let err = |text: &str| format!("{:#}", ProxyConfig::from_toml(text).unwrap_err());
        assert!(err("[limits]\ncall_deadline_ms = -1").contains("cannot be negative"));
        assert!(err("[limits]\ncall_deadline_ms = \"soon\"").contains("`soon` is not a duration"));
    }

    #[test]
    fn threads_default_to_per_core_unless_the_store_waits_on_the_thread() {
        let model = |text: &str| {
            let config = ProxyConfig::from_toml(text).unwrap();
            config.threads.model_for(&config.store)
        };
        assert_eq!(model(""), ThreadModel::PerCore);
        assert_eq!(model("[store]\nurl = \"redis://127.0.0.1:6379\""), ThreadModel::Shared);
        assert_eq!(model("[threads]\nmodel = \"per-core\"\n[store]\nurl = \"redis://r\""), ThreadModel::PerCore);
        assert_eq!(model("[threads]\nmodel = \"shared\"\ncount = 3"), ThreadModel::Shared);
        let err = format!("{:#}", ProxyConfig::from_toml("[threads]\nmodel = \"per-thread\"").unwrap_err());
        assert!(err.contains("unknown variant `per-thread`"), "{err}");
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |text: &str| format!("{:#}", ProxyConfig::from_toml(text).and_then(|c| c.validate()).unwrap_err());
        assert!(err("[batch]\nmax_evnts = 3").contains("unknown field `max_evnts`"));
        assert!(err("[[route]]\nprefix = \"mcp\"").contains("must start with `/`"));
        assert!(err("[[route]]\nprefix = \"/a\"\n[[route]]\nprefix = \"/a/\"").contains("appears twice"));
        assert!(
            err("[[route]]\nprefix = \"/a\"\nset_request_headers = { \"a b\" = \"x\" }").contains("not a header name")
        );
        assert!(err("upstream_client_cert = \"c.pem\"").contains("go together"));
    }
}
