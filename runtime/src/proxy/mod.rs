//! The reverse proxy: forwards every request to the upstream and streams every response back;
//! responses that are event streams go through the route's chain of interceptors.
//!
//! One request's life:
//! 1. `Host` and `Origin` are checked (421 / 403), since `Host` is rewritten for the upstream;
//! 2. the route is chosen by the longest matching path prefix;
//! 3. on a route with a request chain, a JSON request body is read whole and goes through it
//!    ([`inspect`]); a refused request never reaches the upstream;
//! 4. the request (method, path, query, end-to-end headers, body) goes upstream;
//! 5. on a route with a chain, an event stream is handed to [`events::EventStream`], which
//!    parses, batches, runs the chain and sends one chunk per batch through a bounded channel to
//!    the client; a JSON response body is read whole and goes through the same chain; either is
//!    decoded first if the upstream compressed it ([`coding`]);
//! 6. anything else streams back untouched. On a guarded route every body's fate is counted
//!    and logged ([`accounting`]).

pub mod accounting;
pub mod admin;
mod body;
mod coding;
mod events;
pub mod headers;
mod inspect;
pub mod lifecycle;

pub use body::{AnyBody, BoxError, ChannelBody, ProxyBody};

use crate::chain::{self, Chain, Link};
use crate::config::{OversizePolicy, ProxyConfig, ReconnectConfig};
use crate::host::Runtime;
use crate::pipeline::BatchLimits;
use accounting::{Direction, EnforcementRecord, Outcome, Reason};
use anyhow::{Context as _, bail};
use bytes::Bytes;
use headers::{AllowList, Refusal};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
pub use lifecycle::{Lifecycle, Phase, ProxyHandle};
use sluicegate_guest::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What the proxy sends upstream.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The upstream's base: scheme, authority and a path prefix that request paths are appended to.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    path: String,
}

/// Parses an upstream URL such as `http://127.0.0.1:3000` or `http://api.internal/v1`.
pub fn upstream_base(url: &str) -> anyhow::Result<UpstreamBase> {
    let uri: Uri = url.parse().with_context(|| format!("upstream `{url}` is not a URL"))?;
    let scheme = uri.scheme().cloned().with_context(|| format!("upstream `{url}` needs a scheme (http://)"))?;
    if scheme != http::uri::Scheme::HTTP {
        bail!("upstream `{url}`: only http:// upstreams are supported (terminate TLS in front of the upstream)");
    }
    let authority = uri.authority().cloned().with_context(|| format!("upstream `{url}` needs a host"))?;
    if uri.query().is_some() {
        bail!("upstream `{url}` must not have a query");
    }
    Ok(UpstreamBase { scheme, authority, path: uri.path().trim_end_matches('/').to_string() })
}

impl UpstreamBase {
    /// The upstream URI for a client request's path and query.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.path, path_and_query))
            .build()
    }

    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }
}

/// A route: a path prefix, its chains and what its chains inspect.
struct Route {
    prefix: String,
    /// Event streams and response bodies.
    chain: Chain,
    /// Request bodies.
    request_chain: Chain,
    rules: inspect::BodyRules,
    stats: Arc<RouteStats>,
}

/// Counters of one route: its event streams (those that pass through its chain) and the bytes
/// of every response it forwards.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub active_streams: AtomicU64,
    pub streams: AtomicU64,
    /// Upstream resumptions that succeeded, and attempts that failed.
    pub reconnects: AtomicU64,
    pub failed_reconnects: AtomicU64,
    /// Bytes of response bodies sent to clients: encoded events, and the bodies of responses
    /// that pass through untouched.
    pub bytes_out: AtomicU64,
    /// Every body of a guarded route, by direction, outcome and reason.
    pub bodies: accounting::BodyCounts,
}

impl RouteStats {
    /// Counts a stream on the route, and as active until the guard is dropped.
    fn stream_started(stats: &Arc<Self>) -> RouteStream {
        stats.streams.fetch_add(1, Ordering::Relaxed);
        stats.active_streams.fetch_add(1, Ordering::Relaxed);
        RouteStream(stats.clone())
    }
}

/// One active stream on a route; see [`RouteStats::stream_started`].
struct RouteStream(Arc<RouteStats>);

impl Drop for RouteStream {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Route {
    /// `body`, with its bytes counted as sent on this route.
    fn counted(&self, body: AnyBody) -> AnyBody {
        let stats = self.stats.clone();
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                stats.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed_unsync()
    }

    /// What counts a body's outcome on this route and writes its enforcement record.
    fn accounting<'a>(
        &'a self,
        stream_id: &'a str,
        direction: Direction,
        started: Instant,
    ) -> impl Fn(Outcome, Reason, u64, u64, &[chain::LinkRecord]) + 'a {
        move |outcome, reason, bytes_in, bytes_out, interceptors| {
            EnforcementRecord {
                stream_id,
                route: &self.prefix,
                direction,
                kind: "body",
                outcome,
                reason,
                end: None,
                bytes_in,
                bytes_out,
                duration: started.elapsed(),
                interceptors,
            }
            .log();
            self.stats.bodies.count(direction, outcome, reason);
        }
    }

    /// True if the route has a chain in either direction: then every body on it is accounted for.
    fn guarded(&self) -> bool {
        !self.chain.is_empty() || !self.request_chain.is_empty()
    }

    fn matches(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct Proxy {
    upstream: UpstreamBase,
    client: Client<HttpConnector, UpstreamBody>,
    /// Longest prefix first.
    routes: Vec<Route>,
    allowed_hosts: AllowList,
    allowed_origins: AllowList,
    preserve_host: bool,
    batch: BatchLimits,
    linger: Duration,
    reconnect: ReconnectConfig,
    max_event_bytes: usize,
    client_buffer: usize,
    lifecycle: Arc<Lifecycle>,
    interceptors: Vec<Link>,
}

impl Proxy {
    /// Builds the proxy: loads every interceptor of every route (compiling components), so that
    /// a bad config or component fails here, before anything listens. `listen` decides the
    /// default allow-lists.
    pub fn new(config: &ProxyConfig, runtime: &Runtime, listen: SocketAddr) -> anyhow::Result<Self> {
        Self::build(config, runtime, listen, Lifecycle::new())
    }

    /// A proxy for a new configuration that shares this one's live-stream count, stream ids and
    /// shutdown phase: what a reload installs with [`ProxyHandle::reload`].
    pub fn successor(&self, config: &ProxyConfig, runtime: &Runtime, listen: SocketAddr) -> anyhow::Result<Self> {
        Self::build(config, runtime, listen, self.lifecycle.clone())
    }

    fn build(
        config: &ProxyConfig,
        runtime: &Runtime,
        listen: SocketAddr,
        lifecycle: Arc<Lifecycle>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let upstream = upstream_base(config.upstream.as_deref().context("no upstream given (--upstream URL)")?)?;
        let mut routes = Vec::new();
        let mut interceptors = Vec::new();
        for route in &config.routes {
            let mut chain = |configs: &[crate::config::InterceptorConfig]| -> anyhow::Result<Chain> {
                let mut links = Vec::new();
                for ic in configs {
                    let interceptor = ic
                        .spec()?
                        .load_with_limits(runtime, Config::new(ic.entries()?), ic.limits(&config.limits))
                        .with_context(|| format!("route `{}`", route.prefix))?;
                    let link = Link::new(interceptor, ic.on_fault, config.limits.breaker());
                    interceptors.push(link.clone());
                    links.push(link);
                }
                Ok(Chain::from_links(links))
            };
            let response_chain = chain(&route.interceptors)?;
            let request_chain = chain(&route.request_interceptors)?;
            let rules = inspect::BodyRules {
                max_bytes: config.limits.max_body_bytes,
                pass_oversize: route.on_oversize.unwrap_or(config.limits.on_oversize) == OversizePolicy::Pass,
                extra_types: route.body_types.iter().map(|t| t.trim().to_ascii_lowercase()).collect(),
            };
            routes.push(Route {
                prefix: route.prefix.clone(),
                chain: response_chain,
                request_chain,
                rules,
                stats: Arc::default(),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.trim_end_matches('/').len()));
        let loopback = listen.ip().is_loopback();
        let list = |given: &Vec<String>, default: fn() -> AllowList| {
            if !given.is_empty() {
                AllowList::new(given.clone())
            } else if loopback {
                default()
            } else {
                AllowList::default()
            }
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(config.upstream_http2)
            .build(connector);
        Ok(Proxy {
            upstream,
            client,
            routes,
            allowed_hosts: list(&config.security.allowed_hosts, AllowList::loopback_hosts),
            allowed_origins: list(&config.security.allowed_origins, AllowList::loopback_origins),
            preserve_host: config.security.preserve_host,
            batch: BatchLimits { max_events: config.batch.max_events, max_bytes: config.batch.max_bytes },
            linger: Duration::from_millis(config.batch.linger_ms),
            reconnect: config.reconnect.clone(),
            max_event_bytes: config.limits.max_event_bytes,
            client_buffer: config.limits.client_buffer_batches,
            lifecycle,
            interceptors,
        })
    }

    /// Event streams being served right now.
    pub fn active_streams(&self) -> usize {
        self.lifecycle.active_streams()
    }

    /// The state shared with every configuration this process has run with.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// Guest stream states alive in all component interceptors (each is freed when its stream
    /// ends, however it ends).
    pub fn live_guest_streams(&self) -> usize {
        self.interceptors.iter().map(|l| l.interceptor().live_streams()).sum()
    }

    /// Every interceptor of every route (in config order), with its counters.
    pub fn links(&self) -> &[Link] {
        &self.interceptors
    }

    fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    /// Every route's prefix with its counters, longest prefix first.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &RouteStats)> {
        self.routes.iter().map(|r| (r.prefix.as_str(), &*r.stats))
    }

    /// Handles one client request.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        if self.lifecycle.phase() != Phase::Running {
            let mut response = text_response(StatusCode::SERVICE_UNAVAILABLE, "sluicegate is shutting down");
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        if let Err(refusal) = headers::check_host_and_origin(
            request.headers(),
            request.uri().authority().map(|a| a.as_str()),
            &self.allowed_hosts,
            &self.allowed_origins,
        ) {
            let (status, text) = match refusal {
                Refusal::InvalidHost => (StatusCode::MISDIRECTED_REQUEST, "Invalid Host header"),
                Refusal::InvalidOrigin => (StatusCode::FORBIDDEN, "Invalid Origin header"),
            };
            tracing::warn!(host = ?request.headers().get(header::HOST), origin = ?request.headers().get(header::ORIGIN), "{text}: refused");
            return text_response(status, text);
        }
        match self.forward(request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!("upstream request failed: {e:#}");
                text_response(StatusCode::BAD_GATEWAY, "sluicegate: the upstream could not be reached")
            }
        }
    }

    async fn forward(self: &Arc<Self>, request: Request<Incoming>) -> anyhow::Result<Response<ProxyBody>> {
        let (mut parts, body) = request.into_parts();
        let body = body.map_err(BoxError::from).boxed_unsync();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let client_headers = parts.headers.clone();
        let matched = self.route_for(parts.uri.path());
        let route = matched.filter(|r| r.guarded());
        headers::strip_hop_by_hop(&mut parts.headers);
        if !self.preserve_host {
            parts.headers.insert(header::HOST, HeaderValue::from_str(self.upstream.authority().as_str())?);
        }
        if route.is_some() || headers::accepts_event_stream(&parts.headers) {
            // What a guarded route inspects it must read: ask for it uncompressed (and decode it
            // anyway if the upstream compresses regardless).
            parts.headers.insert(header::ACCEPT_ENCODING, headers::identity());
        }
        parts.headers.append(header::VIA, HeaderValue::from_static("1.1 sluicegate"));
        let stream_id = self.lifecycle.next_stream_id().to_string();
        let context = sluicegate_guest::StreamContext {
            stream_id: stream_id.clone(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            request_headers: headers::context_pairs(&client_headers),
            status: 0,
            response_headers: Vec::new(),
        };
        let body = match route {
            Some(route) => match self.inspect_request(route, &mut parts.headers, body, &context).await {
                Ok(body) => body,
                Err(answer) => return Ok(answer),
            },
            None => body,
        };
        let upstream_uri = self.upstream.uri_for(&path_and_query)?;
        let mut upstream_request = Request::from_parts(parts.clone(), body);
        *upstream_request.uri_mut() = upstream_uri.clone();
        *upstream_request.version_mut() = http::Version::HTTP_11;
        let response = self.client.request(upstream_request).await?;

        let (mut head, body) = response.into_parts();
        let body = body.map_err(BoxError::from).boxed_unsync();
        headers::strip_hop_by_hop(&mut head.headers);
        let Some(route) = matched else {
            return Ok(Response::from_parts(head, body));
        };
        if !route.guarded() {
            return Ok(Response::from_parts(head, route.counted(body)));
        }
        let context = sluicegate_guest::StreamContext {
            status: head.status.as_u16(),
            response_headers: headers::context_pairs(&head.headers),
            ..context
        };
        let started = Instant::now();
        let record = route.accounting(&stream_id, Direction::Response, started);
        let no_body = parts.method == http::Method::HEAD
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED
            || inspect::is_empty(&body, &head.headers);
        if no_body {
            record(Outcome::Passed, Reason::Empty, 0, 0, &[]);
            return Ok(Response::from_parts(head, body));
        }
        if route.chain.is_empty() {
            record(Outcome::Passed, Reason::NoChain, 0, 0, &[]);
            return Ok(Response::from_parts(head, route.counted(body)));
        }
        let event_stream = headers::is_event_stream(&head.headers);
        if !event_stream && !route.rules.inspects(&head.headers) {
            record(Outcome::Passed, Reason::MediaType, 0, 0, &[]);
            return Ok(Response::from_parts(head, route.counted(body)));
        }
        let coding = match coding::Coding::of(&head.headers) {
            Ok(coding) => coding,
            Err(coding) => {
                tracing::warn!(
                    stream_id,
                    coding,
                    "the upstream's response is in a content coding the proxy cannot decode; refused"
                );
                record(Outcome::Refused, Reason::UnsupportedEncoding, 0, 0, &[]);
                return Ok(inspect::refusal_response(
                    StatusCode::BAD_GATEWAY,
                    "unsupported_encoding",
                    "sluicegate: the upstream's response could not be inspected (unknown content coding)",
                    &[],
                ));
            }
        };
        if coding != coding::Coding::Identity {
            tracing::debug!(
                stream_id,
                coding = coding.name(),
                "decoding the upstream's compressed response to inspect it"
            );
        }
        let body = coding.decode(body);
        if !event_stream {
            let inspected =
                self.inspect_body(route, Direction::Response, &mut head.headers, body, coding, &context, record).await;
            return Ok(match inspected {
                Ok(body) => Response::from_parts(head, route.counted(body)),
                Err(answer) => answer,
            });
        }
        head.headers.remove(header::CONTENT_ENCODING);
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.entry("x-accel-buffering").or_insert(HeaderValue::from_static("no"));
        let chain_stream = match route.chain.open(&context) {
            Ok(stream) => stream,
            Err(fault) => {
                tracing::error!(stream = %stream_id, "{fault}; refusing the stream");
                record(Outcome::Refused, Reason::Fault, 0, 0, &[]);
                return Ok(text_response(StatusCode::BAD_GATEWAY, "sluicegate: an interceptor failed to start"));
            }
        };
        route.stats.bodies.count(Direction::Response, Outcome::Inspected, Reason::EventStream);
        let (tx, client_body) = ChannelBody::new(self.client_buffer);
        let resume = events::Resume::new(&parts, upstream_uri, &self.reconnect);
        let stream = events::EventStream::new(
            self.clone(),
            route.stats.clone(),
            chain_stream,
            tx,
            resume,
            stream_id.clone(),
            route.prefix.clone(),
        );
        // Every log line about this stream, the guests' own included, carries its id.
        let span = tracing::info_span!("stream", stream_id = %context.stream_id, path = %context.path);
        tokio::spawn(tracing::Instrument::instrument(stream.run(body), span));
        Ok(Response::from_parts(head, client_body.boxed_unsync()))
    }

    /// A request body on a guarded route: through the request chain if it has one and the body
    /// is one it inspects, else forwarded as it is; counted and logged either way. `Err` is the
    /// answer to a refused request.
    async fn inspect_request(
        &self,
        route: &Route,
        headers: &mut http::HeaderMap,
        body: AnyBody,
        context: &sluicegate_guest::StreamContext,
    ) -> Result<AnyBody, Response<ProxyBody>> {
        let started = Instant::now();
        let record = route.accounting(&context.stream_id, Direction::Request, started);
        if inspect::is_empty(&body, headers) {
            record(Outcome::Passed, Reason::Empty, 0, 0, &[]);
            return Ok(body);
        }
        if route.request_chain.is_empty() {
            record(Outcome::Passed, Reason::NoChain, 0, 0, &[]);
            return Ok(body);
        }
        if !route.rules.inspects(headers) {
            record(Outcome::Passed, Reason::MediaType, 0, 0, &[]);
            return Ok(body);
        }
        let coding = match coding::Coding::of(headers) {
            Ok(coding) => coding,
            Err(coding) => {
                tracing::warn!(
                    stream_id = context.stream_id,
                    coding,
                    "a request body in a content coding the proxy cannot decode; refused"
                );
                record(Outcome::Refused, Reason::UnsupportedEncoding, 0, 0, &[]);
                let message = "sluicegate: the request body's content coding is not supported";
                return Err(inspect::refusal_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    message,
                    &[],
                ));
            }
        };
        self.inspect_body(route, Direction::Request, headers, coding.decode(body), coding, context, record).await
    }

    /// A body that the route's chain for `direction` inspects (already decoded from `coding`):
    /// read whole, through the chain, sent on with its length (`Ok`, the headers set to match);
    /// or refused (`Err`, the answer), or passed when oversize by the route's rule.
    #[allow(clippy::too_many_arguments)]
    async fn inspect_body(
        &self,
        route: &Route,
        direction: Direction,
        headers: &mut http::HeaderMap,
        body: AnyBody,
        coding: coding::Coding,
        context: &sluicegate_guest::StreamContext,
        record: impl Fn(Outcome, Reason, u64, u64, &[chain::LinkRecord]),
    ) -> Result<AnyBody, Response<ProxyBody>> {
        let (chain, what, refused_status, bad_status) = match direction {
            Direction::Request => {
                (&route.request_chain, "the request body", StatusCode::FORBIDDEN, StatusCode::BAD_REQUEST)
            }
            Direction::Response => {
                (&route.chain, "the upstream's response", StatusCode::BAD_GATEWAY, StatusCode::BAD_GATEWAY)
            }
        };
        let oversize_status = match direction {
            Direction::Request => StatusCode::PAYLOAD_TOO_LARGE,
            Direction::Response => StatusCode::BAD_GATEWAY,
        };
        let refuse = inspect::refusal_response;
        let rules = &route.rules;
        let oversize = || {
            let message =
                format!("sluicegate: {what} is larger than the {} bytes a guardrail inspects", rules.max_bytes);
            refuse(oversize_status, "body_too_large", &message, &[])
        };
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let too_long = declared.is_some_and(|n| n > rules.max_bytes as u64);
        if coding == coding::Coding::Identity && too_long && !rules.pass_oversize {
            record(Outcome::Refused, Reason::Oversize, 0, 0, &[]);
            return Err(oversize());
        }
        headers.remove(header::CONTENT_ENCODING);
        let whole = match inspect::collect(body, rules.max_bytes).await {
            inspect::Collected::Whole(whole) => whole,
            inspect::Collected::Oversize { read, rest } => {
                let read_bytes = read.iter().map(|b| b.len() as u64).sum();
                if rules.pass_oversize {
                    tracing::warn!(
                        stream_id = context.stream_id,
                        limit = rules.max_bytes,
                        "{what} passes uninspected: over the size limit (on_oversize = \"pass\")"
                    );
                    record(Outcome::Passed, Reason::Oversize, read_bytes, read_bytes, &[]);
                    headers.remove(header::CONTENT_LENGTH);
                    return Ok(inspect::rejoin(read, rest));
                }
                record(Outcome::Refused, Reason::Oversize, read_bytes, 0, &[]);
                return Err(oversize());
            }
            inspect::Collected::Failed(why) => {
                tracing::warn!(stream_id = context.stream_id, "reading {what} failed: {why}");
                record(Outcome::Refused, Reason::ReadFailed, 0, 0, &[]);
                return Err(refuse(
                    bad_status,
                    "body_unreadable",
                    &format!("sluicegate: {what} could not be read"),
                    &[],
                ));
            }
        };
        let Ok(text) = std::str::from_utf8(&whole) else {
            tracing::warn!(stream_id = context.stream_id, "{what} is not UTF-8 text: refused");
            record(Outcome::Refused, Reason::InvalidUtf8, whole.len() as u64, 0, &[]);
            let message = format!("sluicegate: {what} is not UTF-8 text, so it could not be inspected");
            return Err(refuse(bad_status, "invalid_utf8", &message, &[]));
        };
        let (verdict, stream) = inspect::run(chain, context, &whole, text);
        let records = stream.as_ref().map(|s| s.records()).unwrap_or_default();
        let bytes_in = whole.len() as u64;
        match verdict {
            inspect::BodyVerdict::Forward { body, changed } => {
                record(Outcome::Inspected, Reason::Body, bytes_in, body.len() as u64, records);
                inspect::set_body_headers(headers, body.len(), changed);
                Ok(Full::new(body).map_err(BoxError::from).boxed_unsync())
            }
            inspect::BodyVerdict::Refused { by, status, message } => {
                tracing::info!(stream_id = context.stream_id, interceptor = by, "{what} was refused: {message}");
                record(Outcome::Refused, Reason::Interceptor, bytes_in, 0, records);
                let message = match message.is_empty() {
                    true => format!("refused by {by}"),
                    false => format!("refused by {by}: {message}"),
                };
                Err(refuse(status.unwrap_or(refused_status), "refused", &message, &whole))
            }
            inspect::BodyVerdict::Faulted(fault) => {
                tracing::error!(stream_id = context.stream_id, "{fault}; {what} is refused (fail-closed)");
                record(Outcome::Refused, Reason::Fault, bytes_in, 0, records);
                let message = format!("interceptor {} failed", fault.name);
                Err(refuse(StatusCode::BAD_GATEWAY, "interceptor_error", &message, &whole))
            }
        }
    }
}

fn text_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response =
        Response::new(Full::new(Bytes::from_static(text.as_bytes())).map_err(BoxError::from).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// An empty upstream request body (for resumption requests).
fn empty_body() -> UpstreamBody {
    Empty::new().map_err(BoxError::from).boxed_unsync()
}

/// Accepts connections on `listener` and serves each with `proxy` (HTTP/1.1, and HTTP/2 with
/// prior knowledge) until the task is dropped or the proxy starts shutting down.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> anyhow::Result<()> {
    serve_handle(listener, ProxyHandle::new(proxy)).await
}

/// [`serve`] with whatever proxy `handle` holds at each request (so a reload takes effect).
/// Returns, closing the listener, when shutdown begins.
pub async fn serve_handle(listener: TcpListener, handle: Arc<ProxyHandle>) -> anyhow::Result<()> {
    let mut phase = handle.lifecycle().watch();
    loop {
        let accepted = tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Running) => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: wait a little rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let proxy = handle.current();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(request).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(20_000);
            if let Err(e) = builder.serve_connection(TokioIo::new(socket), service).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}
