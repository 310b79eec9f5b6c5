//! Every way a request can fail in the proxy, as one error whose kind says whose fault it is and
//! which picks, in one place ([`ProxyError::into_response`]), the status and body a client sees.
//!
//! Refusals of a body are JSON (`{"error":{"type":...,"message":...}}`), or, when the body was
//! a JSON-RPC message with an id and an interceptor refused it or faulted on it, a JSON-RPC error
//! with that id and status 200, so that an MCP client sees a failed call rather than a broken
//! transport. The proxy's own answers about a request (its path, its host, a limit) are plain text.

use super::BoxError;
use super::accounting::Direction;
use super::admission::StreamLimit;
use super::body::ProxyBody;
use super::charset::CharsetError;
use super::headers::Refusal;
use super::path::PathError;
use super::upstream::UpstreamError;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

/// Whose fault an error is: it decides how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The client sent something the proxy will not forward.
    Client,
    /// The upstream failed, or sent what the proxy will not forward.
    Upstream,
    /// An interceptor refused, or faulted.
    Interceptor,
    /// The proxy's own state (shutting down, a limit) or a bug.
    Proxy,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub(super) enum ErrorKind {
    #[error("the proxy is shutting down")]
    ShuttingDown,
    #[error("{}", match .0 { Refusal::InvalidHost => "Invalid Host header", Refusal::InvalidOrigin => "Invalid Origin header" })]
    HostOrOrigin(Refusal),
    #[error("the request's path cannot be forwarded: {0}")]
    Path(PathError),
    #[error("the request's path climbs out of the route it names with `..` (`{0}`)")]
    ClimbsOutOfRoute(String),
    #[error("no route for this path")]
    NoRoute,
    #[error("a request on a connection over limits.max_connections")]
    ConnectionLimit,
    #[error("an event stream was refused: too many streams at once ({0:?} limit)")]
    StreamLimit(StreamLimit),
    #[error("the bytes held for inspection are at limits.max_buffered_bytes")]
    BufferFull,
    /// With every cause: which certificate check failed, what the connection said.
    #[error("{}", super::upstream::chain_text(.0))]
    Upstream(UpstreamError),
    #[error("a content coding the proxy cannot decode ({0})")]
    Coding(String),
    #[error("{0}")]
    Charset(CharsetError),
    #[error("larger than the {0} bytes a guardrail inspects")]
    Oversize(usize),
    #[error("reading the body failed: {0}")]
    Unreadable(String),
    #[error("not text in its encoding ({0})")]
    NotText(&'static str),
    #[error("not text (binary content labelled {0}), and no pass_media_types rule lets it through")]
    Binary(String),
    #[error("refused by {by}: {message}")]
    Refused { by: String, status: Option<StatusCode>, message: String, retry_after: Option<u64> },
    #[error("interceptor {name} failed ({fault})")]
    Fault { name: String, fault: String },
    #[error("interceptor {name} could not judge the request body ({fault}); refused for this request only")]
    ClientFault { name: String, fault: String },
    #[error("an interceptor failed to start ({0})")]
    StartFailed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A request that failed, and which way its body was going when it did.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub(super) struct ProxyError {
    /// Boxed: a request's phases return `Result<_, ProxyError>`, and the error is the rare path.
    pub kind: Box<ErrorKind>,
    pub direction: Direction,
    /// The body an interceptor refused or faulted on: a JSON-RPC message's ids come from it.
    pub original: Option<Bytes>,
}

impl From<ErrorKind> for ProxyError {
    /// An error about the request (its head or its body).
    fn from(kind: ErrorKind) -> Self {
        ProxyError { kind: Box::new(kind), direction: Direction::Request, original: None }
    }
}

impl ProxyError {
    /// An error about a body going `direction`.
    pub(super) fn new(kind: ErrorKind, direction: Direction) -> Self {
        ProxyError { kind: Box::new(kind), direction, original: None }
    }

    /// An error about the upstream's response.
    pub(super) fn response(kind: ErrorKind) -> Self {
        Self::new(kind, Direction::Response)
    }

    /// With the body it is about (for JSON-RPC ids).
    pub(super) fn about(mut self, body: Bytes) -> Self {
        self.original = Some(body);
        self
    }

    pub(super) fn source(&self) -> Source {
        match &*self.kind {
            ErrorKind::ShuttingDown
            | ErrorKind::ConnectionLimit
            | ErrorKind::StreamLimit(_)
            | ErrorKind::BufferFull
            | ErrorKind::Internal(_) => Source::Proxy,
            ErrorKind::Refused { .. }
            | ErrorKind::Fault { .. }
            | ErrorKind::ClientFault { .. }
            | ErrorKind::StartFailed(_) => Source::Interceptor,
            ErrorKind::Upstream(_) => Source::Upstream,
            _ if self.direction == Direction::Response => Source::Upstream,
            _ => Source::Client,
        }
    }

    /// Logs the error with the request's stream id: an interceptor's refusal is routine, the
    /// client's and the upstream's faults are warnings, the proxy's own are errors unless they
    /// are a limit doing its job.
    pub(super) fn log(&self, stream_id: &str) {
        let direction = self.direction.name();
        match (self.source(), &*self.kind) {
            (Source::Interceptor, ErrorKind::Refused { .. }) => tracing::info!(stream_id, direction, "{self}"),
            (Source::Proxy, ErrorKind::Internal(_)) => tracing::error!(stream_id, direction, "{self}"),
            (Source::Interceptor, _) => tracing::error!(stream_id, direction, "{self}"),
            _ => tracing::warn!(stream_id, direction, "{self}"),
        }
    }

    /// The answer the client gets. `retry_after` is the `Retry-After` of the proxy's limits.
    pub(super) fn into_response(self, retry_after: &HeaderValue) -> Response<ProxyBody> {
        let mut response = match self.plain_text() {
            Some((status, message)) => text(status, message),
            None => {
                let (status, kind, message) = self.refusal();
                // Only what an interceptor judged is answered as JSON-RPC: the proxy's own
                // refusals happen before any message is read as one.
                let original = match &*self.kind {
                    ErrorKind::Refused { .. } | ErrorKind::Fault { .. } | ErrorKind::ClientFault { .. } => {
                        self.original.as_deref().unwrap_or_default()
                    }
                    _ => &[],
                };
                refusal_response(status, kind, &message, original)
            }
        };
        let headers = response.headers_mut();
        match &*self.kind {
            ErrorKind::ShuttingDown => drop(headers.insert(header::CONNECTION, HeaderValue::from_static("close"))),
            ErrorKind::ConnectionLimit => {
                headers.insert(header::RETRY_AFTER, retry_after.clone());
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ErrorKind::StreamLimit(_) | ErrorKind::BufferFull => {
                headers.insert(header::RETRY_AFTER, retry_after.clone());
            }
            ErrorKind::Refused { retry_after: Some(seconds), .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            _ => {}
        }
        response
    }

    /// The proxy's own answers about a request (not about a body), as plain text.
    fn plain_text(&self) -> Option<(StatusCode, &'static str)> {
        Some(match &*self.kind {
            ErrorKind::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "sluicegate is shutting down"),
            ErrorKind::HostOrOrigin(Refusal::InvalidHost) => (StatusCode::MISDIRECTED_REQUEST, "Invalid Host header"),
            ErrorKind::HostOrOrigin(Refusal::InvalidOrigin) => (StatusCode::FORBIDDEN, "Invalid Origin header"),
            ErrorKind::Path(_) | ErrorKind::ClimbsOutOfRoute(_) => {
                (StatusCode::BAD_REQUEST, "sluicegate: the request's path cannot be forwarded as written")
            }
            ErrorKind::NoRoute => (StatusCode::NOT_FOUND, "sluicegate: no route for this path"),
            ErrorKind::ConnectionLimit => {
                (StatusCode::SERVICE_UNAVAILABLE, "sluicegate: too many connections (limits.max_connections)")
            }
            ErrorKind::StreamLimit(StreamLimit::Proxy) => {
                (StatusCode::SERVICE_UNAVAILABLE, "sluicegate: too many event streams (limits.max_streams)")
            }
            ErrorKind::StreamLimit(StreamLimit::Route) => {
                (StatusCode::SERVICE_UNAVAILABLE, "sluicegate: too many event streams on this route (max_streams)")
            }
            ErrorKind::BufferFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "sluicegate: too many bodies are held for inspection now (limits.max_buffered_bytes)",
            ),
            ErrorKind::Upstream(e) => (e.status(), e.client_message()),
            ErrorKind::StartFailed(_) => (StatusCode::BAD_GATEWAY, "sluicegate: an interceptor failed to start"),
            ErrorKind::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "sluicegate: internal error"),
            _ => return None,
        })
    }

    /// A refused body: its status (4xx for what the client sent, 502 for what the upstream sent),
    /// the refusal's `type`, and its message.
    fn refusal(&self) -> (StatusCode, &'static str, String) {
        let request = self.direction == Direction::Request;
        let what = if request { "the request body" } else { "the upstream's response" };
        let status = |for_request: StatusCode| if request { for_request } else { StatusCode::BAD_GATEWAY };
        match &*self.kind {
            ErrorKind::Coding(_) => (
                status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "unsupported_encoding",
                match request {
                    true => "sluicegate: the request body's content coding is not supported".into(),
                    false => {
                        "sluicegate: the upstream's response could not be inspected (unknown content coding)".into()
                    }
                },
            ),
            ErrorKind::Charset(e) => (
                status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "unsupported_charset",
                format!("sluicegate: {what} could not be inspected: {e}"),
            ),
            ErrorKind::Oversize(limit) => (
                status(StatusCode::PAYLOAD_TOO_LARGE),
                "body_too_large",
                format!("sluicegate: {what} is larger than the {limit} bytes a guardrail inspects"),
            ),
            ErrorKind::Unreadable(_) => {
                (status(StatusCode::BAD_REQUEST), "body_unreadable", format!("sluicegate: {what} could not be read"))
            }
            ErrorKind::NotText(encoding) => (
                status(StatusCode::BAD_REQUEST),
                "invalid_utf8",
                format!("sluicegate: {what} is not {encoding} text, so it could not be inspected"),
            ),
            ErrorKind::Binary(_) => (
                status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "not_text",
                format!("sluicegate: {what} is not text, and no rule of this route lets it through"),
            ),
            ErrorKind::Refused { by, status: chosen, message, .. } => {
                let message =
                    if message.is_empty() { format!("refused by {by}") } else { format!("refused by {by}: {message}") };
                (chosen.unwrap_or(status(StatusCode::FORBIDDEN)), "refused", message)
            }
            ErrorKind::ClientFault { name, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "uninspectable",
                format!("sluicegate: interceptor {name} could not judge the request body; refused"),
            ),
            ErrorKind::Fault { name, .. } => {
                (StatusCode::BAD_GATEWAY, "interceptor_error", format!("interceptor {name} failed"))
            }
            other => (StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("sluicegate: {other}")),
        }
    }
}

/// The JSON-RPC error code of a request an interceptor refused (in the range JSON-RPC leaves to
/// implementations).
const JSONRPC_REFUSED: i64 = -32001;

/// The ids of a JSON-RPC message (`jsonrpc: "2.0"` with an id) or batch of them; none if the body
/// is not JSON-RPC or carries no id (a notification).
fn jsonrpc_ids(body: &[u8]) -> Option<Vec<serde_json::Value>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id_of = |m: &serde_json::Value| {
        (m.get("jsonrpc")? == "2.0").then(|| m.get("id").filter(|id| !id.is_null()).cloned()).flatten()
    };
    let ids: Vec<_> = match &value {
        serde_json::Value::Array(items) => items.iter().filter_map(id_of).collect(),
        single => id_of(single).into_iter().collect(),
    };
    (!ids.is_empty()).then_some(ids)
}

/// The answer to a body that is not forwarded. For a JSON-RPC message with an id (an MCP request,
/// or the response to one) it is a JSON-RPC error response carrying that id, with status 200, so
/// an MCP client sees a failed call rather than a broken transport; otherwise `status` with a JSON
/// error body.
fn refusal_response(status: StatusCode, kind: &str, message: &str, original: &[u8]) -> Response<ProxyBody> {
    let (status, body) = match jsonrpc_ids(original) {
        Some(ids) => {
            let error = |id: serde_json::Value| serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": JSONRPC_REFUSED, "message": message}});
            let mut errors: Vec<_> = ids.into_iter().map(error).collect();
            let body = if errors.len() == 1 && !original.trim_ascii_start().starts_with(b"[") {
                errors.pop().unwrap_or_default()
            } else {
                serde_json::Value::Array(errors)
            };
            (StatusCode::OK, body)
        }
        None => (status, serde_json::json!({"error": {"type": kind, "message": message}})),
    };
    json_response(status, body.to_string().into())
}

/// A JSON response.
fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(body).map_err(BoxError::from).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text answer.
pub(super) fn text(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response =
        Response::new(Full::new(Bytes::from_static(text.as_bytes())).map_err(BoxError::from).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: ProxyError) -> (u16, String) {
        let response = error.into_response(&HeaderValue::from_static("1"));
        let status = response.status().as_u16();
        let body = futures_util::FutureExt::now_or_never(response.into_body().collect())
            .expect("a whole body")
            .expect("no error")
            .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn the_direction_picks_4xx_or_502() {
        assert_eq!(answer(ErrorKind::Oversize(10).into()).0, 413);
        assert_eq!(answer(ProxyError::response(ErrorKind::Oversize(10))).0, 502);
        assert_eq!(answer(ErrorKind::Coding("x".into()).into()).0, 415);
        assert_eq!(answer(ErrorKind::Binary("image/png".into()).into()).0, 415);
        assert_eq!(answer(ProxyError::response(ErrorKind::Binary("image/png".into()))).0, 502);
        assert_eq!(answer(ErrorKind::Path(PathError::EncodedSlash).into()).0, 400);
    }

    #[test]
    fn a_refused_json_rpc_call_is_a_json_rpc_error_with_its_id() {
        let refused = ProxyError::from(ErrorKind::Refused {
            by: "guard".into(),
            status: None,
            message: "no".into(),
            retry_after: None,
        })
        .about(Bytes::from_static(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#));
        let (status, body) = answer(refused);
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["message"], "refused by guard: no");
        let fault = ProxyError::from(ErrorKind::ClientFault { name: "g".into(), fault: "trap".into() });
        assert_eq!(answer(fault).0, 422, "a request body an interceptor faulted on is the client's to fix");
    }
}
