//! The reverse proxy: forwards every request to the upstream and streams every response back;
//! responses that are event streams go through the route's chain of interceptors.
//!
//! One request's life:
//! 1. `Host` and `Origin` are checked (421 / 403), since `Host` is rewritten for the upstream;
//! 2. the route is chosen by the longest matching path prefix;
//! 3. the request (method, path, query, end-to-end headers, streamed body) goes upstream;
//! 4. a response that is not a `200 text/event-stream` streams back untouched;
//! 5. an event stream is handed to [`events::EventStream`], which parses, batches, runs the chain
//!    and sends one chunk per batch through a bounded channel to the client.

pub mod admin;
mod body;
mod events;
pub mod headers;
pub mod lifecycle;

pub use body::{BoxError, ChannelBody, ProxyBody};

use crate::chain::{Chain, Link};
use crate::config::{ProxyConfig, ReconnectConfig};
use crate::host::Runtime;
use crate::pipeline::BatchLimits;
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
use std::time::Duration;
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

/// A route: a path prefix and its chain.
struct Route {
    prefix: String,
    chain: Chain,
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
            let mut links = Vec::new();
            for ic in &route.interceptors {
                let interceptor = ic
                    .spec()?
                    .load_with_limits(runtime, Config::new(ic.entries()?), ic.limits(&config.limits))
                    .with_context(|| format!("route `{}`", route.prefix))?;
                let link = Link::new(interceptor, ic.on_fault, config.limits.breaker());
                interceptors.push(link.clone());
                links.push(link);
            }
            routes.push(Route { prefix: route.prefix.clone(), chain: Chain::from_links(links), stats: Arc::default() });
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
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let client_headers = parts.headers.clone();
        headers::strip_hop_by_hop(&mut parts.headers);
        if !self.preserve_host {
            parts.headers.insert(header::HOST, HeaderValue::from_str(self.upstream.authority().as_str())?);
        }
        if headers::accepts_event_stream(&parts.headers) {
            parts.headers.insert(header::ACCEPT_ENCODING, headers::identity());
        }
        parts.headers.append(header::VIA, HeaderValue::from_static("1.1 sluicegate"));
        let upstream_uri = self.upstream.uri_for(&path_and_query)?;
        let mut upstream_request = Request::from_parts(parts.clone(), body.map_err(BoxError::from).boxed_unsync());
        *upstream_request.uri_mut() = upstream_uri.clone();
        *upstream_request.version_mut() = http::Version::HTTP_11;
        let response = self.client.request(upstream_request).await?;

        let route = self.route_for(parts.uri.path());
        let encoded = response.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity");
        let event_stream = response.status() == StatusCode::OK && headers::is_event_stream(response.headers());
        let (mut head, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut head.headers);
        let Some(route) = route else {
            return Ok(Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync()));
        };
        if !event_stream || route.chain.is_empty() || encoded {
            if event_stream && encoded && !route.chain.is_empty() {
                tracing::warn!(uri = %upstream_uri, "the upstream compressed an event stream despite `Accept-Encoding: identity`; forwarding it uninspected");
            }
            // Passed through untouched, but counted on its route.
            let stats = route.stats.clone();
            let counted = body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    stats.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                frame
            });
            return Ok(Response::from_parts(head, counted.map_err(BoxError::from).boxed_unsync()));
        }
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.entry("x-accel-buffering").or_insert(HeaderValue::from_static("no"));
        let stream_id = self.lifecycle.next_stream_id().to_string();
        let context = sluicegate_guest::StreamContext {
            stream_id: stream_id.clone(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            request_headers: headers::context_pairs(&client_headers),
            status: head.status.as_u16(),
            response_headers: headers::context_pairs(&head.headers),
        };
        let chain_stream = match route.chain.open(&context) {
            Ok(stream) => stream,
            Err(fault) => {
                tracing::error!(stream = %stream_id, "{fault}; refusing the stream");
                return Ok(text_response(StatusCode::BAD_GATEWAY, "sluicegate: an interceptor failed to start"));
            }
        };
        let (tx, client_body) = ChannelBody::new(self.client_buffer);
        let resume = events::Resume::new(&parts, upstream_uri, &self.reconnect);
        let stream = events::EventStream::new(self.clone(), route.stats.clone(), chain_stream, tx, resume);
        // Every log line about this stream, the guests' own included, carries its id.
        let span = tracing::info_span!("stream", stream_id = %context.stream_id, path = %context.path);
        tokio::spawn(tracing::Instrument::instrument(stream.run(body), span));
        Ok(Response::from_parts(head, client_body.boxed_unsync()))
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
