//! Plain HTTP/1.1 upstream connections that the request using them drives itself.
//!
//! Why: through hyper's pooled client every upstream connection runs as a task of its own, so
//! each event a stream forwards is two tasks' work: the connection's task reads the socket and
//! hands the bytes to the response body, waking the client connection's task, which polls the
//! body. Here the response body polls its connection itself (hyper's `client::conn` API), so
//! the upstream socket wakes the one task that forwards the event, on its thread.
//!
//! The price is that nobody polls a connection between requests: a connection goes back to its
//! shelf when its response body was read to the end, is checked (closed by the server? too
//! old?) when it is taken again, and a reaper task per shelf closes the ones the server closed
//! or that idled for [`IDLE_TIMEOUT`], and ends when the shelf is empty. A request that could not
//! be started on a kept connection (the server had closed it) is sent again on a new one, as
//! the pooled client does. HTTPS and HTTP/2 upstreams keep the pooled client: there a
//! connection is shared by many streams or dear to make.

use super::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a kept upstream connection may wait for its next request (the pooled client too).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the reaper looks at a shelf's connections.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// Kept connections per shelf at most; beyond, a finished connection is closed.
const MAX_KEPT: usize = 4096;

/// What a connection runs over (TCP or a Unix socket, as the upstream's connector opens it).
pub(super) trait Transport: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static {}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static> Transport for T {}

/// One upstream connection: the handle that sends requests and the connection future that does
/// its I/O when polled.
pub(super) struct Driven<Io: Transport> {
    send: http1::SendRequest<UpstreamBody>,
    /// Boxed: a future that holds a connection (sending a request on it) holds a pointer, not
    /// its ~3 KB. A request's future is moved whole into its box, so its room is written even
    /// where unused, and what a freed one leaves behind stays resident (see README, Memory).
    conn: Box<http1::Connection<Io, UpstreamBody>>,
}

impl<Io> Driven<Io>
where
    Io: Transport,
{
    /// An HTTP/1.1 connection over `io` (no I/O happens until it is polled).
    pub(super) async fn handshake(io: Io) -> Result<Self, hyper::Error> {
        let (send, conn) = http1::Builder::new().handshake(io).await?;
        Ok(Driven { send, conn: Box::new(conn) })
    }

    /// Sends `request` and waits for the response head, driving the connection meanwhile. On a
    /// failure the request comes back if none of it was written, so it can be sent again.
    pub(super) async fn send(
        mut self,
        request: http::Request<UpstreamBody>,
        shelf: &Arc<Shelf<Io>>,
    ) -> Result<http::Response<DrivenBody<Io>>, Unsent> {
        let mut sending = std::pin::pin!(self.send.try_send_request(request));
        let mut open = true;
        let answer = std::future::poll_fn(|cx| {
            if let Poll::Ready(answer) = sending.as_mut().poll(cx) {
                return Poll::Ready(answer);
            }
            // A connection that ends has failed or answered every request it held: the answer
            // is ready on the next poll.
            if open && Pin::new(&mut *self.conn).poll(cx).is_ready() {
                open = false;
                return sending.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await;
        match answer {
            Ok(response) => {
                let conn = open.then_some(self);
                let shelf = shelf.clone();
                let muted = Arc::new(Muted { task: Default::default(), state: AtomicU8::new(IDLE) });
                let waker = Waker::from(muted.clone());
                Ok(response.map(|body| DrivenBody { body, conn, shelf, gave: false, held: None, muted, waker }))
            }
            Err(mut failed) => Err(Unsent { request: failed.take_message(), error: failed.into_error() }),
        }
    }

    /// Whether a kept connection can take a request now: it is not closed, and its last
    /// exchange is over. Polls it once (a closed one reads its end).
    fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut *self.conn).poll(&mut cx).is_pending() && self.send.is_ready()
    }
}

/// A request that failed before a response head; `request` is it again if none of it was sent.
pub(super) struct Unsent {
    pub request: Option<http::Request<UpstreamBody>>,
    pub error: hyper::Error,
}

/// The kept connections of one upstream on one worker thread.
pub(super) struct Shelf<Io: Transport> {
    kept: Mutex<Kept<Io>>,
}

struct Kept<Io: Transport> {
    connections: Vec<(Driven<Io>, Instant)>,
    reaping: bool,
}

impl<Io: Transport> Default for Shelf<Io> {
    fn default() -> Self {
        Shelf { kept: Mutex::new(Kept { connections: Vec::new(), reaping: false }) }
    }
}

impl<Io> Shelf<Io>
where
    Io: Transport,
{
    /// The connection kept last that can still take a request, if any.
    pub(super) fn take(&self) -> Option<Driven<Io>> {
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some((mut driven, since)) = kept.connections.pop() {
            if since.elapsed() < IDLE_TIMEOUT && driven.is_usable() {
                return Some(driven);
            }
        }
        None
    }

    /// Keeps a connection whose exchange is over, for the next request.
    fn put(self: &Arc<Self>, mut driven: Driven<Io>) {
        if !driven.is_usable() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.connections.len() >= MAX_KEPT {
            return;
        }
        kept.connections.push((driven, Instant::now()));
        if !kept.reaping {
            kept.reaping = true;
            runtime.spawn(reap(Arc::downgrade(self)));
        }
    }
}

/// Closes a shelf's connections that the server closed or that idled too long, until it is
/// empty (or gone with its upstream).
async fn reap<Io>(shelf: std::sync::Weak<Shelf<Io>>)
where
    Io: Transport,
{
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(shelf) = shelf.upgrade() else { return };
        let mut kept = shelf.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.connections.retain_mut(|(driven, since)| since.elapsed() < IDLE_TIMEOUT && driven.is_usable());
        if kept.connections.is_empty() {
            kept.reaping = false;
            return;
        }
    }
}

/// A response body that drives its connection as it is polled, and puts the connection back on
/// its shelf when it was read to the end (a body dropped before its end closes it).
pub(super) struct DrivenBody<Io>
where
    Io: Transport,
{
    body: Incoming,
    /// `None` once the connection ended.
    conn: Option<Driven<Io>>,
    shelf: Arc<Shelf<Io>>,
    /// The last poll gave a frame.
    gave: bool,
    /// What the connection handed over right after a frame, for the next poll.
    held: Option<Option<Result<Frame<Bytes>, hyper::Error>>>,
    muted: Arc<Muted>,
    /// `muted` as a waker.
    waker: Waker,
}

/// The waker a driven connection and its body are polled with. Outside a poll of the body it
/// wakes the task; during one it notes the wake, and the body polls them once more before it
/// answers (so no wake is lost, and none costs a poll of the whole task).
struct Muted {
    task: futures_util::task::AtomicWaker,
    state: AtomicU8,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

impl std::task::Wake for Muted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire) == Err(IDLE) {
            self.task.wake();
        }
    }
}

impl<Io: Transport> DrivenBody<Io> {
    /// The body's next frame, reading the connection for it. Body and connection are polled
    /// with the [`Muted`] waker: a wake they cause each other while this runs (the connection
    /// handing the body a chunk, the body taking it) runs the pass again instead of polling the
    /// whole task again; the socket's readiness after this returns wakes the task.
    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.muted.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        loop {
            self.muted.state.store(POLLING, Ordering::Release);
            let mut polled = Pin::new(&mut self.body).poll_frame(&mut inner);
            if polled.is_pending() {
                // A connection that ends has handed over the body's end or its failure.
                if let Some(driven) = self.conn.as_mut()
                    && Pin::new(&mut *driven.conn).poll(&mut inner).is_ready()
                {
                    self.conn = None;
                }
                polled = Pin::new(&mut self.body).poll_frame(&mut inner);
            }
            let woken = self.muted.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
            if polled.is_ready() || !woken {
                return polled;
            }
        }
    }

    /// The body was read to its end: its connection goes back on the shelf at once (before the
    /// client sees the end, so a request it sends next finds it there).
    fn release(&mut self) {
        if let Some(driven) = self.conn.take() {
            self.shelf.put(driven);
        }
    }
}

impl<Io> Body for DrivenBody<Io>
where
    Io: Transport,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut polled = match this.held.take() {
            Some(held) => Poll::Ready(held),
            None => this.poll_connection(cx),
        };
        if this.gave
            && let Poll::Ready(next) = polled
        {
            // What follows a frame is handed over at the next poll, as a connection task would
            // hand it over: a reader that takes what has arrived without waiting (the event
            // path's batch) ends at each chunk the upstream sent, as it always has.
            this.held = Some(next);
            cx.waker().wake_by_ref();
            polled = Poll::Pending;
        }
        this.gave = matches!(polled, Poll::Ready(Some(_)));
        if let Poll::Ready(None) = polled {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<Io> Drop for DrivenBody<Io>
where
    Io: Transport,
{
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request to a connection whose peer has gone (in memory, the far end dropped).
    async fn send_to_a_gone_peer() -> Result<http::Response<DrivenBody<TokioIo<tokio::io::DuplexStream>>>, Unsent> {
        use http_body_util::BodyExt as _;
        let (near, far) = tokio::io::duplex(1024);
        drop(far);
        let driven = Driven::handshake(TokioIo::new(near)).await.unwrap();
        let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        let request = http::Request::get("/").header("host", "upstream").body(body).unwrap();
        driven.send(request, &Arc::default()).await
    }

    #[tokio::test]
    async fn a_request_a_closed_connection_never_started_comes_back_to_be_sent_again() {
        let sent = tokio::time::timeout(Duration::from_secs(10), send_to_a_gone_peer()).await;
        let unsent = sent.expect("an answer, not a wait").err().expect("no response from a gone peer");
        assert!(unsent.request.is_some(), "the request comes back: {}", unsent.error);
    }

    #[test]
    fn a_wake_during_the_bodys_poll_is_noted_and_one_after_it_wakes_the_task() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let muted = Arc::new(Muted { task: Default::default(), state: AtomicU8::new(IDLE) });
        let waker = Waker::from(muted.clone());
        muted.task.register(&Waker::from(task.clone()));

        muted.state.store(POLLING, Ordering::Release);
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::Relaxed), 0, "not the task's turn while the body polls");
        assert_eq!(muted.state.swap(IDLE, Ordering::AcqRel), WOKEN, "but the pass runs again");

        waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::Relaxed), 1, "after the poll, a wake wakes the task");
    }
}
