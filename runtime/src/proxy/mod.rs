//! The reverse proxy: forwards every request to the upstream and streams every response back;
//! responses that are event streams go through the route's chain of interceptors.
//!
//! One request's life:
//! 1. `Host` and `Origin` are checked (421 / 403), since `Host` is rewritten for the upstream;
//! 2. the route is chosen by the longest matching path prefix;
//! 3. on a route with a request chain, a JSON request body is read whole and goes through it
//!    (`inspect`); a refused request never reaches the upstream;
//! 4. the request (method, path, query, end-to-end headers, body) goes upstream;
//! 5. on a route with a chain, an event stream is handed to `events::EventStream`, which
//!    parses, batches, runs the chain and sends one chunk per batch through a bounded channel to
//!    the client; a JSON response body is read whole and goes through the same chain; either is
//!    decoded first if the upstream compressed it (`coding`);
//! 6. anything else streams back untouched. On a guarded route every body's fate is counted
//!    and logged (`accounting`).

mod accounting;
pub mod admin;
mod admission;
mod body;
mod coding;
mod events;
mod headers;
mod inspect;
mod isolation;
pub mod lifecycle;
mod listener;
mod tls;
mod upstream;

pub use body::{AnyBody, BoxError, ProxyBody};

use crate::chain::{self, BreakerConfig, Chain, Link};
use crate::config::{OversizePolicy, ProxyConfig, ReconnectConfig};
use crate::engine::BatchLimits;
use crate::host::{Limits, Runtime};
use crate::spec::Spec;
use accounting::{Direction, EnforcementRecord, Outcome, Reason};
use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use headers::{AllowList, Refusal};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
pub use lifecycle::{Lifecycle, Phase, ProxyHandle};
pub use listener::{raise_descriptor_limit, serve_handle};
use sluicegate_guest::{Config, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use upstream::{Upstream, UpstreamBase, UpstreamSettings};

/// Why a request was not forwarded, by whose fault, which picks the answer: the client's (400)
/// or the proxy's own (500). (The upstream's failures are answered where they happen, 502 or
/// 504, with their typed [`upstream::UpstreamError`].)
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("a client's request cannot be forwarded: {0}")]
    Client(String),
    #[error("the proxy failed to forward a request: {0}")]
    Proxy(String),
}

/// What the proxy sends upstream.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A route: a path prefix, its upstream, what it changes in requests, its chains and what its
/// chains inspect.
struct Route {
    prefix: String,
    upstream: Arc<Upstream>,
    strip_prefix: bool,
    /// Set on every request (values marked sensitive: HTTP/2 never indexes them).
    set_headers: Vec<(HeaderName, HeaderValue)>,
    remove_headers: Vec<HeaderName>,
    /// Event streams on this route holding a slot (shared across reloads), and the limit.
    stream_slots: Arc<AtomicUsize>,
    max_streams: usize,
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
    /// Event streams on the route now.
    pub active_streams: AtomicU64,
    /// Event streams it has served.
    pub streams: AtomicU64,
    /// Upstream resumptions that succeeded, and attempts that failed.
    pub reconnects: AtomicU64,
    /// Resumption attempts that failed.
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

    /// The path and query sent upstream: the client's, without the prefix if the route strips it.
    fn upstream_path(&self, path_and_query: &str) -> String {
        let prefix = self.prefix.trim_end_matches('/');
        match path_and_query.strip_prefix(prefix) {
            Some(rest) if self.strip_prefix && !prefix.is_empty() => match rest.starts_with('/') {
                true => rest.to_string(),
                false => format!("/{rest}"),
            },
            _ => path_and_query.to_string(),
        }
    }

    /// The route's header changes, after the hop-by-hop headers are gone.
    fn rewrite_headers(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove_headers {
            headers.remove(name);
        }
        for (name, value) in &self.set_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct Proxy {
    /// Where requests that match no route go (the top-level `upstream`), if anywhere.
    default_upstream: Option<Arc<Upstream>>,
    /// Every distinct upstream, in order of first use.
    upstreams: Vec<Arc<Upstream>>,
    /// Longest prefix first.
    routes: Vec<Route>,
    client_side: Arc<listener::ClientSide>,
    max_streams: usize,
    /// The slot counter of requests that match no route.
    unrouted_slots: Arc<AtomicUsize>,
    allowed_hosts: AllowList,
    allowed_origins: AllowList,
    preserve_host: bool,
    batch: BatchLimits,
    linger: Duration,
    reconnect: ReconnectConfig,
    max_event_bytes: usize,
    lifecycle: Arc<Lifecycle>,
    interceptors: Vec<Link>,
    store: Arc<crate::store::SharedStore>,
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
        let next = Self::build(config, runtime, listen, self.lifecycle.clone())?;
        if next.client_side.tls.is_some() != self.client_side.tls.is_some() {
            bail!("turning TLS for clients on or off takes a restart (the listener keeps its scheme)");
        }
        Ok(next)
    }

    fn build(
        config: &ProxyConfig,
        runtime: &Runtime,
        listen: SocketAddr,
        lifecycle: Arc<Lifecycle>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let limits = &config.limits;
        let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
        let mut upstream_for = |url: &str, ca: Option<&PathBuf>, cert: Option<&PathBuf>, key: Option<&PathBuf>| {
            let identity = cert.zip(key).map(|(cert, key)| tls::Identity { cert: cert.clone(), key: key.clone() });
            let settings = UpstreamSettings {
                base: UpstreamBase::parse(url)?,
                ca: ca.cloned(),
                identity,
                http2_only: config.upstream_http2,
                connect_timeout: limits.upstream_connect_timeout_ms,
                header_timeout: (!limits.upstream_header_timeout_ms.is_zero())
                    .then_some(limits.upstream_header_timeout_ms),
            };
            if let Some(known) = upstreams.iter().find(|u| *u.settings() == settings) {
                return anyhow::Ok(known.clone());
            }
            let upstream = Arc::new(Upstream::new(settings).with_context(|| format!("upstream {url}"))?);
            upstreams.push(upstream.clone());
            Ok(upstream)
        };
        let default_upstream = match &config.upstream {
            Some(url) => Some(upstream_for(
                url,
                config.upstream_ca.as_ref(),
                config.upstream_client_cert.as_ref(),
                config.upstream_client_key.as_ref(),
            )?),
            None => None,
        };
        if default_upstream.is_none() && config.routes.iter().all(|r| r.upstream.is_none()) {
            bail!("no upstream given (--upstream URL, or `upstream` in the config or on a route)");
        }
        let store = lifecycle.store(&config.store).context("[store]")?;
        let mut routes = Vec::new();
        let mut interceptors = Vec::new();
        for route in &config.routes {
            let mut chain = |configs: &[crate::config::InterceptorConfig]| -> anyhow::Result<Chain> {
                let mut links = Vec::new();
                for ic in configs {
                    let spec: Spec = ic.spec.parse().map_err(|e| anyhow!("interceptor `{}`: {e}", ic.spec))?;
                    let interceptor = spec
                        .load_with_limits(
                            runtime,
                            Config::new(ic.entries()?).with_store(Store::new(Arc::new(store.scoped(ic.store_scope())))),
                            Limits::for_interceptor(limits, ic),
                        )
                        .with_context(|| format!("route `{}`", route.prefix))?;
                    let link = Link::new(interceptor, ic.on_fault, BreakerConfig::from(limits));
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
            let at = |key: &str| format!("route `{}`: {key}", route.prefix);
            // A route with neither its own URL nor its own TLS files shares the default upstream.
            let own_tls = route.upstream_ca.is_some() || route.upstream_client_cert.is_some();
            let upstream = match (&route.upstream, &default_upstream) {
                (None, Some(default)) if !own_tls => default.clone(),
                (url, _) => upstream_for(
                    url.as_deref()
                        .or(config.upstream.as_deref())
                        .with_context(|| at("has no upstream (set `upstream` on the route or at the top level)"))?,
                    route.upstream_ca.as_ref().or(config.upstream_ca.as_ref()),
                    route.upstream_client_cert.as_ref().or(config.upstream_client_cert.as_ref()),
                    route.upstream_client_key.as_ref().or(config.upstream_client_key.as_ref()),
                )
                .with_context(|| at("upstream"))?,
            };
            let mut set_headers = Vec::new();
            for (name, template) in &route.set_request_headers {
                let name = HeaderName::from_bytes(name.as_bytes()).with_context(|| at("set_request_headers"))?;
                let value =
                    crate::config::expand_env(template).with_context(|| at(&format!("set_request_headers.{name}")))?;
                // Never the value in an error: it may hold a credential.
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    anyhow::anyhow!(
                        "{}: the value is not a valid header value",
                        at(&format!("set_request_headers.{name}"))
                    )
                })?;
                value.set_sensitive(true);
                set_headers.push((name, value));
            }
            let host = upstream.base().authority().host().trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !set_headers.is_empty() && !upstream.base().is_https() && !loopback {
                tracing::warn!(
                    route = route.prefix,
                    upstream = upstream.name(),
                    "set_request_headers are sent to a plain-HTTP upstream: credentials cross the network unencrypted"
                );
            }
            let remove_headers = route
                .remove_request_headers
                .iter()
                .map(|name| HeaderName::from_bytes(name.as_bytes()).with_context(|| at("remove_request_headers")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            routes.push(Route {
                prefix: route.prefix.clone(),
                upstream,
                strip_prefix: route.strip_prefix,
                set_headers,
                remove_headers,
                stream_slots: lifecycle.admission.route_counter(&route.prefix),
                max_streams: route.max_streams.unwrap_or(0),
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
        let tls = match &config.tls {
            Some(files) => {
                let identity = tls::Identity { cert: files.cert.clone(), key: files.key.clone() };
                let server = tls::server_config(&identity).context("[tls]")?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
            }
            None => None,
        };
        let client_side = Arc::new(listener::ClientSide {
            tls,
            max_connections: limits.max_connections,
            header_read_timeout: limits.header_read_timeout_ms,
            idle_timeout: limits.client_idle_timeout_ms,
            max_header_bytes: limits.max_request_header_bytes,
            retry_after: HeaderValue::from(limits.retry_after_seconds),
        });
        let unrouted_slots = lifecycle.admission.route_counter("");
        Ok(Proxy {
            default_upstream,
            upstreams,
            routes,
            client_side,
            max_streams: limits.max_streams,
            unrouted_slots,
            allowed_hosts: list(&config.security.allowed_hosts, AllowList::loopback_hosts),
            allowed_origins: list(&config.security.allowed_origins, AllowList::loopback_origins),
            preserve_host: config.security.preserve_host,
            batch: BatchLimits::from(&config.batch),
            linger: config.batch.linger_ms,
            reconnect: config.reconnect.clone(),
            max_event_bytes: config.limits.max_event_bytes,
            lifecycle,
            interceptors,
            store,
        })
    }

    /// The interceptors' store (memory, or the Redis server of `[store] url`).
    pub fn store(&self) -> &Arc<crate::store::SharedStore> {
        &self.store
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

    /// Every route's prefix, its upstream's name and its counters, longest prefix first.
    pub fn routes_with_upstreams(&self) -> impl Iterator<Item = (&str, &str, &RouteStats)> {
        self.routes.iter().map(|r| (r.prefix.as_str(), r.upstream.name(), &*r.stats))
    }

    /// Every distinct upstream, with its counters.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
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
            Err(e @ ForwardError::Client(_)) => {
                tracing::warn!("{e}");
                text_response(StatusCode::BAD_REQUEST, "sluicegate: the request cannot be forwarded")
            }
            Err(e @ ForwardError::Proxy(_)) => {
                tracing::error!("{e}");
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "sluicegate: internal error")
            }
        }
    }

    /// A slot for an event stream on `route` (None: a request that matches no route), or the
    /// 503 that refuses it.
    #[allow(clippy::result_large_err)] // the refusal is the answer, built only when refusing
    fn stream_slot(&self, route: Option<&Route>) -> Result<admission::StreamSlot, Response<ProxyBody>> {
        let (counter, max, prefix) = match route {
            Some(r) => (&r.stream_slots, r.max_streams, r.prefix.as_str()),
            None => (&self.unrouted_slots, 0, ""),
        };
        self.lifecycle.admission.stream_slot(self.max_streams, counter, max, prefix).map_err(|limit| {
            tracing::warn!(route = prefix, ?limit, "an event stream was refused: too many streams at once");
            let message = match limit {
                admission::StreamLimit::Proxy => "sluicegate: too many event streams (limits.max_streams)",
                admission::StreamLimit::Route => "sluicegate: too many event streams on this route (max_streams)",
            };
            listener::over_limit_response(message, &self.client_side.retry_after)
        })
    }

    async fn forward(self: &Arc<Self>, request: Request<Incoming>) -> Result<Response<ProxyBody>, ForwardError> {
        let (mut parts, body) = request.into_parts();
        let body = body.map_err(BoxError::from).boxed_unsync();
        let client_path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let client_headers = parts.headers.clone();
        let matched = self.route_for(parts.uri.path());
        let (upstream, path_and_query) = match (matched, &self.default_upstream) {
            (Some(route), _) => (&route.upstream, route.upstream_path(client_path)),
            (None, Some(upstream)) => (upstream, client_path.to_string()),
            (None, None) => return Ok(text_response(StatusCode::NOT_FOUND, "sluicegate: no route for this path")),
        };
        let route = matched.filter(|r| r.guarded());
        headers::strip_hop_by_hop(&mut parts.headers);
        if !self.preserve_host {
            let authority = HeaderValue::from_str(upstream.base().authority().as_str())
                .map_err(|e| ForwardError::Proxy(format!("the upstream's authority is not a Host value: {e}")))?;
            parts.headers.insert(header::HOST, authority);
        }
        let wants_stream = headers::accepts_event_stream(&parts.headers);
        if route.is_some() || wants_stream {
            // What a guarded route inspects it must read: ask for it uncompressed (and decode it
            // anyway if the upstream compresses regardless).
            parts.headers.insert(header::ACCEPT_ENCODING, headers::identity());
        }
        parts.headers.append(header::VIA, HeaderValue::from_static("1.1 sluicegate"));
        // A request that asks for an event stream takes its slot now, before anything is sent.
        let mut slot = match wants_stream {
            true => match self.stream_slot(matched) {
                Ok(slot) => Some(slot),
                Err(refusal) => return Ok(refusal),
            },
            false => None,
        };
        if let Some(route) = matched {
            route.rewrite_headers(&mut parts.headers);
        }
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
        let upstream_uri = upstream.base().uri_for(&path_and_query).map_err(|e| {
            ForwardError::Client(format!("the request's path does not make an upstream URI ({path_and_query}): {e}"))
        })?;
        let mut upstream_request = Request::from_parts(parts.clone(), body);
        *upstream_request.uri_mut() = upstream_uri.clone();
        *upstream_request.version_mut() = http::Version::HTTP_11;
        let response = match upstream.send(upstream_request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(stream_id, "{}", upstream::chain_text(&e));
                return Ok(text_response(e.status(), e.client_message()));
            }
        };
        if headers::is_event_stream(response.headers()) {
            if slot.is_none() {
                // The request did not say it wanted a stream (LLM APIs): the slot is taken now.
                match self.stream_slot(matched) {
                    Ok(taken) => slot = Some(taken),
                    Err(refusal) => return Ok(refusal),
                }
            }
        } else {
            slot = None;
        }
        let response =
            self.forward_response(response, matched, parts, context, stream_id, upstream, upstream_uri).await;
        Ok(match slot {
            Some(slot) => response.map(|body| admission::WithSlot::new(body, slot).boxed_unsync()),
            None => response,
        })
    }

    /// The upstream's response, through the route's chain if it has one.
    #[allow(clippy::too_many_arguments)]
    async fn forward_response(
        self: &Arc<Self>,
        response: Response<Incoming>,
        matched: Option<&Route>,
        parts: http::request::Parts,
        context: sluicegate_guest::StreamContext,
        stream_id: String,
        upstream: &Arc<Upstream>,
        upstream_uri: http::Uri,
    ) -> Response<ProxyBody> {
        let (mut head, body) = response.into_parts();
        let body = body.map_err(BoxError::from).boxed_unsync();
        headers::strip_hop_by_hop(&mut head.headers);
        let Some(route) = matched else {
            return Response::from_parts(head, body);
        };
        if !route.guarded() {
            return Response::from_parts(head, route.counted(body));
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
            return Response::from_parts(head, body);
        }
        if route.chain.is_empty() {
            record(Outcome::Passed, Reason::NoChain, 0, 0, &[]);
            return Response::from_parts(head, route.counted(body));
        }
        let event_stream = headers::is_event_stream(&head.headers);
        if !event_stream && !route.rules.inspects(&head.headers) {
            record(Outcome::Passed, Reason::MediaType, 0, 0, &[]);
            return Response::from_parts(head, route.counted(body));
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
                return inspect::refusal_response(
                    StatusCode::BAD_GATEWAY,
                    "unsupported_encoding",
                    "sluicegate: the upstream's response could not be inspected (unknown content coding)",
                    &[],
                );
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
            return match inspected {
                Ok(body) => Response::from_parts(head, route.counted(body)),
                Err(answer) => answer,
            };
        }
        head.headers.remove(header::CONTENT_ENCODING);
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.entry("x-accel-buffering").or_insert(HeaderValue::from_static("no"));
        let chain_stream = match route.chain.open(&context) {
            Ok(stream) => stream,
            Err(fault) => {
                tracing::error!(stream = %stream_id, "{fault}; refusing the stream");
                record(Outcome::Refused, Reason::Fault, 0, 0, &[]);
                return text_response(StatusCode::BAD_GATEWAY, "sluicegate: an interceptor failed to start");
            }
        };
        route.stats.bodies.count(Direction::Response, Outcome::Inspected, Reason::EventStream);
        let resume = events::Resume::new(&parts, upstream.clone(), upstream_uri, &self.reconnect);
        let stream = events::EventStream::new(
            self.clone(),
            route.stats.clone(),
            chain_stream,
            resume,
            stream_id.clone(),
            route.prefix.clone(),
        );
        // Every log line about this stream, the guests' own included, carries its id.
        let span = tracing::info_span!("stream", stream_id = %context.stream_id, path = %context.path);
        Response::from_parts(head, stream.into_body(body, span).boxed_unsync())
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
        let (verdict, stream) = isolation::chain_call(chain.is_slow(), || inspect::run(chain, context, &whole, text));
        let records = stream.as_ref().map(|s| s.records()).unwrap_or_default();
        let bytes_in = whole.len() as u64;
        match verdict {
            inspect::BodyVerdict::Forward { body, changed } => {
                record(Outcome::Inspected, Reason::Body, bytes_in, body.len() as u64, records);
                inspect::set_body_headers(headers, body.len(), changed);
                Ok(Full::new(body).map_err(BoxError::from).boxed_unsync())
            }
            inspect::BodyVerdict::Refused { by, status, message, retry_after } => {
                tracing::info!(stream_id = context.stream_id, interceptor = by, "{what} was refused: {message}");
                record(Outcome::Refused, Reason::Interceptor, bytes_in, 0, records);
                let message = match message.is_empty() {
                    true => format!("refused by {by}"),
                    false => format!("refused by {by}: {message}"),
                };
                let mut response = refuse(status.unwrap_or(refused_status), "refused", &message, &whole);
                if let Some(seconds) = retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                Err(response)
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

/// Accepts connections on `listener` and serves each with `proxy` (HTTP/1.1 and HTTP/2, over
/// TLS if configured) until the task is dropped or the proxy starts shutting down.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> anyhow::Result<()> {
    serve_handle(listener, ProxyHandle::new(proxy)).await
}
