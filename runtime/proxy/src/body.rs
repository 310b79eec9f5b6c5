//! The body types the proxy passes around. (An event stream's body, which runs the stream as it
//! is polled, is `events::EventBody`.)

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// An error of any body, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body, boxed: what the proxy sends to clients and upstreams, and an upstream's body once
/// it may have been decoded.
pub type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What the proxy sends to clients.
pub type ProxyBody = AnyBody;

/// A body that holds `guard` (a stream slot, bytes of the buffer budget) until it ends. The guard
/// is let go as the body yields its end, before the client can see it, so a client that saw a
/// stream end and opens a new one finds the slot free.
pub(super) struct Holding<G> {
    body: AnyBody,
    guard: Option<G>,
}

impl<G: Send + Unpin + 'static> Holding<G> {
    /// `body`, holding `guard`.
    pub(super) fn wrap(body: AnyBody, guard: G) -> AnyBody {
        use http_body_util::BodyExt as _;
        Holding { body, guard: Some(guard) }.boxed_unsync()
    }
}

impl<G: Unpin> Body for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
