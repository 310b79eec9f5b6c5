//! Upstreams: where a route's requests go (`http://`, `https://`, `unix:`), the clients that
//! take them there, and what can go wrong on the way, as a typed error that picks the status.
//!
//! One upstream per distinct base (scheme, authority, CA, client certificate): routes to the
//! same service share its connections. A plain-HTTP/1.1 upstream is spoken to over connections
//! that the response body drives itself (`driven`), kept per worker thread (`workers`), so a
//! stream's upstream connection runs in the stream's task on the stream's thread. A plain-HTTP/2
//! upstream has a pooled client per worker (one connection each, carrying that worker's streams);
//! an HTTPS upstream keeps one pooled client (handshakes are dear, HTTP/2 multiplexes): over HTTPS,
//! ALPN offers h2 and http/1.1, so an upstream that speaks HTTP/2 carries many streams on one
//! connection without a flag; `upstream_http2` asks for HTTP/2 only (by prior knowledge over
//! plain HTTP, by ALPN h2 alone over HTTPS), which also lets requests that start at once share
//! the first connection. Connections and TLS handshakes are counted per upstream, so reuse can be
//! seen in `/metrics`.

use super::driven::{Driven, DrivenBody, Shelf, Unsent};
use super::tls::{self, Identity, TlsSetupError};
use super::{BoxError, UpstreamBody};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// An upstream URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("upstream `{0}` is not a URL")]
    NotUrl(String),
    #[error("upstream `{0}`: the scheme must be http:// or https://")]
    Scheme(String),
    #[error("upstream `{0}` needs a host")]
    NoHost(String),
    #[error("upstream `{0}` must not have a query")]
    Query(String),
    #[error("upstream `{0}`: a unix: upstream is a socket path (`unix:/run/server.sock`)")]
    Socket(String),
}

/// Where an upstream's connections go. A new kind of upstream is a variant here and an arm in
/// `SocketConnector::call`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP to the URL's host and port (TLS over it for `https://`).
    Network,
    /// A Unix domain socket (`unix:/run/server.sock`): HTTP to a local server, such as an MCP
    /// server that listens on a socket rather than a port.
    Unix(PathBuf),
}

/// The upstream's base: scheme, authority and a path prefix that request paths are appended to,
/// and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamBase {
    scheme: Scheme,
    authority: Authority,
    path: String,
    endpoint: Endpoint,
}

impl UpstreamBase {
    /// Parses an upstream URL such as `http://127.0.0.1:3000`, `https://api.openai.com/v1` or
    /// `unix:/run/mcp.sock` (plain HTTP over the socket, `Host: localhost`).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if let Some(socket) = url.strip_prefix("unix:") {
            let socket = socket.strip_prefix("//").unwrap_or(socket);
            if !socket.starts_with('/') || socket.contains('?') {
                return Err(UrlError::Socket(url.into()));
            }
            return Ok(UpstreamBase {
                scheme: Scheme::HTTP,
                authority: Authority::from_static("localhost"),
                path: String::new(),
                endpoint: Endpoint::Unix(PathBuf::from(socket)),
            });
        }
        let uri: Uri = url.parse().map_err(|_| UrlError::NotUrl(url.into()))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| UrlError::Scheme(url.into()))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(UrlError::Scheme(url.into()));
        }
        let authority = uri.authority().cloned().ok_or_else(|| UrlError::NoHost(url.into()))?;
        if uri.query().is_some() {
            return Err(UrlError::Query(url.into()));
        }
        let path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamBase { scheme, authority, path, endpoint: Endpoint::Network })
    }

    /// The upstream URI for a path and query (already stripped of a route's prefix if it asks).
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.path, path_and_query))
            .build()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// Where its connections go.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `scheme://authority` (or `unix:PATH`), as shown in logs and metrics (the path is not part
    /// of the name).
    pub fn name(&self) -> String {
        match &self.endpoint {
            Endpoint::Network => format!("{}://{}", self.scheme, self.authority),
            Endpoint::Unix(socket) => format!("unix:{}", socket.display()),
        }
    }
}

/// Everything that decides how an upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSettings {
    pub base: UpstreamBase,
    /// Extra CA certificates (PEM) trusted besides the system's.
    pub ca: Option<PathBuf>,
    /// A client certificate to present (mTLS).
    pub identity: Option<Identity>,
    /// HTTP/2 only: by prior knowledge over http://, by ALPN h2 alone over https://.
    pub http2_only: bool,
    pub connect_timeout: Duration,
    pub header_timeout: Option<Duration>,
    /// Headers set on and removed from every request to it (a named upstream's).
    pub(super) headers: super::headers::HeaderChanges,
}

/// Counters of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Connections opened (TCP, and TLS over it for https).
    pub connections: AtomicU64,
    /// TLS handshakes completed (one per HTTPS connection: a pooled connection needs no more).
    pub tls_handshakes: AtomicU64,
    /// Requests that failed before a response head, by kind.
    pub errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
}

/// A failed upstream request, from its kind the client's status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {upstream} took longer than {after:?}")]
    ConnectTimeout { upstream: String, after: Duration },
    #[error("{upstream} sent no response head within {after:?}")]
    HeaderTimeout { upstream: String, after: Duration },
    #[error("TLS with {upstream} failed: {problem}")]
    Tls {
        upstream: String,
        problem: String,
        #[source]
        source: BoxError,
    },
    #[error("{upstream} could not be reached")]
    Connect {
        upstream: String,
        #[source]
        source: BoxError,
    },
    #[error("the request to {upstream} failed")]
    Request {
        upstream: String,
        #[source]
        source: BoxError,
    },
}

/// The kinds of [`UpstreamError`], as counted (in [`UpstreamErrorKind::ALL`]'s order, which
/// indexes the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    ConnectTimeout,
    HeaderTimeout,
    Tls,
    Connect,
    Request,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::HeaderTimeout,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Request,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::HeaderTimeout => "header_timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Request => "request",
        }
    }
}

impl UpstreamError {
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamError::ConnectTimeout { .. } => UpstreamErrorKind::ConnectTimeout,
            UpstreamError::HeaderTimeout { .. } => UpstreamErrorKind::HeaderTimeout,
            UpstreamError::Tls { .. } => UpstreamErrorKind::Tls,
            UpstreamError::Connect { .. } => UpstreamErrorKind::Connect,
            UpstreamError::Request { .. } => UpstreamErrorKind::Request,
        }
    }

    /// 504 when the upstream did not answer in time, 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self.kind() {
            UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::HeaderTimeout => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// What the client is told (no detail of the proxy's own set-up).
    pub fn client_message(&self) -> &'static str {
        match self.kind() {
            UpstreamErrorKind::ConnectTimeout => "sluicegate: the upstream did not accept a connection in time",
            UpstreamErrorKind::HeaderTimeout => "sluicegate: the upstream did not answer in time",
            UpstreamErrorKind::Tls => "sluicegate: a secure connection to the upstream could not be made",
            UpstreamErrorKind::Connect => "sluicegate: the upstream could not be reached",
            UpstreamErrorKind::Request => "sluicegate: the upstream request failed",
        }
    }
}

/// A connect that took too long (TCP and, for https, the TLS handshake).
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?}")]
struct ConnectTimedOut(Duration);

/// A connection to an upstream: TCP, read through a 64 KiB buffer when TLS runs over it, or a
/// Unix socket. rustls reads at most 4 KiB at a time (its record buffer grows in 4 KiB steps),
/// which from a fast upstream is a syscall per 4 KiB; through the buffer it is one per 64 KiB,
/// for one more copy. Plain HTTP is read directly (hyper reads into its own large buffer).
enum Socket {
    Plain(TokioIo<TcpStream>),
    Buffered(TokioIo<tokio::io::BufReader<TcpStream>>),
    Unix(TokioIo<tokio::net::UnixStream>),
}

const TLS_READ_BUFFER: usize = 64 << 10;

/// Opens a [`Socket`] to where the upstream's [`Endpoint`] says.
#[derive(Clone)]
struct SocketConnector {
    tcp: HttpConnector,
    endpoint: Endpoint,
}

impl tower_service::Service<Uri> for SocketConnector {
    type Response = Socket;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Socket, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Endpoint::Unix(path) = &self.endpoint {
            let path = path.clone();
            return Box::pin(async move {
                let stream = tokio::net::UnixStream::connect(&path).await?;
                Ok(Socket::Unix(TokioIo::new(stream)))
            });
        }
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(match tls {
                true => {
                    let buffered = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, io.into_inner());
                    Socket::Buffered(TokioIo::new(buffered))
                }
                false => Socket::Plain(io),
            })
        })
    }
}

impl Connection for Socket {
    fn connected(&self) -> Connected {
        match self {
            Socket::Plain(io) => io.connected(),
            Socket::Buffered(io) => io.inner().get_ref().connected(),
            Socket::Unix(_) => Connected::new(),
        }
    }
}

/// Calls `$method` on whichever stream `$self` (a pinned `Socket`) holds.
macro_rules! on_stream {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self.get_mut() {
            Socket::Plain(io) => Pin::new(io).$method($($arg),*),
            Socket::Buffered(io) => Pin::new(io).$method($($arg),*),
            Socket::Unix(io) => Pin::new(io).$method($($arg),*),
        }
    };
}

impl hyper::rt::Read for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        on_stream!(self, poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        on_stream!(self, poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Plain(io) => io.is_write_vectored(),
            Socket::Buffered(io) => io.is_write_vectored(),
            Socket::Unix(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        on_stream!(self, poll_write_vectored(cx, bufs))
    }
}

/// The HTTPS-or-HTTP connector with a deadline on the whole connect and counters.
#[derive(Clone)]
struct Connector {
    inner: HttpsConnector<SocketConnector>,
    timeout: Duration,
    stats: Arc<UpstreamStats>,
}

type Stream = MaybeHttpsStream<Socket>;

/// The first TLS error read on a connection. A server that refuses the client's certificate
/// under TLS 1.3 says so in an alert after the handshake; hyper then fails the request with
/// only "connection closed", and this keeps the reason so the log can give it.
#[derive(Clone, Default)]
struct TlsFailure(Arc<std::sync::OnceLock<String>>);

/// A connection that notes its first TLS error (see [`TlsFailure`]).
struct Watched {
    inner: Stream,
    failure: TlsFailure,
}

impl Watched {
    fn note(&self, error: &std::io::Error) {
        if let Some(words) = tls::describe(error) {
            let _ = self.failure.0.set(words);
        }
    }

    /// After a failed write on a TLS connection: a server that refused the handshake sent its
    /// alert and closed, and hyper may write (and fail on the reset) before it reads, so the
    /// alert would never be read and the log would say only "broken pipe". The alert is still
    /// in the socket's receive queue: read it now. The connection is dead, so nothing is taken
    /// from hyper; a bounded read with no waker, so it never waits.
    fn read_last_words(&mut self) {
        if self.failure.0.get().is_some() || !matches!(self.inner, MaybeHttpsStream::Https(_)) {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut scratch = [std::mem::MaybeUninit::uninit(); 512];
        for _ in 0..8 {
            let mut buf = hyper::rt::ReadBuf::uninit(&mut scratch);
            match hyper::rt::Read::poll_read(Pin::new(&mut self.inner), &mut cx, buf.unfilled()) {
                Poll::Ready(Err(e)) => return self.note(&e),
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                _ => return,
            }
        }
    }

    /// `written`, after reading the server's last words if it failed.
    fn after_write<T>(&mut self, written: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(_)) = &written {
            self.read_last_words();
        }
        written
    }
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            this.note(e);
        }
        polled
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(written)
    }
}

impl Connection for Watched {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.failure.clone())
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Watched;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Watched, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let (timeout, stats) = (self.timeout, self.stats.clone());
        Box::pin(async move {
            let stream = match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected?,
                Err(_) => return Err(Box::new(ConnectTimedOut(timeout)) as BoxError),
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            if matches!(stream, MaybeHttpsStream::Https(_)) {
                stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Watched { inner: stream, failure: TlsFailure::default() })
        })
    }
}

/// One upstream and its clients.
pub struct Upstream {
    settings: UpstreamSettings,
    name: String,
    /// How its requests go: over connections the request drives (plain HTTP/1.1), or through a
    /// pooled client (HTTPS, HTTP/2).
    clients: Clients,
    stats: Arc<UpstreamStats>,
}

enum Clients {
    /// A shelf of kept connections per worker thread (`workers`): a connection stays on the
    /// thread that opened it (one shelf in the shared model).
    Driven { connector: Connector, shelves: Box<[Arc<Shelf<Watched>>]> },
    /// A pooled client per worker thread for plain HTTP/2 (its connection task runs on the thread
    /// that opened it, so its streams are woken on theirs); one for HTTPS, shared by all workers.
    Pooled(Box<[Client<Connector, UpstreamBody>]>),
}

/// The one of `per_worker` (a shelf or a client per worker thread) that belongs to the worker
/// this runs on: a connection's I/O is registered with the thread that opened it, so a worker
/// using another's would be woken across threads. (One item in the shared model and for HTTPS.)
fn this_workers<T>(per_worker: &[T]) -> &T {
    &per_worker[super::workers::index() % per_worker.len()]
}

/// An upstream's response body.
pub struct ResponseBody(Answer);

enum Answer {
    /// Boxed: it holds its connection (about 2 KB).
    Driven(Box<DrivenBody<Watched>>),
    Pooled(Incoming),
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Answer::Driven(body) => Pin::new(body).poll_frame(cx),
            Answer::Pooled(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Answer::Driven(body) => body.is_end_stream(),
            Answer::Pooled(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Answer::Driven(body) => body.size_hint(),
            Answer::Pooled(body) => body.size_hint(),
        }
    }
}

impl Upstream {
    /// Builds its clients: for plain HTTP, `pools` of them, one per worker thread (reading the
    /// CA and client certificate files now).
    pub fn new(settings: UpstreamSettings, pools: usize) -> Result<Self, TlsSetupError> {
        let stats = Arc::<UpstreamStats>::default();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = match settings.base.is_https() {
            true => tls::client_config(settings.ca.as_deref(), settings.identity.as_ref())?,
            false => tls::unused_client_config(),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        // HTTP/2 only: ALPN offers h2 alone, and the pool knows before the first connection is up
        // that every request can share it (otherwise requests that start together each open a
        // connection of their own, as the kind of connection is learnt only at the handshake).
        let sockets = SocketConnector { tcp: http, endpoint: settings.base.endpoint.clone() };
        let inner = match settings.http2_only {
            true => builder.enable_http2().wrap_connector(sockets),
            false => builder.enable_all_versions().wrap_connector(sockets),
        };
        let connector = Connector { inner, timeout: settings.connect_timeout, stats: stats.clone() };
        let per_worker = pools.max(1);
        let pooled = || {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(super::driven::IDLE_TIMEOUT)
                .http2_only(settings.http2_only)
                .build(connector.clone())
        };
        let clients = match (settings.base.is_https(), settings.http2_only) {
            // HTTPS keeps one pooled client for all workers: TLS handshakes are dear, providers
            // limit connections, and HTTP/2 carries every stream on one connection.
            (true, _) => Clients::Pooled(Box::new([pooled()])),
            // Plain HTTP/2 (by prior knowledge): a connection per worker, so that an upstream
            // read wakes a task on its own thread, not the other worker (an eventfd write and a
            // context switch per event when one connection served both).
            (false, true) => Clients::Pooled((0..per_worker).map(|_| pooled()).collect()),
            // Plain HTTP/1.1 (a local service, a sidecar): connections the request drives, kept
            // per worker, for locality.
            (false, false) => Clients::Driven { connector, shelves: (0..per_worker).map(|_| Arc::default()).collect() },
        };
        Ok(Upstream { name: settings.base.name(), settings, clients, stats })
    }

    pub fn base(&self) -> &UpstreamBase {
        &self.settings.base
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// `scheme://authority`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if what is sent to it does not cross a network in the clear: HTTPS, a loopback
    /// address, or a Unix socket.
    pub(super) fn is_private(&self) -> bool {
        let base = &self.settings.base;
        let host = base.authority.host().trim_start_matches('[').trim_end_matches(']');
        base.is_https()
            || matches!(base.endpoint, Endpoint::Unix(_))
            || host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    pub fn stats(&self) -> &UpstreamStats {
        &self.stats
    }

    /// Sends `request` and waits for the response head (up to the header timeout). Failures are
    /// counted and typed; a TLS failure says what was wrong with the certificate.
    pub async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<ResponseBody>, UpstreamError> {
        let sent = match &self.clients {
            Clients::Driven { connector, shelves } => {
                futures_util::future::Either::Left(self.send_driven(connector, this_workers(shelves), request))
            }
            Clients::Pooled(clients) => {
                futures_util::future::Either::Right(self.send_pooled(this_workers(clients), request))
            }
        };
        match self.settings.header_timeout {
            Some(after) => match tokio::time::timeout(after, sent).await {
                Ok(result) => result,
                Err(_) => Err(self.count(UpstreamError::HeaderTimeout { upstream: self.name.clone(), after })),
            },
            None => sent.await,
        }
    }

    async fn send_pooled(
        &self,
        client: &Client<Connector, UpstreamBody>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let connection = capture_connection(&mut request);
        let result = client.request(request).await;
        let response = result.map_err(|source| {
            let noted = connection.connection_metadata().as_ref().and_then(|connected| {
                let mut extras = http::Extensions::new();
                connected.get_extras(&mut extras);
                extras.get::<TlsFailure>().and_then(|failure| failure.0.get().cloned())
            });
            let connect = source.is_connect();
            self.count(self.classify(source.into(), connect, noted))
        })?;
        Ok(response.map(|body| ResponseBody(Answer::Pooled(body))))
    }

    /// Over a kept connection of `shelf`, else a new one; sent again on a new one if a kept
    /// connection failed before any of the request was written (the server had closed it).
    async fn send_driven(
        &self,
        connector: &Connector,
        shelf: &Arc<Shelf<Watched>>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let uri = in_origin_form(&mut request);
        loop {
            let (driven, kept) = match shelf.take() {
                Some(driven) => (driven, true),
                // Boxed: connecting (~2 KB of connector and handshake) is rarer than sending,
                // and room for it inline would be in every request's future.
                None => (Box::pin(self.connect(connector, uri.clone())).await?, false),
            };
            match driven.send(request, shelf).await {
                Ok(response) => return Ok(response.map(|body| ResponseBody(Answer::Driven(Box::new(body))))),
                Err(Unsent { request: Some(again), .. }) if kept => request = again,
                Err(unsent) => return Err(self.count(self.classify(unsent.error.into(), false, None))),
            }
        }
    }

    async fn connect(&self, connector: &Connector, uri: Uri) -> Result<Driven<Watched>, UpstreamError> {
        use tower_service::Service as _;
        let io = connector.clone().call(uri).await.map_err(|e| self.count(self.classify(e, true, None)))?;
        Driven::handshake(io).await.map_err(|e| self.count(self.classify(e.into(), true, None)))
    }

    /// What kind of failure `source` is; `connect` if it happened while connecting.
    fn classify(&self, source: BoxError, connect: bool, noted_tls: Option<String>) -> UpstreamError {
        let upstream = self.name.clone();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*source);
        while let Some(error) = cause {
            if let Some(timed_out) = error.downcast_ref::<ConnectTimedOut>() {
                return UpstreamError::ConnectTimeout { upstream, after: timed_out.0 };
            }
            cause = error.source();
        }
        if let Some(problem) = tls::describe(&*source).or(noted_tls) {
            return UpstreamError::Tls { upstream, problem, source };
        }
        if connect { UpstreamError::Connect { upstream, source } } else { UpstreamError::Request { upstream, source } }
    }

    fn count(&self, error: UpstreamError) -> UpstreamError {
        self.stats.errors[error.kind() as usize].fetch_add(1, Ordering::Relaxed);
        error
    }
}

/// A request for an HTTP/1.1 connection of its own: the URI in origin form (its path and query
/// alone) and a `Host` header if it has none, as the pooled client does it. Returns the URI it
/// had, which says where to connect.
fn in_origin_form(request: &mut Request<UpstreamBody>) -> Uri {
    let uri = std::mem::take(request.uri_mut());
    if let Some(authority) = uri.authority()
        && !request.headers().contains_key(http::header::HOST)
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, host);
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    uri
}

/// `error` and its sources, one after another, for a log line.
pub(super) fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let piece = cause.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    /// A CA's certificate, and a certificate for `localhost` it signed with its key.
    fn ca_and_server() -> (CertificateDer<'static>, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        (ca.der().clone(), server.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()).into())
    }

    /// A TLS 1.3 connection the server refused after the handshake (it wants a client
    /// certificate; the client has none) and closed: the client's side, watched.
    async fn refused_connection() -> Watched {
        let (ca, cert, key) = ca_and_server();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(socket).await.is_err()
        });
        let socket = Socket::Plain(TokioIo::new(TcpStream::connect(addr).await.unwrap()));
        let name = ServerName::try_from("localhost").unwrap();
        // The client's handshake is over once it has sent its (empty) certificate.
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, TokioIo::new(socket)).await.unwrap();
        assert!(refused.await.unwrap(), "the server refused the handshake, sent its alert and closed");
        Watched { inner: MaybeHttpsStream::Https(TokioIo::new(tls)), failure: TlsFailure::default() }
    }

    #[tokio::test]
    async fn a_refused_client_certificate_is_named_when_a_write_fails_before_any_read() {
        let mut watched = refused_connection().await;
        // Writes until one fails (the first is answered with a reset), never reading: what
        // hyper's HTTP/2 connection does when it flushes before it reads.
        let mut failed = None;
        for _ in 0..1000 {
            let written =
                std::future::poll_fn(|cx| hyper::rt::Write::poll_write(Pin::new(&mut watched), cx, b"GET")).await;
            if let Err(e) = written {
                failed = Some(e);
                break;
            }
            tokio::task::yield_now().await;
        }
        let failed = failed.expect("a write to a closed connection fails");
        let noted = watched.failure.0.get().cloned().unwrap_or_default();
        assert!(noted.contains("client certificate"), "the write failed with {failed}; noted: {noted:?}");
    }
}
