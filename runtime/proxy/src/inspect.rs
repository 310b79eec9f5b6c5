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
//!
//! Before the chain, the body is decoded to UTF-8 text (`charset`); a body that cannot be is
//! refused. While it is read and until the client has taken what the chain left, its bytes are
//! held against the proxy's buffer budget (`admission`).

use super::accounting::{BodyRecord, Direction, Outcome, Reason};
use super::admission::BufferReservation;
use super::body::AnyBody;
use super::charset::{self, CharsetError};
use super::content::Label;
use super::error::{ErrorKind, ProxyError};
use super::isolation::{Placement, SlowCalls};
use crate::batch::Batch;
use crate::chain::{Chain, ChainFault, ChainStream, Judging};
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Full};
use sluicegate_guest::{EndReason, StreamContext};

/// What a route's chains inspect and what may pass them.
#[derive(Debug, Clone, Default)]
pub(super) struct BodyRules {
    /// The largest body read whole.
    pub max_bytes: usize,
    /// Over `max_bytes`: pass uninspected (`on_oversize = "pass"`) rather than refuse.
    pub pass_oversize: bool,
    /// Media types (`image/png`, `image/*`) whose binary content passes uninspected.
    pub pass_media_types: Vec<String>,
    /// The longest line read to tell JSON lines from a JSON body (`max_event_bytes`).
    pub max_line: usize,
}

impl BodyRules {
    /// True if binary content labelled `label` may pass uninspected.
    pub(super) fn passes(&self, label: &Label) -> bool {
        self.pass_media_types.iter().any(|pattern| label.matches(pattern))
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
    /// The buffer budget could not hold the next chunk.
    BufferFull {
        read: u64,
    },
    Failed(String),
}

/// Reads `body` until it ends or more than `max` bytes have arrived, holding what it reads in
/// `reservation`. Trailers are dropped.
pub(super) async fn collect(mut body: AnyBody, max: usize, reservation: &mut BufferReservation) -> Collected {
    let mut read = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Err(e) => return Collected::Failed(e.to_string()),
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                total += data.len();
                if total <= max && !reservation.grow(data.len()) {
                    return Collected::BufferFull { read: total as u64 };
                }
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
    /// Send this body on: `None` is the text the chain was given, unchanged.
    Forward(Option<String>),
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

/// Runs `text` through `chain` as a batch of one event. Returns the verdict and the chain's
/// stream, whose records say what each interceptor did.
pub(super) fn run(
    chain: &Chain,
    context: &StreamContext,
    judging: Judging,
    text: &str,
) -> (BodyVerdict, Option<ChainStream>) {
    let mut stream = match chain.open_for(context, judging) {
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
            BodyVerdict::Forward((out != data).then_some(out))
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

/// Says UTF-8 in a `Content-Type` whose `charset` said otherwise (what the proxy sends on is
/// UTF-8 whatever it was given). A label without `charset` is left alone: UTF-8 is the default of
/// JSON and of event streams.
pub(super) fn label_utf8(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return };
    let mut parts: Vec<&str> = value.split(';').map(str::trim).collect();
    let mut relabelled = false;
    for part in parts.iter_mut().skip(1) {
        if part.split('=').next().is_some_and(|name| name.trim().eq_ignore_ascii_case("charset"))
            && !part.to_ascii_lowercase().ends_with("utf-8")
        {
            *part = "charset=utf-8";
            relabelled = true;
        }
    }
    if relabelled && let Ok(value) = HeaderValue::from_str(&parts.join("; ")) {
        headers.insert(header::CONTENT_TYPE, value);
    }
}

/// The body a chain judged, sent on whole: its headers set to match (its length; no validators
/// once rewritten; UTF-8 once transcoded), its bytes holding their reservation of the buffer
/// budget until the last of them has been written (a connection holds a body's bytes after it
/// has taken the body's end).
fn send_on(
    headers: &mut HeaderMap,
    body: Bytes,
    rewritten: bool,
    transcoded: bool,
    mut reservation: BufferReservation,
) -> AnyBody {
    set_body_headers(headers, body.len(), rewritten);
    if transcoded {
        label_utf8(headers);
    }
    reservation.set(body.len());
    let body = Bytes::from_owner(Held { bytes: body, _reservation: reservation });
    Full::new(body).map_err(super::BoxError::from).boxed_unsync()
}

/// Bytes that hold their share of the buffer budget for as long as they live.
struct Held {
    bytes: Bytes,
    _reservation: BufferReservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A body through a chain, whole: what to inspect and how.
pub(super) struct WholeBody<'a> {
    pub chain: &'a Chain,
    pub direction: Direction,
    pub rules: &'a BodyRules,
    pub context: &'a StreamContext,
    pub label: &'a Label,
    /// The request's span: a request body's model, MCP method and tool go on it.
    pub span: &'a tracing::Span,
    /// Where a slow chain is called.
    pub slow_calls: &'a SlowCalls,
}

impl WholeBody<'_> {
    /// Reads `body` (decoded from its content coding already, `compressed` if it was), decodes
    /// it to text, runs it through the chain and returns what to send on, its headers set to
    /// match; or the refusal. Either way the record of what happened.
    pub(super) async fn inspect(
        &self,
        headers: &mut HeaderMap,
        body: AnyBody,
        compressed: bool,
        mut reservation: BufferReservation,
    ) -> (Result<AnyBody, ProxyError>, BodyRecord) {
        let whole = match self.read(headers, body, compressed, &mut reservation).await {
            Ok(whole) => whole,
            Err(early) => return early,
        };
        let bytes_in = whole.len() as u64;
        let decoded = match charset::decode_whole(&whole, self.label.charset()) {
            Ok(decoded) => decoded,
            Err(CharsetError::Malformed(encoding)) => {
                return self.refuse(ErrorKind::NotText(encoding), Reason::InvalidUtf8, bytes_in);
            }
            Err(e) => return self.refuse(ErrorKind::Charset(e), Reason::Charset, bytes_in),
        };
        let judging = match self.direction {
            Direction::Request => {
                crate::telemetry::record_request(self.span, &decoded.text, &self.context.path);
                Judging::ClientBody
            }
            Direction::Response => Judging::Upstream,
        };
        let (verdict, stream) = match Placement::of(self.chain.is_slow()) {
            Placement::OffThread => {
                let (chain, context, text) = (self.chain.clone(), self.context.clone(), decoded.text.to_string());
                self.slow_calls.run(move || run(&chain, &context, judging, &text)).await
            }
            Placement::Here => run(self.chain, self.context, judging, &decoded.text),
        };
        let records = stream.as_ref().map(|s| s.records()).unwrap_or_default();
        let record = |outcome, reason, bytes_out| {
            BodyRecord::new(outcome, reason).bytes(bytes_in, bytes_out).interceptors(records)
        };
        let body = match verdict {
            BodyVerdict::Forward(changed) => changed.map(Bytes::from),
            BodyVerdict::Refused { by, status, message, retry_after } => {
                let error = self.refused(ErrorKind::Refused { by, status, message, retry_after }, &whole, &decoded);
                return (Err(error), record(Outcome::Refused, Reason::Interceptor, 0));
            }
            BodyVerdict::Faulted(fault) => {
                let (name, fault_text) = (fault.name.clone(), fault.to_string());
                let kind = match judging == Judging::ClientBody && fault.content_can_cause() {
                    true => ErrorKind::ClientFault { name, fault: fault_text },
                    false => ErrorKind::Fault { name, fault: fault_text },
                };
                return (Err(self.refused(kind, &whole, &decoded)), record(Outcome::Refused, Reason::Fault, 0));
            }
        };
        let rewritten = body.is_some() || decoded.transcoded;
        let body = match body {
            Some(body) => body,
            None if decoded.transcoded => Bytes::from(decoded.text.into_owned()),
            None => whole.clone(),
        };
        let record = record(Outcome::Inspected, Reason::Body, body.len() as u64);
        (Ok(send_on(headers, body, rewritten, decoded.transcoded, reservation)), record)
    }

    /// Reads the body whole; `Err` is what happened instead: refused (over the size limit, the
    /// buffer budget spent, a failed read) or passed (over the size limit, by rule).
    async fn read(
        &self,
        headers: &mut HeaderMap,
        body: AnyBody,
        compressed: bool,
        reservation: &mut BufferReservation,
    ) -> Result<Bytes, (Result<AnyBody, ProxyError>, BodyRecord)> {
        let rules = self.rules;
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if !compressed && declared.is_some_and(|n| n > rules.max_bytes as u64) && !rules.pass_oversize {
            return Err(self.refuse(ErrorKind::Oversize(rules.max_bytes), Reason::Oversize, 0));
        }
        headers.remove(header::CONTENT_ENCODING);
        match collect(body, rules.max_bytes, reservation).await {
            Collected::Whole(whole) => Ok(whole),
            Collected::Oversize { read, rest } => {
                let read_bytes = read.iter().map(|b| b.len() as u64).sum();
                if !rules.pass_oversize {
                    return Err(self.refuse(ErrorKind::Oversize(rules.max_bytes), Reason::Oversize, read_bytes));
                }
                tracing::warn!(
                    stream_id = self.context.stream_id,
                    limit = rules.max_bytes,
                    "{} passes uninspected: over the size limit (on_oversize = \"pass\")",
                    self.what()
                );
                headers.remove(header::CONTENT_LENGTH);
                let record = BodyRecord::new(Outcome::Passed, Reason::Oversize).bytes(read_bytes, read_bytes);
                Err((Ok(rejoin(read, rest)), record))
            }
            Collected::BufferFull { read } => Err(self.refuse(ErrorKind::BufferFull, Reason::BufferFull, read)),
            Collected::Failed(why) => Err(self.refuse(ErrorKind::Unreadable(why), Reason::ReadFailed, 0)),
        }
    }

    /// A refusal by the proxy, before any interceptor saw the body.
    fn refuse(&self, kind: ErrorKind, reason: Reason, bytes_in: u64) -> (Result<AnyBody, ProxyError>, BodyRecord) {
        (Err(ProxyError::new(kind, self.direction)), BodyRecord::new(Outcome::Refused, reason).bytes(bytes_in, 0))
    }

    /// A refusal of a body the chain judged: it answers a JSON-RPC message with its ids, read from
    /// the text as decoded.
    fn refused(&self, kind: ErrorKind, whole: &Bytes, decoded: &charset::Decoded<'_>) -> ProxyError {
        let judged = match decoded.transcoded {
            true => Bytes::from(decoded.text.to_string()),
            false => whole.clone(),
        };
        ProxyError::new(kind, self.direction).about(judged)
    }

    fn what(&self) -> &'static str {
        match self.direction {
            Direction::Request => "the request body",
            Direction::Response => "the upstream's response",
        }
    }
}
