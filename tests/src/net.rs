//! Real servers and clients on loopback for the proxy tests: a programmable upstream, the proxy
//! itself in-process, and a streaming client.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluicegate::config::ProxyConfig;
use sluicegate::proxy::Proxy;
use sluicegate::sse::{Event, Parser};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The body of the test upstreams' responses.
pub type TestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Starts an upstream on a free loopback port; `handler` answers every request.
pub async fn start_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_upstream(handler, None).await
}

/// Starts an HTTPS upstream on a free loopback port with `tls` (its ALPN decides HTTP/2 or
/// HTTP/1.1); `handler` answers every request.
pub async fn start_tls_upstream<F, Fut>(handler: F, tls: rustls::ServerConfig) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_upstream(handler, Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
}

async fn serve_upstream<F, Fut>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(r).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    // A failed handshake (a client that does not trust us, or has no
                    // certificate we trust) just ends this connection.
                    Some(tls) => match tls.accept(socket).await {
                        Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => Ok(()),
                    },
                    None => builder.serve_connection(TokioIo::new(socket), service).await,
                };
            });
        }
    });
    addr
}

/// The sending side of an upstream event stream: send `Ok(bytes)`, or an `Err` to break it;
/// drop it to end the stream.
pub type Feed = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// An upstream whose every request is answered with an event stream handed to the test, to
/// feed and end by hand.
pub async fn fed_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Feed>) {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let upstream = start_upstream(move |_| {
        let streams_tx = streams_tx.clone();
        async move {
            let (tx, response) = streamed("text/event-stream");
            let _ = streams_tx.send(tx);
            response
        }
    })
    .await;
    (upstream, streams)
}

/// A response whose body is fed by the returned sender: send `Ok(bytes)` chunks, send an `Err`
/// to break the connection mid-stream, drop the sender to end the body normally.
pub fn streamed(content_type: &str) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Response<TestBody>) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        if item.is_err() {
            // hyper's server buffers the chunks it is handed and writes them when the body has
            // nothing more for it; an error handed over right behind a chunk would drop the
            // connection with that chunk still in its buffer. One pending poll first lets it
            // write what came before the break.
            tokio::task::yield_now().await;
        }
        Some((item.map(Frame::data), rx))
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(StreamBody::new(stream).boxed_unsync())
        .unwrap();
    (tx, response)
}

/// A complete response.
pub fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed_unsync())
        .unwrap()
}

/// Starts the proxy in-process on a free loopback port.
pub async fn start_proxy(config: &str) -> (SocketAddr, Arc<Proxy>) {
    let config = ProxyConfig::from_toml(config).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Arc::new(Proxy::new(&config, crate::runtime(), addr).expect("proxy"));
    tokio::spawn(sluicegate::proxy::serve(listener, proxy.clone()));
    (addr, proxy)
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `url` with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client().request(request.body(Empty::new()).unwrap()).await.expect("request")
}

/// Reads an event stream response incrementally.
pub struct EventReader {
    body: Incoming,
    parser: Parser,
    /// Chunks read so far (one per batch the proxy sent).
    pub chunks: usize,
}

impl EventReader {
    /// A reader of `response`'s body.
    pub fn new(response: Response<Incoming>) -> Self {
        EventReader { body: response.into_body(), parser: Parser::new(), chunks: 0 }
    }

    /// The next event or comment, or `None` at the end of the stream; panics if the body ends
    /// with an error.
    pub async fn next(&mut self) -> Option<Event> {
        self.next_or_break().await.unwrap_or_else(|e| panic!("the proxy broke the stream: {e}"))
    }

    /// The next event or comment, `None` at a clean end of the stream, or the error the body
    /// ended with (a truncated stream).
    pub async fn next_or_break(&mut self) -> Result<Option<Event>, String> {
        loop {
            if let Some(event) = self.parser.next() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunks += 1;
                        self.parser.feed(&data);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(self.parser.finish()),
            }
        }
    }

    /// Everything until the stream ends, which it must do with an error (the proxy's way of
    /// saying that the upstream's stream was cut off); panics on a clean end.
    pub async fn rest_until_broken(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match self.next_or_break().await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => panic!("the stream ended cleanly; a cut-off stream must end with an error"),
                Err(_) => return events,
            }
        }
    }

    /// Everything until the end of the stream.
    pub async fn rest(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(e) = self.next().await {
            events.push(e);
        }
        events
    }
}

/// The config for a proxy in front of `upstream` with `chain` on every path.
pub fn config_with_chain(upstream: SocketAddr, chain: &[&str], extra: &str) -> String {
    let mut config = format!("upstream = \"http://{upstream}\"\n{extra}\n[[route]]\nprefix = \"/\"\n");
    for spec in chain {
        config.push_str(&format!("[[route.interceptor]]\nspec = \"{spec}\"\n"));
    }
    config
}

/// A listener that accepts connections and never answers on them (a black hole), kept open for
/// the test's life; its address.
pub async fn start_silent() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}
