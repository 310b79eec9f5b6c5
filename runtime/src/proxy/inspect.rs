//! Whole bodies through a chain: a JSON request before it goes upstream, a JSON response before
//! it reaches the client.
//!
//! A body is read (decoded, if it was compressed) up to `max_body_bytes` and handed to the chain
//! as a batch of one event whose data is the body; what the chain leaves is the body sent on, with
//! its own `Content-Length`. Line ends are the one thing a batch cannot carry as they are (data
//! has no CR), so the chain sees CRLF and CR as LF; a body the chain keeps unchanged is forwarded
//! byte for byte as it arrived.
//!
//! The verdict's meaning for a body (components built for event streams work unchanged):
//! - the data of the output's events, joined, is the body sent on (normally one event, kept or
//!   replaced);
//! - a verdict that ends the stream, or leaves no data, refuses the body. The output's last data
//!   event is the refusal: its event type, if it is a status code from 400 to 599, the status
//!   (otherwise 403 for a request, 502 for a response), its data the message (`error.message`
//!   or `message` of a JSON object, or the text); a `retry_after_seconds` number in it (at the
//!   top or in `error`) is sent as `Retry-After`;
//! - events that `finish` inserts have no place in a body and are dropped (logged at debug).
//!
//! An interceptor tells the cases apart by its stream context: a request has status 0 and no
//! response headers; a response body has the response's status and a `content-type` that is not
//! `text/event-stream`.

use super::body::AnyBody;
use crate::batch::Batch;
use crate::chain::{Chain, ChainFault, ChainStream};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Full};
use sluicegate_guest::{EndReason, StreamContext};

/// The JSON-RPC error code of a request an interceptor refused (in the range JSON-RPC leaves to
/// implementations).
pub(super) const JSONRPC_REFUSED: i64 = -32001;

/// Which bodies a route inspects and how large they may be.
#[derive(Debug, Clone)]
pub(super) struct BodyRules {
    pub max_bytes: usize,
    pub pass_oversize: bool,
    /// Media types inspected besides JSON, lower case.
    pub extra_types: Vec<String>,
}

impl BodyRules {
    /// True if a body with these headers is one the chain inspects: JSON (`application/json`,
    /// any `+json` type) or a listed type. A body without `Content-Type` is inspected too: the
    /// proxy does not guess what it is, and an upstream or client cannot escape the chain by
    /// leaving the header out.
    pub(super) fn inspects(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
        let Ok(value) = value.to_str() else { return true };
        let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        mime == "application/json" || mime.ends_with("+json") || self.extra_types.contains(&mime)
    }
}

/// A body read whole, or as far as the limit.
pub(super) enum Collected {
    Whole(Bytes),
    /// Over the limit: what was read, and the rest of the body.
    Oversize {
        read: Vec<Bytes>,
        rest: AnyBody,
    },
    Failed(String),
}

/// Reads `body` until it ends or more than `max` bytes have arrived. Trailers are dropped.
pub(super) async fn collect(mut body: AnyBody, max: usize) -> Collected {
    let mut read = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Err(e) => return Collected::Failed(e.to_string()),
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                total += data.len();
                read.push(data);
                if total > max {
                    return Collected::Oversize { read, rest: body };
                }
            }
        }
    }
    if read.len() == 1 {
        return Collected::Whole(read.pop().unwrap_or_default());
    }
    let mut whole = BytesMut::with_capacity(total);
    read.iter().for_each(|chunk| whole.extend_from_slice(chunk));
    Collected::Whole(whole.freeze())
}

/// `read` followed by `rest`, as one body.
pub(super) fn rejoin(read: Vec<Bytes>, rest: AnyBody) -> AnyBody {
    let head = futures_util::stream::iter(read.into_iter().map(|b| Ok(http_body::Frame::data(b))));
    let tail = http_body_util::BodyStream::new(rest);
    http_body_util::StreamBody::new(futures_util::StreamExt::chain(head, tail)).boxed_unsync()
}

/// True if the body has already ended (nothing to read).
pub(super) fn is_empty(body: &AnyBody, headers: &HeaderMap) -> bool {
    body.is_end_stream() || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
}

/// What the chain made of a body.
pub(super) enum BodyVerdict {
    /// Send this body on; `changed` is false when it is the original bytes.
    Forward {
        body: Bytes,
        changed: bool,
    },
    /// Refused by interceptor `by`.
    Refused {
        by: String,
        status: Option<StatusCode>,
        message: String,
        /// `retry_after_seconds` of the refusal's data: sent as `Retry-After`.
        retry_after: Option<u64>,
    },
    Faulted(ChainFault),
}

/// Runs `body` (UTF-8) through `chain` as a batch of one event. Returns the verdict and the
/// chain's stream, whose records say what each interceptor did.
pub(super) fn run(
    chain: &Chain,
    context: &StreamContext,
    body: &Bytes,
    text: &str,
) -> (BodyVerdict, Option<ChainStream>) {
    let mut stream = match chain.open(context) {
        Ok(stream) => stream,
        Err(fault) => return (BodyVerdict::Faulted(fault), None),
    };
    let mut batch = Batch::new();
    let normalised;
    let data = if text.contains('\r') {
        normalised = text.replace("\r\n", "\n").replace('\r', "\n");
        normalised.as_str()
    } else {
        text
    };
    batch.push_data(data);
    let ended = match stream.process(&mut batch) {
        Ok(ended) => ended,
        Err(fault) => return (BodyVerdict::Faulted(fault), Some(stream)),
    };
    let reason = if ended { EndReason::EndedByInterceptor } else { EndReason::UpstreamClosed };
    match stream.finish(reason) {
        Ok(tail) if !tail.is_empty() => {
            tracing::debug!(events = tail.len(), "events inserted at the end of a body were dropped")
        }
        Ok(_) => {}
        Err(fault) => return (BodyVerdict::Faulted(fault), Some(stream)),
    }
    let view = batch.view();
    let last_data = view.iter().filter(|e| e.data().is_some()).last();
    let verdict = match last_data {
        Some(_) if !ended => {
            let mut out = String::new();
            view.iter().filter_map(|e| e.data()).for_each(|d| out.push_str(d));
            if out == data {
                BodyVerdict::Forward { body: body.clone(), changed: false }
            } else {
                BodyVerdict::Forward { body: Bytes::from(out), changed: true }
            }
        }
        refusal => BodyVerdict::Refused {
            by: stream.ended_by().unwrap_or("the chain").to_string(),
            status: refusal
                .and_then(|e| e.event_type())
                .and_then(|t| t.parse::<u16>().ok())
                .filter(|s| (400..600).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok()),
            message: refusal.and_then(|e| e.data()).map(refusal_message).unwrap_or_default(),
            retry_after: refusal.and_then(|e| e.data()).and_then(refusal_retry_after),
        },
    };
    (verdict, Some(stream))
}

/// The human message in a refusal's data: `error.message` or `message` of a JSON object, or
/// the text itself.
fn refusal_message(data: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(data).ok();
    let field = json.as_ref().and_then(|v| {
        v.pointer("/error/message").or_else(|| v.get("message")).and_then(|m| m.as_str()).map(str::to_string)
    });
    field.unwrap_or_else(|| data.trim().chars().take(500).collect())
}

/// `retry_after_seconds` (a whole number) of a refusal's JSON data, at its top or in `error`: a
/// refusal for a limit says when to come back (a token budget, the window's remaining time).
fn refusal_retry_after(data: &str) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_str(data).ok()?;
    json.pointer("/error/retry_after_seconds").or_else(|| json.get("retry_after_seconds"))?.as_u64()
}

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
pub(super) fn refusal_response(status: StatusCode, kind: &str, message: &str, original: &[u8]) -> Response<AnyBody> {
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

/// A JSON response with its length.
pub(super) fn json_response(status: StatusCode, body: Bytes) -> Response<AnyBody> {
    let mut response = Response::new(Full::new(body).map_err(super::BoxError::from).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Sets the headers of a body sent on whole: its length, identity coding, and no validators or
/// digests of the original once it changed.
pub(super) fn set_body_headers(headers: &mut HeaderMap, length: usize, changed: bool) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if changed {
        for name in ["etag", "content-md5", "digest", "content-digest", "repr-digest"] {
            headers.remove(name);
        }
    }
}
