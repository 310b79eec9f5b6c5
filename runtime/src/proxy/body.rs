//! The body types the proxy passes around. (An event stream's body, which runs the stream as it
//! is polled, is `events::EventBody`.)

use bytes::Bytes;

/// An error of any body, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body, boxed: what the proxy sends to clients and upstreams, and an upstream's body once
/// it may have been decoded.
pub type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What the proxy sends to clients.
pub type ProxyBody = AnyBody;
