//! Accepting and serving client connections: TLS (when configured), HTTP/1.1 and HTTP/2, and
//! what keeps a flood of connections from holding the proxy:
//!
//! - a request head must arrive within `header_read_timeout_ms` of connecting (the TLS handshake
//!   and HTTP/2 preface included) and, on HTTP/1.1, of the previous response; an HTTP/2
//!   connection with no open stream is closed after `client_idle_timeout_ms`;
//! - over `limits.max_connections`, a connection's requests are answered 503 with `Retry-After`;
//! - when the process is close to its file descriptor limit, a new connection is closed at once,
//!   so that the last descriptors stay for the admin listener and upstream connections (the kernel
//!   hands out the lowest free descriptor, so an accepted descriptor's number is a lower bound on
//!   how many are open: no need to count them);
//! - a failed accept (out of descriptors, typically) never ends a listener: it is logged (at
//!   most once a second), counted, and retried after a short pause.

use super::admission::{Admission, ConnectionEvent, ListenerKind};
use super::error::{ErrorKind, ProxyError};
use super::{BoxError, ProxyBody, ProxyHandle};
use http::Response;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The client-side settings of one configuration (a reload replaces them for new connections;
/// live connections keep theirs, their TLS certificate included).
pub(crate) struct ClientSide {
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) retry_after: HeaderValue,
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime does), so that the
/// proxy is not held to a shell's default of 1,024. Logs what it did.
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open file limit"),
            Err(e) => tracing::debug!("could not raise the open file limit: {e}"),
        }
    }
}

/// Where the last descriptors begin: a connection accepted at or above it is closed at once.
#[derive(Debug, Clone, Copy)]
struct DescriptorReserve {
    first_reserved: Option<u64>,
}

impl DescriptorReserve {
    /// The top eighth of the soft limit (at least 16, at most 1,024 descriptors) is reserved.
    fn detect() -> Self {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let first_reserved = soft.map(|soft| soft.saturating_sub((soft / 8).clamp(16, 1024)));
        DescriptorReserve { first_reserved }
    }

    fn is_reached(&self, socket: &TcpStream) -> bool {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd() as u64;
        self.first_reserved.is_some_and(|first| fd >= first)
    }
}

/// At most one warning a second from a loop that may fail many times a second.
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// The next connection on `listener`. A failed accept is logged, counted and retried after a
/// pause: it never ends the listener.
async fn accept(
    listener: &TcpListener,
    kind: ListenerKind,
    admission: &Admission,
    throttle: &mut Throttle,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                admission.count_accept_error(kind);
                if throttle.ready() {
                    tracing::warn!(listener = kind.name(), "accept failed (retrying): {e}");
                }
                // Out of descriptors, typically: wait for some to free up rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections on `listener` and serves each with whatever proxy `handle` holds at each
/// request (so a reload takes effect). Returns, closing the listener, when shutdown begins.
pub async fn serve_handle(listener: TcpListener, handle: Arc<ProxyHandle>) -> anyhow::Result<()> {
    let lifecycle = handle.lifecycle();
    let mut phase = lifecycle.watch();
    let reserve = DescriptorReserve::detect();
    let (mut accept_throttle, mut reserve_throttle) = (Throttle(None), Throttle(None));
    loop {
        let (socket, peer) = tokio::select! {
            _ = phase.wait_for(|p| *p != super::Phase::Running) => return Ok(()),
            accepted = accept(&listener, ListenerKind::Proxy, &lifecycle.admission, &mut accept_throttle) => accepted,
        };
        if reserve.is_reached(&socket) {
            lifecycle.admission.count(ConnectionEvent::RefusedDescriptors);
            if reserve_throttle.ready() {
                tracing::warn!(
                    %peer,
                    "close to the open file limit: closing new connections until descriptors free up"
                );
            }
            continue;
        }
        let _ = socket.set_nodelay(true);
        let client_side = handle.current().client_side.clone();
        let over_limit =
            client_side.max_connections > 0 && lifecycle.admission.open_connections() >= client_side.max_connections;
        tokio::spawn(serve_connection(socket, peer, handle.clone(), client_side, over_limit));
    }
}

/// One open client connection, counted until dropped.
struct OpenConnection(Arc<super::Lifecycle>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.admission.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    handle: Arc<ProxyHandle>,
    client_side: Arc<ClientSide>,
    over_limit: bool,
) {
    let lifecycle = handle.lifecycle();
    lifecycle.admission.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lifecycle.admission.connections_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lifecycle.admission.count_worker_connection(super::workers::index());
    let _open = OpenConnection(lifecycle.clone());
    if over_limit {
        lifecycle.admission.count(ConnectionEvent::RefusedMaxConnections);
    }
    let activity = Arc::new(Activity::new());
    let watchdog = activity.clone().expired(client_side.header_read_timeout, client_side.idle_timeout);
    // Each stage boxed: the connection's task then holds a pointer, not room for the largest of a
    // TLS handshake, a TLS connection and a plain one (8.7 KB inline, measured). The handshake
    // stays inside `served`, so the watchdog bounds it too.
    let served = async {
        let serving: Pin<Box<dyn Future<Output = Option<ConnectionEvent>> + Send>> = match &client_side.tls {
            Some(acceptor) => match Box::pin(acceptor.accept(socket)).await {
                Ok(stream) => {
                    let protocol = Protocol::negotiated(stream.get_ref().1.alpn_protocol());
                    serve_http(TokioIo::new(stream), protocol, handle, &client_side, activity, over_limit)
                }
                Err(e) => {
                    lifecycle.admission.count(ConnectionEvent::TlsHandshake);
                    tracing::debug!(%peer, "TLS handshake with a client failed: {e}");
                    return None;
                }
            },
            None => {
                let protocol = Protocol::sniff(&socket).await;
                serve_http(TokioIo::new(socket), protocol, handle, &client_side, activity, over_limit)
            }
        };
        serving.await
    };
    let event = tokio::select! {
        event = served => event,
        event = watchdog => Some(event),
    };
    if let Some(event) = event {
        lifecycle.admission.count(event);
        tracing::debug!(%peer, reason = event.metric().1, "closed a client connection");
    }
}

/// Which HTTP a client connection speaks, when that is known before hyper reads from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// Not known: hyper reads the first bytes to tell (and hands them back to the protocol's
    /// reader, which then grows its read buffer to 16 KiB: a connection whose protocol is known
    /// up front keeps 8 KiB).
    Detect,
}

/// What an HTTP/2 connection starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Protocol {
    /// What the client's first bytes on a plain connection say, left on the socket for hyper. A
    /// start that could still become the HTTP/2 preface (fewer bytes so far) is left to hyper.
    async fn sniff(socket: &TcpStream) -> Protocol {
        let mut first = [0u8; H2_PREFACE.len()];
        match socket.peek(&mut first).await {
            Ok(n) if n == first.len() && &first == H2_PREFACE => Protocol::Http2,
            Ok(n) if n > 0 && first[..n] != H2_PREFACE[..n] => Protocol::Http1,
            _ => Protocol::Detect,
        }
    }

    /// What TLS negotiated (ALPN); with no protocol negotiated, hyper tells.
    fn negotiated(alpn: Option<&[u8]>) -> Protocol {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            Some(b"http/1.1") => Protocol::Http1,
            _ => Protocol::Detect,
        }
    }
}

/// Serves HTTP on one connection; `Some` if it ended by a timeout of hyper's.
///
/// Boxed, and built per protocol: the future lives as long as the connection, and one future for
/// every protocol would keep room for the largest (hyper-util's automatic connection is sized for
/// HTTP/2, and borrows its builder for the connection's life: 2,120 bytes on plain TCP, measured
/// with `-Zprint-type-sizes`), where a connection known to speak HTTP/1.1 needs 696 (1,880 on TLS,
/// against 4,488). The HTTP/1.1 settings are given twice below, to hyper's builder and to
/// hyper-util's, whose types share no trait: a setting added to one belongs in the other.
fn serve_http<I>(
    io: I,
    protocol: Protocol,
    handle: Arc<ProxyHandle>,
    client_side: &ClientSide,
    activity: Arc<Activity>,
    over_limit: bool,
) -> Pin<Box<dyn Future<Output = Option<ConnectionEvent>> + Send>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = proxy_service(handle, client_side.retry_after.clone(), activity, over_limit);
    if protocol == Protocol::Http1 {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(client_side.header_read_timeout)
            .max_buf_size(client_side.max_header_bytes);
        // `map`, not an `async` block: awaiting the connection inside one would move it out of
        // the block's captures into room of its own, and the future would hold it twice.
        let connection = builder.serve_connection(io, service);
        return Box::pin(futures_util::FutureExt::map(connection, |served| {
            connection_ended(served.map_err(BoxError::from))
        }));
    }
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_side.header_read_timeout)
        .max_buf_size(client_side.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(20_000)
        .max_header_list_size(u32::try_from(client_side.max_header_bytes).unwrap_or(u32::MAX));
    let builder = if protocol == Protocol::Http2 { builder.http2_only() } else { builder };
    Box::pin(async move { connection_ended(builder.serve_connection(io, service).await) })
}

/// The service a client connection's requests go to: the proxy as it is configured now (a
/// reload applies to the next request), or a refusal if the connection is over the limit.
fn proxy_service(
    handle: Arc<ProxyHandle>,
    retry_after: HeaderValue,
    activity: Arc<Activity>,
    over_limit: bool,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response<ProxyBody>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>> + Send,
> + Send
+ 'static {
    hyper::service::service_fn(move |request| {
        let proxy = handle.current();
        let busy = activity.begin();
        let retry_after = retry_after.clone();
        async move {
            let response = if over_limit {
                ProxyError::from(ErrorKind::ConnectionLimit).into_response(&retry_after)
            } else {
                // Boxed: hyper keeps the room for this future for as long as the connection
                // lives (3 KB), where the boxed future is freed once the response is ready.
                Box::pin(proxy.handle(request)).await
            };
            // The connection counts as busy until the response body is done with.
            Ok::<_, std::convert::Infallible>(response.map(|body| while_busy(body, busy)))
        }
    })
}

/// How a connection's serving ended: `Some` if by a timeout of hyper's.
fn connection_ended(served: Result<(), BoxError>) -> Option<ConnectionEvent> {
    let e = served.err()?;
    let timed_out = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
    tracing::debug!("connection ended: {e}");
    timed_out.then_some(ConnectionEvent::HeaderTimeout)
}

fn while_busy(body: ProxyBody, busy: Busy) -> ProxyBody {
    body.map_frame(move |frame| {
        let _busy = &busy;
        frame
    })
    .map_err(BoxError::from)
    .boxed_unsync()
}

/// Whether a connection has a request in flight, and since when it has had none.
struct Activity(Mutex<ActivityState>);

struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    served: bool,
}

/// One request in flight on a connection; see [`Activity::begin`].
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }
}

impl Activity {
    fn new() -> Self {
        Activity(Mutex::new(ActivityState { in_flight: 0, idle_since: Instant::now(), served: false }))
    }

    fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight += 1;
        state.served = true;
        Busy(self.clone())
    }

    /// When the connection has had no request in flight for too long: `header` before its first
    /// request, `idle` after. Wakes once per period while requests are in flight.
    async fn expired(self: Arc<Self>, header: Duration, idle: Duration) -> ConnectionEvent {
        loop {
            let (deadline, event) = {
                let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
                match (state.in_flight, state.served) {
                    (0, false) => (state.idle_since + header, Some(ConnectionEvent::HeaderTimeout)),
                    (0, true) => (state.idle_since + idle, Some(ConnectionEvent::IdleTimeout)),
                    _ => (Instant::now() + idle, None),
                }
            };
            tokio::time::sleep_until(deadline).await;
            let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let still = match event {
                Some(ConnectionEvent::HeaderTimeout) => state.in_flight == 0 && !state.served,
                Some(_) => state.in_flight == 0 && state.idle_since + idle <= Instant::now(),
                None => false,
            };
            if let (true, Some(event)) = (still, event) {
                return event;
            }
        }
    }
}

/// Serves the admin endpoints on `listener` until the task is dropped; like the proxy's
/// listener it survives failed accepts and closes connections that send no request head.
pub(crate) async fn serve_admin_connections(
    listener: TcpListener,
    handle: Arc<ProxyHandle>,
    respond: fn(&super::Proxy, &str) -> Response<ProxyBody>,
) {
    let lifecycle = handle.lifecycle();
    let mut throttle = Throttle(None);
    loop {
        let (socket, _) = accept(&listener, ListenerKind::Admin, &lifecycle.admission, &mut throttle).await;
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let response = respond(&handle.current(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let connection = builder.serve_connection(TokioIo::new(socket), service);
            // The HTTP/2 preface, and a request that never completes, get the same bound.
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The protocol a connection's first bytes say, and the bytes still there to be read.
    async fn sniffed(first: &[u8]) -> (Protocol, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(first).await.unwrap();
        client.shutdown().await.unwrap();
        let protocol = Protocol::sniff(&server).await;
        let mut left = Vec::new();
        server.read_to_end(&mut left).await.unwrap();
        (protocol, left)
    }

    #[tokio::test]
    async fn a_plain_connections_protocol_is_told_by_its_first_bytes_which_stay_on_the_socket() {
        let request = b"POST /mcp HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(sniffed(request).await, (Protocol::Http1, request.to_vec()));
        assert_eq!(sniffed(H2_PREFACE).await, (Protocol::Http2, H2_PREFACE.to_vec()));
        // A start that could still be the preface, and a client that sent nothing, go to hyper.
        assert_eq!(sniffed(b"PRI * HT").await, (Protocol::Detect, b"PRI * HT".to_vec()));
        assert_eq!(sniffed(b"").await, (Protocol::Detect, Vec::new()));
    }

    #[test]
    fn a_tls_connections_protocol_is_what_alpn_negotiated() {
        assert_eq!(Protocol::negotiated(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::negotiated(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::negotiated(None), Protocol::Detect);
    }
}
