//! The reverse proxy: forwards every request to its route's upstream and streams every response
//! back; on a guarded route (one with a chain), bodies go through the route's interceptors.
//!
//! Where to find what:
//! - a request's life, phase by phase (admit, route, upstream head, request body, upstream
//!   request, response body, log): `request`, over one `RequestCtx`; every refusal is a
//!   `ProxyError` (`error`), whose `into_response` picks the status and body in one place;
//! - the canonical path and routing: `path`, `route`;
//! - what a body is, by its content: `content` (shape), `charset` (encodings), `coding`
//!   (compression); through a chain whole: `inspect`; as a stream of events or lines: `events`;
//! - limits on what the proxy takes at once (connections, streams, buffered bytes): `admission`;
//!   what happened to every body: `accounting`;
//! - building from a config: `build`; upstreams and TLS: `upstream`, `tls`; connections:
//!   `listener`; the threads that serve them: `workers`; reload and shutdown: `lifecycle`; the
//!   admin endpoints: `admin`.

// The layers below, under the names their modules always had in this code.
use sluicegate_contract::{batch, config, sse};
use sluicegate_host::{chain, engine, host, interceptor, spec, store};

mod accounting;
pub mod admin;
mod admission;
mod body;
mod build;
mod charset;
mod coding;
mod content;
mod driven;
mod error;
mod events;
mod headers;
mod inspect;
mod isolation;
pub mod lifecycle;
mod listener;
pub mod otlp_metrics;
mod path;
mod report;
mod request;
mod route;
pub mod telemetry;
mod tls;
mod upstream;
pub mod workers;

pub use body::{AnyBody, BoxError, ProxyBody};
pub use lifecycle::{Lifecycle, Phase, ProxyHandle, Threads};
pub use listener::{raise_descriptor_limit, serve_handle};
pub use route::RouteStats;

use crate::chain::Link;
use crate::config::{ProxyConfig, ReconnectConfig};
use crate::host::Runtime;
use anyhow::bail;
use bytes::Bytes;
use error::ProxyError;
use events::StreamSettings;
use headers::AllowList;
use http_body_util::{BodyExt, Empty};
use route::Routes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use tokio::net::TcpListener;
use upstream::Upstream;

/// What the proxy sends upstream.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Everything a request handler needs, shared by all connections.
pub struct Proxy {
    /// Where requests that match no route go (the top-level `upstream`), if anywhere.
    default_upstream: Option<Arc<Upstream>>,
    /// Every distinct upstream, in order of first use.
    upstreams: Vec<Arc<Upstream>>,
    routes: Routes,
    client_side: Arc<listener::ClientSide>,
    max_streams: usize,
    /// `limits.max_buffered_bytes`: bytes held for inspection across the proxy.
    max_buffered_bytes: usize,
    /// The slot counter of requests that match no route.
    unrouted_slots: Arc<AtomicUsize>,
    allowed_hosts: AllowList,
    allowed_origins: AllowList,
    preserve_host: bool,
    /// What every event stream takes from the configuration.
    stream: StreamSettings,
    reconnect: ReconnectConfig,
    lifecycle: Arc<lifecycle::Lifecycle>,
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

    /// What a new event stream runs with.
    fn stream_settings(&self) -> StreamSettings {
        self.stream.clone()
    }
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

/// Entry points for the fuzz targets in `fuzz/`, over what reads untrusted bytes before any
/// interceptor does: not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// The shape the first bytes of a body show, by name (`None`: more bytes are needed).
    pub fn sniff(prefix: &[u8], complete: bool) -> Option<&'static str> {
        super::content::sniff(prefix, complete, 4096, None).map(|shape| shape.name())
    }

    /// A whole body as UTF-8 text, as the chain would get it (`None`: refused).
    pub fn decode(body: &[u8], charset: Option<&str>) -> Option<String> {
        super::charset::decode_whole(body, charset).ok().map(|decoded| decoded.text.into_owned())
    }

    /// A stream's bytes as UTF-8, fed in `chunks`.
    pub fn decode_stream(chunks: &[&[u8]]) -> Vec<u8> {
        let mut decoder = super::charset::StreamDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&decoder.feed(bytes::Bytes::copy_from_slice(chunk), false).unwrap_or_default());
        }
        out.extend_from_slice(&decoder.feed(bytes::Bytes::new(), true).unwrap_or_default());
        out
    }

    /// A request path in its canonical spelling (`None`: refused).
    pub fn normalise(path: &str) -> Option<String> {
        super::path::normalise(path).ok().map(|normal| normal.path)
    }
}
