//! Response bodies: an event stream fed batch by batch through a bounded channel, or an upstream
//! body passed through as it is.

use bytes::Bytes;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body, boxed: what the proxy sends to clients and upstreams, and an upstream's body once
/// it may have been decoded.
pub type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What the proxy sends to clients.
pub type ProxyBody = AnyBody;

/// A body whose chunks arrive through a bounded channel, one chunk per batch. When the client
/// goes away, hyper drops the body and with it the receiver: the sender sees the channel closed,
/// which is how the stream's task learns the client is gone.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, holding at most `capacity` chunks.
    pub fn new(capacity: usize) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
