//! Building a [`Proxy`] from a configuration: every upstream, route and interceptor, loaded and
//! checked before anything listens, so that a bad configuration fails here with an error that
//! names the key.

use super::events::StreamSettings;
use super::headers::{AllowList, HeaderChanges};
use super::inspect::BodyRules;
use super::lifecycle::Lifecycle;
use super::path;
use super::route::{Route, Routes};
use super::upstream::{Upstream, UpstreamBase, UpstreamSettings};
use super::{Proxy, listener, tls};
use crate::chain::{BreakerConfig, Chain, Link};
use crate::config::{InterceptorConfig, LimitsConfig, OversizePolicy, ProxyConfig, RouteConfig, UpstreamConfig};
use crate::engine::BatchLimits;
use crate::host::{Limits, Runtime};
use crate::spec::Spec;
use crate::store::SharedStore;
use anyhow::{Context as _, anyhow, bail};
use http::header::HeaderValue;
use sluicegate_guest::{Config, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What a guest needs besides the largest body it may be handed: its stack and its own heap.
const GUEST_HEADROOM: usize = 4 << 20;

impl Proxy {
    /// Builds the proxy: loads every interceptor of every route (compiling components), so that
    /// a bad config or component fails here, before anything listens. `listen` decides the
    /// default allow-lists.
    pub(super) fn build(
        config: &ProxyConfig,
        runtime: &Runtime,
        listen: SocketAddr,
        lifecycle: Arc<Lifecycle>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let limits = &config.limits;
        let mut upstreams = Upstreams { config, known: Vec::new(), pools: lifecycle.threads(config).pools() };
        let default_upstream = match &config.upstream {
            Some(url) => Some(upstreams.get(url, None)?),
            None => None,
        };
        if default_upstream.is_none() && config.routes.iter().all(|r| r.upstream.is_none()) {
            bail!("no upstream given (--upstream URL, or `upstream` in the config or on a route)");
        }
        let store = lifecycle.store(&config.store).context("[store]")?;
        let mut interceptors = Vec::new();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let upstream = upstreams.for_route(route, default_upstream.as_ref())?;
                let mut chain = |configs: &[InterceptorConfig]| -> anyhow::Result<Chain> {
                    let links = configs
                        .iter()
                        .map(|ic| load(runtime, limits, &store, route, ic))
                        .collect::<anyhow::Result<Vec<Link>>>()?;
                    interceptors.extend(links.iter().cloned());
                    Ok(Chain::from_links(links))
                };
                let (responses, requests) = (chain(&route.interceptors)?, chain(&route.request_interceptors)?);
                build_route(config, route, upstream, responses, requests, &lifecycle)
            })
            .collect::<anyhow::Result<Vec<Route>>>()?;
        let client_side = Arc::new(client_side(config)?);
        let (allowed_hosts, allowed_origins) = allow_lists(config, listen);
        Ok(Proxy {
            default_upstream,
            upstreams: upstreams.known,
            routes: Routes::new(routes),
            client_side,
            max_streams: limits.max_streams,
            max_buffered_bytes: limits.max_buffered_bytes,
            unrouted_slots: lifecycle.admission.route_counter(""),
            allowed_hosts,
            allowed_origins,
            preserve_host: config.security.preserve_host,
            stream: StreamSettings {
                batch: BatchLimits::from(&config.batch),
                linger: config.batch.linger_ms,
                max_event_bytes: limits.max_event_bytes,
                lifecycle: lifecycle.clone(),
            },
            reconnect: config.reconnect.clone(),
            lifecycle,
            interceptors,
            store,
        })
    }
}

/// How clients are served: TLS, connection limits and timeouts.
fn client_side(config: &ProxyConfig) -> anyhow::Result<listener::ClientSide> {
    let limits = &config.limits;
    let tls = match &config.tls {
        Some(files) => {
            let identity = tls::Identity { cert: files.cert.clone(), key: files.key.clone() };
            let server = tls::server_config(&identity).context("[tls]")?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
        }
        None => None,
    };
    Ok(listener::ClientSide {
        tls,
        max_connections: limits.max_connections,
        header_read_timeout: limits.header_read_timeout_ms,
        idle_timeout: limits.client_idle_timeout_ms,
        max_header_bytes: limits.max_request_header_bytes,
        retry_after: HeaderValue::from(limits.retry_after_seconds),
    })
}

/// Every distinct upstream, in order of first use: routes to the same service share one client.
struct Upstreams<'c> {
    config: &'c ProxyConfig,
    known: Vec<Arc<Upstream>>,
    /// Connection pools per upstream: one per worker thread.
    pools: usize,
}

impl Upstreams<'_> {
    /// A route's upstream: the default one, unless the route has its own URL or TLS files.
    fn for_route(&mut self, route: &RouteConfig, default: Option<&Arc<Upstream>>) -> anyhow::Result<Arc<Upstream>> {
        let at = |key: &str| format!("route `{}`: {key}", route.prefix);
        match (&route.upstream, default) {
            (None, Some(default)) if route.upstream_ca.is_none() && route.upstream_client_cert.is_none() => {
                Ok(default.clone())
            }
            (url, _) => {
                let url = url
                    .as_deref()
                    .or(self.config.upstream.as_deref())
                    .with_context(|| at("has no upstream (set `upstream` on the route or at the top level)"))?;
                self.get(url, Some(route)).with_context(|| at("upstream"))
            }
        }
    }

    /// The upstream `reference` names: one of `[upstreams]`, or else a URL, reached with
    /// `route`'s TLS files (else the top level's). Upstreams with the same settings share one
    /// client (and its pool).
    fn get(&mut self, reference: &str, route: Option<&RouteConfig>) -> anyhow::Result<Arc<Upstream>> {
        let settings = match self.config.upstreams.get(reference) {
            Some(named) => {
                if let Some(route) = route.filter(|r| r.upstream_ca.is_some() || r.upstream_client_cert.is_some()) {
                    bail!(
                        "route `{}` names upstream `{reference}`: its TLS files go in [upstreams.{reference}]",
                        route.prefix
                    );
                }
                self.named(named).with_context(|| format!("upstreams.{reference}"))?
            }
            None if !reference.contains(':') => {
                bail!("upstream `{reference}` is neither a name in [upstreams] nor a URL")
            }
            None => self.unnamed(reference, route)?,
        };
        if let Some(known) = self.known.iter().find(|u| *u.settings() == settings) {
            return Ok(known.clone());
        }
        let upstream = Arc::new(Upstream::new(settings, self.pools).with_context(|| format!("upstream {reference}"))?);
        if upstream.settings().headers.sets_any() && !upstream.is_private() {
            tracing::warn!(
                upstream = upstream.name(),
                "set_request_headers are sent to a plain-HTTP upstream: credentials cross the network unencrypted"
            );
        }
        self.known.push(upstream.clone());
        Ok(upstream)
    }

    /// The settings of an `[upstreams.NAME]` table.
    fn named(&self, named: &UpstreamConfig) -> anyhow::Result<UpstreamSettings> {
        let limits = &self.config.limits;
        let header_timeout = named.header_timeout_ms.unwrap_or(limits.upstream_header_timeout_ms);
        Ok(UpstreamSettings {
            base: UpstreamBase::parse(&named.url)?,
            ca: named.ca.clone(),
            identity: named
                .client_cert
                .clone()
                .zip(named.client_key.clone())
                .map(|(cert, key)| tls::Identity { cert, key }),
            http2_only: named.http2.unwrap_or(self.config.upstream_http2),
            connect_timeout: named.connect_timeout_ms.unwrap_or(limits.upstream_connect_timeout_ms),
            header_timeout: (!header_timeout.is_zero()).then_some(header_timeout),
            headers: HeaderChanges::new(&named.set_request_headers, &named.remove_request_headers)?,
        })
    }

    /// The settings of an upstream given by URL, with `route`'s TLS files or the top level's.
    fn unnamed(&self, url: &str, route: Option<&RouteConfig>) -> anyhow::Result<UpstreamSettings> {
        let config = self.config;
        let pick = |own: Option<&Option<PathBuf>>, top: &Option<PathBuf>| {
            own.and_then(Option::as_ref).or(top.as_ref()).cloned()
        };
        let cert = pick(route.map(|r| &r.upstream_client_cert), &config.upstream_client_cert);
        let key = pick(route.map(|r| &r.upstream_client_key), &config.upstream_client_key);
        Ok(UpstreamSettings {
            base: UpstreamBase::parse(url)?,
            ca: pick(route.map(|r| &r.upstream_ca), &config.upstream_ca),
            identity: cert.zip(key).map(|(cert, key)| tls::Identity { cert, key }),
            http2_only: config.upstream_http2,
            connect_timeout: config.limits.upstream_connect_timeout_ms,
            header_timeout: (!config.limits.upstream_header_timeout_ms.is_zero())
                .then_some(config.limits.upstream_header_timeout_ms),
            headers: HeaderChanges::default(),
        })
    }
}

/// One interceptor of `route`, loaded with its configuration, limits, store scope and policy.
fn load(
    runtime: &Runtime,
    limits: &LimitsConfig,
    store: &Arc<SharedStore>,
    route: &RouteConfig,
    ic: &InterceptorConfig,
) -> anyhow::Result<Link> {
    let spec: Spec = ic.spec.parse().map_err(|e| anyhow!("interceptor `{}`: {e}", ic.spec))?;
    let own_limits = Limits::for_interceptor(limits, ic);
    if !matches!(spec, Spec::Native(_)) {
        fits_the_body_limit(limits, &own_limits, &ic.spec).with_context(|| format!("route `{}`", route.prefix))?;
    }
    let config = Config::new(ic.entries()?).with_store(Store::new(Arc::new(store.scoped(ic.store_scope()))));
    let interceptor =
        spec.load_with_limits(runtime, config, own_limits).with_context(|| format!("route `{}`", route.prefix))?;
    Ok(Link::new(interceptor, ic.on_fault, BreakerConfig::from(limits)))
}

/// A guest may be handed a body of `max_body_bytes` whole: its memory must hold that body with
/// room for its own stack and heap, or every large but legitimate body faults. One that rewrites
/// a body needs room for its answer too (about twice the body); that is a warning, since a guest
/// that only reads (a filter that refuses, a counter) does not.
fn fits_the_body_limit(limits: &LimitsConfig, own: &Limits, spec: &str) -> anyhow::Result<()> {
    let body = limits.max_body_bytes;
    let needed = body.saturating_add(GUEST_HEADROOM);
    if own.max_memory_bytes < needed {
        let fitting_body = own.max_memory_bytes.saturating_sub(GUEST_HEADROOM);
        bail!(
            "interceptor `{spec}` may be handed bodies of up to limits.max_body_bytes = {body} bytes, which its \
             max_memory_bytes = {} cannot hold (a body needs its size + 4 MiB = {needed}): raise max_memory_bytes \
             to {needed} or more, or lower limits.max_body_bytes to {fitting_body} or less",
            own.max_memory_bytes
        );
    }
    let to_rewrite = body.saturating_mul(2).saturating_add(GUEST_HEADROOM);
    if own.max_memory_bytes < to_rewrite {
        tracing::warn!(
            interceptor = spec,
            max_memory_bytes = own.max_memory_bytes,
            max_body_bytes = body,
            "a body of the largest size fits this guest's memory, but a rewritten copy of it may not \
             (2 x max_body_bytes + 4 MiB = {to_rewrite}); such a body would be refused"
        );
    }
    Ok(())
}

/// A route of the configuration, its upstream and chains built.
fn build_route(
    config: &ProxyConfig,
    route: &RouteConfig,
    upstream: Arc<Upstream>,
    chain: Chain,
    request_chain: Chain,
    lifecycle: &Lifecycle,
) -> anyhow::Result<Route> {
    let at = |key: &str| format!("route `{}`: {key}", route.prefix);
    let matcher = path::normalise(&route.prefix)
        .map_err(|e| anyhow!("{}", at(&format!("prefix: {e}"))))?
        .path
        .trim_end_matches('/')
        .to_string();
    let headers = HeaderChanges::new(&route.set_request_headers, &route.remove_request_headers)
        .with_context(|| format!("route `{}`", route.prefix))?;
    if headers.sets_any() && !upstream.is_private() {
        tracing::warn!(
            route = route.prefix,
            upstream = upstream.name(),
            "set_request_headers are sent to a plain-HTTP upstream: credentials cross the network unencrypted"
        );
    }
    let rules = BodyRules {
        max_bytes: config.limits.max_body_bytes,
        pass_oversize: route.on_oversize.unwrap_or(config.limits.on_oversize) == OversizePolicy::Pass,
        pass_media_types: route.pass_media_types.clone(),
        max_line: config.limits.max_event_bytes,
    };
    Ok(Route {
        prefix: route.prefix.clone(),
        matcher,
        upstream,
        strip_prefix: route.strip_prefix,
        headers,
        stream_slots: lifecycle.admission.route_counter(&route.prefix),
        max_streams: route.max_streams.unwrap_or(0),
        chain,
        request_chain,
        rules,
        stats: Arc::default(),
    })
}

/// The `Host` and `Origin` allow-lists: as configured, or on a loopback listener the loopback
/// names, or anything.
fn allow_lists(config: &ProxyConfig, listen: SocketAddr) -> (AllowList, AllowList) {
    let loopback = listen.ip().is_loopback();
    let list = |given: &Vec<String>, default: fn() -> AllowList| match (given.is_empty(), loopback) {
        (false, _) => AllowList::new(given.clone()),
        (true, true) => default(),
        (true, false) => AllowList::default(),
    };
    (
        list(&config.security.allowed_hosts, AllowList::loopback_hosts),
        list(&config.security.allowed_origins, AllowList::loopback_origins),
    )
}
